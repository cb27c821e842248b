"""The emitter SDK and step helpers, against the real embedded broker (no Kafka mocks)."""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
from collections import Counter, defaultdict
from typing import Any

import pytest
from aiokafka.codec import has_lz4
from aiokafka.partitioner import murmur2
from conftest import ListSink

from tripwire.bench.worker_process import read_all
from tripwire.schemas.codec import StepBatchCodec
from tripwire.schemas.models import StepEvent
from tripwire.schemas.topics import TopicSpec, ensure_topics
from tripwire.schemas.validation import check_batch_key, check_event
from tripwire.sdk import (
    AgentSession,
    AsyncEmitter,
    Emitter,
    RunAlreadyEnded,
    canonical_params_json,
    default_compression,
    params_hash,
)
from tripwire.streams.broker import EmbeddedBroker, free_port

pytestmark = pytest.mark.integration

PARTITIONS = 4


async def read_topic(bootstrap: str, topic: str) -> list[tuple[bytes, list[dict[str, Any]]]]:
    """Every record of ``topic`` as (key, decoded events), by manual assignment (no group)."""
    codec = StepBatchCodec()
    return [(m.key, codec.decode(m.value)) for m in await read_all(bootstrap, topic, PARTITIONS)]


@pytest.fixture
def steps_topic(make_topics) -> str:
    # make_topics runs its own event loop, so it must be called outside the test's loop.
    return make_topics(("steps", PARTITIONS))["steps"]


# -- params_hash ---------------------------------------------------------------------------


def test_params_hash_known_vectors():
    assert canonical_params_json({"b": 1, "a": "é"}) == '{"a":"é","b":1}'
    assert (
        params_hash({"b": 1, "a": "é"})
        == "aa58fba8483623bed37c1b02edfccbdd9a53123837c20bfa4cb4049993a2872e"
    )
    assert params_hash({}) == hashlib.sha256(b"{}").hexdigest()
    nested = {"to": ["x@y.z"], "n": {"z": True, "a": None}, "amt": 12.5, "q": 'line\n"q"'}
    assert canonical_params_json(nested) == (
        '{"amt":12.5,"n":{"a":null,"z":true},"q":"line\\n\\"q\\"","to":["x@y.z"]}'
    )
    assert params_hash(nested) == (
        "d4eccab4fd258d8d23bbee8dbbc8e5ea8499d9709edb1d6651fbd0f9dca349f3"
    )


def test_params_hash_ignores_key_order_and_rejects_nan():
    assert params_hash({"a": 1, "b": {"y": 2, "x": 1}}) == params_hash({"b": {"x": 1, "y": 2},
                                                                        "a": 1})
    assert params_hash({"a": 1}) != params_hash({"a": "1"})
    with pytest.raises(ValueError):
        params_hash({"a": float("nan")})


# -- step helpers --------------------------------------------------------------------------


def _session(sink: ListSink, **kw: Any) -> AgentSession:
    return AgentSession(sink, "agent-007", agent_version="1.2.3", workflow="crm-sync",
                        owner="revops-team", environment="prod", **kw)


def test_run_emits_numbered_canonical_steps():
    sink = ListSink()
    with _session(sink).run(run_id="run-1") as run:
        run.model_call("gpt-4o-mini", 1200, 80, 0.000228, 640)
        run.policy_decision("crm.update_contact", "write", "allowed", "allow-write")
        tc = run.tool_call("crm.update_contact", "write", {"contact_id": "C-1"},
                           latency_ms=120, content="ok", source_trust="internal")
        run.approval_request("payments.schedule", "money")
        run.approval_decision("payments.schedule", "alice@acme.example", True, 45_000)
        run.output("done")
    kinds = [e["kind"] for e in sink.events]
    assert kinds == ["run_start", "model_call", "policy_decision", "tool_call",
                     "approval_request", "approval_decision", "output", "run_end"]
    assert [e["step"] for e in sink.events] == list(range(8))
    assert sink.events[-1]["outcome"] == "success"
    assert tc["params_hash"] == params_hash({"contact_id": "C-1"})
    assert len({e["event_id"] for e in sink.events}) == 8
    for e in sink.events:
        assert check_event(e) is None
        # The canonical dict round-trips through the contract model unchanged.
        assert StepEvent.model_validate(e).to_record() == e
        assert (e["agent_id"], e["run_id"], e["workflow"]) == ("agent-007", "run-1", "crm-sync")


