"""One batch of agent-steps records in, everything Tripwire concludes from it out.

Plain synchronous code between the Faust agent (which owns Kafka, acks and the changelog)
and the detectors (which own judgement): decode once, refuse what is malformed, feed each
agent's events in order to its monitor, write its state once per batch.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from tripwire.detectors.breaker import Transition
from tripwire.detectors.detection import Detection
from tripwire.detectors.shadow import ShadowRecord, shadow_records
from tripwire.detectors.standing_shadow import StandingShadow
from tripwire.schemas.codec import MAGIC, _is_json
from tripwire.schemas.step_columns import DecodedSteps, event_header
from tripwire.streams.agent_states import AgentStates
from tripwire.streams.dead_letters import DeadLetter
from tripwire.streams.step_decoding import StepRecordDecoder, content_type

# (key, value, headers, topic, partition, offset) of one Kafka record.
RecordTuple = tuple[bytes | None, bytes | None, Any, str, int, int]

StoredRecord = tuple[bytes, str | None, int, int, tuple[int, ...]] | DecodedSteps
"""What the ClickHouse sink needs of a record with accepted events: (value, content type,
partition, offset, indices of the events in it that were refused), which its writer decodes
again straight into columns (StepBatch and bare StepEvent frames in the current schema) or
with msgspec (JSON); or, for frames of other schema versions, which it could only decode
event by event, the accepted events themselves as rows (one DecodedSteps per batch).

Bare StepEvent frames went as rows until the writer read them into columns too: building and
pickling those rows cost this process ~2-3 us an event of the interpreter that bounds the
one-event-per-record Avro drain (py-spy: row tuples and ForkingPickler ~8 % of the worker's
samples at 43,000 events/s), against ~1 us more in the writer for the column read."""


@dataclass
class BatchResult:
    accepted: int = 0
    """Valid events, replayed ones included (the sink deduplicates those)."""
    stored: list[StoredRecord] = field(default_factory=list)
    """The records that hold the accepted events, for the ClickHouse sink."""
    dead: list[DeadLetter] = field(default_factory=list)
    detections: list[Detection] = field(default_factory=list)
    transitions: list[Transition] = field(default_factory=list)
    replayed_events: int = 0
    """Events whose effect on detector state was already stored (re-delivery after a crash)."""
    duplicate_records: int = 0
    """Records that were in the batch twice (re-fetched after a seek back); the copy is
    ignored."""
    shadow: list[ShadowRecord] = field(default_factory=list)
    """What shadow rules would have done (stored, never published)."""


_UNSEEN = object()
"""No record's headers: the first record of a batch always reads its content type."""


