"""The ClickHouse writer: a child process of the worker that owns the ClickHouse client.

Storing steps costs Python work per row (re-decoding, masking, building columns: ~8-10 us a
row holding the GIL, plus chDB's own work for the insert and its rollup views). In the
worker's own process that work shared one interpreter lock with the detectors and took 45 %
of the throughput (measured on the bench backlog: 21,700 events/s with it, 39,000 without).
In a process of its own it runs on another core, and the stream only pickles the raw Kafka
records it hands over.

The stream sends the records themselves, not decoded events, with the indices of any events
it refused: the writer decodes them again, straight into columns
(:class:`~schemas.step_columns.StepColumnDecoder`), so it stores exactly the events the
detectors accepted, and a batch costs the stream one memory copy.

Why Python decodes at all, rather than handing ClickHouse the raw JSON (JSONEachRow) or the
bare Avro frames wrapped in one object container (FORMAT Avro): measured on 50,000 bench-fleet
rows into a Null-engine copy of ``steps`` (parsing only), JSONEachRow cost 4.4 CPU us a row
and Avro 3.4, against 1.0 for the Arrow table; and the writer would still have to read every
event's id, agent, time, content and attributes in Python (masking, ids, the "already
stored?" check: ~2.2 us a row for just those fields with msgspec). The Python decode of a
one-event run is ~3-4.5 us a row, so it stays, and ClickHouse gets Arrow.

With chDB the child is the one process holding the data directory (which is why the
dashboards of ``tripwire run`` are served from here too). If the child dies, the next call
starts a new one; the sink buffer's retries carry the batch over, and nothing is acked before
it is stored. If the worker dies, the child sees its pipe close and exits.
"""

from __future__ import annotations

import gc
import logging
import multiprocessing
import os
import threading
import time
from array import array
from collections.abc import Iterable, Iterator, Mapping, Sequence
from itertools import repeat
from multiprocessing.connection import Connection
from operator import itemgetter
from typing import Any, NamedTuple

log = logging.getLogger("tripwire.sink")

# chDB locks its directory per process; a writer restarted right after its predecessor died
# waits for the kernel to drop that lock rather than failing at once.
OPEN_RETRY_S = 15.0
WRITER_NICENESS = 10


class WriterError(RuntimeError):
    """The writer process failed a request, or is gone."""


