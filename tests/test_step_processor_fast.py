"""``StepProcessor.process``'s per-batch shortcuts (``StepRecordDecoder.accept``, one clock,
content type and applied offset per batch) against the loop they replaced, on generated
batches: valid and broken JSON and Avro records, wrong and missing keys, duplicates within a
batch and records delivered again in later batches (replays)."""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from typing import Any

from changelog_table import ChangelogTable
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tripwire.detectors.injection import scan_text
from tripwire.detectors.policy import Policy
from tripwire.detectors.shadow import shadow_records
from tripwire.schemas.codec import _is_json
from tripwire.schemas.step_columns import DecodedSteps
from tripwire.simulator.fleet import fleet_events
from tripwire.simulator.scenarios import SCENARIOS
from tripwire.streams.agent_states import AgentStates
from tripwire.streams.step_decoding import content_type
from tripwire.streams.step_processor import BatchResult, RecordTuple, StepProcessor

EVENTS = list(itertools.islice(
    fleet_events(seed=7, agents=6, scenarios=SCENARIOS, start_ms=1_760_000_000_000), 240))
JSON = [("content-type", b"application/json")]


def reference_process(self: StepProcessor, records: Sequence[RecordTuple]) -> BatchResult:
    """``StepProcessor.process`` before the shortcuts (main 1acb286), unchanged."""
    out = BatchResult()
    states = self.states
    fresh: dict[str, list[dict]] = {}
    last: dict[str, tuple[int, int]] = {}
    seen: set[tuple[int, int]] = set()
    decoded = DecodedSteps([], [], [])
    fields, header = self._fields, self._batch_header
    for key, value, headers, topic, partition, offset in records:
        if (partition, offset) in seen:
            out.duplicate_records += 1
            continue
        seen.add((partition, offset))
        ctype = content_type(headers)
        events, dead = self.decoder.decode(key, value, ctype, topic, partition, offset)
        if dead:
            out.dead.extend(dead)
        if not events:
            continue
        out.accepted += len(events)
        if not (ctype and _is_json(ctype)) and not value.startswith(header) and (
                not value.startswith(self._event_header)):
            decoded.rows.extend(tuple(map(ev.get, fields)) for ev in events)
            decoded.partitions.extend([partition] * len(events))
            decoded.offsets.extend([offset] * len(events))
        else:
            refused = tuple(d.event_index for d in dead if d.event_index is not None)
            out.stored.append((value, ctype, partition, offset, refused))
        source = str(partition)
        for ev in events:
            agent = ev["agent_id"]
            if offset <= states.applied_offset(agent, source):
                out.replayed_events += 1
                continue
            fresh.setdefault(agent, []).append(ev)
            last[agent] = (partition, offset)
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


def _processor() -> StepProcessor:
    return StepProcessor(AgentStates(ChangelogTable(), Policy(), scan_text, 5000))


CODEC = _processor().decoder.codec


@st.composite
def records(draw: st.DrawFn) -> list[tuple[bytes | None, bytes | None, Any]]:
    """(key, value, headers) of records over consecutive fleet events, some of them broken."""
    out = []
    i = draw(st.integers(0, 20))
    while i < len(EVENTS) and len(out) < 60:
        n = draw(st.sampled_from([1, 1, 1, 2, 3]))
        batch = [e for e in EVENTS[i:i + n] if e["agent_id"] == EVENTS[i]["agent_id"]]
        i += len(batch)
        shape = draw(st.sampled_from(["json", "json", "avro", "avro", "avro-batch",
                                      "json-array", "json-spaced-ctype"]))
        headers: Any = JSON
        if shape == "json":
            value = json.dumps(batch[0], separators=(",", ":")).encode()
        elif shape == "json-array":
            value = json.dumps(batch).encode()
        elif shape == "json-spaced-ctype":
            value = json.dumps(batch[0]).encode()
            headers = (("content-type", b" Application/JSON; charset=utf-8"),)
        elif shape == "avro":
            value, headers = CODEC.event_codec.encode(batch[0]), None
        else:
            value, headers = CODEC.encode(batch), draw(st.sampled_from([None, [], JSON[:0]]))
        key: bytes | None = batch[0]["agent_id"].encode()
        broken = draw(st.sampled_from(["none"] * 6 + ["cut", "empty", "key", "nokey",
                                                      "uuid", "ts", "tool"]))
        if broken == "cut":
            value = value[:draw(st.integers(0, len(value) - 1))]
        elif broken == "empty":
            value = draw(st.sampled_from([b"", None]))
        elif broken == "key":
            key = b"someone-else"
        elif broken == "nokey":
            key = None
        elif broken in ("uuid", "ts", "tool") and shape.startswith("json"):
            ev = dict(batch[-1])
            if broken == "uuid":
                ev["event_id"] = "not-a-uuid"
            elif broken == "ts":
                ev["ts"] = 5
            else:
                ev["kind"], ev["tool"] = "tool_call", None
            value = json.dumps([*batch[:-1], ev] if shape == "json-array" else ev).encode()
        out.append((key, value, headers))
    return out


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(records(), st.data())
def test_process_gives_the_reference_results(recs: list[Any], data: st.DataObject) -> None:
    # Offsets per partition in order; batches cut anywhere; some records delivered twice in
    # one batch (a seek back) or again in a later one (a restart: replayed events).
    placed = []
    next_offset = {0: 0, 1: 0}
    for key, value, headers in recs:
        partition = data.draw(st.integers(0, 1))
        placed.append((key, value, headers, "agent-steps", partition, next_offset[partition]))
        next_offset[partition] += 1
    cuts = sorted(data.draw(st.lists(st.integers(0, len(placed)), max_size=4)))
    batches = [placed[a:b] for a, b in itertools.pairwise([0, *cuts, len(placed)])]
    batches = [
        b + data.draw(st.lists(st.sampled_from(placed[:max(1, sum(map(len, batches[:j + 1])))]),
                               max_size=3)) if placed else b
        for j, b in enumerate(batches)]
    fast, reference = _processor(), _processor()
    for batch in batches:
        got, expected = fast.process(batch), reference_process(reference, batch)
        assert _summary(got) == _summary(expected)
    assert fast.states._meta == reference.states._meta
    assert fast.states.deadlines == reference.states.deadlines
    assert fast.states.owners == reference.states.owners


def _summary(r: BatchResult) -> tuple[Any, ...]:
    stored = [(s.rows, s.partitions, s.offsets) if isinstance(s, DecodedSteps) else s
              for s in r.stored]
    return (r.accepted, stored, r.dead, r.detections,
            [t.to_control() for t in r.transitions], r.replayed_events, r.duplicate_records,
            r.shadow)


def test_generated_batches_take_the_fast_path_and_trip_breakers() -> None:
    """The property above is only worth something if valid records do take the shortcut
    (``accept``) and detectors do fire on these events."""
    proc = _processor()
    batch = [(e["agent_id"].encode(), json.dumps(e).encode(), JSON, "agent-steps", 0, i)
             for i, e in enumerate(EVENTS)]
    taken = [proc.decoder.accept(k, v, "application/json", 1_800_000_000_000)
             for k, v, *_ in batch]
    assert all(t is not None for t in taken)
    result = proc.process(batch)
    assert result.accepted == len(EVENTS) and not result.dead
    assert result.detections and result.transitions
