"""Agent state across releases: this release restores what release 1 wrote (committed fixture
bytes from tests/data/agent_states_v1.json.gz, made by scripts/make_state_v1_fixture.py on
commit 1eee097), quarantines what a newer release wrote, and the documented way of adding a
field keeps both directions readable."""

from __future__ import annotations

import gzip
import json
import logging
from pathlib import Path
from typing import Any

import msgspec
import pytest
from changelog_table import ChangelogTable
from hypothesis import given, settings
from hypothesis import strategies as st

from tripwire.detectors.agent_monitor import AgentMonitor
from tripwire.detectors.monitor_state import (
    STATE_VERSION,
    MonitorState,
    StateVersionError,
    StoredAgent,
    decode,
    encode,
)
from tripwire.detectors.policy import Policy
from tripwire.schemas.codec import StepBatchCodec
from tripwire.streams.agent_states import AgentStates
from tripwire.streams.step_processor import StepProcessor

FIXTURE = json.loads(gzip.decompress(
    (Path(__file__).parent / "data" / "agent_states_v1.json.gz").read_bytes()))


def keyword_scanner(text: str, source_trust: str | None) -> tuple[float, list[str]]:
    """The fixture's stand-in scanner (scripts/make_state_v1_fixture.py), same verdicts."""
    hit = "ignore" in text.lower() or "instructions" in text.lower()
    return (0.9 if hit else 0.0), (["keyword"] if hit else [])


def restored_table(changelog: list[list[Any]]) -> ChangelogTable:
    """What Faust's recovery leaves in the table: the last value per key."""
    table = ChangelogTable()
    for _, key, value in changelog:
        table.data[key] = value.encode() if isinstance(value, str) else value
    return table


def records(events: list[dict], first_offset: int = 0) -> list[tuple]:
    codec = StepBatchCodec()
    return [(e["agent_id"].encode(), codec.encode([e]), [], "agent-steps", 0, first_offset + i)
            for i, e in enumerate(events)]


# Release 1 contained every trip agent-wide; the head of the fixture was judged that way, so
# an unbroken run reproduces it only with narrow containment (i15's per-tool and per-version
# restrictions, on by default since) turned off.
RELEASE_1_CONTAINMENT = Policy.model_validate({"defaults": {"breaker": {"containment": {
    "narrow_tools": False, "narrow_versions": False}}}})


def test_release_1_changelog_is_restored_and_resumes_like_an_unbroken_run() -> None:
    head, events = FIXTURE["head"], FIXTURE["events"]
    table = restored_table(FIXTURE["changelog"])
    assert all(v[:1] == b"{" for v in table.data.values()), "release 1's JSON values"

    restored = AgentStates(table, RELEASE_1_CONTAINMENT, keyword_scanner)
    assert restored.adopt_restored(limit=10_000) == len(FIXTURE["modes"])
    assert {a: restored.monitor(a).mode for a in FIXTURE["modes"]} == FIXTURE["modes"]
    assert restored.deadlines == {a: int(d) for a, d in FIXTURE["deadlines"].items()}
    assert not restored.quarantined
    tail = StepProcessor(restored).process(records(events[head:], first_offset=head))

    reference = StepProcessor(AgentStates(ChangelogTable(), RELEASE_1_CONTAINMENT,
                                          keyword_scanner))
    reference.process(records(events[:head]))
    expected = reference.process(records(events[head:], first_offset=head))
    assert tail.transitions, "the tail still trips breakers"
    assert [t.to_control() for t in tail.transitions] == \
        [t.to_control() for t in expected.transitions]
    assert tail.replayed_events == 0 and expected.replayed_events == 0

    # The next checkpoint writes the current format, which reads back the same.
    restored.checkpoint()
    for _, key, value in table.changelog:
        assert value[:1] != b"{"
        stored = decode(value)
        assert stored.version == STATE_VERSION and stored.monitor.agent == key


def test_redelivered_head_is_skipped_after_restoring_release_1_offsets() -> None:
    head, events = FIXTURE["head"], FIXTURE["events"]
    states = AgentStates(restored_table(FIXTURE["changelog"]), Policy(), keyword_scanner)
    again = StepProcessor(states).process(records(events[:head]))
    assert again.replayed_events == head and not again.transitions