def test_run_outcomes():
    sink = ListSink()
    session = _session(sink)
    with pytest.raises(KeyError), session.run() as run:
        run.tool_call("crm.get_contact", "read", {"contact_id": "C-1"})
        raise KeyError("boom")
    assert sink.events[-1]["outcome"] == "failure"
    assert sink.events[-1]["attributes"] == {"error_type": "KeyError"}

    with session.run() as run:
        run.abandon({"reason": "user_cancelled"})
    assert sink.events[-1]["outcome"] == "abandoned"
    assert [e["kind"] for e in sink.events].count("run_end") == 2  # exit did not end it twice
    with pytest.raises(RunAlreadyEnded):
        run.output("too late")

    run = session.start_run()
    run.end("failure")
    assert sink.events[-1]["outcome"] == "failure"
    assert len({e["run_id"] for e in sink.events}) == 3

    with pytest.raises(ValueError, match="action_class"), session.run() as run:
        run.tool_call("x", "launch_missiles", {})
    assert sink.events[-1]["outcome"] == "failure"


async def test_async_run_outcomes():
    sink = ListSink()
    session = _session(sink)
    async with session.run() as run:
        run.output("hi")
    assert sink.events[-1]["outcome"] == "success"

    async def task() -> None:
        async with session.run() as r:
            r.model_call("gpt-4o", 10, 10)
            await asyncio.sleep(10)

    t = asyncio.create_task(task())
    await asyncio.sleep(0.01)
    t.cancel()
    with pytest.raises(asyncio.CancelledError):
        await t
    # Cancelled from outside is not the agent failing.
    assert sink.events[-1]["outcome"] == "abandoned"


def test_injectable_clock_and_ids():
    sink = ListSink()
    ids = iter(f"00000000-0000-4000-8000-{i:012d}" for i in range(100))
    session = _session(sink, clock=lambda: 1_767_225_600_000, new_id=lambda: next(ids))
    with session.run() as run:
        run.output("x")
    assert {e["ts"] for e in sink.events} == {1_767_225_600_000}
    assert sink.events[0]["run_id"] == "00000000-0000-4000-8000-000000000000"


# -- emitter against the broker ------------------------------------------------------------


def test_default_compression():
    assert default_compression() == ("lz4" if has_lz4() else "gzip")


async def test_emitter_delivers_batched_per_agent(broker: EmbeddedBroker, steps_topic: str):
    agents = [f"agent-{i:03d}" for i in range(12)]
    async with AsyncEmitter(broker.bootstrap, steps_topic, idempotence=False) as emitter:
        sessions = [AgentSession(emitter, a, workflow="crm-sync", environment="test")
                    for a in agents]
        for round_ in range(25):
            for s in sessions:
                with s.run() as run:
                    for i in range(8):
                        run.tool_call("crm.get_contact", "read", {"n": round_ * 100 + i})
            if round_ % 5 == 0:
                await asyncio.sleep(0)
        assert await emitter.flush(30)
        stats = emitter.stats()
    n = 12 * 25 * 10
    assert (stats.sent, stats.dropped, stats.errors, stats.buffered) == (n, 0, 0, 0)

    records = await read_topic(broker.bootstrap, steps_topic)
    events = [e for _, evs in records for e in evs]
    assert len(events) == n
    assert len({e["event_id"] for e in events}) == n
    for key, evs in records:
        assert check_batch_key(evs, key) is None  # key == every event's agent_id
    # Batching: many events per record, far fewer records than events.
    assert stats.records == len(records) < n / 5
    # Per-agent order survives batching and partitioning.
    by_run: dict[str, list[int]] = defaultdict(list)
    for e in events:
        by_run[e["run_id"]].append(e["step"])
    assert all(steps == list(range(10)) for steps in by_run.values())
    assert Counter(e["agent_id"] for e in events) == dict.fromkeys(agents, 250)


