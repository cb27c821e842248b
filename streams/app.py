"""The Faust application: topics, the agent that runs detectors and feeds the sinks, timers.

Built by a factory rather than at import time because the app's broker, partition count,
policy and sinks come from validated settings.

``agent-steps`` is taken a whole fetch at a time below Faust's per-record delivery
(``streams/step_feed.py``, at most about ``stream_batch_records`` at once, never waiting to
fill a batch) so a tripped breaker is published within tens of milliseconds:

    decode once -> dead letters -> detectors + breaker per agent (state marked dirty)
    -> controls + detections published and flushed -> rows handed to the SinkBuffer.

Before the SinkBuffer seals a batch of rows, the dirty agents' state is checkpointed to the
changelog and flushed; the batch's Kafka offsets are acked only after ClickHouse has stored
its rows. So a committed offset implies both the rows and the state that counted them.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faust
from faust.types import EventT, StreamT

from tripwire.detectors.breaker import Transition
from tripwire.detectors.fleet_containment import AGENT_TRIPS, WorkflowContainment
from tripwire.detectors.injection import scan_text
from tripwire.detectors.policy import Policy, load_policy
from tripwire.detectors.standing_shadow import StandingShadow
from tripwire.schemas import topics
from tripwire.schemas.codec import (
    DecodeError,
    control_ack_codec,
    control_codec,
    detection_codec,
)
from tripwire.schemas.command_signing import CommandVerifier, sign_control, verify_ack
from tripwire.sdk.control_follower import key_partition
from tripwire.sdk.operator import command_scope
from tripwire.sdk.scopes import Scope
from tripwire.sinks.alerts import AlertNotifier, AlertRoutes
from tripwire.sinks.control_audit import RecordRef, control_ack_row
from tripwire.sinks.shadow_sink import shadow_rows
from tripwire.streams.ack_guard import CommitGapHealer, guard_acks, stored
from tripwire.streams.agent_states import AgentStates
from tripwire.streams.command_intake import CommandIntake, JudgedCommand
from tripwire.streams.consumer_fetch import set_fetch_max_wait
from tripwire.streams.scope_controls import ScopeControlWriter, ScopedRecord
from tripwire.streams.settings import TripwireSettings
from tripwire.streams.sink_buffer import Ack, SinkBuffer, Store
from tripwire.streams.standing_publisher import publish_standing
from tripwire.streams.step_feed import FetchedBatch, StepFeed, ack_offsets, current
from tripwire.streams.step_processor import (
    BatchResult,
    RecordTuple,
    StepProcessor,
    detection_record,
)
from tripwire.streams.table_startup import PromptTableManager

log = logging.getLogger("tripwire.streams")

PRODUCER_BATCH_BYTES = 512 * 1024
"""Most bytes of one partition's batch in a produce request: half of Kafka's default largest
message (``message.max.bytes``, 1 MiB), so a checkpoint's state goes in a few requests."""

END_MARKER_KEY = "__tripwire_end__"
# Changelog writes queued by evictions before a checkpoint is forced (bounds producer memory:
# at 100,000 new agents a second their state otherwise waited for the next sink flush).
EARLY_CHECKPOINT_WRITES = 5_000
# A take of a backlog can hold 500 records of hundreds of events each (~1.5 s of detector
# work). Handing its rows to the sink in pieces of about this many value bytes lets the
# ClickHouse writer store one piece while the detectors run the next, instead of both taking
# turns (measured on the bench backlog, ~320 bytes an event).
CHUNK_BYTES = 2 * 1024 * 1024
GC_THRESHOLDS = (50_000, 20, 100)
"""The collector's thresholds once start-up is frozen (Python's default: 700, 10, 10). Fetched
records queued for the detectors, their decoded events and the detectors' state outlive many
young collections at 700 and reach the old generation, which then collects in full every
~20,000 events: measured (gc.callbacks, one drain of 100,000 one-event JSON records) 0.5-0.95 s
of collection against 2.7-3.0 s of the worker's CPU, ~5-9 us an event; at these thresholds
0.10-0.33 s, no full collection. Detection and guard latency p99 under load and the resident
set at 100,000 agents (339 MiB, 329 before) stayed within their targets (tripwire bench,
same machine, minutes apart)."""
# The GIL switch interval: how long the detectors' thread may keep running while another
# thread of the worker waits for the GIL. Faust's consumer thread parses each fetch, so while
# the stream is caught up (takes below ``stream_batch_records``) the next records wait on it:
# with 1 ms instead of Python's 5 the detection latency p99 under steady load (15,000-19,000
# events/s, eight runs paired back to back) read 51-201 ms, median ~86, against 50-205,
# median ~122, 1 ms ahead in five pairs. Draining a backlog the next fetches are queued
# already and the switches only cost: 1 ms read 27,500 events/s against 33,000-36,000, so a
# take that fills a batch switches back to 5 ms.
LIVE_SWITCH_INTERVAL_S = 0.001
BACKLOG_SWITCH_INTERVAL_S = 0.005
# How often the sink is asked whether its pending batch is due (``SinkBuffer.flush_if_due``):
# a stream that stops is noticed within IDLE_SEAL_S plus this.
FLUSH_CHECK_S = 0.05
# One status line this often on the worker's console.
REPORT_INTERVAL_S = 10.0


