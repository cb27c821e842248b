"""Store StepEvents in ClickHouse: masked, column-oriented, each event at most once.

After a crash the worker re-reads records it had already stored; ReplacingMergeTree
collapses those copies only at some later merge, and anything reading the table (or
a materialized-view rollup fed by inserts) would count them twice until then. So
before inserting, :class:`StepSink` asks which of the batch's event_ids are already
stored and drops them. The question is asked along the table's sorting key
``(agent_id, ts, ...)`` so it only reads the granules the batch's events could be
in; see ``sinks/sql/0001_steps.sql``. It costs ~10 ms per 5,000-row batch (~20 ms
when the batch is all re-delivered), so it is asked only where a re-delivery can be: for
rows from Kafka, until a partition's rows are found new (see :class:`StepSink`).

The check is exact for inserts made through one StepSink (calls are serialised).
Two processes storing the same events at the same moment can still both insert
them; the ReplacingMergeTree collapses that rare case at merge time.
"""

from __future__ import annotations

import heapq
import logging
import re
import threading
import uuid
from collections.abc import Iterable, Iterator, Mapping
from operator import itemgetter, sub
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from tripwire.schemas.step_columns import StepColumns
from tripwire.sinks.clickhouse import Client
from tripwire.sinks.masking import mask, mask_attributes

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
    """Inserts batches of StepEvents into ``table``; thread-safe, synchronous.

    Which rows to check: after a crash or a rebalance, what a partition re-delivers is a run
    of its records from the last committed offset on, and what of it is already stored is a
    prefix of that run (inserts go in offset order, one batch at a time). So once a batch
    finds none of a partition's rows stored, the partition's later records are new too, and
    they skip the check until an offset at or below one already inserted shows up (a
    re-delivery) or :meth:`recheck` is called (the partitions changed hands). Rows without a
    partition (:meth:`insert`) are always checked.
    """

    def __init__(self, client: Client, *, table: str = "steps", check_stored: bool = True):
        self._client = client
        self._table = table
        self._in_process = type(client).__name__ == "ChdbClient"
        self._check_stored = check_stored
        # partition -> highest offset inserted since its rows were last found all new
        self._clean: dict[int, int] = {}
        # One insert at a time: two overlapping batches checked concurrently would
        # both see their shared events as new.
        self._lock = threading.Lock()

    def insert(self, events: list[dict[str, Any]]) -> int:
        """Store the events not stored yet; returns how many rows were inserted."""
        batch = StepColumns(COLUMNS)  # the columns are named as the fields
        batch.append_events(events)
        return self.insert_columns(batch)

    def recheck(self) -> None:
        """Check every partition's next rows again (its records may have been stored by
        another worker meanwhile)."""
        with self._lock:
            self._clean.clear()

    def insert_columns(self, batch: StepColumns) -> int:
        """Store the batch's events not stored yet; returns how many rows were inserted."""
        if not len(batch):
            return 0
        ids = _event_keys(batch.column("event_id"))
        if len(set(ids)) != len(ids):
            first: dict[str, int] = {}
            for i, key in enumerate(ids):
                first.setdefault(key, i)
            batch.keep(list(first.values()))
            ids = list(first)
        with self._lock:
            if self._check_stored:
                ids = self._drop_stored(batch, ids)
            if not ids:
                return 0
            touched: dict[int, int] = {}
            for p, o in zip(batch.partitions, batch.offsets, strict=True):
                if p is not None and o is not None and o > touched.get(p, -1):
                    touched[p] = o
            try:
                # Arrow, not the driver's Native format: pyarrow converts each column list in
                # C, and ClickHouse parses Arrow in C++, where the driver serialised Native
                # value by value in Python (LowCardinality dictionaries, UUIDs). Bench fleet,
                # chDB 26.9, 100,000 SDK-shaped rows (bench/writer_insert.py): building the
                # columns 2.3 -> 2.6 us a row, the insert 5.3 -> 3.6 us in 50,000-row inserts
                # (7.0 -> 5.5 in 20,000-row ones); the stored rows and every rollup are
                # identical. Over HTTP it is one request body in Arrow's IPC format.
                self._insert_arrow(_arrow_table(batch, ids))
            except BaseException:
                # Some of the insert's parts may have been written: check these again.
                for p in touched:
                    self._clean.pop(p, None)
                raise
            for p, offset in touched.items():
                if p in self._clean:
                    self._clean[p] = max(self._clean[p], offset)
        return len(ids)

    def _insert_arrow(self, table: pa.Table) -> None:
        settings = {
            # A replayed backlog can span many days (one partition each); the default limit
            # of 100 would make such a batch fail forever.
            "max_partitions_per_insert_block": 0,
            # Merging the block's equal sorting keys on insert finds nothing here: the batch
            # holds each event_id once and every rollup view's block is already grouped by
            # its table's key. Skipping it cut the insert's CPU by ~15 % (7.1 -> 6.1 us a row).
            "optimize_on_insert": 0,
            # An absent field arrives as an Arrow null and is stored as its column's default
            # ('' for text and enums, 0 for tokens and cost, false, {}), as the DDL says;
            # Nullable columns keep the null. The server defaults, set here so a server
            # configured otherwise cannot turn absent fields into failed inserts (the first
            # for Arrow input, the second for chDB's INSERT ... SELECT below).
            "input_format_null_as_default": 1,
            "insert_null_as_default": 1,
        }
        if not self._in_process:
            # Over HTTP it is one request body in Arrow's IPC format.
            self._client.insert_arrow(self._table, table, settings=settings)
            return
        # chDB reads the table where it is, in this process: the driver's insert_arrow
        # serialises it to Arrow's IPC format in a temporary file for chDB to read back,
        # ~12 % of the writer's samples (py-spy, one JSON event per record) and 4.0 -> 3.4
        # CPU us a row for the insert (50,000 bench-fleet rows, steps and its views). chDB
        # finds the table by this local's name, up the caller's frames.
        _tripwire_steps_arrow = table  # noqa: F841 - read by chDB's Python() table function
        try:
            self._client.command(
                f"INSERT INTO {self._table} ({', '.join(table.column_names)})"
                " SELECT * FROM Python(_tripwire_steps_arrow)", settings=settings)
        except Exception as exc:
            # Whatever failed, the caller's retry goes through the driver's insert_arrow (the
            # same rows), so a chDB that cannot read the table in place loses only speed.
            self._in_process = False
            log.warning("chDB insert from the Arrow table in place failed (%s); inserting "
                        "through the driver from now on", exc)
            raise

    def _drop_stored(self, batch: StepColumns, ids: list[str]) -> list[str]:
        clean = self._clean
        suspect = [i for i, (p, o) in enumerate(zip(batch.partitions, batch.offsets, strict=True))
                   if p is None or o is None or p not in clean or o <= clean[p]]
        if not suspect:
            return ids
        agents, ts = batch.column("agent_id"), batch.column("ts")
        checked = {ids[i]: (agents[i], ts[i]) for i in suspect}
        stored = self.stored_ids(checked)
        dirty = {batch.partitions[i] for i in suspect if ids[i] in stored}
        for i in suspect:
            p, o = batch.partitions[i], batch.offsets[i]
            if p is not None and o is not None and p not in dirty:
                clean[p] = max(clean.get(p, o), o)
        if not stored:
            return ids
        keep = [i for i, key in enumerate(ids) if key not in stored]
        batch.keep(keep)
        return [ids[i] for i in keep]

    def stored_ids(self, events: Mapping[str, tuple[str, int]]) -> set[str]:
        """Which of these events (canonical event_id -> (agent_id, ts)) are already stored."""
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


