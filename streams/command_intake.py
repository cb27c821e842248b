"""Operator commands on a path of their own: ``agent-commands`` read by a dedicated consumer
in a dedicated thread, never behind the step stream.

Until this module the worker read ``agent-commands`` through the same Faust consumer as
``agent-steps``: one fetch loop for both, paused while the step feed's queue was full
(a backlog), the apply waiting for the state lock a 500-record detection batch holds, and the
next command waiting for the sink when ClickHouse was slow. Measured with 100 guard processes
on a loaded machine, a fleet kill waited 24-52 s for the worker that way, while the ceiling
took under 0.8 s from its publication to every guard.

Here a thread with its own event loop owns an ``AIOKafkaConsumer`` for the command partitions
that belong to this worker (the ``agent-steps`` partitions Faust assigned it: commands are
keyed like the steps, so a command's partition is its agent's) and an ``AIOKafkaProducer``.
For each fetched record it decodes, verifies (signature, age, single use) and checks the key,
then builds, signs, sends and waits for the broker to confirm the *scoped* controls the
command calls for: the fleet ceiling of ``kill --all``, a workflow or tool ceiling. Only then
does it hand the judged commands to the worker's event loop (:class:`JudgedCommand`), which
applies the per-agent part (the breakers it holds, under the state lock and once the state is
recovered), audits every command in ``operator_commands`` and, once those rows are stored,
reports the offsets back here to be committed. So what the stream does can delay the audit
and the per-agent fan-out, never the shared ceiling that binds every guard.

Guarantees kept from the Faust path: a command is applied only after its signature, age and
nonce are checked (the verifier is used by this thread only); offsets are committed only for
commands whose audit rows are stored, so a crash re-reads them (the verifier takes a
re-delivered record for what it is, the per-agent breakers skip offsets they applied, a
scoped ceiling is written again with a higher seq: the same ceiling). Offsets are committed
under the consumer group ``<app_id>-commands`` with manual assignment; the first time a
partition has none there, reading starts where the Faust group (which used to read commands)
committed, so an upgrade neither skips nor re-audits commands.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from tripwire.schemas import topics
from tripwire.schemas.codec import DecodeError, command_codec, control_codec
from tripwire.schemas.command_signing import CommandVerifier, sign_control
from tripwire.sdk.operator import command_key
from tripwire.sinks.control_audit import RecordRef, command_audit_row
from tripwire.streams.scope_controls import ScopeControlWriter, ScopedRecord
from tripwire.streams.settings import TripwireSettings

__all__ = ["CommandIntake", "JudgedCommand", "commands_group"]

log = logging.getLogger("tripwire.streams")

MAX_RECORDS = 100
"""Commands judged per fetch; operators issue a handful a minute, kill --all one per partition."""
COMMIT_INTERVAL_S = 0.5
"""How often stored offsets are committed (a re-read after a crash is harmless, see above)."""
START_TIMEOUT_S = 60.0


def commands_group(settings: TripwireSettings) -> str:
    """The consumer group the command offsets are committed under."""
    return f"{settings.app_id}-commands"


@dataclass(slots=True)
class JudgedCommand:
    """One ``agent-commands`` record after verification; what is left for the worker's loop."""

    partition: int
    offset: int
    received_ms: int
    audit: dict[str, Any]
    """The ``operator_commands`` row (accepted or rejected with its reason)."""
    command: dict[str, Any] | None = None
    """The verified command; None if it was rejected."""
    scoped_records: list[ScopedRecord] = field(default_factory=list)
    """Scoped controls, published and confirmed by the broker before the hand-over."""
    published_at_ms: int | None = None

    @property
    def scoped(self) -> list[dict[str, Any]]:
        return [r.control for r in self.scoped_records]


Deliver = Callable[[list[JudgedCommand]], None]
"""Called on the intake's thread with each fetch's judged commands (in offset order per
partition); must hand them to the worker's loop thread-safely and return at once."""