async def test_a_fleet_of_sporadic_agents_shares_records_per_partition(
        broker: EmbeddedBroker, steps_topic: str):
    # 60 agents each taking a step now and then: per-agent records would hold ~1 event each.
    agents = [f"fleet-{i:03d}" for i in range(60)]
    async with AsyncEmitter(broker.bootstrap, steps_topic, idempotence=False,
                            linger_ms=20) as emitter:
        sessions = {a: AgentSession(emitter, a).start_run() for a in agents}
        for round_ in range(10):
            for a in agents:
                sessions[a].tool_call("crm.get_contact", "read", {"n": round_})
            await asyncio.sleep(0.005)
        for run in sessions.values():
            run.end()
        assert await emitter.flush(30)
        stats = emitter.stats()
    n = 60 * 12
    assert (stats.sent, stats.dropped, stats.errors) == (n, 0, 0)

    messages = await read_all(broker.bootstrap, steps_topic, PARTITIONS)
    codec = StepBatchCodec()
    partition_of_agent: dict[str, set[int]] = defaultdict(set)
    mixed = 0
    for m in messages:
        events = codec.decode(m.value)
        if m.key is None:
            mixed += 1
            assert len({e["agent_id"] for e in events}) > 1
        else:
            assert check_batch_key(events, m.key) is None
        for e in events:
            partition_of_agent[e["agent_id"]].add(m.partition)
            # Where Kafka's default partitioner puts a record keyed by this agent.
            expected = (murmur2(e["agent_id"].encode()) & 0x7FFFFFFF) % PARTITIONS
            assert m.partition == expected, "mixed records go where keyed ones would"
    assert all(len(ps) == 1 for ps in partition_of_agent.values())
    assert mixed and len(messages) < n / 10, "one record per partition per linger, not per step"
    steps_by_run: dict[str, list[int]] = defaultdict(list)
    for m in messages:
        for e in codec.decode(m.value):
            steps_by_run[e["run_id"]].append(e["step"])
    assert all(steps == list(range(12)) for steps in steps_by_run.values()), "order kept"


async def test_byte_and_count_caps_split_records(broker: EmbeddedBroker, steps_topic: str):
    sink_events = []
    async with AsyncEmitter(broker.bootstrap, steps_topic, idempotence=False,
                            max_batch_events=7, max_batch_bytes=4096, linger_ms=20) as emitter:
        run = AgentSession(emitter, "agent-big").start_run()
        for i in range(60):
            sink_events.append(run.tool_call("web.fetch", "external", {"i": i},
                                             content="x" * (50 if i % 2 else 1500)))
        run.end()
    records = await read_topic(broker.bootstrap, steps_topic)
    assert sum(len(evs) for _, evs in records) == 62
    assert all(len(evs) <= 7 for _, evs in records)
    codec = StepBatchCodec()
    assert all(len(codec.encode(evs)) <= 4096 for _, evs in records)


