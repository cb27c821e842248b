"""AgentStates over a stand-in for Faust's table (its ``data`` mapping and
``send_changelog``); the real table is exercised by the pipeline and scenario tests."""

from __future__ import annotations

import itertools
import time

from changelog_table import ChangelogTable

from tripwire.detectors.injection import scan_text
from tripwire.detectors.policy import Policy
from tripwire.schemas.codec import StepBatchCodec
from tripwire.simulator.fleet import fleet_events, scenario_of
from tripwire.simulator.scenarios import SCENARIOS
from tripwire.streams.agent_states import AgentStates
from tripwire.streams.step_processor import StepProcessor


def records(events: list[dict], partition: int = 0, first_offset: int = 0) -> list[tuple]:
    codec = StepBatchCodec()
    return [(e["agent_id"].encode(), codec.encode([e]), [], "agent-steps", partition,
             first_offset + i) for i, e in enumerate(events)]


def fleet(n: int) -> list[dict]:
    return list(itertools.islice(fleet_events(seed=21, agents=3, scenarios=SCENARIOS), n))


def test_redelivered_records_do_not_count_twice() -> None:
    table = ChangelogTable()
    processor = StepProcessor(AgentStates(table, Policy(), scan_text))
    recs = records(fleet(2000))
    first = processor.process(recs)
    again = processor.process(recs[1500:])  # a crash re-delivers the uncommitted tail
    assert first.replayed_events == 0 and first.transitions
    assert again.replayed_events == 500 and not again.transitions and not again.detections
    assert again.accepted == 500, "still offered to the sink, which deduplicates"


def test_restored_state_resumes_identically_and_regains_its_timers() -> None:
    events = fleet(3000)
    table = ChangelogTable()
    states = AgentStates(table, Policy(), scan_text)
    StepProcessor(states).process(records(events[:1500]))
    states.checkpoint()
    # A new worker over the same (recovered) table continues where the old one stopped.
    restored = AgentStates(table, Policy(), scan_text)
    assert restored.adopt_restored(limit=10_000) == len({e["agent_id"] for e in events[:1500]})
    cooling = [a for a in restored.deadlines if scenario_of(a)]
    assert cooling, "downgraded agents keep their recovery timers across the restart"
    tail = StepProcessor(restored).process(records(events[1500:], first_offset=1500))

    reference_table = ChangelogTable()
    reference = StepProcessor(AgentStates(reference_table, Policy(), scan_text))
    reference.process(records(events[:1500]))
    expected = reference.process(records(events[1500:], first_offset=1500))
    assert [t.to_control() for t in tail.transitions] == \
        [t.to_control() for t in expected.transitions]


def test_idle_autonomous_agents_are_forgotten_downgraded_ones_never() -> None:
    table = ChangelogTable()
    states = AgentStates(table, Policy(), scan_text)
    result = StepProcessor(states).process(records(fleet(2000)))
    states.checkpoint()
    downgraded = {t.agent_id for t in result.transitions if t.scope == "agent"}
    assert downgraded
    far_future = 10**13
    for agent in list(states.deadlines):  # cool-downs done: only the mode still matters
        states.deadlines.pop(agent)
    expired = states.expire_idle(far_future, idle_ms=1, limit=10_000)
    assert expired and not set(expired) & downgraded
    assert all(a not in table.data for a in expired)
    assert all(a in table.data for a in downgraded)
    assert {k for p, k, v in table.changelog if v is None} == set(expired), "tombstones"


def test_batches_only_mark_state_dirty_and_a_checkpoint_writes_each_agent_once() -> None:
    table = ChangelogTable()
    states = AgentStates(table, Policy(), scan_text)
    processor = StepProcessor(states)
    recs = records(fleet(900))
    for i in range(0, 900, 30):  # thirty small batches, as under steady load
        processor.process(recs[i:i + 30])
    assert table.changelog == [] and table.data == {}
    agents = {e["agent_id"] for e in fleet(900)}
    assert states.dirty == len(agents)
    partitions = states.checkpoint()
    assert partitions == {0}
    assert sorted(k for _, k, _ in table.changelog) == sorted(agents), "once per agent"
    assert states.dirty == 0 and states.checkpoint() == set()


def test_an_agent_evicted_before_the_checkpoint_is_written_at_eviction() -> None:
    events = fleet(3000)
    table = ChangelogTable()
    states = AgentStates(table, Policy(), scan_text, live_capacity=1)
    processor = StepProcessor(states)
    processor.process(records(events[:1500]))
    states.checkpoint()
    restored = StepProcessor(AgentStates(table, Policy(), scan_text))
    tail = restored.process(records(events[1500:], first_offset=1500))

    reference = StepProcessor(AgentStates(ChangelogTable(), Policy(), scan_text))
    reference.process(records(events[:1500]))
    expected = reference.process(records(events[1500:], first_offset=1500))
    assert tail.transitions, "the tail still trips breakers"
    assert [t.to_control() for t in tail.transitions] == \
        [t.to_control() for t in expected.transitions]