class CommandIntake:
    def __init__(
        self,
        settings: TripwireSettings,
        verifier: CommandVerifier,
        control_key: tuple[str, str] | None,
        deliver: Deliver,
        on_failure: Callable[[BaseException], None],
    ) -> None:
        self.settings = settings
        self.verifier = verifier
        # Its own writer: the keys it writes (the fleet ceiling, operator scope keys) are never
        # written by the breaker's or the standing rules' writer, and seqs are per key.
        self.writer = ScopeControlWriter(settings.partitions)
        self._control_key = control_key
        self._deliver = deliver
        self._on_failure = on_failure
        self._command_codec = command_codec()
        self._control_codec = control_codec()
        self._lock = threading.Lock()
        self._wanted: frozenset[int] = frozenset()
        self._stored: dict[int, int] = {}
        """partition -> offset after the last command whose audit is stored (to commit)."""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._stopping: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._committed: dict[int, int] = {}
        """partition -> offset last committed (owned by the intake's thread)."""
        self._start_error: BaseException | None = None
        self.judged = 0

    # --- called from other threads ------------------------------------------------------------

    def start(self, timeout_s: float = START_TIMEOUT_S) -> None:
        """Connect and start reading (blocking; call off the worker's loop); raises if the
        broker cannot be reached."""
        self._thread = threading.Thread(target=self._serve, name="tripwire-commands",
                                        daemon=True)
        self._thread.start()
        if not self._started.wait(timeout_s):
            raise TimeoutError(f"operator command consumer did not start in {timeout_s:g} s")
        if self._start_error is not None:
            raise self._start_error

    def assign(self, partitions: Iterable[int]) -> None:
        """Read the command partitions with these numbers (the worker's agent-steps ones)."""
        with self._lock:
            self._wanted = frozenset(partitions)
            self._stored = {p: o for p, o in self._stored.items() if p in self._wanted}
        self._poke()

    @property
    def wanted(self) -> frozenset[int]:
        """The partitions it is told to read."""
        with self._lock:
            return self._wanted

    def stored(self, partition: int, offset: int) -> None:
        """The command at ``offset`` is audited: it may be committed."""
        with self._lock:
            if partition in self._wanted:
                self._stored[partition] = max(self._stored.get(partition, 0), offset + 1)

    def stop(self, timeout_s: float = 10.0) -> None:
        loop, stopping, thread = self._loop, self._stopping, self._thread
        if thread is None:
            return
        self._thread = None
        if loop is not None and stopping is not None and not loop.is_closed():
            loop.call_soon_threadsafe(stopping.set)
        thread.join(timeout_s)

    def _poke(self) -> None:
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(wake.set)
            except RuntimeError:
                pass  # the loop closed meanwhile: stopping anyway

    # --- the intake's own thread --------------------------------------------------------------

    def _serve(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._main())
        except BaseException as exc:  # noqa: BLE001 - reported to start() or the worker
            if not self._started.is_set():
                self._start_error = exc
            else:
                log.critical("operator command intake failed: %r", exc)
                self._on_failure(exc)
        finally:
            self._started.set()
            loop.close()

    async def _main(self) -> None:
        s = self.settings
        self._wake, self._stopping = asyncio.Event(), asyncio.Event()
        consumer = AIOKafkaConsumer(
            bootstrap_servers=s.bootstrap(), group_id=commands_group(s),
            client_id="tripwire-commands", enable_auto_commit=False,
            auto_offset_reset="earliest", fetch_max_wait_ms=s.fetch_max_wait_ms,
            max_poll_records=MAX_RECORDS)
        # Acks from every replica, sent at once: a kill must not sit in a send buffer.
        producer = AIOKafkaProducer(
            bootstrap_servers=s.bootstrap(), client_id="tripwire-command-controls",
            acks="all", linger_ms=0, enable_idempotence=bool(s.idempotence()))
        await consumer.start()
        try:
            await producer.start()
            try:
                self._started.set()
                await self._run_until_stopped(consumer, producer)
            finally:
                await _bounded(producer.stop(), "producer stop")
        finally:
            await _bounded(consumer.stop(), "consumer stop")

    async def _run_until_stopped(self, consumer: AIOKafkaConsumer,
                                 producer: AIOKafkaProducer) -> None:
        # Stopping must not depend on the broker: with it gone a fetch, commit or offset
        # lookup can retry for minutes, and the worker's shutdown waits for this thread.
        assert self._stopping is not None
        run = asyncio.ensure_future(self._run(consumer, producer))
        stop = asyncio.ensure_future(self._stopping.wait())
        await asyncio.wait({run, stop}, return_when=asyncio.FIRST_COMPLETED)
        stop.cancel()
        if run.done():
            run.result()  # its failure, if it failed
            return
        run.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await run
        await _bounded(self._commit(consumer, self._committed), "final commit")

    async def _run(self, consumer: AIOKafkaConsumer, producer: AIOKafkaProducer) -> None:
        assert self._wake is not None and self._stopping is not None
        assigned: frozenset[int] = frozenset()
        reassign_failed = False
        committed = self._committed
        next_commit = time.monotonic() + COMMIT_INTERVAL_S
        while not self._stopping.is_set():
            with self._lock:
                wanted = self._wanted
            if wanted != assigned:
                try:
                    await self._reassign(consumer, assigned, wanted)
                except (KafkaError, OSError, TimeoutError) as exc:
                    # The broker went away while the partitions were being taken up (their
                    # committed offsets are looked up there): it may come back, as the
                    # stream's own consumer waits for it, so try again instead of stopping
                    # the worker (which a broker lost right after start did, now and then).
                    if not reassign_failed:
                        log.warning("operator commands: cannot take up partitions %s yet, "
                                    "retrying: %r", sorted(wanted), exc)
                    reassign_failed = True
                    await self._pause(COMMIT_INTERVAL_S)
                    continue
                reassign_failed = False
                assigned = wanted
                for p in [p for p in committed if p not in assigned]:
                    del committed[p]
            if time.monotonic() >= next_commit:
                await self._commit(consumer, committed)
                next_commit = time.monotonic() + COMMIT_INTERVAL_S
            if not assigned:
                await self._pause(COMMIT_INTERVAL_S)
                continue
            batches = await consumer.getmany(timeout_ms=self.settings.fetch_max_wait_ms,
                                             max_records=MAX_RECORDS)
            if batches:
                judged = await self._judge_and_publish(
                    [r for tp in sorted(batches, key=lambda t: t.partition)
                     for r in batches[tp]], producer)
                self.judged += len(judged)
                self._deliver(judged)

    async def _pause(self, seconds: float) -> None:
        """Wait ``seconds``, or less if the assignment changes or the intake stops."""
        assert self._wake is not None
        self._wake.clear()
        # Not asyncio.wait_for: on Python 3.11 it drops a cancellation that arrives as the
        # event is set, and stopping does both.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._wake.wait()

    async def _reassign(self, consumer: AIOKafkaConsumer, before: frozenset[int],
                        after: frozenset[int]) -> None:
        kept = {TopicPartition(topics.COMMANDS, p) for p in before & after}
        positions = {tp: await consumer.position(tp) for tp in kept}
        tps = [TopicPartition(topics.COMMANDS, p) for p in sorted(after)]
        consumer.assign(tps)
        for tp in tps:
            if tp in positions:
                consumer.seek(tp, positions[tp])  # fetched but maybe not yet audited: no re-read
            elif await consumer.committed(tp) is None:
                legacy = await _faust_group_offset(self.settings, tp)
                if legacy is not None:
                    consumer.seek(tp, legacy)
        log.info("operator commands: reading partitions %s of %s on a consumer of their own",
                 sorted(after), topics.COMMANDS)

    async def _commit(self, consumer: AIOKafkaConsumer, committed: dict[int, int]) -> None:
        with self._lock:
            due = {p: o for p, o in self._stored.items() if o > committed.get(p, -1)}
        assigned = consumer.assignment()
        offsets = {TopicPartition(topics.COMMANDS, p): o for p, o in due.items()}
        offsets = {tp: o for tp, o in offsets.items() if tp in assigned}
        if not offsets:
            return
        try:
            await consumer.commit(offsets)
        except Exception as exc:  # noqa: BLE001 - committed again next time; a re-read is safe
            log.warning("operator commands: commit of %s failed: %r", offsets, exc)
            return
        for tp, o in offsets.items():
            committed[tp.partition] = o

    async def _judge_and_publish(self, records: Sequence[Any],
                                 producer: AIOKafkaProducer) -> list[JudgedCommand]:
        out = [self._judge(r) for r in records]
        sends = []
        for j in out:
            for r in j.scoped_records:
                sends.append(await self._send(producer, r))
        if sends:
            # Confirmed before the audit can be stored (and the offset committed).
            await asyncio.gather(*sends)
            now = int(time.time() * 1000)
            for j in out:
                if j.scoped_records:
                    j.published_at_ms = now
        return out

    def _judge(self, record: Any) -> JudgedCommand:
        now = int(time.time() * 1000)
        ref = RecordRef(record.topic, record.partition, record.offset, record.timestamp or 0,
                        record.key)
        judged = JudgedCommand(record.partition, record.offset, now, {})
        try:
            command = self._command_codec.decode(record.value or b"")
        except DecodeError as exc:
            judged.audit = command_audit_row(ref, None, rejection="undecodable",
                                             judged_at_ms=now, detail=exc.reason)
            return judged
        rejection = self.verifier.verify(command, now,
                                         (record.topic, record.partition, record.offset))
        if rejection is None and not _key_matches(record.key, command):
            rejection = "key_mismatch"
        judged.audit = command_audit_row(ref, command, rejection=rejection, judged_at_ms=now)
        if rejection is not None:
            log.warning("rejected command %s from %s: %s", command.get("command_id"),
                        command.get("operator"), rejection)
            return judged
        judged.command = command
        judged.scoped_records = self.writer.for_command(command, record.partition, now)
        return judged

    async def _send(self, producer: AIOKafkaProducer, r: ScopedRecord) -> Any:
        c = r.control
        headers = sign_control(c, *self._control_key) if self._control_key else None
        future = await producer.send(r.topic, self._control_codec.encode(c),
                                     key=r.key.encode("utf-8"), partition=r.partition,
                                     headers=headers)
        log.warning("scoped control %s -> %s (%s) %s", r.key, c["mode"], c["rule"], c["reason"])
        return future


async def _bounded(step: Any, what: str, timeout_s: float = 5.0) -> None:
    try:
        await asyncio.wait_for(step, timeout_s)
    except asyncio.CancelledError as exc:
        # With the broker gone, aiokafka's consumer stop re-raises the CancelledError of the
        # fetch task it cancelled; only a cancellation of this task itself is passed on.
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise
        log.warning("operator commands: %s did not finish: %r", what, exc)
    except Exception as exc:  # noqa: BLE001 - shutting down: say so and go on
        log.warning("operator commands: %s did not finish: %r", what, exc)


async def _faust_group_offset(settings: TripwireSettings, tp: TopicPartition) -> int | None:
    """Where the Faust group (which read commands before this intake) committed ``tp``."""
    probe = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap(), group_id=settings.app_id,
                             enable_auto_commit=False, client_id="tripwire-commands-upgrade")
    await probe.start()
    try:
        return await probe.committed(tp)
    finally:
        await probe.stop()


def _key_matches(key: bytes | None, command: dict) -> bool:
    # Commands are keyed like the agent's events (so a command's partition is its agent's);
    # kill_all / release_all are written to every partition under the key "*", commands on a
    # shared scope under its scope key.
    return key is not None and key.decode("utf-8", "replace") == command_key(command)