def _event_keys(raw: list[Any]) -> list[str]:
    """:func:`_event_key` of each id: the ids themselves when all are canonical already (the
    usual batch), checked in one Arrow pass instead of a regex match and a lower() each (~0.4
    us a row of the writer's, bench fleet)."""
    try:
        arr = pa.array(raw, pa.string())
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return list(map(_event_key, raw))
    if not arr.null_count and pc.all(pc.match_substring_regex(arr, _CANONICAL_UUID_ARROW)).as_py():
        return raw
    return list(map(_event_key, raw))


_CANONICAL_UUID_ARROW = f"^{_CANONICAL_UUID.pattern}$"


def _windows(rows: Iterable[tuple[str, int]]) -> list[tuple[list[str], int, int]]:
    """(agents, min ts, max ts) spans covering the (agent_id, ts) rows, cut at the widest
    gaps in ts.

    A straggler from an hour ago would otherwise stretch one window over the whole
    hour; cut off at a gap, it gets a window of its own just as wide as itself.
    """
    ordered = sorted(rows, key=itemgetter(1))
    ts = list(map(itemgetter(1), ordered))
    # The widest MAX_WINDOWS - 1 gaps (ties: the later one), without sorting them all.
    gaps = heapq.nlargest(MAX_WINDOWS - 1,
                          zip(map(sub, ts[1:], ts), range(1, len(ts)), strict=True))
    cuts = sorted(i for gap, i in gaps if gap > WINDOW_GAP_MS)
    windows = []
    for start, end in zip([0, *cuts], [*cuts, len(ordered)], strict=True):
        span = ordered[start:end]
        agents = sorted({agent for agent, _ in span})
        windows.append((agents, span[0][1], span[-1][1]))
    return windows


# Arrow type of each stored column whose values are not text. Text and enum fields go as
# strings (LowCardinality and UUID columns parse them); the insert converts the rest.
_ARROW_TYPES: dict[str, pa.DataType] = {
    "ts": pa.timestamp("ms", tz="UTC"),
    "step": pa.int32(),
    "input_tokens": pa.int64(),
    "output_tokens": pa.int64(),
    "cost_usd": pa.float64(),
    "latency_ms": pa.int64(),
    "approved": pa.bool_(),
    "wait_ms": pa.int64(),
    "injection_flagged": pa.bool_(),
    "attributes": pa.map_(pa.string(), pa.string()),
}


def _arrow_table(batch: StepColumns, ids: list[str]) -> pa.Table:
    """The batch as the Arrow table inserted into ``steps``: canonical event ids, masked
    content and attribute values, absent fields as nulls (stored as their column's default,
    see the insert's ``input_format_null_as_default``)."""
    col = dict(zip(batch.fields, batch.columns, strict=True))
    values: dict[str, list[Any]] = {name: col[name] for name in COLUMNS}
    values["event_id"] = ids
    # Masked here and nowhere else: these two are the only free text a step carries.
    values["content"] = [mask(v) if v else None for v in col["content"]]
    values["attributes"] = [mask_attributes(v) if v else None for v in col["attributes"]]
    return pa.table({name: pa.array(values[name], _ARROW_TYPES.get(name, pa.string()))
                     for name in COLUMNS})


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