@dataclass
class StreamCounters:
    records: int = 0
    events_accepted: int = 0
    dead_letters: int = 0
    detections: int = 0
    transitions: int = 0
    replayed_events: int = 0
    duplicate_records: int = 0


class TripwireApp:
    def __init__(self, settings: TripwireSettings, store: Store, policy: Policy) -> None:
        self.settings = settings
        self.counters = StreamCounters()
        s = settings
        set_fetch_max_wait(s.fetch_max_wait_ms)
        # agent-commands is read outside Faust (streams/command_intake.py).
        guard_acks({topics.STEPS, topics.CONTROL_ACKS})
        # agent-steps bypasses Faust's per-record delivery (see streams/step_feed.py); the
        # Faust agent below still subscribes the topic, so assignment and recovery are Faust's.
        self.feed = StepFeed({topics.STEPS})
        self.feed.install()
        self._gap_healer = CommitGapHealer({topics.STEPS, topics.CONTROL_ACKS})
        self.app = faust.App(
            s.app_id,
            broker=[f"kafka://{hp.strip()}" for hp in s.bootstrap().split(",")],
            store="memory://",
            datadir=str(s.data_dir / "faust"),
            topic_partitions=s.partitions,
            topic_replication_factor=s.replication_factor,
            processing_guarantee="at_least_once",
            broker_session_timeout=s.kafka_session_timeout_s,
            broker_heartbeat_interval=min(3.0, s.kafka_session_timeout_s / 3),
            broker_rebalance_timeout=s.kafka_rebalance_timeout_s,
            consumer_auto_offset_reset="earliest",
            broker_commit_interval=1.0,
            web_enabled=False,
            autodiscover=False,
            stream_wait_empty=False,
            producer_acks=-1,
            # A checkpoint writes many agents' state at once; in aiokafka's default 16 KiB
            # batches its producer flush took 2.8-6.2 s on a bench drain (0.3 s with these),
            # and the sink's next insert and every ack waited for it.
            producer_max_batch_size=PRODUCER_BATCH_BYTES,
            # Our one table is declared below, before start: no need to nap for late ones.
            TableManager=PromptTableManager,
        )
        raw = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw",
               "value_serializer": "raw", "partitions": s.partitions}
        self.steps_topic = self.app.topic(topics.STEPS, **raw)
        self.state_table = self.app.Table("agent-state", partitions=s.partitions,
                                          key_type=str, value_type=bytes)
        self.states = AgentStates(self.state_table, policy, scan_text, s.live_agents)
        self.processor = StepProcessor(self.states)
        self.sink = SinkBuffer(store, max_rows=s.sink_batch_rows,
                               flush_seconds=s.sink_flush_seconds,
                               checkpoint=self._checkpoint, after_acks=self._commit_stored)
        self.verifier = CommandVerifier(
            {k: v.get_secret_value() for k, v in s.operator_keys.items()},
            max_age_s=s.command_max_age_s)
        self._control_key = (
            (s.control_key_id, s.control_keys[s.control_key_id].get_secret_value())
            if s.control_key_id else None)
        self.alerts: AlertNotifier | None = None
        if s.alert_webhooks:
            self.alerts = AlertNotifier(
                AlertRoutes.from_json(s.alert_webhooks), max_retries=s.alert_max_retries,
                dedup_window_s=s.alert_dedup_s, record=self._record_alert)
            self.app.task(self.alerts.start)
        self._control_codec = control_codec()
        self.scope_writer = ScopeControlWriter(s.partitions)
        self.workflow_containment = WorkflowContainment()
        self.policy = policy
        self._policy_stamp = _stamp(s.policy_file)
        self._detection_codec = detection_codec()
        self._alert_rows: list[dict] = []
        # Serialises changelog writes, so an end marker really is the last record written.
        self._state_lock = asyncio.Lock()
        # Sends (controls, detections, dead letters) the broker has not confirmed yet: the
        # next checkpoint waits for them before the records that caused them are acked.
        self._unconfirmed: list[asyncio.Future] = []
        # agent-steps partition -> the offset after the last record processed (see timers)
        self._processed_to: dict[int, int] = {}
        self.app.agent(self.steps_topic, name="process-steps")(self._process_steps)
        self.app.task(self._consume_steps)
        # Operator commands never wait behind the step stream: their own consumer, thread and
        # producer publish shared ceilings at once; this loop applies the per-agent part.
        self.intake = CommandIntake(s, self.verifier, self._control_key, self._deliver_commands,
                                    self._intake_failed)
        self._judged: asyncio.Queue[list[JudgedCommand]] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # Set once Faust has recovered the state of the partitions assigned here.
        self._states_ready = asyncio.Event()
        self.app.task(self._apply_commands)
        self.app.on_partitions_assigned.connect(self._on_assigned)
        self.app.on_rebalance_complete.connect(self._on_rebalance_complete)
        self.acks_topic = self.app.topic(topics.CONTROL_ACKS, **raw)
        self._ack_codec = control_ack_codec()
        self._ack_keys = {k: v.get_secret_value() for k, v in s.control_keys.items()}
        self.app.agent(self.acks_topic, name="store-control-acks")(self._store_acks)
        self.app.timer(FLUSH_CHECK_S, name="flush-sink")(self._flush_sink)
        self.app.timer(1.0, name="advance-timers")(self._advance_timers)
        self.app.timer(REPORT_INTERVAL_S, name="report-counters")(self._report)
        self.app.timer(2.0, name="heal-commit-gaps")(self._heal_commit_gaps)
        self.app.task(self._freeze_startup_heap)
        self.app.timer(5.0, name="watch-policy")(self._watch_policy)
        self.app.on_partitions_revoked.connect(self._on_revoked)

    # --- the hot path ----------------------------------------------------------------------

    async def _consume_steps(self) -> None:
        """The hot path: whole fetches of agent-steps records from the feed."""
        s = self.settings
        consumer = self.app.consumer
        switch_interval = sys.getswitchinterval()
        while True:
            fetched = await self.feed.take(consumer, s.stream_batch_records)
            wanted = switch_interval_for(fetched.count(), s.stream_batch_records)
            if wanted != switch_interval:
                sys.setswitchinterval(wanted)
                switch_interval = wanted
            for chunk in _record_chunks(fetched, CHUNK_BYTES):
                if not current(consumer, fetched.generation):
                    break  # a rebalance came between chunks: the rest is fetched again
                records = (next(iter(chunk.values())) if len(chunk) == 1
                           else [r for recs in chunk.values() for r in recs])
                offsets = {tp: [r[5] for r in recs] for tp, recs in chunk.items()}
                await self.handle_records(records, [_offsets_acker(consumer, offsets)])
                for tp, recs in chunk.items():
                    self._processed_to[tp.partition] = recs[-1][5] + 1
                # Nothing above waits while fetched records are queued, so without this the
                # loop's other tasks (the fetcher's next requests, the sink's acks and
                # commits, heartbeats) ran only once the backlog queued here was gone.
                await asyncio.sleep(0)

    async def _process_steps(self, stream: StreamT) -> None:
        # Only reached if the feed is not installed: the feed takes every agent-steps record
        # before Faust makes it a message. Kept so that Faust subscribes the topic.
        s = self.settings
        batches = stream.noack_take(s.stream_batch_records, within=s.stream_batch_seconds)
        async for events in batches:
            for chunk in _chunks(events, CHUNK_BYTES):
                await self.handle_batch(stream, chunk)

    async def handle_batch(self, stream: StreamT, events: Sequence[EventT]) -> None:
        records = []
        for ev in events:
            m = ev.message
            records.append((m.key, m.value, m.headers, m.topic, m.partition, m.offset))
        await self.handle_records(records, [_acker(stream, ev) for ev in events])

    async def handle_records(self, records: Sequence[RecordTuple], acks: list[Ack]) -> None:
        """Detect on a batch of agent-steps records; ``acks`` run once they are stored."""
        async with self._state_lock:
            result = self.processor.process(records)
            dets, controls = await self._publish(result)
        if self.states.writes_since_checkpoint >= EARLY_CHECKPOINT_WRITES:
            # A flood of new agents evicts dirty ones from the live set, and each eviction
            # queues a changelog write; flush them before they pile up in the producer.
            await (await self._checkpoint())
        c = self.counters
        c.records += len(records)
        c.events_accepted += result.accepted
        c.dead_letters += len(result.dead)
        c.replayed_events += result.replayed_events
        c.duplicate_records += result.duplicate_records
        if result.dead:
            log.warning("dead-lettered %d: first reason: %s", len(result.dead),
                        result.dead[0].reason)
        # StepBatch records as they are (the ClickHouse writer decodes them again, straight into
        # columns, in its own process); the events of the rest as the rows decoded here.
        await self.sink.add(result.stored, result.accepted, dets, controls, acks,
                            shadow_rows(result.shadow) if result.shadow else None)

    async def _publish(self, result: BatchResult) -> tuple[list[dict], list[dict]]:
        """Send dead letters, detections and controls; make them and the state durable."""
        producer = self.app.producer
        futures = [
            await producer.send(topics.STEPS_DLQ, d.key, d.value, None, None, d.headers())
            for d in result.dead
        ]
        dets = [detection_record(d) for d in result.detections]
        for d in dets:
            futures.append(await producer.send(
                topics.DETECTIONS, d["agent_id"].encode(), self._detection_codec.encode(d),
                None, None, None))
        controls = [t.to_control() for t in result.transitions]
        for control in controls:
            headers = sign_control(control, *self._control_key) if self._control_key else None
            key, partition = control["agent_id"], None
            if control["scope"] == "scoped":  # a tool restriction: its own key, agent's partition
                key = Scope.from_record(control).kafka_key()
                partition = key_partition(control["agent_id"].encode(), self.settings.partitions)
            futures.append(await producer.send(
                topics.CONTROLS, key.encode(), self._control_codec.encode(control), partition,
                None, headers))
        wider = self._wider_containment(result.transitions)
        for r in wider:
            headers = sign_control(r.control, *self._control_key) if self._control_key else None
            futures.append(await producer.send(
                r.topic, r.key.encode(), self._control_codec.encode(r.control), r.partition,
                None, headers))
            log.warning("scoped control %s -> %s (%s) %s", r.key, r.control["mode"],
                        r.control["rule"], r.control["reason"])
        controls += [r.control for r in wider]
        # Not flushed here: the producer sends at once (no linger), and waiting for the broker's
        # answer on every batch stalled detection behind each round trip (tens of ms under
        # load). The checkpoint before the batch's acks waits for these.
        self._unconfirmed.extend(futures)
        self.counters.detections += len(dets)
        self.counters.transitions += len(controls)
        for t, control in zip(result.transitions, controls, strict=False):
            log.warning("%s %s: %s -> %s%s %s", t.action, t.agent_id, t.prev_mode,
                        t.new_mode, f" ({t.rule})" if t.rule else "", t.reason)
            if self.alerts is not None:
                owner, workflow = self.states.owners.get(t.agent_id, (None, None))
                self.alerts.notify({**control, "owner": owner, "workflow": workflow,
                                    "action": t.action, "operator": t.operator})
        return dets, controls

    def _wider_containment(self, transitions: Sequence[Transition]) -> list[ScopedRecord]:
        """Workflow ceilings for the same trip across many agents of one workflow."""
        out = []
        for t in transitions:
            if t.action not in AGENT_TRIPS or t.tool is not None:
                continue
            workflow = self.states.owners.get(t.agent_id, (None, None))[1]
            breaker = self.policy.for_agent(t.agent_id, workflow).breaker
            trip = self.workflow_containment.observe(
                workflow, t.agent_id, t.rule, t.new_mode, t.ts, breaker.containment,
                breaker.cooldown_ms)
            if trip is not None:
                out.append(self.scope_writer.workflow_trip(trip))
        return out

    def _record_alert(self, row: dict) -> None:
        self._alert_rows.append(row)

    async def _checkpoint(self) -> asyncio.Future[None]:
        """Write the state of every agent updated since the last checkpoint; returns a future
        that completes once that state, and everything published before it, is durable."""
        async with self._state_lock:
            partitions = self.states.checkpoint()
            sent, self._unconfirmed = self._unconfirmed, []
        return asyncio.ensure_future(self._confirm(partitions, sent))

    async def _commit_stored(self) -> None:
        """Commit what the sink has just acked (Faust's own commit path: only offsets every
        record below which is acked, as on its timer)."""
        try:
            await self.app.consumer.commit()
        except Exception as exc:  # noqa: BLE001 - the commit timer tries again within 1 s
            log.debug("commit after a stored batch failed: %r", exc)

    async def _confirm(self, partitions: set[int], sent: list[asyncio.Future]) -> None:
        # The stream goes on meanwhile: its new changelog writes only follow these.
        await self.app.producer.flush()
        try:
            await asyncio.gather(*sent)
        except Exception as exc:
            # The broker refused a control or detection after the producer's retries: the
            # records behind it must be processed again, which a restart does (none is acked).
            log.critical("a publish failed, stopping the worker: %r", exc)
            await self.app.crash(exc)
            raise
        if partitions and self.settings.end_markers():
            async with self._state_lock:
                await self._end_markers(partitions)

    async def _end_markers(self, partitions: set[int]) -> None:
        # Written after the state batch is flushed, so each marker travels alone in its own
        # produce batch and the broker's (wrong) end offset still covers all real state. The
        # caller holds the state lock until they are sent: no state write may join a marker's
        # batch after it.
        for p in partitions:
            self.state_table.send_changelog(p, END_MARKER_KEY, None, value_serializer="raw")
        await self.app.producer.flush()

    # --- operator commands -----------------------------------------------------------------

    def remember_applied_commands(self) -> int:
        """Load the nonces of recently applied commands from the audit table; call before the
        stream starts. The verifier keeps nonces in memory, so without this a command captured
        before a restart could be replayed until it expires. Returns how many were loaded."""
        since = int(time.time() * 1000) - self.verifier.max_age_ms
        applied = self.sink.store.applied_nonces(since)
        self.verifier.remember(applied)
        return len(applied)

    def _deliver_commands(self, judged: list[JudgedCommand]) -> None:
        # On the intake's thread: hand over to this loop, never block there.
        loop, queue = self._loop, self._judged
        if loop is not None and queue is not None:
            loop.call_soon_threadsafe(queue.put_nowait, judged)

    def _intake_failed(self, exc: BaseException) -> None:
        # A control the broker refused after the producer's retries: as for the stream's own
        # publishes, stop; a restart reads the command again (it was never committed).
        loop = self._loop
        if loop is not None and not loop.is_closed():
            asyncio.run_coroutine_threadsafe(self.app.crash(exc), loop)

    async def _apply_commands(self) -> None:
        loop = asyncio.get_running_loop()
        self._loop, self._judged = loop, asyncio.Queue()
        await loop.run_in_executor(None, self.intake.start)
        try:
            while True:
                judged = await self._judged.get()
                # The per-agent part changes breakers: only once their state is recovered.
                await self._states_ready.wait()
                await self.apply_judged(judged)
        finally:
            # Blocks this loop briefly at shutdown only: the intake's fetches last
            # fetch_max_wait_ms, then its clients close.
            self.intake.stop()

    async def apply_judged(self, judged: Sequence[JudgedCommand]) -> None:
        """Apply verified commands to the breakers held here (the shared ceilings are out
        already), audit every command, and let the intake commit them once stored."""
        # Read before a rebalance took their partition away: the new owner reads them again
        # from the committed offset; this worker must not touch state it no longer owns.
        owned = self.intake.wanted
        judged = [j for j in judged if j.partition in owned]
        if not judged:
            return
        audit: list[dict] = []
        dets: list[dict] = []
        controls: list[dict] = []
        shadow: list = []
        for j in judged:
            audit.append(j.audit)
            controls += j.scoped
            self.counters.transitions += len(j.scoped_records)
            if j.command is None or command_scope(j.command) is not None:
                continue
            async with self._state_lock:
                result = self.processor.apply_command(j.command, j.partition, j.offset,
                                                      j.received_ms)
                d, fanned = await self._publish(result)
            dets += d
            controls += fanned
            shadow += result.shadow
        await self.sink.add([], 0, dets, controls, [self._command_acker(j) for j in judged],
                            {"operator_commands": audit, **shadow_rows(shadow)})

    def _command_acker(self, judged: JudgedCommand) -> Ack:
        async def ack() -> None:
            self.intake.stored(judged.partition, judged.offset)

        return ack

    async def _on_assigned(self, sender: object, assigned: set, **_: object) -> None:
        self.intake.assign({tp.partition for tp in assigned if tp.topic == topics.STEPS})

    async def _on_rebalance_complete(self, sender: object, **_: object) -> None:
        self._states_ready.set()

    async def _store_acks(self, stream: StreamT) -> None:
        async for events in stream.noack_take(500, within=0.5):
            rows = []
            for ev in events:
                m = ev.message
                try:
                    ack = self._ack_codec.decode(m.value or b"")
                except DecodeError:
                    continue  # not ours to judge further: an ack is telemetry
                verified = bool(self._ack_keys) and verify_ack(ack, m.headers,
                                                               self._ack_keys) is None
                ref = RecordRef(m.topic, m.partition, m.offset, 0, m.key)
                rows.append(control_ack_row(ref, ack, verified=verified))
            await self.sink.add([], 0, [], [], [_acker(stream, ev) for ev in events],
                                {"control_acks": rows} if rows else None)

    async def _watch_policy(self) -> None:
        # Standing rules follow the file while the worker runs; the breaker's thresholds are
        # read once at start (their state was computed under them).
        stamp = _stamp(self.settings.policy_file)
        if stamp == self._policy_stamp or self.settings.policy_file is None:
            return
        self._policy_stamp = stamp
        try:
            self.policy = load_policy(self.settings.policy_file)
        except (OSError, ValueError) as exc:
            log.error("policy file changed but is not valid, standing rules unchanged: %s", exc)
            return
        self.processor.standing = StandingShadow(self.policy.standing)
        try:
            controls = await publish_standing(self.settings, self.policy, self.scope_writer,
                                              int(time.time() * 1000))
        except Exception as exc:  # noqa: BLE001 - the worker runs on; retried on next change
            log.error("could not publish the changed standing rules: %r", exc)
            return
        if controls:
            await self.sink.add([], 0, [], controls, [])

    # --- time ------------------------------------------------------------------------------

    async def _flush_sink(self) -> None:
        if self._alert_rows:
            rows, self._alert_rows = self._alert_rows, []
            await self.sink.add([], 0, [], [], [], {"alert_deliveries": rows})
        await self.sink.flush_if_due()

    async def _advance_timers(self) -> None:
        now = int(time.time() * 1000)
        async with self._state_lock:
            self.states.adopt_restored(limit=5_000)
            expired = self.states.expire_idle(now, int(self.settings.agent_idle_expiry_s * 1000),
                                              limit=1_000)
            if expired:
                log.info("forgot %d idle autonomous agents", len(expired))
            result = self.processor.advance(now, self._caught_up_partitions())
            if result.transitions or result.detections:
                dets, controls = await self._publish(result)
            else:
                dets, controls = [], []
        if dets or controls or result.shadow:
            await self.sink.add([], 0, dets, controls, [], shadow_rows(result.shadow))

    def _caught_up_partitions(self) -> set[int]:
        """agent-steps partitions assigned here whose records are processed up to the end the
        last fetch reported: only their agents' timers may run on wall time."""
        consumer = self.app.consumer
        try:
            assigned = consumer.assignment()
        except Exception:  # noqa: BLE001 - not started or rebalancing: no timers this tick
            return set()
        out: set[int] = set()
        for tp in assigned:
            if tp.topic != topics.STEPS:
                continue
            end = consumer.highwater(tp)
            done = max(self._processed_to.get(tp.partition, 0),
                       consumer._committed_offset.get(tp) or 0)
            if end is not None and done >= end:
                out.add(tp.partition)
        return out

    async def _heal_commit_gaps(self) -> None:
        await self._gap_healer.check(self.app.consumer)

    async def _on_revoked(self, sender: object, revoked: set, **_: object) -> None:
        # Commands of these partitions are another worker's from now on; the per-agent part
        # waits for the state of the next assignment.
        self._states_ready.clear()
        gone = {tp.partition for tp in revoked if tp.topic == topics.STEPS}
        self.intake.assign(self.intake.wanted - gone)
        # Fetched before the rebalance: fetched again from the committed offsets after it.
        self.feed.clear()
        self._processed_to.clear()
        # Another worker owns these agents now; live copies here would go stale.
        self.states.forget_partitions({tp.partition for tp in revoked
                                       if tp.topic == topics.STEPS})
        # ... and may store their records before they come back here.
        self.sink.store.recheck()

    async def _freeze_startup_heap(self) -> None:
        # A full (generation 2) collection walks every tracked object, and the modules, Faust
        # and the app built at start-up are most of them and never become garbage. Measured
        # at 3,000 events/s: gen-2 pauses of 76-147 ms before freezing them, 19-40 ms after,
        # each one a stall of the detection loop.
        gc.collect()
        gc.freeze()
        gc.set_threshold(*GC_THRESHOLDS)

    async def _report(self) -> None:
        c, k = self.counters, self.sink.counters
        log.info("status: records=%d accepted=%d stored=%d dead_letters=%d detections=%d "
                 "transitions=%d replayed=%d sink_retries=%d", c.records, c.events_accepted,
                 k.rows_stored, c.dead_letters, c.detections, c.transitions, c.replayed_events,
                 k.retries)

    def summary(self) -> str:
        c, k = self.counters, self.sink.counters
        return (f"records={c.records} accepted={c.events_accepted} stored={k.rows_stored} "
                f"dead_letters={c.dead_letters} detections={c.detections} "
                f"transitions={c.transitions} replayed={c.replayed_events} "
                f"sink_retries={k.retries}")


