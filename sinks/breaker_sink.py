"""Store what the breaker saw and did: detections and mode changes (control records).

Both tables collapse re-deliveries by ids that re-processing reproduces (deterministic
detection ids; per-agent control seq), so the stream can insert at least once.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from tripwire.sinks.clickhouse import Client
from tripwire.sinks.masking import mask

DETECTION_COLUMNS = (
    "detection_id", "ts", "agent_id", "run_id", "tool", "detector", "metric", "value",
    "threshold", "window_ms", "severity", "evidence_event_ids", "message",
)
MODE_CHANGE_COLUMNS = (
    "agent_id", "seq", "issued_at", "mode", "previous_mode", "scope", "run_id", "reason",
    "detection_ids", "rule", "expires_at", "source",
)


class BreakerSink:
    """Inserts detection.avsc and control.avsc records; synchronous, call it off the loop."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def insert(
        self, detections: Sequence[Mapping[str, Any]], controls: Sequence[Mapping[str, Any]]
    ) -> None:
        if detections:
            self._client.insert(
                "detections",
                [
                    [uuid.UUID(d["detection_id"]) for d in detections],
                    [d["ts"] for d in detections],
                    [d["agent_id"] for d in detections],
                    [d.get("run_id") or "" for d in detections],
                    [d.get("tool") or "" for d in detections],
                    [d["detector"] for d in detections],
                    [d["metric"] for d in detections],
                    [float(d["value"]) for d in detections],
                    [float(d["threshold"]) for d in detections],
                    [d.get("window_ms") for d in detections],
                    [d["severity"] for d in detections],
                    [list(d["evidence_event_ids"]) for d in detections],
                    # Messages may quote scanner signals or tool names: stored masked too.
                    [mask(d["message"]) for d in detections],
                ],
                column_names=DETECTION_COLUMNS,
                column_oriented=True,
                settings={"max_partitions_per_insert_block": 0},
            )
        if controls:
            self._client.insert(
                "mode_changes",
                [
                    [c["agent_id"] for c in controls],
                    [c["seq"] for c in controls],
                    [c["issued_at"] for c in controls],
                    [c["mode"] for c in controls],
                    [c.get("previous_mode") or "" for c in controls],
                    [c["scope"] for c in controls],
                    [c.get("run_id") or "" for c in controls],
                    [mask(c["reason"]) for c in controls],
                    [list(c.get("detection_ids") or ()) for c in controls],
                    [c.get("rule") or "" for c in controls],
                    [c.get("expires_at") for c in controls],
                    [c.get("source") or "breaker" for c in controls],
                ],
                column_names=MODE_CHANGE_COLUMNS,
                column_oriented=True,
                settings={"max_partitions_per_insert_block": 0},
            )
