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
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.partitioner import murmur2

from tripwire.schemas.codec import DecodeError, control_codec
from tripwire.schemas.command_signing import ControlVerifier
from tripwire.schemas.modes import Mode
from tripwire.sdk.scopes import AGENT_KEY_SEPARATOR, ScopedControl

__all__ = ["ControlFollower", "ControlSnapshot", "ControlState", "key_partition"]

AppliedHook = Callable[[Mapping[str, Any], str], None]
"""Called with each control the state applied and its record key (the guard acknowledges)."""

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
        self._scoped: dict[str, ScopedControl] = {}
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

    def scoped(self) -> list[ScopedControl]:
        """Scoped controls in force or lifted (a lifted one has mode autonomous)."""
        with self._lock:
            return list(self._scoped.values())

    def apply_scoped(self, key: str, control: Mapping[str, Any]) -> bool:
        """Apply one scoped control (the agent's own or a shared one) under its record key;
        False if its seq is not above the last one applied for that key."""
        snap = ScopedControl.from_record(key, control)
        with self._lock:
            last = self._scoped.get(key)
            if last is not None and snap.seq <= last.seq:
                self.ignored += 1
                return False
            self._scoped[key] = snap
            self.applied += 1
            return True

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
        shared_topic: str | None = None,
        shared_verifier: ControlVerifier | None = None,
        on_applied: AppliedHook | None = None,
    ) -> None:
        self.bootstrap = bootstrap
        self.state = state
        self.topic = topic
        if verifier is not None and shared_topic is not None and shared_verifier is None:
            # Configured before shared scopes existed: unverifiable shared controls must not be
            # applied (anyone could write them), so they are not followed. Loud, because fleet
            # kills and standing rules then do not reach this agent.
            log.warning("tripwire guard %s: control_keys without shared_control_keys: fleet, "
                        "workflow and other shared-scope controls are NOT followed; pass "
                        "shared_control_keys (derive_agent_key(master, '*'))", state.agent_id)
            shared_topic = None
        self.shared_topic = shared_topic
        """Topic of shared-scope controls, read whole; None to follow the agent's only."""
        self.shared_verifier = shared_verifier
        self.on_applied = on_applied
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
        self._scoped_prefix = self._key + AGENT_KEY_SEPARATOR.encode()
        self._shared_missing_logged = False
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
                tps = await self._assign(consumer)
                backoff = 0.2
                await self._tail(consumer, tps)
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

    async def _assign(self, consumer: AIOKafkaConsumer) -> list[TopicPartition]:
        await consumer.topics()  # refreshes metadata, so the partition count is known
        partitions = consumer.partitions_for_topic(self.topic)
        if not partitions:
            raise LookupError(f"topic {self.topic} does not exist")
        tps = [TopicPartition(self.topic, key_partition(self._key, len(partitions)))]
        if self.shared_topic is not None:
            shared = consumer.partitions_for_topic(self.shared_topic)
            if shared:
                tps += [TopicPartition(self.shared_topic, p) for p in sorted(shared)]
            elif not self._shared_missing_logged:
                # A deployment from before shared scopes: agent and run controls still work.
                self._shared_missing_logged = True
                log.warning("tripwire guard %s: topic %s does not exist; following agent "
                            "and run controls only", self.state.agent_id, self.shared_topic)
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        return tps

    async def _tail(self, consumer: AIOKafkaConsumer, tps: list[TopicPartition]) -> None:
        # Fresh = every followed partition answered a fetch since the last check; caught up =
        # every one was read to its high watermark once.
        last_poll: dict[TopicPartition, int | None] = dict.fromkeys(tps)
        behind = set(tps)
        heard: set[TopicPartition] = set()
        while True:
            batches = await consumer.getmany(*tps, timeout_ms=self.fetch_max_wait_ms)
            for tp, records in batches.items():
                shared = tp.topic != self.topic
                for record in records:
                    if shared:
                        self._on_shared_record(record)
                    else:
                        self._on_record(record)
            for tp in tps:
                polled = consumer.last_poll_timestamp(tp)
                if polled is None or polled == last_poll[tp]:
                    continue
                last_poll[tp] = polled
                heard.add(tp)
                if tp in behind:
                    highwater = consumer.highwater(tp)
                    if highwater is not None and await consumer.position(tp) >= highwater:
                        behind.discard(tp)
            if not behind:
                self.caught_up.set()
            if self.caught_up.is_set() and len(heard) == len(tps):
                heard.clear()
                self.last_heard = time.monotonic()
            self._note_staleness()

    def _on_shared_record(self, record: Any) -> None:
        control = self._decoded(record)
        if control is None:
            return
        if control["scope"] != "scoped" or control["agent_id"] != "*":
            self._reject("wrong_agent", record)
            return
        if not self._authentic(control, record, self.shared_verifier):
            return
        key = (record.key or b"").decode("utf-8", "replace")
        if self.state.apply_scoped(key, control):
            self._applied(control, key)

    def _applied(self, control: Mapping[str, Any], key: str) -> None:
        log.info("tripwire guard %s: %s control %s seq %s -> %s (%s)", self.state.agent_id,
                 control["scope"], key, control["seq"], control["mode"], control["reason"])
        if self.on_applied is not None:
            try:
                self.on_applied(control, key)
            except Exception as exc:  # noqa: BLE001 - acknowledging must not stop following
                log.warning("tripwire guard %s: acknowledging failed: %r",
                            self.state.agent_id, exc)

    def _on_record(self, record: Any) -> None:
        key = record.key
        scoped = key is not None and key.startswith(self._scoped_prefix)
        if key != self._key and not scoped:
            return  # another agent's control on the same partition
        control = self._decoded(record)
        if control is None:
            return
        if control["agent_id"] != self.state.agent_id:
            self._reject("wrong_agent", record)
            return
        if not self._authentic(control, record, self.verifier):
            return
        if scoped:
            if control["scope"] != "scoped":
                self._reject("malformed", record, "scope is not 'scoped' under a scoped key")
                return
            text_key = key.decode("utf-8", "replace")
            if self.state.apply_scoped(text_key, control):
                self._applied(control, text_key)
            return
        if control["scope"] == "scoped":
            self._reject("malformed", record, "scoped control under the agent's own key")
            return
        if self.state.apply(control):
            self._applied(control, self.state.agent_id)

    def _decoded(self, record: Any) -> dict[str, Any] | None:
        """The control ``record`` holds (own or shared topic), or None once rejected."""
        if record.value is None:
            # A tombstone cannot be signed and must not reset a downgrade; only a newer
            # control changes the mode.
            self._reject("tombstone", record)
            return None
        try:
            return self._codec.decode(record.value)
        except DecodeError as exc:
            self._reject("malformed", record, exc.reason)
            return None

    def _authentic(
        self, control: Mapping[str, Any], record: Any, verifier: ControlVerifier | None
    ) -> bool:
        """False (and rejected with the verifier's reason) unless ``verifier`` accepts the
        control's signature; True when no verifier is configured."""
        if verifier is None:
            return True
        reason = verifier.verify(control, record.headers)
        if reason is not None:
            self._reject(reason, record)
            return False
        return True

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