class ClickHouseWriter:
    """Inserts steps, breaker rows and audit rows through a child process (thread-safe)."""

    def __init__(self, dsn: str, retention_days: int,
                 dashboards: tuple[Any, ...] | None = None, start_timeout_s: float = 120,
                 clickhouse_http: Any = None) -> None:
        """``clickhouse_http``: an :class:`~tripwire.sinks.clickhouse_http.HttpAddress` on
        which the child also answers ClickHouse's HTTP protocol (``tripwire run``)."""
        self.dsn = dsn
        self.clickhouse_http = clickhouse_http
        self.retention_days = retention_days
        self.dashboards = dashboards
        self.dashboard_url: str | None = None
        self.start_timeout_s = start_timeout_s
        self._ctx = multiprocessing.get_context("spawn")
        self._proc: Any = None
        self._conn: Connection | None = None
        self._lock = threading.Lock()
        self._recheck = False

    def start(self) -> ClickHouseWriter:
        """Start the child and wait until ClickHouse is migrated; WriterError if it cannot."""
        with self._lock:
            self._spawn()
        return self

    def insert_steps(self, records: Sequence[tuple]) -> int:
        """Store the events of these agent-steps records (value, content type, partition,
        offset, refused event indices) that are not stored yet; how many rows were added."""
        recheck, self._recheck = self._recheck, False
        try:
            return int(self._call("steps", _payload(records), recheck))
        except BaseException:
            self._recheck = self._recheck or recheck
            raise

    def recheck(self) -> None:
        """The stream's partitions changed hands: check each one's next rows for copies
        stored by another worker (see :class:`~sinks.step_sink.StepSink`)."""
        self._recheck = True

    def insert_breaker(self, detections: Sequence[Mapping[str, Any]],
                       controls: Sequence[Mapping[str, Any]]) -> None:
        if detections or controls:
            self._call("breaker", list(detections), list(controls))

    def insert_audit(self, table: str, rows: Sequence[Mapping[str, Any]]) -> int:
        return int(self._call("audit", table, list(rows))) if rows else 0

    def applied_nonces(self, since_ms: int) -> list[dict[str, Any]]:
        """Nonces of the operator commands applied since ``since_ms`` (from the audit table)."""
        return list(self._call("applied_nonces", since_ms))

    def close(self, timeout_s: float = 30) -> None:
        with self._lock:
            if self._conn is not None:
                try:
                    self._conn.send(("close", ()))
                    self._conn.recv()
                except (EOFError, OSError):
                    pass
                self._conn.close()
                self._conn = None
            if self._proc is not None:
                self._proc.join(timeout_s)
                if self._proc.is_alive():
                    self._proc.kill()
                    self._proc.join()
                self._proc = None

    def _call(self, kind: str, *payload: Any) -> Any:
        with self._lock:
            if self._proc is None or not self._proc.is_alive():
                self._spawn()
            assert self._conn is not None
            try:
                self._conn.send((kind, payload))
                status, value = self._conn.recv()
            except (EOFError, OSError) as exc:
                self._discard()
                raise WriterError(f"ClickHouse writer process died: {exc!r}") from exc
        if status != "ok":
            raise WriterError(value)
        return value

    def _spawn(self) -> None:
        self._discard()
        parent, child = self._ctx.Pipe()
        proc = self._ctx.Process(
            target=serve, name="tripwire-clickhouse-writer", daemon=True,
            args=(child, self.dsn, self.retention_days, self.dashboards, self.clickhouse_http))
        proc.start()
        child.close()
        self._proc, self._conn = proc, parent
        if not parent.poll(self.start_timeout_s):
            self._discard()
            raise WriterError(f"ClickHouse writer did not start in {self.start_timeout_s:.0f} s")
        try:
            status, value = parent.recv()
        except EOFError:
            self._discard()
            raise WriterError("ClickHouse writer exited while starting") from None
        if status != "ready":
            self._discard()
            raise WriterError(value)
        self.dashboard_url = value

    def _discard(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._proc is not None:
            if self._proc.is_alive():
                self._proc.kill()
            self._proc.join()
            self._proc = None


def serve(conn: Connection, dsn: str, retention_days: int,
          dashboards: tuple[Any, ...] | None, clickhouse_http: Any = None) -> None:
    """The child's main loop: one request at a time, answered ("ok", value) or ("error", why)."""
    # When the cores are contended, detection should win over storage: a slower insert only
    # delays acks (and back-pressure, if it lasts), a slower detector delays every control.
    os.nice(WRITER_NICENESS)
    # The driver logs a failed request before raising it; the error reaches the worker anyway,
    # which reports it in one line (without this the child's records print bare on stderr).
    logging.getLogger("clickhouse_connect").setLevel(logging.CRITICAL)
    # Imported here: the parent only needs the proxy, and the child pays for the rest.
    from tripwire.schemas.step_columns import StepColumnDecoder
    from tripwire.sinks.breaker_sink import BreakerSink
    from tripwire.sinks.clickhouse import connect, redact
    from tripwire.sinks.control_audit import AuditSink
    from tripwire.sinks.migrations import migrate
    from tripwire.sinks.step_sink import StepSink
    from tripwire.streams.step_json import FastJsonStepBatchCodec

    try:
        client = _open(connect, dsn)
        migrate(client, retention_days)
        dashboard = http_interface = None
        if dashboards is not None:
            from tripwire.dashboards.server import DashboardServer

            dashboard = DashboardServer(client, *dashboards).start()
        if clickhouse_http is not None:
            from tripwire.sinks.clickhouse_http import ClickHouseHttpInterface

            http_interface = ClickHouseHttpInterface(clickhouse_http, connect(dsn)).start()
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which fails fast
        from tripwire.schemas.service_errors import ServiceError

        # A ServiceError already names the ClickHouse and what to set.
        conn.send(("error", str(exc) if isinstance(exc, ServiceError)
                   else f"cannot start ClickHouse writer for {redact(dsn)}: {exc}"))
        return
    steps, breaker, audit = StepSink(client), BreakerSink(client), AuditSink(client)
    decoder = StepColumnDecoder(FastJsonStepBatchCodec())
    _warm_up(decoder)
    conn.send(("ready", dashboard.url if dashboard is not None else None))
    # What start-up built lives as long as the process: out of the collector's way. Batches
    # make no reference cycles, so young collections only need to run now and then.
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 20, 50)
    try:
        while True:
            try:
                kind, payload = conn.recv()
            except EOFError:
                return  # the worker is gone
            if kind == "close":
                conn.send(("ok", None))
                return
            try:
                if kind == "steps":
                    records, recheck = payload
                    if recheck:
                        steps.recheck()
                    # No collection while a batch is built: its tens of thousands of new
                    # containers (attribute maps, the unpickled records) set off young and
                    # middle collections that found nothing to free and took ~5 % of the
                    # writer's samples (py-spy, 900,000 SDK-shaped events); the collector
                    # runs again once the batch is stored and its objects are gone.
                    gc.disable()
                    try:
                        result: Any = steps.insert_columns(_columns_of(decoder, records))
                    finally:
                        gc.enable()
                elif kind == "breaker":
                    result = breaker.insert(*payload)
                elif kind == "audit":
                    result = audit.insert(*payload)
                elif kind == "applied_nonces":
                    result = audit.applied_nonces(*payload)
                else:
                    raise ValueError(f"unknown request {kind!r}")
            except Exception as exc:  # noqa: BLE001 - the parent retries; nothing is acked
                conn.send(("error", f"{type(exc).__name__}: {exc}"))
            else:
                conn.send(("ok", result))
    finally:
        if dashboard is not None:
            dashboard.stop()
        if http_interface is not None:
            http_interface.stop()
        client.close()


