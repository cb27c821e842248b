"""Rows of the shadow tables (``sinks/sql/0018_shadow_rules.sql``) and their insert.

The stream turns each :class:`~detectors.shadow.ShadowRecord` into a row here
(:func:`shadow_rows`) and hands the rows to the sink buffer beside the audit rows; the
ClickHouse writer stores them through :func:`insert_shadow`.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from tripwire.detectors.shadow import ShadowRecord
from tripwire.sinks.clickhouse import Client
from tripwire.sinks.masking import mask

SHADOW_DETECTION_COLUMNS = (
    "shadow_rule", "detection_id", "ts", "agent_id", "run_id", "tool", "detector", "metric",
    "value", "threshold", "window_ms", "severity", "evidence_event_ids", "message",
)
SHADOW_MODE_CHANGE_COLUMNS = (
    "shadow_rule", "agent_id", "seq", "issued_at", "action", "mode", "previous_mode", "scope",
    "run_id", "reason", "detection_ids", "rule",
)
SHADOW_TABLES = {"shadow_detections": SHADOW_DETECTION_COLUMNS,
                 "shadow_mode_changes": SHADOW_MODE_CHANGE_COLUMNS}


def shadow_rows(records: Iterable[ShadowRecord]) -> dict[str, list[dict[str, Any]]]:
    """{table: rows} for the sink buffer; tables without rows are left out."""
    out: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        if r.detection is not None:
            d = r.detection
            out.setdefault("shadow_detections", []).append({
                "shadow_rule": r.shadow_rule, "detection_id": d.detection_id, "ts": d.ts,
                "agent_id": d.agent_id, "run_id": d.run_id or "", "tool": d.tool or "",
                "detector": d.detector, "metric": d.metric, "value": float(d.value),
                "threshold": float(d.threshold), "window_ms": d.window_ms,
                "severity": str(d.severity), "evidence_event_ids": list(d.evidence_event_ids),
                "message": d.message,
            })
        if r.transition is not None:
            t = r.transition
            control = t.to_control()
            out.setdefault("shadow_mode_changes", []).append({
                "shadow_rule": r.shadow_rule, "agent_id": t.agent_id, "seq": t.seq,
                "issued_at": t.ts, "action": t.action, "mode": control["mode"],
                "previous_mode": str(t.prev_mode), "scope": control["scope"],
                "run_id": t.run_id or "", "reason": t.reason,
                "detection_ids": list(t.detection_ids), "rule": t.rule or "",
            })
    return out


def insert_shadow(client: Client, table: str, rows: Sequence[Mapping[str, Any]]) -> int:
    if not rows:
        return 0
    columns = SHADOW_TABLES[table]
    data = [[row[c] for c in columns] for row in rows]
    # Masked like their enforced twins (sinks/breaker_sink.py): messages and reasons may
    # quote scanner signals or tool names.
    if table == "shadow_detections":
        text = columns.index("message")
        for values in data:
            values[1] = uuid.UUID(values[1])
            values[text] = mask(values[text])
    else:
        text = columns.index("reason")
        for values in data:
            values[text] = mask(values[text])
    client.insert(table, data, column_names=list(columns),
                  settings={"max_partitions_per_insert_block": 0})
    return len(data)
