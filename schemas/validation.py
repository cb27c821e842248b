"""Semantic checks on decoded events: things the Avro types allow but no real step can be.

Called once per event on the stream worker's hot path, so checks are plain comparisons and
one precompiled regex; no models are built.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterable, Mapping
from typing import Any

EARLIEST_TS_MS = 946_684_800_000
"""2000-01-01T00:00:00Z: anything earlier is an unset or seconds-not-millis clock."""
MAX_FUTURE_SKEW_MS = 86_400_000
"""Producers' clocks may run ahead, but not by more than a day."""

# Canonical hyphenated form only (what Avro's uuid logical type carries); braces, urn: prefixes
# and bare hex would dedupe differently in the sinks.
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")

_NON_NEGATIVE_COUNTS = ("input_tokens", "output_tokens", "latency_ms", "wait_ms")


def check_event(ev: Mapping[str, Any], now_ms: int | None = None) -> str | None:
    """Why a canonical event dict is semantically impossible, or None when it is plausible.

    Rejected:

    * ``event_id`` not a UUID in canonical 8-4-4-4-12 form;
    * empty (or whitespace-only) ``agent_id`` or ``run_id``;
    * ``ts`` before 2000-01-01 or more than a day after ``now_ms`` (default: current time);
    * negative ``step``, ``input_tokens``, ``output_tokens``, ``latency_ms``, ``wait_ms``;
      ``cost_usd`` negative, NaN or infinite;
    * ``tool_call`` without ``tool``; ``policy_decision`` without ``policy_outcome``;
      ``approval_decision`` without ``approved``.

    Accepted on purpose:

    * ``run_end`` without ``outcome``: an agent that is killed or crashes may still emit a
      closing step without knowing how its task ended; detectors treat it as unknown.
    * kind-specific fields on other kinds (e.g. ``approved`` on a ``tool_call``): odd but not
      impossible, and rejecting them would make adding producer features a breaking change.
    """
    event_id = ev["event_id"]
    if not _UUID.fullmatch(event_id):
        return f"event_id is not a UUID: {event_id!r}"
    if not ev["agent_id"].strip():
        return "empty agent_id"
    if not ev["run_id"].strip():
        return "empty run_id"

    ts = ev["ts"]
    if ts < EARLIEST_TS_MS:
        return f"ts {ts} is before 2000-01-01"
    if now_ms is None:
        now_ms = time.time_ns() // 1_000_000
    if ts > now_ms + MAX_FUTURE_SKEW_MS:
        return f"ts {ts} is more than a day in the future (now {now_ms})"

    if ev["step"] < 0:
        return f"negative step: {ev['step']}"
    for field in _NON_NEGATIVE_COUNTS:
        value = ev[field]
        if value is not None and value < 0:
            return f"negative {field}: {value}"
    cost = ev["cost_usd"]
    # ``not cost >= 0`` is also true for NaN, which a plain ``cost < 0`` would let through.
    if cost is not None and (not cost >= 0 or math.isinf(cost)):
        return f"invalid cost_usd: {cost}"

    kind = ev["kind"]
    if kind == "tool_call" and ev["tool"] is None:
        return "tool_call without tool"
    if kind == "policy_decision" and ev["policy_outcome"] is None:
        return "policy_decision without policy_outcome"
    if kind == "approval_decision" and ev["approved"] is None:
        return "approval_decision without approved"
    return None


def check_batch_key(events: Iterable[Mapping[str, Any]], key: bytes | None) -> str | None:
    """Why a batch does not belong under its Kafka record key, or None when it does.

    The key is the partitioning unit for per-agent state, so an event of another agent in the
    batch would be processed on the wrong partition. ``key=None`` skips the check.
    """
    if key is None:
        return None
    try:
        agent_id = key.decode("utf-8")
    except UnicodeDecodeError:
        return f"record key is not UTF-8: {key!r}"
    for index, ev in enumerate(events):
        if ev["agent_id"] != agent_id:
            return f"event {index} has agent_id {ev['agent_id']!r}, record key is {agent_id!r}"
    return None