async def test_bad_event_is_counted_not_raised(broker: EmbeddedBroker, steps_topic: str):
    async with AsyncEmitter(broker.bootstrap, steps_topic, idempotence=False) as emitter:
        run = AgentSession(emitter, "agent-x").start_run()
        for i in range(5):
            run.output(f"good {i}")
        bad = dict(run.output("will be corrupted"))
        bad["event_id"] = "bad-1"
        bad["step"] = "not an int"
        assert emitter.emit(bad) is True  # accepted; fails only when encoded in the background
        run.end()
        with pytest.raises(ValueError, match="agent_id"):
            emitter.emit({"kind": "output"})
        assert await emitter.flush(10)
        stats = emitter.stats()
    assert stats.errors == 1
    assert stats.sent == 8  # run_start, 6 outputs (one is the original of the bad copy), run_end
    events = [e for _, evs in await read_topic(broker.bootstrap, steps_topic) for e in evs]
    assert "bad-1" not in {e["event_id"] for e in events} and len(events) == 8


def test_full_buffer_drops_without_blocking_when_broker_unreachable():
    dead = f"127.0.0.1:{free_port()}"  # nothing listens there
    reports: list[dict[str, int]] = []
    emitter = Emitter(dead, "steps", idempotence=False, max_buffer_events=100,
                      max_block_ms=200, report_interval_s=0.1, on_drop=reports.append)
    agents = ["agent-a", "agent-b"]
    slowest = 0.0
    accepted = 0
    for i in range(1000):
        event = {"agent_id": agents[i % 2], "kind": "output", "content": str(i)}
        t = time.perf_counter()
        accepted += emitter.emit(event)
        slowest = max(slowest, time.perf_counter() - t)
    # Waiting for space cannot help while Kafka is unreachable, so emit does not wait at all
    # (the bound is generous only against a loaded CI machine).
    assert slowest < 0.1
    stats = emitter.stats()
    assert (accepted, stats.dropped, stats.buffered, stats.sent) == (100, 900, 100, 0)
    assert not stats.connected and not emitter.wait_connected(0.05)
    assert stats.dropped_by_agent == {"agent-a": 450, "agent-b": 450}

    deadline = time.monotonic() + 5
    while sum(sum(r.values()) for r in reports) < 900 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sum(r.get("agent-a", 0) for r in reports) == 450

    t = time.perf_counter()
    emitter.close(timeout_s=0.5)
    assert time.perf_counter() - t < 5
    stats = emitter.stats()
    # What was still buffered at close could not be delivered: counted, not raised.
    assert (stats.dropped, stats.sent, stats.buffered) == (1000, 0, 0)
    assert emitter.emit({"agent_id": "agent-a", "kind": "output"}) is False


async def test_async_emit_waits_at_most_max_block(broker: EmbeddedBroker, steps_topic: str):
    # A long linger keeps the buffer full while the sender is connected: a stalled drain.
    emitter = AsyncEmitter(broker.bootstrap, steps_topic, idempotence=False,
                           max_buffer_events=10, max_block_ms=30, linger_ms=1000)
    assert await emitter.wait_connected(10)
    sink = ListSink()
    run = AgentSession(sink, "agent-a").start_run()
    for _ in range(12):
        run.output("x")
    events = sink.events
    assert all(emitter.emit(e) for e in events[:10])
    assert emitter.emit(events[10]) is False  # emit never waits
    t = time.perf_counter()
    assert await emitter.emit_wait(events[11]) is False
    waited = time.perf_counter() - t
    assert 0.02 < waited < 0.5
    # Space frees once the lingering batch goes out; then emit_wait succeeds.
    assert await emitter.emit_wait(events[12], timeout_s=5)
    await emitter.close()
    stats = emitter.stats()
    assert (stats.sent, stats.dropped, stats.dropped_by_agent) == (11, 2, {"agent-a": 2})


def test_sync_emit_waits_at_most_max_block(broker: EmbeddedBroker, steps_topic: str):
    with Emitter(broker.bootstrap, steps_topic, idempotence=False, max_buffer_events=10,
                 max_block_ms=30, linger_ms=1000) as emitter:
        assert emitter.wait_connected(10)
        run = AgentSession(emitter, "agent-s").start_run()
        for _ in range(9):
            run.output("x")
        t = time.perf_counter()
        run.output("dropped")  # the helpers never raise on a drop
        waited = time.perf_counter() - t
        assert 0.02 < waited < 0.5
    assert emitter.stats().dropped == 1 and emitter.stats().sent == 10


