"""Replay sets: an incident's steps as JSON lines in the contract's shape (step_event.avsc).

``tripwire evidence ... --export FILE`` writes one (:func:`write_replay_set`); ``tripwire
backtest --replay FILE`` and tests read one back (:func:`read_replay_set`), so the incident
that tripped (or should have tripped) a breaker can be replayed under any policy, in CI, long
after its rows have expired from ClickHouse.

Stored rows keep '' and 0 for absent values (``sinks/sql/0001_steps.sql``); the export turns
them back into nulls the way the backtest reader does (``sinks/step_history.py``), so a
replay set and the table replay alike. Content is the stored, masked text.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tripwire.schemas.validation import check_event

# Fields of step_event.avsc, in its order; optional ones come back as null when stored empty.
FIELDS = (
    "event_id", "ts", "agent_id", "agent_version", "run_id", "step", "workflow", "owner",
    "environment", "kind", "tool", "action_class", "params_hash", "policy_outcome",
    "policy_rule", "model", "input_tokens", "output_tokens", "cost_usd", "latency_ms",
    "status", "outcome", "approver", "approved", "wait_ms", "content", "source_trust",
    "injection_flagged", "attributes",
)
_REQUIRED = frozenset({"event_id", "ts", "agent_id", "run_id", "step", "kind", "attributes"})
_ZERO_IS_ABSENT = frozenset({"input_tokens", "output_tokens", "cost_usd"})


def contract_event(row: Mapping[str, Any]) -> dict[str, Any]:
    """A stored ``steps`` row (as the evidence queries return it) in the contract's shape."""
    out: dict[str, Any] = {}
    for name in FIELDS:
        value = row.get(name)
        if name == "ts":
            value = _ms(value)
        elif name == "event_id":
            value = str(value)
        elif name == "attributes":
            value = dict(value or {})
        elif name == "injection_flagged":
            value = True if value else None
        elif name not in _REQUIRED and (value == "" or (name in _ZERO_IS_ABSENT and not value)):
            value = None
        out[name] = value
    return out


def write_replay_set(path: Path, rows: Iterable[Mapping[str, Any]]) -> int:
    """Write rows as contract events, one JSON object a line; how many were written."""
    count = 0
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(contract_event(row), ensure_ascii=False, separators=(",", ":")))
            f.write("\n")
            count += 1
    return count


class ReplaySetError(ValueError):
    pass


def read_replay_set(path: Path) -> list[dict[str, Any]]:
    """Every event of the file, checked like the stream checks producers' events; sorted by
    (agent_id, ts, step) as the backtest replays them. ReplaySetError names the bad line."""
    events: list[dict[str, Any]] = []
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                event = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ReplaySetError(f"{path}:{number}: not JSON: {exc.msg}") from None
            if not isinstance(event, dict):
                raise ReplaySetError(f"{path}:{number}: expected a JSON object")
            missing = [k for k in ("event_id", "ts", "agent_id", "run_id", "step", "kind")
                       if k not in event]
            if missing:
                raise ReplaySetError(f"{path}:{number}: missing {', '.join(missing)}")
            full = {name: event.get(name) for name in FIELDS} | event
            full["attributes"] = full.get("attributes") or {}
            problem = check_event(full)
            if problem is not None:
                raise ReplaySetError(f"{path}:{number}: {problem}")
            events.append(full)
    events.sort(key=lambda e: (e["agent_id"], e["ts"], e["step"]))
    return events


def by_agent(events: list[dict[str, Any]]) -> Iterator[tuple[str, str | None, list[dict]]]:
    """(agent_id, workflow, events) per agent of a sorted replay set."""
    i = 0
    while i < len(events):
        agent = events[i]["agent_id"]
        j = i
        while j < len(events) and events[j]["agent_id"] == agent:
            j += 1
        yield agent, events[i].get("workflow"), events[i:j]
        i = j


def _ms(value: Any) -> int:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return int(value.timestamp() * 1000)
    return int(value)
