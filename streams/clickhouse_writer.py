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
from collections.abc import Mapping, Sequence
from multiprocessing.connection import Connection
from typing import Any

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
    conn.send(("ready", dashboard.url if dashboard is not None else None))
    steps, breaker, audit = StepSink(client), BreakerSink(client), AuditSink(client)
    decoder = StepColumnDecoder(FastJsonStepBatchCodec())
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


def _columns_of(decoder: Any, records: Sequence[Any]) -> Any:
    """The StepColumns of the accepted events of a batch's records (see ``insert_steps``)."""
    from tripwire.schemas.codec import HEADER_SIZE, DecodeError
    from tripwire.schemas.step_columns import DecodedSteps
    from tripwire.streams.step_decoding import is_routed

    batch = decoder.new_batch()
    bare = decoder.event_header
    run: list[tuple[bytes, int | None, int]] = []  # consecutive bare StepEvent frames

    def add(value: bytes, ctype: str | None, partition: int | None, offset: int,
            refused: tuple[int, ...]) -> None:
        try:
            decoder.add(batch, value, ctype, partition, offset, refused)
        except DecodeError as exc:
            # The stream accepted it, so this is not the producer's fault; the detectors saw
            # its events, and only the storage misses them.
            log.error("cannot store record %d@%d: %s", offset, partition, exc.reason)

    def add_run() -> None:
        try:
            decoder.add_bare_events(batch, *zip(*run, strict=True))
        except DecodeError:
            for value, partition, offset in run:  # find and report the bad one
                add(value, None, partition, offset, ())
        run.clear()

    for record in records:
        if isinstance(record, DecodedSteps):
            if run:
                add_run()
            batch.add_rows(record)
            continue
        value, ctype, partition, offset, refused = record
        # Routed records can repeat under new offsets: no partition, so every one of their
        # rows is checked against stored ids.
        partition = None if is_routed(ctype) else partition
        if ctype is None and not refused and value[:HEADER_SIZE] == bare:
            run.append((value, partition, offset))
            continue
        if run:
            add_run()
        add(value, ctype, partition, offset, refused)
    if run:
        add_run()
    return batch


def _payload(records: Sequence[Any]) -> list[Any]:
    """What ``insert_steps`` sends the child for these records."""
    return list(records)


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