def test_sync_emitter_from_threads(broker: EmbeddedBroker, steps_topic: str):
    threads_n, runs, steps = 8, 20, 5
    errors: list[BaseException] = []
    with Emitter(broker.bootstrap, steps_topic, idempotence=False) as emitter:

        def agent(i: int) -> None:
            try:
                session = AgentSession(emitter, f"agent-t{i}", environment="dev")
                for _ in range(runs):
                    with session.run() as run:
                        for s in range(steps):
                            run.model_call("gpt-4o-mini", 100 + s, 10, 0.0001, 50)
            except BaseException as exc:  # noqa: BLE001 - surfaced by the assert below
                errors.append(exc)

        threads = [threading.Thread(target=agent, args=(i,)) for i in range(threads_n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert emitter.flush(30)
        stats = emitter.stats()
    assert not errors
    n = threads_n * runs * (steps + 2)
    assert (stats.sent, stats.dropped, stats.errors) == (n, 0, 0)
    records = asyncio.run(read_topic(broker.bootstrap, steps_topic))
    events = [e for _, evs in records for e in evs]
    assert len(events) == n and len(records) < n
    assert all(check_batch_key(evs, key) is None for key, evs in records)


def test_stalled_broker_never_blocks_emit_and_accounts_for_every_event():
    # A broker of its own, so it can be stopped mid-stream without affecting other tests.
    with EmbeddedBroker(port=free_port()) as own:
        asyncio.run(ensure_topics(own.bootstrap, [TopicSpec("steps", 2)]))
        emitter = Emitter(own.bootstrap, "steps", idempotence=False, max_buffer_events=200,
                          max_block_ms=2, request_timeout_ms=1500, linger_ms=5)
        run = AgentSession(emitter, "agent-stall").start_run()
        for _ in range(49):
            run.output("before")
        assert emitter.flush(10) and emitter.stats().sent == 50
        # Killed rather than stopped: tansu waits out SIGTERM while clients stay connected,
        # and EmbeddedBroker.stop() would spend its 5 s grace period on that.
        assert own._proc is not None
        own._proc.kill()
        own._proc.wait()
        slowest = 0.0
        for i in range(1500):
            t = time.perf_counter()
            run.output(f"during {i}")
            slowest = max(slowest, time.perf_counter() - t)
        t = time.perf_counter()
        emitter.close(timeout_s=1.0)
        assert time.perf_counter() - t < 10
    assert slowest < 0.5
    stats = emitter.stats()
    assert stats.sent >= 50 and stats.dropped > 0
    # Nothing vanishes unaccounted: every emitted event is sent, dropped, failed or in flight.
    assert stats.sent + stats.dropped + stats.errors + stats.in_flight + stats.buffered == 1550


async def test_configuration_errors_raise_in_the_caller():
    with pytest.raises(ValueError, match="compression"):
        AsyncEmitter("127.0.0.1:1", compression="brotli")
    if not has_lz4():
        with pytest.raises(ValueError, match="cramjam"):
            AsyncEmitter("127.0.0.1:1", compression="lz4")
    with pytest.raises(ValueError, match="max_batch_bytes"):
        AsyncEmitter("127.0.0.1:1", max_batch_bytes=2_000_000)
    emitter = AsyncEmitter("127.0.0.1:1", producer_options={"acks": "sometimes"})
    with pytest.raises(ValueError):
        await emitter.start()
    # Closing an emitter that was never started still accounts for what it buffered.
    emitter = AsyncEmitter("127.0.0.1:1")
    assert emitter.emit({"agent_id": "a", "kind": "output"})
    await emitter.close()
    assert emitter.stats().dropped == 1