def _stamp(path: Path | None) -> tuple[int, int] | None:
    try:
        info = path.stat() if path is not None else None
    except OSError:
        return None
    return None if info is None else (info.st_mtime_ns, info.st_size)


def _chunks(events: Sequence[EventT], max_bytes: int) -> list[Sequence[EventT]]:
    """Consecutive runs of events whose record values add up to about ``max_bytes``."""
    out: list[Sequence[EventT]] = []
    start = size = 0
    for i, ev in enumerate(events):
        size += len(ev.message.value or b"")
        if size >= max_bytes:
            out.append(events[start:i + 1])
            start, size = i + 1, 0
    if start < len(events):
        out.append(events[start:])
    return out


def switch_interval_for(taken_records: int, batch_records: int) -> float:
    """The GIL switch interval after a take of ``taken_records``: a take that fills a detector
    batch means a backlog is queued (see LIVE_SWITCH_INTERVAL_S)."""
    return BACKLOG_SWITCH_INTERVAL_S if taken_records >= batch_records else LIVE_SWITCH_INTERVAL_S


def _record_chunks(fetched: FetchedBatch,
                   max_bytes: int) -> list[dict[Any, list[RecordTuple]]]:
    """The fetched records in pieces whose values add up to about ``max_bytes``."""
    out: list[dict[Any, list[RecordTuple]]] = []
    piece: dict[Any, list[RecordTuple]] = {}
    size = 0
    for tp, records in fetched.records.items():
        start = 0
        for i, r in enumerate(records):
            value = r[1]
            size += len(value) if value is not None else 0
            if size >= max_bytes:
                piece[tp] = records[start:i + 1]
                out.append(piece)
                piece, start, size = {}, i + 1, 0
        if start < len(records):
            piece[tp] = records[start:]
    if piece:
        out.append(piece)
    return out


def _offsets_acker(consumer: Any, offsets: dict[Any, list[int]]) -> Ack:
    async def ack() -> None:
        ack_offsets(consumer, offsets)

    return ack


def _acker(stream: StreamT, event: EventT):  # noqa: ANN202 - a zero-arg coroutine factory
    async def ack() -> None:
        stored(event.message.tp, event.message.offset)
        await stream.ack(event)

    return ack


def build_app(settings: TripwireSettings, store: Store, policy: Policy) -> TripwireApp:
    return TripwireApp(settings, store, policy)