def test_state_not_checkpointed_is_rebuilt_from_the_redelivered_records() -> None:
    # A crash after the batches but before the checkpoint: nothing of them was acked, so all
    # of it is delivered again to a worker whose table holds only the older checkpoint.
    events = fleet(3000)
    table = ChangelogTable()
    states = AgentStates(table, Policy(), scan_text)
    processor = StepProcessor(states)
    recs = records(events)
    processor.process(recs[:1000])
    states.checkpoint()
    lost = processor.process(recs[1000:2000])  # its checkpoint never happens

    survivor = StepProcessor(AgentStates(table, Policy(), scan_text))
    again = survivor.process(recs[1000:2000])
    assert again.replayed_events == 0, "the checkpoint predates these records"
    assert [t.to_control() for t in again.transitions] == \
        [t.to_control() for t in lost.transitions]


def test_timers_run_only_for_the_partitions_named() -> None:
    """An agent whose events still wait in Kafka keeps its timers until its partition is read
    to the end: its wall-clock "now" would run ahead of its unread run_end."""
    processor = StepProcessor(AgentStates(ChangelogTable(), Policy(), scan_text))
    now = int(time.time() * 1000)
    start = {"event_id": "00000000-0000-4000-8000-000000000001", "ts": now, "agent_id": "a",
             "run_id": "r1", "step": 0, "kind": "run_start", "attributes": {}}
    assert processor.process(records([start], partition=3)).accepted == 1
    # Wall time far past run_timeout_ms: the run "never ended" unless its end is unread.
    hours_later = now + 5 * 3600 * 1000
    assert not processor.advance(hours_later, partitions={0, 1}).detections
    stopped = processor.advance(hours_later, partitions={3})
    assert [d.detector for d in stopped.detections] == ["loop"]


def test_a_record_twice_in_one_batch_counts_once() -> None:
    """A seek back re-delivers records whose first copy is still in the same batch: the
    detectors see each event once, as if the records had come once."""
    events = fleet(3000)
    recs = records(events)
    once = StepProcessor(AgentStates(ChangelogTable(), Policy(), scan_text)).process(recs)
    # Every 50 records, the last 20 again: copies close enough in event time to be counted
    # (without the check this batch drew 53 detections instead of 51).
    batch = []
    for i in range(0, len(recs), 50):
        batch += recs[i:i + 50] + recs[i + 30:i + 50]
    twice = StepProcessor(AgentStates(ChangelogTable(), Policy(), scan_text)).process(batch)
    assert twice.duplicate_records == 20 * len(range(0, len(recs), 50))
    assert twice.accepted == once.accepted == len(events)
    assert [t.to_control() for t in twice.transitions] == [
        t.to_control() for t in once.transitions]
    assert [(d.detector, d.agent_id, d.run_id) for d in twice.detections] == [
        (d.detector, d.agent_id, d.run_id) for d in once.detections]


def test_the_writer_stores_the_same_rows_from_decoded_steps_as_from_records() -> None:
    """JSON, StepBatch and current-schema bare-event records reach the writer as they are,
    bare events framed under another fingerprint as the rows the stream decoded; the columns
    are those the writer's own decode of the records gives, refused events left out."""
    import json as json_module

    from tripwire.schemas.step_columns import DecodedSteps, StepColumnDecoder

    events = fleet(60)
    codec = StepBatchCodec()
    impossible = events[5] | {"event_id": "00000000-0000-4000-8000-0000000000ff",
                              "input_tokens": -1}
    js = [("content-type", b"application/json")]
    raw = [(events[i]["agent_id"].encode(), json_module.dumps(events[i]).encode(), js,
            "agent-steps", 0, i) for i in range(20)]
    raw.append((None, json_module.dumps([events[20], impossible | {
        "agent_id": events[20]["agent_id"]}]).encode(), js, "agent-steps", 0, 20))
    raw += [(None, codec.event_codec.encode(events[i]), [], "agent-steps", 0, i)
            for i in range(21, 30)]
    # The same schema's canonical form as another library writes it: another fingerprint.
    variant = next(fp for fp in codec.event_codec._writers if fp != codec.event_codec.fingerprint)
    raw += [(None, b"\xc3\x01" + variant + codec.event_codec.encode(events[i])[10:], [],
             "agent-steps", 0, i) for i in range(30, 40)]
    raw.append((None, codec.encode(events[40:60]), [], "agent-steps", 0, 40))
    result = StepProcessor(AgentStates(ChangelogTable(), Policy(), scan_text)).process(raw)

    decoder = StepColumnDecoder(codec)
    from_stream = decoder.new_batch()
    for item in result.stored:
        if isinstance(item, DecodedSteps):
            from_stream.add_rows(item)
        else:
            decoder.add(from_stream, *item)
    from_records = decoder.new_batch()
    for _, value, headers, _, partition, offset in raw:
        ctype = "application/json" if headers else None
        refused = (1,) if offset == 20 else ()
        decoder.add(from_records, value, ctype, partition, offset, refused)
    assert [len(i.rows) for i in result.stored if isinstance(i, DecodedSteps)] == [10]
    assert len(from_stream) == len(from_records) == 60
    assert sorted(zip(*from_stream.columns, from_stream.partitions, from_stream.offsets,
                      strict=True)) == sorted(
        zip(*from_records.columns, from_records.partitions, from_records.offsets, strict=True))
