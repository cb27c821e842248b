"""Emitters: ship an agent's StepEvents to Kafka without ever stalling the agent.

Events are grouped per agent for up to ``linger_ms`` or until a batch reaches
``max_batch_events`` / ``max_batch_bytes``. When the oldest batch has lingered its time, every
open batch leaves with it, and the batches bound for one partition travel as one Kafka record
(value = a StepBatch): keyed by the agent_id when they are one agent's, unkeyed when they mix
agents, in the partition the producer's partitioner gives each of those agents' ids. Tripwire's
worker pays a fixed cost per record, so a fleet of agents that each emit a step now and then
costs it one record per partition per linger instead of one per step.
Events wait in a bounded in-process buffer; when it is full, ``emit`` waits at most
``max_block_ms`` (not at all while Kafka is unreachable) and then drops the event, counting
the drop against its agent. Delivery runs in a background task; its failures are counted and
logged, never raised into agent code.

:class:`AsyncEmitter` lives on the caller's event loop; :class:`Emitter` runs one on a private
loop in a daemon thread, for synchronous agents and for many threads sharing one producer.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.codec import has_gzip, has_lz4, has_snappy, has_zstd
from aiokafka.partitioner import DefaultPartitioner

from tripwire.schemas.codec import StepBatchCodec
from tripwire.schemas.topics import STEPS

__all__ = ["AsyncEmitter", "Emitter", "EmitterStats", "default_compression"]

log = logging.getLogger("tripwire.sdk.emitter")

# A StepEvent without content encodes to roughly 150-250 bytes; the estimate only decides
# when to close a batch early, the encoded size is checked exactly before sending.
_BASE_EVENT_BYTES = 200
# Room for the record and batch framing Kafka adds around the value.
_RECORD_OVERHEAD = 4096


def default_compression() -> str:
    """lz4 when aiokafka can use it (it needs ``cramjam``, the ``aiokafka[lz4]`` extra),
    else gzip, which aiokafka always supports."""
    return "lz4" if has_lz4() else "gzip"


@dataclass(frozen=True)
class EmitterStats:
    """Counters since the emitter was created, in events unless named otherwise."""

    sent: int
    """Acknowledged by Kafka (acks=all)."""
    dropped: int
    """Refused because the buffer stayed full for ``max_block_ms``, or left undelivered when
    the emitter closed without reaching Kafka."""
    errors: int
    """Handed to the producer but failed after its retries, or not encodable."""
    records: int
    """Kafka records acknowledged; ``sent / records`` is the mean batch size."""
    buffered: int
    """Waiting in the emitter: its buffer plus the batches being handed to the producer."""
    in_flight: int
    """Handed to the producer and not yet acknowledged or failed."""
    connected: bool
    dropped_by_agent: dict[str, int] = field(default_factory=dict)


def _approx_size(event: Mapping[str, Any]) -> int:
    n = _BASE_EVENT_BYTES
    content = event.get("content")
    if content:
        n += len(content)
    attrs = event.get("attributes")
    if attrs:
        n += sum(len(k) + len(v) + 2 for k, v in attrs.items())
    return n


class _Batch:
    __slots__ = ("agent_id", "deadline", "events", "size")

    def __init__(self, agent_id: str, deadline: float) -> None:
        self.agent_id = agent_id
        self.deadline = deadline
        self.events: list[dict[str, Any]] = []
        self.size = 0


class _Buffer:
    """Per-agent open batches plus closed (full) ones, bounded by total events.

    Guarded by a threading lock because the sync Emitter's callers are arbitrary threads
    while the sender runs on the loop thread.
    """

    def __init__(
        self, max_events: int, max_batch_events: int, max_batch_bytes: int, linger_s: float
    ) -> None:
        self.max_events = max_events
        self.max_batch_events = max_batch_events
        self.max_batch_bytes = max_batch_bytes
        self.linger_s = linger_s
        self.lock = threading.Lock()
        self.space = threading.Condition(self.lock)
        # Insertion order is deadline order (every batch gets the same linger), so expired
        # batches are always a prefix: no scan over idle agents.
        self.open: OrderedDict[str, _Batch] = OrderedDict()
        self.closed: deque[_Batch] = deque()
        self.count = 0
        self.waiters = 0
        self.accepting = True
        # Waiting for space only helps while a connected sender is draining; with Kafka
        # unreachable it would just slow every agent step down by the block time.
        self.draining = False
        self.wake: Callable[[], None] = lambda: None
        self.dropped = 0
        self.dropped_by_agent: dict[str, int] = {}
        self.unreported_drops: dict[str, int] = {}

    def _append(self, agent_id: str, event: dict[str, Any], size: int) -> bool:
        """Add under the lock; returns whether the sender must be woken."""
        batch = self.open.get(agent_id)
        wake = False
        if batch is None:
            batch = _Batch(agent_id, time.monotonic() + self.linger_s)
            # A sender with no open batches sleeps without a timer: only the first batch
            # needs a wake-up, later ones expire after the one it is already waiting on.
            wake = not self.open
            self.open[agent_id] = batch
        batch.events.append(event)
        batch.size += size
        self.count += 1
        if len(batch.events) >= self.max_batch_events or batch.size >= self.max_batch_bytes:
            del self.open[agent_id]
            self.closed.append(batch)
            wake = True
        return wake

    def offer(self, agent_id: str, event: dict[str, Any], block_s: float) -> bool:
        size = _approx_size(event)
        with self.lock:
            if self.count >= self.max_events and self.accepting and self.draining and block_s > 0:
                deadline = time.monotonic() + block_s
                self.waiters += 1
                try:
                    while self.count >= self.max_events and self.accepting:
                        remaining = deadline - time.monotonic()
                        if remaining <= 0:
                            break
                        self.space.wait(remaining)
                finally:
                    self.waiters -= 1
            if self.count >= self.max_events or not self.accepting:
                return False
            wake = self._append(agent_id, event, size)
        if wake:
            self.wake()
        return True

    def record_drop(self, agent_id: str, n: int = 1) -> None:
        with self.lock:
            self.dropped += n
            self.dropped_by_agent[agent_id] = self.dropped_by_agent.get(agent_id, 0) + n
            self.unreported_drops[agent_id] = self.unreported_drops.get(agent_id, 0) + n

    def take(self, now: float, force: bool) -> tuple[list[_Batch], float | None]:
        """Remove the full batches, and every open one once the oldest is past its linger
        (or if ``force``); also return the deadline of the oldest batch left open.

        Younger batches leave with the oldest so that the sender ships one record per
        partition per linger period: they only go out sooner than their linger asked."""
        with self.lock:
            out = list(self.closed)  # an agent's full batches precede its open one
            self.closed.clear()
            if self.open and (force or next(iter(self.open.values())).deadline <= now):
                out.extend(self.open.values())
                self.open.clear()
            taken = sum(len(b.events) for b in out)
            self.count -= taken
            if taken and self.waiters:
                self.space.notify_all()
            nxt = next(iter(self.open.values())).deadline if self.open else None
        return out, nxt

    def stop_accepting(self) -> None:
        with self.lock:
            self.accepting = False
            self.draining = False
            self.space.notify_all()

    def drain_all(self) -> list[_Batch]:
        out, _ = self.take(0.0, force=True)
        return out

    def pop_drop_report(self) -> dict[str, int]:
        with self.lock:
            report, self.unreported_drops = self.unreported_drops, {}
        return report


def _as_record(event: Any) -> dict[str, Any]:
    if isinstance(event, Mapping):
        record = dict(event)
    elif hasattr(event, "to_record"):
        record = dict(event.to_record())
    else:
        raise TypeError(f"expected a StepEvent mapping or model, got {type(event).__name__}")
    agent_id = record.get("agent_id")
    if not isinstance(agent_id, str) or not agent_id:
        raise ValueError("event has no agent_id; it is the Kafka key and is required")
    return record


class AsyncEmitter:
    """Batches StepEvents per agent and produces them to Kafka from a background task.

    Use on one event loop: ``async with AsyncEmitter(bootstrap) as em: em.emit(event)``.
    ``emit`` is a plain method (callable from sync code on the loop) that never blocks;
    ``emit_wait`` waits up to ``max_block_ms`` for buffer space instead of dropping at once.

    ``idempotence`` should be on against real Kafka; the embedded broker does not implement
    InitProducerId, so tests and ``tripwire run`` without external Kafka turn it off.
    """

    def __init__(
        self,
        bootstrap: str,
        topic: str = STEPS,
        *,
        idempotence: bool = True,
        compression: str | None = "auto",
        linger_ms: float = 10.0,
        max_batch_events: int = 500,
        max_batch_bytes: int = 256 * 1024,
        max_buffer_events: int = 100_000,
        max_block_ms: float = 5.0,
        request_timeout_ms: int = 30_000,
        report_interval_s: float = 30.0,
        on_drop: Callable[[Mapping[str, int]], None] | None = None,
        client_id: str = "tripwire-sdk",
        producer_options: Mapping[str, Any] | None = None,
    ) -> None:
        if not 0 <= linger_ms <= 1000:
            raise ValueError("linger_ms must be within 0..1000")
        if report_interval_s <= 0:
            raise ValueError("report_interval_s must be > 0")
        if max_batch_events < 1 or max_buffer_events < 1:
            raise ValueError("max_batch_events and max_buffer_events must be >= 1")
        options = dict(producer_options or {})
        max_request = int(options.get("max_request_size", 1_048_576))
        if not 1024 <= max_batch_bytes <= max_request - _RECORD_OVERHEAD:
            raise ValueError(
                f"max_batch_bytes must be within 1024..{max_request - _RECORD_OVERHEAD} "
                "(the producer's max_request_size less framing)"
            )
        self.bootstrap = bootstrap
        self.topic = topic
        self.compression = default_compression() if compression == "auto" else compression
        self.max_block_s = max_block_ms / 1000
        self.report_interval_s = report_interval_s
        self.on_drop = on_drop
        self._max_batch_bytes = max_batch_bytes
        self._max_batch_events = max_batch_events
        # Mixed-agent records are placed by the same partitioner that places keyed ones, so
        # an agent's events share one partition whichever way they travel.
        self._partitioner = options.pop("partitioner", None) or DefaultPartitioner()
        self._partition_cache: dict[str, int] = {}
        self._partition_list: list[int] = []
        self._producer_config: dict[str, Any] = {
            "bootstrap_servers": bootstrap,
            "client_id": client_id,
            "acks": "all",
            "enable_idempotence": idempotence,
            "compression_type": self.compression,
            # Per-agent grouping already lingers; a second linger would only add latency.
            "linger_ms": 0,
            "max_batch_size": max(16_384, min(max_batch_bytes, 128 * 1024)),
            "request_timeout_ms": request_timeout_ms,
            "partitioner": self._partitioner,
            **options,
        }
        # Fail on a bad compression setting here, in the caller's code, rather than later in
        # the background where it could only be logged.
        available = {"gzip": has_gzip, "snappy": has_snappy, "lz4": has_lz4, "zstd": has_zstd}
        if self.compression is not None:
            if self.compression not in available:
                raise ValueError(f"unsupported compression {self.compression!r}")
            if not available[self.compression]():
                raise ValueError(
                    f"compression {self.compression!r} needs cramjam (pip install aiokafka[lz4])"
                )
        self._codec = StepBatchCodec()
        self._buffer = _Buffer(max_buffer_events, max_batch_events, max_batch_bytes,
                               linger_ms / 1000)
        self._producer: AIOKafkaProducer | None = None
        self._unstarted: AIOKafkaProducer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._wakeup: asyncio.Event | None = None
        self._space: asyncio.Event | None = None
        self._connected: asyncio.Event | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._inflight: set[asyncio.Future[Any]] = set()
        self._submitting = 0
        self._flushing = 0
        self._closing = False
        self._closed = False
        self._sent = 0
        self._records = 0
        self._errors = 0
        self._in_flight_events = 0
        self._unreported_errors = 0
        self._last_error: str | None = None
        self._connect_failures = 0

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the background sender. Does not wait for Kafka: an unreachable broker is
        retried in the background while events buffer (and, once full, drop)."""
        if self._loop is not None:
            return
        # Built here (it needs the running loop) so bad producer_options raise to the caller
        # instead of failing every background connection attempt.
        self._unstarted = AIOKafkaProducer(**self._producer_config)
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._wakeup = asyncio.Event()
        self._space = asyncio.Event()
        self._connected = asyncio.Event()
        self._buffer.wake = self._wake
        self._tasks = [
            asyncio.create_task(self._sender(), name="tripwire-emitter-sender"),
            asyncio.create_task(self._reporter(), name="tripwire-emitter-reporter"),
        ]

    async def wait_connected(self, timeout_s: float | None = None) -> bool:
        """Wait until the producer has reached Kafka; False on timeout. Optional: emitting
        before that is fine (events buffer)."""
        if self._connected is None:
            await self.start()
        assert self._connected is not None
        try:
            async with asyncio.timeout(timeout_s):
                await self._connected.wait()
        except TimeoutError:
            return False
        return True

    async def flush(self, timeout_s: float | None = None) -> bool:
        """Send everything buffered now and wait for Kafka's acknowledgements (or failures).
        Returns False if that did not finish within ``timeout_s``."""
        if self._loop is None:
            await self.start()
        self._flushing += 1
        self._wake()
        try:
            async with asyncio.timeout(timeout_s):
                while True:
                    if self._buffer.count == 0 and self._submitting == 0:
                        pending = set(self._inflight)
                        if not pending:
                            return True
                        await asyncio.wait(pending)
                    else:
                        await asyncio.sleep(0.002)
        except TimeoutError:
            return False
        finally:
            self._flushing -= 1

    async def close(self, timeout_s: float = 30.0) -> None:
        """Flush for up to ``timeout_s`` (half a second if Kafka has been unreachable), then
        stop. Events that could not be handed to Kafka by then are counted as dropped."""
        if self._closed:
            return
        self._closed = True
        self._buffer.stop_accepting()
        if self._loop is not None:
            if self._producer is None and self._connect_failures:
                # Kafka has already refused us: a process exiting while it is down should not
                # hang for the full timeout on the slim chance it comes back this second.
                timeout_s = min(timeout_s, 0.5)
            delivered = await self.flush(timeout_s)
            self._closing = True
            self._wake()
            sender, reporter = self._tasks
            reporter.cancel()
            if not delivered:
                # Still connecting or stuck on a stalled broker: waiting longer would break
                # the caller's deadline.
                sender.cancel()
            for task in self._tasks:
                try:
                    await task
                except asyncio.CancelledError:
                    pass
                except Exception:  # noqa: BLE001 - closing must not raise into agent code
                    log.exception("tripwire emitter: background task failed")
        for batch in self._buffer.drain_all():
            self._buffer.record_drop(batch.agent_id, len(batch.events))
        if self._unstarted is not None:
            with contextlib.suppress(Exception):
                await self._unstarted.stop()
            self._unstarted = None
        if self._producer is not None:
            try:
                await asyncio.wait_for(self._producer.stop(), timeout=max(1.0, timeout_s / 2))
            except Exception as exc:  # noqa: BLE001 - closing must not raise into agent code
                log.warning("tripwire emitter: producer did not stop cleanly: %r", exc)
        self._report()

    async def __aenter__(self) -> AsyncEmitter:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- emitting ----------------------------------------------------------------------------

    def emit(self, event: Mapping[str, Any] | Any) -> bool:
        """Queue one event; never blocks. Returns False if it was dropped (buffer full or
        emitter closed). Raises only for an event without an ``agent_id``."""
        return self._offer(_as_record(event), 0.0)

    async def emit_wait(
        self, event: Mapping[str, Any] | Any, timeout_s: float | None = None
    ) -> bool:
        """Queue one event, waiting up to ``timeout_s`` (default ``max_block_ms``) for space."""
        record = _as_record(event)
        wait_s = self.max_block_s if timeout_s is None else timeout_s
        if self._buffer.offer(record["agent_id"], record, 0.0):
            return True
        if self._space is not None and wait_s > 0 and self._buffer.draining and not self._closed:
            deadline = time.monotonic() + wait_s
            while (remaining := deadline - time.monotonic()) > 0:
                self._space.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(remaining):  # not wait_for: see _wait_woken
                        await self._space.wait()
                if self._buffer.offer(record["agent_id"], record, 0.0):
                    return True
                if self._closed:
                    break
        self._buffer.record_drop(record["agent_id"])
        return False

    def _offer(self, record: dict[str, Any], block_s: float) -> bool:
        # Never block the loop thread itself: the sender that frees space runs on it.
        if block_s > 0 and threading.get_ident() == self._loop_thread:
            block_s = 0.0
        if self._buffer.offer(record["agent_id"], record, block_s):
            return True
        self._buffer.record_drop(record["agent_id"])
        return False

    def stats(self) -> EmitterStats:
        with self._buffer.lock:
            dropped = self._buffer.dropped
            by_agent = dict(self._buffer.dropped_by_agent)
            buffered = self._buffer.count
        return EmitterStats(
            sent=self._sent,
            dropped=dropped,
            errors=self._errors,
            records=self._records,
            buffered=buffered + self._submitting,
            in_flight=self._in_flight_events,
            connected=self._producer is not None,
            dropped_by_agent=by_agent,
        )

    # -- background --------------------------------------------------------------------------

    def _wake(self) -> None:
        if self._loop is None or self._wakeup is None:
            return
        if threading.get_ident() == self._loop_thread:
            self._wakeup.set()
        else:
            with contextlib.suppress(RuntimeError):  # loop already closed: nothing to wake
                self._loop.call_soon_threadsafe(self._wakeup.set)

    async def _connect(self) -> bool:
        backoff = 0.1
        failures = 0
        while not self._closing:
            producer = self._unstarted or AIOKafkaProducer(**self._producer_config)
            self._unstarted = None
            try:
                await producer.start()
            except Exception as exc:  # noqa: BLE001 - retried; the agent must not see it
                failures += 1
                self._connect_failures += 1
                with contextlib.suppress(Exception):
                    await producer.stop()
                if failures == 1 or failures % 50 == 0:
                    log.warning(
                        "tripwire emitter: cannot reach Kafka at %s (attempt %d): %r",
                        self.bootstrap, failures, exc,
                    )
                self._last_error = repr(exc)
                assert self._wakeup is not None
                self._wakeup.clear()
                # Woken early only by close(); emits wake it too, harmlessly.
                await self._wait_woken(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            self._producer = producer
            self._buffer.draining = True
            assert self._connected is not None
            self._connected.set()
            if failures:
                log.warning("tripwire emitter: connected to Kafka at %s", self.bootstrap)
            return True
        return False

    async def _sender(self) -> None:
        while True:
            try:
                await self._send_loop()
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                # A bug here must not silently stop delivery for the rest of the process.
                log.exception("tripwire emitter: sender failed; restarting it")
                await asyncio.sleep(0.5)

    async def _send_loop(self) -> None:
        assert self._wakeup is not None and self._space is not None
        if self._producer is None and not await self._connect():
            return
        while True:
            self._wakeup.clear()
            force = self._flushing > 0 or self._closing
            batches, next_deadline = self._buffer.take(time.monotonic(), force)
            if batches:
                self._space.set()
                self._submitting += sum(len(b.events) for b in batches)
                records = self._records_of(batches)
                for i, (key, partition, events) in enumerate(records):
                    try:
                        await self._submit(key, partition, events)
                    except BaseException:
                        # Cancelled by close() on a stalled broker: the records not yet
                        # handed over are lost, and must show up in the drop count.
                        for _, _, rest in records[i + 1:]:
                            self._submitting -= len(rest)
                            self._drop_events(rest)
                        raise
                continue
            if self._closing:
                return
            timeout = None if next_deadline is None else max(0.0, next_deadline - time.monotonic())
            await self._wait_woken(timeout)

    async def _wait_woken(self, timeout_s: float | None) -> None:
        """Until woken or ``timeout_s`` passes. Not ``asyncio.wait_for``: on Python 3.11 it
        drops a cancellation that arrives as the event is set, and ``close`` sets the event
        and cancels the sender in one go."""
        assert self._wakeup is not None
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await self._wakeup.wait()

    def _encode(self, events: list[dict[str, Any]]) -> list[tuple[int, bytes]]:
        """Encode as few records as the byte cap allows; an event that does not encode is
        counted as an error and dropped alone instead of failing its whole batch."""
        try:
            value = self._codec.encode(events)
        except Exception as exc:  # noqa: BLE001 - bad input from one agent call
            if len(events) == 1:
                self._errors += 1
                self._unreported_errors += 1
                self._last_error = f"event {events[0].get('event_id')} does not encode: {exc!r}"
                return []
            mid = len(events) // 2
            return self._encode(events[:mid]) + self._encode(events[mid:])
        too_big = len(value) > self._max_batch_bytes or len(events) > self._max_batch_events
        if too_big and len(events) > 1:
            mid = len(events) // 2
            return self._encode(events[:mid]) + self._encode(events[mid:])
        return [(len(events), value)]

    def _records_of(self, batches: list[_Batch]) -> list[tuple[bytes | None, int | None,
                                                             list[dict[str, Any]]]]:
        """(key, partition, events) of the records that carry these batches: one per
        partition, keyed when it holds a single agent (the partitioner then places it)."""
        assert self._producer is not None
        partitions = self._producer.client.cluster.partitions_for_topic(self.topic)
        if not partitions:
            # No metadata yet (the first send fetches it): one keyed record per batch.
            return [(b.agent_id.encode("utf-8"), None, b.events) for b in batches]
        ordered = sorted(partitions)
        if ordered != self._partition_list:
            self._partition_list = ordered
            self._partition_cache.clear()
        by_partition: dict[int, list[_Batch]] = {}
        for b in batches:
            by_partition.setdefault(self._partition_of(b.agent_id, ordered), []).append(b)
        out: list[tuple[bytes | None, int | None, list[dict[str, Any]]]] = []
        for partition, group in by_partition.items():
            events = group[0].events if len(group) == 1 else [e for b in group for e in b.events]
            if all(b.agent_id == group[0].agent_id for b in group):
                out.append((group[0].agent_id.encode("utf-8"), None, events))
            else:
                out.append((None, partition, events))
        return out

    def _partition_of(self, agent_id: str, partitions: list[int]) -> int:
        cached = self._partition_cache.get(agent_id)
        if cached is None:
            if len(self._partition_cache) >= 100_000:
                self._partition_cache.clear()  # bounded: a churn of agent ids costs a rehash
            cached = self._partitioner(agent_id.encode("utf-8"), partitions, partitions)
            self._partition_cache[agent_id] = cached
        return cached

    def _drop_events(self, events: list[dict[str, Any]]) -> None:
        by_agent: dict[str, int] = {}
        for e in events:
            by_agent[e["agent_id"]] = by_agent.get(e["agent_id"], 0) + 1
        for agent_id, n in by_agent.items():
            self._buffer.record_drop(agent_id, n)

    async def _submit(self, key: bytes | None, partition: int | None,
                      events: list[dict[str, Any]]) -> None:
        assert self._producer is not None
        parts: list[tuple[int, bytes]] = []
        handled = 0
        try:
            parts = self._encode(events)
            for n, value in parts:
                try:
                    fut = await self._producer.send(self.topic, value, key=key,
                                                    partition=partition)
                except Exception as exc:  # noqa: BLE001 - counted, logged by the reporter
                    self._failed(n, exc)
                    handled += n
                    continue
                handled += n
                self._in_flight_events += n
                self._inflight.add(fut)
                fut.add_done_callback(lambda f, n=n: self._delivered(f, n))
        except BaseException:
            lost = sum(n for n, _ in parts) - handled
            if lost:
                self._drop_events(events[len(events) - lost:])
            raise
        finally:
            self._submitting -= len(events)

    def _delivered(self, fut: asyncio.Future[Any], n: int) -> None:
        self._inflight.discard(fut)
        self._in_flight_events -= n
        exc = fut.exception() if not fut.cancelled() else asyncio.CancelledError()
        if exc is None:
            self._sent += n
            self._records += 1
        else:
            self._failed(n, exc)

    def _failed(self, n: int, exc: BaseException) -> None:
        self._errors += n
        self._unreported_errors += n
        self._last_error = repr(exc)

    async def _reporter(self) -> None:
        while True:
            await asyncio.sleep(self.report_interval_s)
            self._report()

    def _report(self) -> None:
        drops = self._buffer.pop_drop_report()
        if drops:
            worst = sorted(drops.items(), key=lambda kv: -kv[1])[:10]
            log.warning(
                "tripwire emitter dropped %d events (buffer full or undeliverable); "
                "by agent: %s", sum(drops.values()), dict(worst),
            )
            if self.on_drop is not None:
                try:
                    self.on_drop(drops)
                except Exception:  # noqa: BLE001 - a broken hook must not stop reporting
                    log.exception("tripwire emitter: on_drop callback failed")
        if self._unreported_errors:
            log.warning(
                "tripwire emitter: %d events failed delivery; last error: %s",
                self._unreported_errors, self._last_error,
            )
            self._unreported_errors = 0


class Emitter:
    """A thread-safe, synchronous front for :class:`AsyncEmitter`, running it on a private
    event loop in a daemon thread. ``emit`` waits at most ``max_block_ms`` when the buffer is
    full, then drops. Accepts the same keyword options as :class:`AsyncEmitter`.

    Buffered events are flushed at interpreter exit if :meth:`close` was not called.
    """

    def __init__(self, bootstrap: str, topic: str = STEPS, **options: Any) -> None:
        # Built first so a bad option raises before a thread exists to leak.
        self._inner = AsyncEmitter(bootstrap, topic, **options)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="tripwire-emitter", daemon=True
        )
        self._thread.start()
        self._call(self._inner.start())
        self._closed = False
        atexit.register(self.close, 5.0)

    def _call(self, coro: Any, timeout_s: float | None = None) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout_s)

    @property
    def topic(self) -> str:
        return self._inner.topic

    @property
    def compression(self) -> str | None:
        return self._inner.compression

    def emit(self, event: Mapping[str, Any] | Any) -> bool:
        """Queue one event from any thread; returns False if it was dropped."""
        return self._inner._offer(_as_record(event), self._inner.max_block_s)

    def emit_many(self, events: Sequence[Mapping[str, Any]]) -> int:
        """Queue several events; returns how many were accepted."""
        return sum(self.emit(e) for e in events)

    def wait_connected(self, timeout_s: float | None = None) -> bool:
        return bool(self._call(self._inner.wait_connected(timeout_s)))

    def flush(self, timeout_s: float | None = None) -> bool:
        if self._closed:
            return True
        return bool(self._call(self._inner.flush(timeout_s)))

    def close(self, timeout_s: float = 30.0) -> None:
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self.close)
        try:
            self._call(self._inner.close(timeout_s), timeout_s + 10)
        except Exception as exc:  # noqa: BLE001 - closing must not raise into agent code
            log.warning("tripwire emitter: close failed: %r", exc)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
            if not self._thread.is_alive():
                self._loop.close()

    def stats(self) -> EmitterStats:
        return self._inner.stats()

    def __enter__(self) -> Emitter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