class StepProcessor:
    def __init__(self, states: AgentStates, decoder: StepRecordDecoder | None = None) -> None:
        self.states = states
        self.decoder = decoder or StepRecordDecoder()
        codec = self.decoder.codec
        # The writer's column reader takes records framed as this StepBatch schema; the rest
        # it would decode event by event, so their events are handed over decoded.
        self._batch_header = MAGIC + codec.batch_codec.fingerprint
        self._event_header = event_header(codec)
        self._fields = tuple(f["name"] for f in codec.event_codec._schema["fields"])
        # Standing rules marked shadow, judged on each agent's new tool calls; they follow
        # the policy file like the published ones (the app replaces this on a reload).
        self.standing = StandingShadow(states.policy.standing)

    def process(self, records: Sequence[RecordTuple]) -> BatchResult:
        out = BatchResult()
        states = self.states
        # agent -> its new events in partition order, and the record that carried the last one
        fresh: dict[str, list[dict]] = {}
        last: dict[str, tuple[int, int]] = {}
        # A seek back (the ack guard's rewind, the commit-gap healer) can deliver a record
        # again while its first copy is still in the same batch; the applied offsets are only
        # compared with what earlier batches applied, so the copy would be counted twice.
        seen: set[tuple[int, int]] = set()
        decoded = DecodedSteps([], [], [])
        fields, direct = self._fields, (self._batch_header, self._event_header)
        # Per record, the loop below was ~4 us an event of the worker's interpreter on
        # one-event-per-record backlogs besides decoding and detection (py-spy: calls,
        # lookups and a generator each record); what repeats across a batch is read once:
        # the clock of the ``ts`` checks, the content type of identical headers, each agent's
        # applied offset (only earlier batches move it: ``states.update`` runs after the loop).
        now_ms = time.time_ns() // 1_000_000
        accept, decode = self.decoder.accept, self.decoder.decode
        seen_add, stored_append = seen.add, out.stored.append
        applied: dict[tuple[str, int], int] = {}
        sources: dict[int, str] = {}
        last_headers: Any = _UNSEEN
        ctype: str | None = None
        is_json = False
        accepted = replayed = duplicates = 0
        for key, value, headers, topic, partition, offset in records:
            where = (partition, offset)
            if where in seen:
                duplicates += 1
                continue
            seen_add(where)
            if headers is not last_headers and headers != last_headers:
                ctype = content_type(headers)
                is_json = ctype is not None and _is_json(ctype)
                last_headers = headers
            events = accept(key, value, ctype, now_ms)
            if events is None:
                events, dead = decode(key, value, ctype, topic, partition, offset)
                if dead:
                    out.dead.extend(dead)
                if not events:
                    continue
            else:
                dead = None
            accepted += len(events)
            # JSON records go as they are too: the writer decodes them again with msgspec
            # (streams/step_json.py), which costs it less than building and pickling rows
            # here cost this process (~3 us an event of the worker's interpreter, measured).
            if is_json or value.startswith(direct):
                refused = () if not dead else tuple(
                    d.event_index for d in dead if d.event_index is not None)
                stored_append((value, ctype, partition, offset, refused))
            else:
                # Rows taken before the detectors see the events: exactly what was decoded.
                decoded.rows.extend(tuple(map(ev.get, fields)) for ev in events)
                decoded.partitions.extend([partition] * len(events))
                decoded.offsets.extend([offset] * len(events))
            source = sources.get(partition)
            if source is None:
                source = sources[partition] = str(partition)
            for ev in events:
                agent = ev["agent_id"]
                mark = applied.get((agent, partition))
                if mark is None:
                    mark = applied[(agent, partition)] = states.applied_offset(agent, source)
                if offset <= mark:
                    replayed += 1
                    continue
                agent_events = fresh.get(agent)
                if agent_events is None:
                    fresh[agent] = [ev]
                else:
                    agent_events.append(ev)
                last[agent] = where
        out.accepted = accepted
        out.replayed_events = replayed
        out.duplicate_records = duplicates
        if decoded.rows:
            out.stored.append(decoded)
        for agent, events in fresh.items():
            last_event = events[-1]
            states.owners[agent] = (last_event.get("owner"), last_event.get("workflow"))
            monitor = states.monitor(agent, last_event.get("workflow"))
            detections, transitions = monitor.feed_many(events)
            out.detections.extend(detections)
            out.transitions.extend(transitions)
            if monitor.variants:
                out.shadow += shadow_records(monitor.take_variant_output(), detections,
                                             transitions)
            if self.standing:
                out.shadow += self.standing.judge(agent, events)
            partition, offset = last[agent]
            states.update(agent, monitor, partition, str(partition), offset)
        return out

    def apply_command(self, command: dict[str, Any], partition: int, offset: int,
                      now_ms: int) -> BatchResult:
        """An authenticated operator command (verification happens before, in the stream).

        kill_all arrives once per partition; each copy halts the agents held there.
        """
        out = BatchResult()
        states = self.states
        source = f"commands:{partition}"
        if command["action"] in ("kill_all", "release_all"):
            # The agents this worker holds; agents it does not (never emitted, started later,
            # state dropped) are bound by the fleet ceiling (streams/scope_controls.py).
            agents = states.agents_in_partition(partition)
        else:
            agents = [command["agent_id"]]
        for agent in agents:
            if offset <= states.applied_offset(agent, source):
                out.replayed_events += 1
                continue
            monitor = states.monitor(agent)
            moved = monitor.on_command(command, now_ms)
            out.transitions.extend(moved)
            if monitor.variants:
                out.shadow += shadow_records(monitor.take_variant_output(), [], moved)
            home = states.partition_of(agent)
            home = partition if home is None else home
            states.update(agent, monitor, home, source, offset)
        return out

    def advance(self, wall_ms: int, partitions: set[int] | None = None) -> BatchResult:
        """Time-driven work for agents whose timers are due (cool-downs, runs that never end).

        ``partitions``: only agents whose state lives in one of these (None: all). An agent's
        "now" between events is its watermark moved on by wall time, which is only true once
        its partition is read up to its end: while its events wait in Kafka (a restart, a
        lagging worker) that clock runs ahead of them, and a run whose ``run_end`` is still
        unread would be stopped as never ending (seen once in the SIGKILL scenario test).
        """
        out = BatchResult()
        states = self.states
        for agent, now_ms in states.due(wall_ms):
            partition = states.partition_of(agent)
            if partition is None or (partitions is not None and partition not in partitions):
                continue
            monitor = states.monitor(agent)
            detections, transitions = monitor.advance(now_ms)
            out.detections.extend(detections)
            out.transitions.extend(transitions)
            if monitor.variants:
                out.shadow += shadow_records(monitor.take_variant_output(), detections,
                                             transitions)
            states.update(agent, monitor, partition)
        return out


def detection_record(d: Detection) -> dict[str, Any]:
    """The schemas/detection.avsc record of a detection (``scope`` is implied by run_id)."""
    return {
        "detection_id": d.detection_id,
        "detector": d.detector,
        "agent_id": d.agent_id,
        "run_id": d.run_id,
        "tool": d.tool,
        "metric": d.metric,
        "value": float(d.value),
        "threshold": float(d.threshold),
        "window_ms": d.window_ms,
        "severity": str(d.severity),
        "evidence_event_ids": list(d.evidence_event_ids),
        "ts": d.ts,
        "message": d.message,
    }