def _warm_up(decoder: Any) -> None:
    """What the first batch would otherwise do on top of its own work, done before the worker
    starts: imports (pandas, which the driver's insert looks for, and the decode paths'),
    the masking rules' compilation, Arrow's compute kernels. They were ~15 % of the writer's
    samples over a 100,000-event drain (py-spy), all of it delaying the first commit."""
    from clickhouse_connect.driver import options

    from tripwire.sinks.masking import mask, mask_attributes
    from tripwire.sinks.step_sink import _event_keys

    getattr(options, "pd", None)
    _columns_of(decoder, [])
    mask("warm-up: user@example.com 4111 1111 1111 1111 api_key=abcdef0123456789")
    mask_attributes({"note": "warm-up"})
    _event_keys(["00000000-0000-4000-8000-000000000000"])


def _columns_of(decoder: Any, records: Iterable[Any]) -> Any:
    """The StepColumns of the accepted events of a batch's records (see ``insert_steps``).

    Consecutive one-event records of one kind (bare StepEvent frames in the current schema,
    or JSON objects) are decoded as a run, in one call (see
    :meth:`~schemas.step_columns.StepColumnDecoder.add_bare_events` and
    :func:`~streams.step_json.decode_object_rows`); anything else, and every record of a run
    the run's call refuses, goes through the per-record path, with the same values."""
    from tripwire.schemas.codec import HEADER_SIZE, DecodeError, _is_json
    from tripwire.schemas.step_columns import DecodedSteps
    from tripwire.streams.step_decoding import is_routed
    from tripwire.streams.step_json import decode_object_rows

    batch = decoder.new_batch()
    bare = decoder.event_header
    # The current run: its kind (AVRO or JSON), a content type of its JSON records, and its
    # records' values, partitions and offsets.
    kind: int | None = None
    json_type: str | None = None
    values: list[bytes] = []
    partitions: list[int | None] = []
    offsets: list[int] = []

    def add(value: bytes, ctype: str | None, partition: int | None, offset: int,
            refused: tuple[int, ...]) -> None:
        try:
            decoder.add(batch, value, ctype, partition, offset, refused)
        except DecodeError as exc:
            # The stream accepted it, so this is not the producer's fault; the detectors saw
            # its events, and only the storage misses them.
            log.error("cannot store record %s@%s: %s", offset, partition, exc.reason)

    def add_run() -> None:
        nonlocal kind
        if kind == _AVRO:
            try:
                decoder.add_bare_events(batch, values, partitions, offsets)
            except DecodeError:
                for value, partition, offset in zip(values, partitions, offsets, strict=True):
                    add(value, None, partition, offset, ())  # find and report the bad one
        else:
            rows = decode_object_rows(values)
            if rows is not None and None not in rows:
                batch.add_rows(DecodedSteps(rows, partitions, offsets))  # type: ignore[arg-type]
            else:
                for i, (value, partition, offset) in enumerate(
                        zip(values, partitions, offsets, strict=True)):
                    row = rows[i] if rows is not None else None
                    if row is None:
                        add(value, json_type, partition, offset, ())
                    else:
                        batch.add_rows(DecodedSteps([row], [partition], [offset]))
        kind = None
        values.clear()
        partitions.clear()
        offsets.clear()

    def add_one(value: bytes, ctype: str | None, partition: int | None, offset: int,
                refused: tuple[int, ...]) -> None:
        nonlocal kind, json_type
        # Routed records can repeat under new offsets: no partition, so every one of their
        # rows is checked against stored ids.
        partition = None if is_routed(ctype) else partition
        if refused:
            this = None
        elif ctype is None:
            this = _AVRO if value[:HEADER_SIZE] == bare else None
        else:
            this = _JSON if value[:1] == b"{" and _is_json(ctype) else None
        if this != kind and kind is not None:
            add_run()
        if this is None:
            add(value, ctype, partition, offset, refused)
            return
        kind = this
        if this == _JSON:
            json_type = ctype
        values.append(value)
        partitions.append(partition)
        offsets.append(offset)

    for record in records:
        if isinstance(record, DecodedSteps):
            if kind is not None:
                add_run()
            batch.add_rows(record)
            continue
        if isinstance(record, _Unpacked):
            for one in record:
                add_one(*one)
            continue
        if isinstance(record, _Packed):
            whole = _whole_run(record, bare)
            if whole is not None:
                # One kind throughout (the usual backlog): one run, no per-record step.
                if kind is not None:
                    add_run()
                kind, json_type = whole, record.ctype
                values[:] = record.values
                partitions[:] = record.partitions
                offsets[:] = record.offsets
                add_run()
            else:
                for one in _unpacked([record]):
                    add_one(*one)
            continue
        add_one(*record)
    if kind is not None:
        add_run()
    return batch


