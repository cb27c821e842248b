"""Store StepEvents in ClickHouse: masked, column-oriented, each event at most once.

After a crash the worker re-reads records it had already stored; ReplacingMergeTree
collapses those copies only at some later merge, and anything reading the table (or
a materialized-view rollup fed by inserts) would count them twice until then. So
before inserting, :class:`StepSink` asks which of the batch's event_ids are already
stored and drops them. The question is asked along the table's sorting key
``(agent_id, ts, ...)`` so it only reads the granules the batch's events could be
in; see ``sinks/sql/0001_steps.sql``. It costs ~10 ms per 5,000-row batch (~20 ms
when the batch is all re-delivered), a few percent of the insert, so it is always on.

The check is exact for inserts made through one StepSink (calls are serialised).
Two processes storing the same events at the same moment can still both insert
them; the ReplacingMergeTree collapses that rare case at merge time.
"""

from __future__ import annotations

import logging
import re
import threading
import uuid
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from sinks.clickhouse import Client
from sinks.masking import mask, mask_attributes

log = logging.getLogger(__name__)

# StepEvent fields by how absent (None) is stored; see the DDL for why.
_TEXT = (
    "agent_version",
    "workflow",
    "owner",
    "environment",
    "tool",
    "action_class",
    "params_hash",
    "policy_outcome",
    "policy_rule",
    "model",
    "status",
    "outcome",
    "approver",
    "source_trust",
)
_ZERO = ("input_tokens", "output_tokens", "cost_usd")
_NULLABLE = ("latency_ms", "approved", "wait_ms")

COLUMNS: tuple[str, ...] = (
    "event_id",
    "ts",
    "agent_id",
    "run_id",
    "step",
    "kind",
    *_TEXT,
    *_ZERO,
    *_NULLABLE,
    "content",
    "injection_flagged",
    "attributes",
)

# The "already stored?" check asks for at most this many (agents, ts span) windows per
# batch, split where consecutive events are more than WINDOW_GAP_MS apart.
MAX_WINDOWS = 8
WINDOW_GAP_MS = 5_000
AGENTS_PARAM_BYTES = 64 * 1024

# An event_id that is not a UUID still gets a stable UUID, so a re-delivered copy of
# it is still recognised instead of failing the whole batch on insert.
_BAD_ID_NAMESPACE = uuid.UUID("5d0c1c8e-4e0c-4c8a-9a57-7a1f0e6b7c21")


_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _event_key(raw: Any) -> str:
    """The event id as ClickHouse prints a UUID (lowercase, hyphenated).

    Ids stay strings end to end: parsing 5,000 uuid.UUID objects per batch cost more than
    the rest of the column building (measured), and the driver writes strings directly.
    """
    if isinstance(raw, str):
        low = raw.lower()
        if _CANONICAL_UUID.fullmatch(low):
            return low
    try:
        return str(uuid.UUID(str(raw)))
    except ValueError:
        log.warning("event_id %r is not a UUID; storing it under a derived one", raw)
        return str(uuid.uuid5(_BAD_ID_NAMESPACE, str(raw)))


class StepSink:
    """Inserts batches of StepEvent dicts into ``table``; thread-safe, synchronous."""

    def __init__(self, client: Client, *, table: str = "steps", check_stored: bool = True):
        self._client = client
        self._table = table
        self._check_stored = check_stored
        # One insert at a time: two overlapping batches checked concurrently would
        # both see their shared events as new.
        self._lock = threading.Lock()

    def insert(self, events: list[dict[str, Any]]) -> int:
        """Store the events not stored yet; returns how many rows were inserted."""
        if not events:
            return 0
        keyed: dict[str, dict[str, Any]] = {}
        for event in events:
            keyed.setdefault(_event_key(event["event_id"]), event)
        with self._lock:
            if self._check_stored:
                for stored in self.stored_ids(keyed):
                    del keyed[stored]
            if not keyed:
                return 0
            self._client.insert(
                self._table,
                _columns(keyed),
                column_names=COLUMNS,
                column_oriented=True,
                # A replayed backlog can span many days (one partition each); the
                # default limit of 100 would make such a batch fail forever.
                settings={"max_partitions_per_insert_block": 0},
            )
        return len(keyed)

    def stored_ids(self, events: Mapping[str, Mapping[str, Any]]) -> set[str]:
        """Which of these events (keyed by canonical event_id) are already in the table."""
        found: set[str] = set()
        for agents, lo, hi in _windows(events.values()):
            # Asks for every stored id in the batch's (agent_id, ts) windows rather than
            # for the batch's ids: an id list must be escaped char by char by the
            # driver and parsed by the server (~25-45 ms per 5,000 ids, measured),
            # while a window costs a few ms. It returns little more than the batch's
            # own ids: an agent's events all arrive on one partition, so what else is
            # stored in its window is the neighbouring batches' edges.
            for part in _agent_groups(agents):
                rows = self._client.query(
                    f"SELECT toString(event_id) FROM {self._table}"
                    " WHERE agent_id IN {agents:Array(String)}"
                    " AND ts BETWEEN fromUnixTimestamp64Milli({lo:Int64}, 'UTC')"
                    " AND fromUnixTimestamp64Milli({hi:Int64}, 'UTC')",
                    parameters={"agents": part, "lo": lo, "hi": hi},
                ).result_rows
                found.update(row[0] for row in rows if row[0] in events)
        return found


def _windows(events: Iterable[Mapping[str, Any]]) -> list[tuple[list[str], int, int]]:
    """(agents, min ts, max ts) spans covering the events, cut at the widest gaps in ts.

    A straggler from an hour ago would otherwise stretch one window over the whole
    hour; cut off at a gap, it gets a window of its own just as wide as itself.
    """
    ordered = sorted(events, key=lambda e: e["ts"])
    gaps = sorted((ordered[i + 1]["ts"] - ordered[i]["ts"], i + 1) for i in range(len(ordered) - 1))
    cuts = sorted(i for gap, i in gaps[-(MAX_WINDOWS - 1) :] if gap > WINDOW_GAP_MS)
    windows = []
    for start, end in zip([0, *cuts], [*cuts, len(ordered)], strict=True):
        span = ordered[start:end]
        agents = sorted({e["agent_id"] for e in span})
        windows.append((agents, span[0]["ts"], span[-1]["ts"]))
    return windows


def _columns(keyed: dict[str, dict[str, Any]]) -> list[list[Any]]:
    events = list(keyed.values())
    cols: list[list[Any]] = [
        list(keyed),
        [e["ts"] for e in events],
        [e["agent_id"] for e in events],
        [e["run_id"] for e in events],
        [e["step"] for e in events],
        [e["kind"] for e in events],
    ]
    cols.extend([e.get(name) or "" for e in events] for name in _TEXT)
    cols.extend([e.get(name) or 0 for e in events] for name in _ZERO)
    cols.extend([e.get(name) for e in events] for name in _NULLABLE)
    cols.append([mask(e.get("content") or "") for e in events])
    cols.append([bool(e.get("injection_flagged")) for e in events])
    cols.append([mask_attributes(e.get("attributes")) for e in events])
    return cols


def _agent_groups(agents: list[str]) -> Iterator[list[str]]:
    # Over HTTP a large parameter travels as a form field, which ClickHouse caps at
    # 128 KiB (http_max_field_value_size); a batch from thousands of agents is split.
    group: list[str] = []
    size = 0
    for agent in agents:
        if group and size + len(agent) + 4 > AGENTS_PARAM_BYTES:
            yield group
            group, size = [], 0
        group.append(agent)
        size += len(agent) + 4  # quotes and ", " in the formatted array
    if group:
        yield group
