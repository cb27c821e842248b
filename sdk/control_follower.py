"""Follow one agent's records on the compacted ``agent-controls`` topic.

:class:`ControlState` holds what the control plane said about one agent: its mode and the
modes of its runs, each applied only when its ``seq`` is above the last one applied.
:class:`ControlFollower` keeps it current from Kafka: it reads the agent's partition from
the beginning (the latest state at start, compacted or not), then tails it, and records
when the control plane was last *heard from*.

Heard from = a Fetch response for the partition arrived. An idle topic still answers every
long-poll (``fetch_max_wait_ms``), so the follower stays fresh without any heartbeat
traffic from the worker, and goes stale as soon as the broker, the partition's leader or the
topic is gone. The guard turns "stale" into its safe mode.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.partitioner import murmur2

from tripwire.schemas.codec import DecodeError, control_codec
from tripwire.schemas.command_signing import ControlVerifier
from tripwire.schemas.modes import Mode

__all__ = ["ControlFollower", "ControlSnapshot", "ControlState", "key_partition"]

log = logging.getLogger("tripwire.sdk.guard")


def key_partition(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner (Java, aiokafka, Faust) puts ``key`` in."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


@dataclass(frozen=True, slots=True)
class ControlSnapshot:
    """The control record a mode comes from."""

    mode: Mode
    seq: int
    issued_at: int
    reason: str
    rule: str | None
    source: str
    expires_at: int | None
    detection_ids: tuple[str, ...]


class ControlState:
    """One agent's current mode and run modes; thread-safe (written by the follower's loop,
    read by agent threads)."""

    def __init__(self, agent_id: str, max_runs: int = 1024) -> None:
        self.agent_id = agent_id
        self.max_runs = max_runs
        self._lock = threading.Lock()
        self._agent: ControlSnapshot | None = None
        self._runs: OrderedDict[str, ControlSnapshot] = OrderedDict()
        self.last_seq: int | None = None
        self.applied = 0
        self.ignored = 0
        """Records skipped because their seq was not above the last applied."""

    @property
    def agent(self) -> ControlSnapshot | None:
        """The agent-wide control in force; None if the control plane never set one."""
        return self._agent

    def run(self, run_id: str) -> ControlSnapshot | None:
        with self._lock:
            return self._runs.get(run_id)

    def stopped_runs(self) -> list[str]:
        with self._lock:
            return [r for r, snap in self._runs.items() if snap.mode == Mode.HALTED]

    def apply(self, control: Mapping[str, Any]) -> bool:
        """Apply one decoded Control of this agent; False if its seq is not new."""
        seq = int(control["seq"])
        with self._lock:
            if self.last_seq is not None and seq <= self.last_seq:
                self.ignored += 1
                return False
            self.last_seq = seq
            self.applied += 1
            snap = ControlSnapshot(
                mode=Mode(control["mode"]),
                seq=seq,
                issued_at=int(control["issued_at"]),
                reason=control["reason"],
                rule=control.get("rule"),
                source=control.get("source") or "breaker",
                expires_at=control.get("expires_at"),
                detection_ids=tuple(control.get("detection_ids") or ()),
            )
            if control["scope"] == "agent":
                self._agent = snap
                return True
            run_id = control.get("run_id")
            if run_id:
                self._runs[run_id] = snap
                self._runs.move_to_end(run_id)
                while len(self._runs) > self.max_runs:
                    self._runs.popitem(last=False)
            # A run-scoped record carries the agent's mode at that point in previous_mode
            # (Breaker.to_control). Compaction may have removed the agent-scoped record
            # before it, so this is where a guard starting late learns the agent's mode.
            previous = control.get("previous_mode")
            if previous is not None and (self._agent is None or self._agent.mode != previous):
                self._agent = ControlSnapshot(
                    mode=Mode(previous),
                    seq=seq,
                    issued_at=snap.issued_at,
                    reason=f"mode in force when run {run_id} was stopped",
                    rule=None,
                    source=snap.source,
                    expires_at=None,
                    detection_ids=(),
                )
            return True


class ControlFollower:
    """Reads one agent's controls into a :class:`ControlState` until cancelled.

    Survives an unreachable broker and a recreated topic: the consumer reconnects on its
    own and a reset offset starts again from the beginning (seq order makes re-reads
    harmless). Runs on one event loop; ``fresh()`` and the counters are safe to read from
    any thread.
    """

    def __init__(
        self,
        bootstrap: str,
        state: ControlState,
        *,
        topic: str,
        staleness_s: float,
        verifier: ControlVerifier | None = None,
        fetch_max_wait_ms: int = 50,
        request_timeout_ms: int = 10_000,
        client_id: str = "tripwire-guard",
        consumer_options: Mapping[str, Any] | None = None,
    ) -> None:
        self.bootstrap = bootstrap
        self.state = state
        self.topic = topic
        self.staleness_s = staleness_s
        self.verifier = verifier
        # Fetches answer at least every fetch_max_wait_ms; several must fit in the staleness
        # limit or an idle but healthy topic would look stale.
        self.fetch_max_wait_ms = int(min(fetch_max_wait_ms, staleness_s * 1000 / 4))
        self._consumer_config: dict[str, Any] = {
            "bootstrap_servers": bootstrap,
            "client_id": client_id,
            "enable_auto_commit": False,
            "auto_offset_reset": "earliest",
            "fetch_max_wait_ms": self.fetch_max_wait_ms,
            "request_timeout_ms": max(request_timeout_ms, self.fetch_max_wait_ms + 1000),
            "retry_backoff_ms": 100,
            **(consumer_options or {}),
        }
        self._key = state.agent_id.encode("utf-8")
        self._codec = control_codec()
        self.caught_up = threading.Event()
        """Set once the partition was read up to its high watermark: the state is current."""
        self.last_heard: float | None = None
        """time.monotonic() of the latest Fetch response after catching up."""
        self.rejected: dict[str, int] = {}
        """Controls refused by reason: unsigned, bad_signature, wrong_agent, malformed, ..."""
        self._was_fresh: bool | None = None

    def fresh(self, now: float | None = None) -> bool:
        heard = self.last_heard
        if heard is None or not self.caught_up.is_set():
            return False
        return (time.monotonic() if now is None else now) - heard <= self.staleness_s

    def silent_for(self) -> float | None:
        """Seconds since the control plane was last heard from; None if never."""
        heard = self.last_heard
        return None if heard is None else time.monotonic() - heard

    async def run(self) -> None:
        backoff = 0.2
        while True:
            consumer = AIOKafkaConsumer(**self._consumer_config)
            try:
                await consumer.start()
                tp = await self._assign(consumer)
                backoff = 0.2
                await self._tail(consumer, tp)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - any failure means: reconnect and retry
                # Loud once per outage, quiet while retrying it.
                level = logging.WARNING if backoff == 0.2 else logging.DEBUG
                log.log(level, "tripwire guard %s: control plane unavailable (%r); retrying",
                        self.state.agent_id, exc)
                self._note_staleness()
            finally:
                try:
                    await consumer.stop()
                except Exception as exc:  # noqa: BLE001 - a broken consumer may fail to stop
                    log.debug("tripwire guard: consumer stop failed: %r", exc)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)

    async def _assign(self, consumer: AIOKafkaConsumer) -> TopicPartition:
        await consumer.topics()  # refreshes metadata, so the partition count is known
        partitions = consumer.partitions_for_topic(self.topic)
        if not partitions:
            raise LookupError(f"topic {self.topic} does not exist")
        tp = TopicPartition(self.topic, key_partition(self._key, len(partitions)))
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        return tp

    async def _tail(self, consumer: AIOKafkaConsumer, tp: TopicPartition) -> None:
        last_poll: int | None = None
        while True:
            batches = await consumer.getmany(tp, timeout_ms=self.fetch_max_wait_ms)
            for record in batches.get(tp, ()):
                self._on_record(record)
            polled = consumer.last_poll_timestamp(tp)
            if polled is not None and polled != last_poll:
                last_poll = polled
                if not self.caught_up.is_set():
                    highwater = consumer.highwater(tp)
                    if highwater is not None and await consumer.position(tp) >= highwater:
                        self.caught_up.set()
                if self.caught_up.is_set():
                    self.last_heard = time.monotonic()
            self._note_staleness()

    def _on_record(self, record: Any) -> None:
        if record.key != self._key:
            return  # another agent's control on the same partition
        if record.value is None:
            # A tombstone cannot be signed and must not reset a downgrade; only a newer
            # control changes the mode.
            self._reject("tombstone", record)
            return
        try:
            control = self._codec.decode(record.value)
        except DecodeError as exc:
            self._reject("malformed", record, exc.reason)
            return
        if control["agent_id"] != self.state.agent_id:
            self._reject("wrong_agent", record)
            return
        if self.verifier is not None:
            reason = self.verifier.verify(control, record.headers)
            if reason is not None:
                self._reject(reason, record)
                return
        if self.state.apply(control):
            log.info("tripwire guard %s: %s control seq %s -> %s (%s)", self.state.agent_id,
                     control["scope"], control["seq"], control["mode"], control["reason"])

    def _reject(self, reason: str, record: Any, detail: str = "") -> None:
        self.rejected[reason] = self.rejected.get(reason, 0) + 1
        log.warning("tripwire guard %s: ignored control at %s[%s]@%s: %s %s",
                    self.state.agent_id, record.topic, record.partition, record.offset,
                    reason, detail)

    def _note_staleness(self) -> None:
        fresh = self.fresh()
        if fresh == self._was_fresh or (self._was_fresh is None and not fresh):
            return
        first, self._was_fresh = self._was_fresh is None, fresh
        if fresh:
            if first:
                log.info("tripwire guard %s: following %s", self.state.agent_id, self.topic)
            else:
                log.warning("tripwire guard %s: control plane heard from again",
                            self.state.agent_id)
        else:
            log.warning("tripwire guard %s: no word from the control plane for %.1f s "
                        "(limit %.1f s): falling back to the safe mode",
                        self.state.agent_id, self.silent_for() or 0.0, self.staleness_s)