def _whole_run(packed: _Packed, bare: bytes) -> int | None:
    """_AVRO or _JSON if every record of ``packed`` goes into one run of that kind."""
    from tripwire.schemas.codec import _is_json
    from tripwire.streams.step_decoding import is_routed

    if packed.ctypes is not None or packed.refused is not None:
        return None
    values = packed.values
    if packed.ctype is None:
        return _AVRO if all(map(bytes.startswith, values, repeat(bare))) else None
    if _is_json(packed.ctype) and not is_routed(packed.ctype) and all(
            map(bytes.startswith, values, repeat(b"{"))):
        return _JSON
    return None


_AVRO, _JSON = 1, 2


class _Packed(NamedTuple):
    """A run of (value, content type, partition, offset, refused) records as a few objects:
    the values as one list, the partitions and offsets as arrays, the content type once.
    Sent through the pipe, 50,000 one-JSON-event records cost the worker's interpreter ~0.8
    CPU us a record against ~1.0 as tuples, and the writer ~0.1 to unpickle against ~0.5
    (bench fleet; joining the values into one bytes object cost the worker more, ~1.4-2.0:
    one more copy of every value)."""

    values: list[bytes]
    ctype: str | None
    """The content type of every record, or None when ``ctypes`` holds each one's."""
    ctypes: list[str | None] | None
    partitions: array[int]
    offsets: array[int]
    refused: list[tuple[int, ...]] | None
    """Each record's refused event indices, or None where no record has any."""


def _payload(records: Sequence[Any]) -> list[Any]:
    """What ``insert_steps`` sends the child for these records: runs of plain records packed
    (see :class:`_Packed`), DecodedSteps as they are, in the records' order."""
    from tripwire.schemas.step_columns import DecodedSteps

    out: list[Any] = []
    start = 0
    for i, record in enumerate(records):
        if isinstance(record, DecodedSteps):
            if start < i:
                out.append(_pack(records[start:i]))
            out.append(record)
            start = i + 1
    if start < len(records):
        out.append(_pack(records[start:] if start else records))
    return out


def _pack(records: Sequence[tuple]) -> Any:
    """The records as one :class:`_Packed`, or as they are if they do not fit one (a
    partition or offset that is not a 64-bit int, a value that is not bytes)."""
    try:
        return _packed(records)
    except (TypeError, ValueError, OverflowError, IndexError):
        return _Unpacked(records)


class _Unpacked(list):  # type: ignore[type-arg]
    """Records sent as they are (see ``_pack``)."""


def _packed(records: Sequence[tuple]) -> _Packed:
    # A pass per field, not zip(*records): that makes an iterator per record, a burst of
    # tracked objects that set off collections over the worker's whole heap.
    values = list(map(itemgetter(0), records))
    ctypes = list(map(itemgetter(1), records))
    refused = list(map(itemgetter(4), records))
    first = ctypes[0]
    same = ctypes.count(first) == len(ctypes)
    return _Packed(values, first if same else None, None if same else ctypes,
                   array("q", map(itemgetter(2), records)),
                   array("q", map(itemgetter(3), records)), refused if any(refused) else None)


def _unpacked(payload: Sequence[Any]) -> Iterator[Any]:
    """The records ``_payload`` packed, in order."""
    for item in payload:
        if isinstance(item, _Unpacked):
            yield from item
            continue
        if not isinstance(item, _Packed):
            yield item
            continue
        values = item.values
        n = len(values)
        ctypes = item.ctypes if item.ctypes is not None else repeat(item.ctype, n)
        refused = item.refused if item.refused is not None else repeat((), n)
        yield from zip(values, ctypes, item.partitions, item.offsets, refused, strict=True)


def _open(connect: Any, dsn: str) -> Any:
    deadline = time.monotonic() + OPEN_RETRY_S
    while True:
        try:
            return connect(dsn)
        except RuntimeError:
            # Only a chDB dir is worth waiting for (its previous owner may still be exiting);
            # an unreachable server is reported at once.
            if time.monotonic() > deadline or not dsn.startswith("chdb:"):
                raise
            time.sleep(0.2)