def future_record(version: int) -> bytes:
    # What a later release might write: a record this release has never seen the shape of.
    return msgspec.msgpack.encode([version, {"agent": "x"}, "new layout", [1, 2, 3]])


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (future_record(STATE_VERSION + 1), "written by a newer release"),
        (future_record(99), "written by a newer release"),
        (b'{"p":0,"o":{},"w":1,"wm":1,"m":{"v":7}}', "JSON agent state of version 7"),
        (b"\x00\x01garbage", "not an agent state record"),
    ],
)
def test_unknown_or_damaged_state_is_quarantined_and_the_agent_starts_fresh(
    raw: bytes, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(StateVersionError):
        decode(raw)
    events = FIXTURE["events"][:400]
    agent = events[0]["agent_id"]
    table = restored_table(FIXTURE["changelog"])
    table.data[agent] = raw
    states = AgentStates(table, Policy(), keyword_scanner)
    with caplog.at_level(logging.WARNING, logger="tripwire.streams"):
        adopted = states.adopt_restored(limit=10_000)
        result = StepProcessor(states).process(records(events))
        states.checkpoint()
    assert adopted == len(FIXTURE["modes"]) - 1, "every other agent is restored"
    assert states.quarantined == {agent: raw}
    lines = [r.getMessage() for r in caplog.records if agent in r.getMessage()]
    assert len(lines) == 1, "one line per agent, not one per event"
    assert reason in lines[0] and "starts fresh" in lines[0]
    assert result.accepted == len(events)
    assert decode(table.data[agent]).monitor.agent == agent, "fresh state written over it"


class MonitorStateNext(msgspec.Struct, array_like=True):
    """MonitorState as a next release would declare it after adding a field the documented
    way: at the end, with a default."""

    agent: str
    clock: list[Any]
    next_maintenance: int
    loops: list[Any]
    denials: list[Any]
    spend: list[Any]
    injection: list[Any]
    breaker: list[Any]
    autonomy: list[Any] | None = None
    variants: dict[str, Any] | None = None
    new_detector: list[Any] = msgspec.field(default_factory=list)


class StoredAgentNext(msgspec.Struct, array_like=True):
    version: int
    partition: int
    offsets: dict[str, int]
    wall_ms: int
    watermark: int
    monitor: MonitorStateNext
    quarantine_count: int = 0


def some_stored() -> StoredAgent:
    states = AgentStates(restored_table(FIXTURE["changelog"]), Policy(), keyword_scanner)
    agent = next(iter(FIXTURE["modes"]))
    monitor = states.monitor(agent)
    return StoredAgent(version=STATE_VERSION, partition=0, offsets={"0": 7}, wall_ms=1,
                       watermark=monitor.clock.watermark, monitor=monitor.to_record())


def test_a_field_added_with_a_default_reads_both_ways() -> None:
    current = some_stored()
    # Next release reads this release's record: the new fields take their defaults.
    upgraded = msgspec.msgpack.decode(encode(current), type=StoredAgentNext)
    assert upgraded.monitor.new_detector == [] and upgraded.quarantine_count == 0
    assert upgraded.monitor.breaker == current.monitor.breaker
    # This release reads the next release's record (a rollback): trailing fields ignored.
    upgraded.monitor.new_detector = [1, 2]
    upgraded.quarantine_count = 3
    rolled_back = decode(msgspec.msgpack.encode(upgraded))
    assert rolled_back == current


def test_records_are_as_compact_as_release_1_json() -> None:
    table = restored_table(FIXTURE["changelog"])
    states = AgentStates(table, Policy(), keyword_scanner)
    states.adopt_restored(limit=10_000)
    old_bytes = sum(len(v) for v in table.data.values())
    for agent in FIXTURE["modes"]:
        states.update(agent, states.monitor(agent), 0, "0", 1)
    states.checkpoint()
    new_bytes = sum(len(v) for v in table.data.values())
    assert new_bytes < old_bytes


@settings(max_examples=100, deadline=None)
@given(
    partition=st.integers(0, 2**31 - 1),
    offsets=st.dictionaries(st.from_regex(r"[0-9]{1,4}", fullmatch=True),
                            st.integers(-1, 2**62), max_size=8),
    wall=st.integers(0, 2**62),
    cut=st.integers(0, len(FIXTURE["events"])),
)
def test_records_round_trip(partition: int, offsets: dict[str, int], wall: int,
                            cut: int) -> None:
    monitor = AgentMonitor("agent-000", Policy().for_agent("agent-000"), keyword_scanner)
    monitor.feed_many([e for e in FIXTURE["events"][:cut] if e["agent_id"] == "agent-000"])
    record = StoredAgent(version=STATE_VERSION, partition=partition, offsets=offsets,
                         wall_ms=wall, watermark=monitor.clock.watermark,
                         monitor=monitor.to_record())
    back = decode(encode(record))
    assert back == record
    rebuilt = AgentMonitor.from_record(back.monitor, Policy().for_agent("agent-000"),
                                       keyword_scanner)
    assert rebuilt.to_record() == monitor.to_record()
    assert isinstance(back.monitor, MonitorState)


# --- a real worker restores release 1's changelog -------------------------------------------


@pytest.mark.integration
def test_worker_restores_release_1_changelog_and_quarantines_a_future_record(
    tmp_path: Path,
) -> None:
    import asyncio
    import time

    from aiokafka import AIOKafkaProducer
    from test_pipeline import PARTITIONS

    from tripwire.bench.worker_process import WorkerProcess, read_all, worker_env
    from tripwire.schemas import topics
    from tripwire.schemas.codec import control_codec
    from tripwire.schemas.topics import TopicSpec, ensure_topics, tripwire_topics
    from tripwire.streams.app import END_MARKER_KEY
    from tripwire.streams.broker import EmbeddedBroker, free_port

    changelog_topic = "tripwire-agent-state-changelog"
    downgraded = {a: m for a, m in FIXTURE["modes"].items() if m != "autonomous"}
    assert downgraded
    day_ago = int(time.time() * 1000) - 86_400_000

    def aged(value: str) -> bytes:
        # The same release 1 value, last saved a day ago: its cool-downs are due now.
        stored = json.loads(value)
        stored["w"] = day_ago
        return json.dumps(stored, separators=(",", ":")).encode()

    def json_key(key: str) -> bytes:
        return json.dumps(key).encode()  # Faust's table keys travel JSON-encoded

    async def seed(bootstrap: str) -> None:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
        await producer.start()
        try:
            for partition, key, value in FIXTURE["changelog"]:
                await producer.send_and_wait(changelog_topic, aged(value), key=json_key(key),
                                             partition=partition)
            await producer.send_and_wait(changelog_topic, future_record(STATE_VERSION + 1),
                                         key=json_key("agent-from-the-future"), partition=0)
            for partition in range(PARTITIONS):  # alone in its batch, as the worker writes it
                await producer.send_and_wait(changelog_topic, None,
                                             key=json_key(END_MARKER_KEY), partition=partition)
        finally:
            await producer.stop()

    with EmbeddedBroker(port=free_port(), log_path=tmp_path / "tansu.log") as broker:
        bootstrap = broker.bootstrap
        asyncio.run(ensure_topics(bootstrap, [
            *tripwire_topics(PARTITIONS),
            TopicSpec(changelog_topic, PARTITIONS, {"cleanup.policy": "compact"})]))
        asyncio.run(seed(bootstrap))
        env = worker_env(bootstrap, tmp_path / "data", PARTITIONS)
        worker = WorkerProcess(env, tmp_path / "worker.log").start()
        try:
            worker.wait_ready()
            codec = control_codec()
            deadline = time.monotonic() + 120
            recovered: dict[str, dict] = {}
            while set(recovered) != set(downgraded):
                worker.check_progress(deadline, f"recoveries of {downgraded}, got {recovered}")
                for rec in asyncio.run(read_all(bootstrap, topics.CONTROLS, PARTITIONS)):
                    control = codec.decode(rec.value)
                    if control["agent_id"] in downgraded:
                        recovered.setdefault(control["agent_id"], control)
                time.sleep(1)
        finally:
            assert worker.stop() == 0, worker.log()[-3000:]
    # Each downgraded agent resumed from its stored mode (a fresh agent is autonomous and
    # has nothing to recover from) and continued its own sequence of controls.
    for agent, control in recovered.items():
        assert control["previous_mode"] == downgraded[agent], control
        assert control["seq"] > 1, control
    log = worker.log()
    assert "agent agent-from-the-future: stored state not restored" in log
    assert "written by a newer release" in log and "Traceback" not in log
