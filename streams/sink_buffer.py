"""Batches rows for ClickHouse and acknowledges Kafka offsets only after they are stored.

The stream processes small batches for detection latency (tens of ms); ClickHouse wants few,
large inserts (thousands of rows, about a second apart). This buffer decouples the two: the
stream hands over rows together with the Faust events that carried them, and the events are
acked once their rows are in ClickHouse — so a crash loses nothing, and what is re-delivered
is deduplicated by the sinks.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

log = logging.getLogger("tripwire.sink")

# When the writer falls behind, the batches sealed meanwhile go into one insert, up to this
# many rows: an insert into chDB costs ~65 ms of fixed work (the steps part, then each rollup
# view's part) besides ~4-6 us a row, so a lagging writer that took its queue one 20,000-row
# batch at a time spent ~7.2 us a row, and ~4.4 us in 50,000-row inserts (CPU of the insert,
# bench fleet, chDB 26.9; 4.2 us in 100,000-row inserts: most of the gain is had by 50,000,
# and a bigger insert holds back the acks, and so the commits, of every batch in it).
# When the writer keeps up, batches go one at a time as sealed.
MAX_COALESCED_ROWS = 50_000

# A partial batch is sealed as soon as nothing has been added to it for this long, once it
# holds at least IDLE_SEAL_ROWS: a backlog's last rows, or a burst's, are stored when the
# burst ends instead of when the batch is ``flush_seconds`` old. A worker under load adds a
# chunk every fetch (20 ms apart on the embedded broker), so only a stream that has really
# stopped waits this long. Measured (bench/worker_cpu.py, 100,000 one-event JSON records):
# the last 16,165 rows waited 0.7 s for the flush timer, a quarter of the 3.0 s drain.
IDLE_SEAL_S = 0.2
# ClickHouse's guidance for inserts: at least 1,000 rows each (or at most one a second, which
# ``flush_seconds`` keeps for smaller batches); an insert costs ~65 ms however small here.
IDLE_SEAL_ROWS = 1_000


class Store(Protocol):
    """Where sealed batches go: :class:`~streams.clickhouse_writer.ClickHouseWriter`."""

    def insert_steps(self, records: Sequence[tuple]) -> int: ...

    def recheck(self) -> None: ...

    def insert_breaker(self, detections: Sequence[Mapping[str, Any]],
                       controls: Sequence[Mapping[str, Any]]) -> None: ...

    def insert_audit(self, table: str, rows: Sequence[Mapping[str, Any]]) -> int: ...

    def applied_nonces(self, since_ms: int) -> list[dict[str, Any]]: ...


Ack = Callable[[], Awaitable[Any]]


@dataclass
class SinkCounters:
    rows_stored: int = 0
    rows_offered: int = 0
    inserts: int = 0
    retries: int = 0


@dataclass
class _Pending:
    steps: list[tuple] = field(default_factory=list)
    """agent-steps records with accepted events, as
    :data:`~streams.step_processor.StoredRecord`; the store decodes and stores those events."""
    rows: int = 0
    detections: list[Mapping[str, Any]] = field(default_factory=list)
    controls: list[Mapping[str, Any]] = field(default_factory=list)
    audit: dict[str, list[Mapping[str, Any]]] = field(default_factory=dict)
    acks: list[Ack] = field(default_factory=list)
    since: float = field(default_factory=time.monotonic)
    last_add: float = field(default_factory=time.monotonic)
    durable: Awaitable[None] | None = None
    """Completes once what the acks commit is durable elsewhere too (see ``checkpoint``)."""

    def __bool__(self) -> bool:
        return bool(self.steps or self.acks or self.detections or self.controls or self.audit)


class SinkBuffer:
    """Collects rows into batches; a thread inserts them in order, then the loop acks them.

    The insert of a sealed batch starts at once, on the buffer's own thread, however busy the
    stream keeps the event loop. It used to be an asyncio task, which ran only when the stream
    yielded: while a backlog was queued the stream never did until ``max_inflight`` batches
    were waiting, so the stream and the writer process took turns instead of running side by
    side (bench, 100,000 one-event records: the machine had ~0.8 of its 2 cores idle during
    the drain). Only the acks, which must run on the loop, wait for it to be free.

    The stream only waits when ``max_inflight`` (8) sealed batches are not yet acked: that is
    the back-pressure from a slow ClickHouse, and otherwise inserts never sit on the
    detection path.
    """

    def __init__(self, store: Store, *, max_rows: int, flush_seconds: float, max_inflight: int = 8,
                 checkpoint: Callable[[], Awaitable[Awaitable[None]]] | None = None,
                 after_acks: Callable[[], Awaitable[Any]] | None = None) -> None:
        self.store = store
        self.max_rows = max_rows
        self.flush_seconds = flush_seconds
        self.counters = SinkCounters()
        # Runs as each batch is sealed: what the batch's acks commit must be durable elsewhere
        # too (the stream's detector state) before any of them can happen. It returns an
        # awaitable for that durability, which the batch's insert does not wait for (the
        # stream and the insert go on while the broker confirms), only its acks.
        self._checkpoint = checkpoint
        # Runs once a stored group's acks are done: the stream commits them then rather than
        # at its next commit timer (up to 1 s later: on a 4-5 s bench drain that wait alone
        # was 10-20 % of the time from the first take to the commit of the last event, and
        # what a crash meanwhile would have re-delivered).
        self._after_acks = after_acks
        self._pending = _Pending()
        self._space = asyncio.Semaphore(max_inflight)
        # Sealed batches not yet taken by the insert thread, in seal order; guarded by
        # ``_wake``, which also tells the thread to stop.
        self._sealed: deque[_Pending] = deque()
        self._wake = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        # Groups the thread has stored, handed back to the loop to ack in seal order.
        self._stored: asyncio.Queue[list[_Pending]] = asyncio.Queue()
        self._acker: asyncio.Task[None] | None = None
        self._unacked = 0
        self._all_acked = asyncio.Event()
        self._all_acked.set()

    async def add(self, steps: list[tuple], rows: int, detections: list[Mapping[str, Any]],
                  controls: list[Mapping[str, Any]], acks: list[Ack],
                  audit: Mapping[str, list[Mapping[str, Any]]] | None = None) -> None:
        """``steps`` are StoredRecords holding ``rows`` valid events between them."""
        p = self._pending
        p.steps += steps
        p.rows += rows
        p.detections += detections
        p.controls += controls
        p.acks += acks
        for table, table_rows in (audit or {}).items():
            p.audit.setdefault(table, []).extend(table_rows)
        self.counters.rows_offered += rows
        p.last_add = time.monotonic()
        if p.rows >= self.max_rows:
            await self._seal()

    async def flush_if_due(self) -> None:
        """Seal the pending batch if it is ``flush_seconds`` old, or if it holds
        IDLE_SEAL_ROWS and nothing has been added for IDLE_SEAL_S (the stream has stopped)."""
        p = self._pending
        if not p:
            return
        now = time.monotonic()
        if (now - p.since >= self.flush_seconds
                or (p.rows >= IDLE_SEAL_ROWS and now - p.last_add >= IDLE_SEAL_S)):
            await self._seal()

    async def flush(self) -> None:
        """Seal what is pending and wait until everything sealed so far is stored and acked."""
        if self._pending:
            await self._seal()
        self._ensure_acker()
        await self._all_acked.wait()

    async def _seal(self) -> None:
        batch, self._pending = self._pending, _Pending()
        if self._checkpoint is not None:
            batch.durable = await self._checkpoint()
        await self._space.acquire()
        self._unacked += 1
        self._all_acked.clear()
        self._ensure_acker()
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._insert_forever, args=(asyncio.get_running_loop(),),
                name="clickhouse-sink", daemon=True)
            self._thread.start()
        with self._wake:
            self._sealed.append(batch)
            self._wake.notify()

    def _ensure_acker(self) -> None:
        if self._acker is None or self._acker.done():
            self._acker = asyncio.get_running_loop().create_task(self._ack_forever())

    async def _ack_forever(self) -> None:
        while True:
            group = await self._stored.get()
            # A group whose acks are under way when an ack fails is not taken up again: its
            # offsets stay uncommitted and are re-delivered, which the sinks deduplicate.
            try:
                # Acks stay in seal order, each batch's only after its checkpoint is durable.
                for batch in group:
                    if batch.durable is not None:
                        await batch.durable
                    for ack in batch.acks:
                        await ack()
                if self._after_acks is not None:
                    await self._after_acks()
            finally:
                for _ in group:
                    self._space.release()
                self._unacked -= len(group)
                if self._unacked == 0:
                    self._all_acked.set()

    def _insert_forever(self, loop: asyncio.AbstractEventLoop) -> None:
        """The insert thread: takes the sealed batches queued, up to MAX_COALESCED_ROWS rows,
        stores them until that succeeds, hands them to the loop to ack; until ``close``."""
        while True:
            with self._wake:
                while not self._sealed and not self._stopping:
                    self._wake.wait()
                if self._stopping:
                    return
                group = [self._sealed.popleft()]
                rows = group[0].rows
                while self._sealed and rows + self._sealed[0].rows <= MAX_COALESCED_ROWS:
                    rows += self._sealed[0].rows
                    group.append(self._sealed.popleft())
            if not self._store_until_done(_merged(group)):
                return
            try:
                loop.call_soon_threadsafe(self._stored.put_nowait, group)
            except RuntimeError:  # the loop is closed: nobody is left to ack
                return

    def _store_until_done(self, batch: _Pending) -> bool:
        """Insert, retrying until it succeeds (True) or the buffer is closed (False)."""
        # Nothing is acked until the insert succeeds: back-pressure reaches Kafka, not loss.
        delay = 0.5
        while True:
            try:
                stored = self._insert(batch)
                self.counters.rows_stored += stored
                self.counters.inserts += 1
                return True
            except Exception as exc:  # noqa: BLE001 - any sink failure means retry, not loss
                self.counters.retries += 1
                log.error("ClickHouse insert of %d rows failed, retrying in %.1fs: %s",
                          batch.rows, delay, exc)
                with self._wake:
                    if self._wake.wait_for(lambda: self._stopping, delay):
                        return False
                delay = min(delay * 2, 30.0)

    def _insert(self, batch: _Pending) -> int:
        # Breaker rows first: they are few, and a dashboard showing a downgrade before the
        # steps that caused it is less confusing than the reverse.
        self.store.insert_breaker(batch.detections, batch.controls)
        for table, rows in batch.audit.items():
            self.store.insert_audit(table, rows)
        return self.store.insert_steps(batch.steps) if batch.steps else 0

    def close(self) -> None:
        """Stop acking and inserting; an insert under way finishes first. What is not acked
        yet is re-delivered to whoever consumes next."""
        if self._acker is not None:
            self._acker.cancel()
        with self._wake:
            self._stopping = True
            self._wake.notify_all()
        if self._thread is not None:
            self._thread.join()


def _merged(group: list[_Pending]) -> _Pending:
    """One batch holding the group's rows in seal order (offsets stay in order per
    partition, which the step sink's re-delivery check relies on)."""
    if len(group) == 1:
        return group[0]
    out = _Pending()
    for batch in group:
        out.steps += batch.steps
        out.rows += batch.rows
        out.detections += batch.detections
        out.controls += batch.controls
        for table, rows in batch.audit.items():
            out.audit.setdefault(table, []).extend(rows)
    return out
