"""The SDK guard against the real embedded broker: Control records written to a compacted test
topic drive it; nothing about Kafka is mocked."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner
from conftest import ListSink, until

from tripwire.bench.worker_process import read_all
from tripwire.schemas.codec import command_codec, control_codec
from tripwire.schemas.command_signing import (
    CommandVerifier,
    derive_agent_key,
    sign_command,
    sign_control,
)
from tripwire.schemas.modes import Mode
from tripwire.schemas.topics import TopicSpec, ensure_topics
from tripwire.sdk.control_follower import key_partition
from tripwire.sdk.guard import (
    Approval,
    AsyncGuard,
    Guard,
    Proposal,
    ProposalOnly,
    RunHalted,
    ToolRefused,
    verdict_for,
)
from tripwire.sdk.steps import AgentSession
from tripwire.streams.broker import EmbeddedBroker, free_port

pytestmark = pytest.mark.integration

PARTITIONS = 4
ACTION_CLASSES = ("read", "write", "external", "money", "destructive")
_codec = control_codec()


def control(agent_id: str, seq: int, mode: str, *, scope: str = "agent", run_id: str | None = None,
            previous_mode: str | None = None, reason: str = "test") -> dict[str, Any]:
    return {
        "agent_id": agent_id, "mode": mode, "previous_mode": previous_mode, "scope": scope,
        "run_id": run_id, "reason": reason, "detection_ids": [], "seq": seq,
        "issued_at": int(time.time() * 1000), "rule": "test_rule", "expires_at": None,
        "source": "breaker",
    }


async def publish(bootstrap: str, topic: str, records: Sequence[Mapping[str, Any]], *,
                  headers: Sequence[tuple[str, bytes]] | None = None,
                  key: str | None = None) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=False)
    await producer.start()
    try:
        for record in records:
            await producer.send_and_wait(
                topic, _codec.encode(record), key=(key or record["agent_id"]).encode(),
                headers=list(headers) if headers is not None else None)
    finally:
        await producer.stop()


@pytest.fixture
def controls_topic(make_topics) -> str:
    return make_topics(("controls", PARTITIONS), compacted=True)["controls"]


def guard_for(broker: EmbeddedBroker, topic: str, agent_id: str, **options: Any) -> AsyncGuard:
    return AsyncGuard(broker.bootstrap, agent_id, topic=topic, **options)


# -- the mode table ------------------------------------------------------------------------

EXPECTED = {
    "autonomous": dict.fromkeys(ACTION_CLASSES, "allow"),
    "approve_to_act": {"read": "allow", **dict.fromkeys(ACTION_CLASSES[1:], "needs_approval")},
    "suggest_only": {"read": "allow", **dict.fromkeys(ACTION_CLASSES[1:], "suggest_only")},
    "read_only": {"read": "allow", **dict.fromkeys(ACTION_CLASSES[1:], "deny")},
    "halted": dict.fromkeys(ACTION_CLASSES, "deny"),
}


@pytest.mark.parametrize("mode", list(EXPECTED))
@pytest.mark.parametrize("action_class", ACTION_CLASSES)
def test_every_mode_and_action_class(mode: str, action_class: str):
    assert verdict_for(mode, action_class) == EXPECTED[mode][action_class]


def test_unknown_action_class_is_an_error_at_the_call_site():
    with pytest.raises(ValueError, match="action_class"):
        verdict_for("autonomous", "teleport")


def test_safe_mode_cannot_be_autonomous():
    with pytest.raises(ValueError, match="fail open"):
        AsyncGuard("127.0.0.1:1", "a", safe_mode="autonomous")


async def test_controls_on_the_topic_drive_every_mode(broker, controls_topic):
    async with guard_for(broker, controls_topic, "agent-1") as guard:
        assert guard.status().caught_up and not guard.status().stale
        assert guard.check("crm.update", "write").verdict == "allow"
        # Starts below autonomous so every wait really waits for its record.
        order = ["read_only", "approve_to_act", "halted", "suggest_only", "autonomous"]
        for seq, mode in enumerate(order, start=1):
            await publish(broker.bootstrap, controls_topic, [control("agent-1", seq, mode)])
            assert await guard.wait_for_mode(mode, 10)
            for action_class in ACTION_CLASSES:
                decision = guard.check("tool", action_class)
                assert decision.verdict == EXPECTED[mode][action_class], (mode, action_class)
                assert decision.mode == mode and decision.seq == seq and not decision.stale
                assert decision.rule == f"guard.mode.{mode}"


async def test_reads_the_latest_state_at_start(broker, controls_topic):
    await publish(broker.bootstrap, controls_topic, [
        control("agent-1", 1, "approve_to_act"),
        control("agent-2", 7, "halted"),  # another agent, maybe on the same partition
        control("agent-1", 2, "read_only", reason="denial storm"),
    ])
    async with guard_for(broker, controls_topic, "agent-1") as guard:
        status = guard.status()
        assert status.mode == Mode.READ_ONLY and status.seq == 2
        assert "denial storm" in status.reason
        assert guard.check("crm.update", "write").verdict == "deny"


async def test_applies_controls_only_in_seq_order(broker, controls_topic):
    async with guard_for(broker, controls_topic, "agent-1") as guard:
        await publish(broker.bootstrap, controls_topic, [control("agent-1", 5, "read_only")])
        assert await guard.wait_for_mode("read_only")
        # Redelivered or reordered: not above the last applied seq, so ignored.
        await publish(broker.bootstrap, controls_topic, [
            control("agent-1", 3, "autonomous"), control("agent-1", 5, "autonomous")])
        await until(lambda: guard.state.ignored == 2)
        assert guard.status().mode == Mode.READ_ONLY
        await publish(broker.bootstrap, controls_topic, [control("agent-1", 6, "autonomous")])
        assert await guard.wait_for_mode("autonomous")


async def test_a_stopped_run_is_refused_and_other_runs_go_on(broker, controls_topic):
    async with guard_for(broker, controls_topic, "agent-1") as guard:
        await publish(broker.bootstrap, controls_topic, [
            control("agent-1", 1, "halted", scope="run", run_id="run-a",
                    previous_mode="autonomous", reason="runaway loop")])
        assert await guard.wait_for_mode("halted", run_id="run-a")
        stopped = guard.check("web.search", "read", "run-a")
        assert stopped.verdict == "deny" and stopped.ends_run
        assert stopped.rule == "guard.run_stopped" and "runaway loop" in stopped.reason
        assert guard.check("web.search", "read", "run-b").verdict == "allow"
        assert guard.check("crm.update", "write").verdict == "allow"
        assert guard.status().stopped_runs == ["run-a"]


async def test_a_compacted_run_stop_still_carries_the_agents_mode(broker, controls_topic):
    # After compaction only the latest record per agent is left; a run stop carries the
    # agent's mode in previous_mode, so a guard starting late still learns it.
    await publish(broker.bootstrap, controls_topic, [
        control("agent-1", 9, "halted", scope="run", run_id="run-a", previous_mode="read_only")])
    async with guard_for(broker, controls_topic, "agent-1") as guard:
        assert guard.status().mode == Mode.READ_ONLY
        assert guard.check("crm.update", "write", "run-b").verdict == "deny"
        assert guard.check("crm.get", "read", "run-a").rule == "guard.run_stopped"


async def test_a_kill_reaches_the_agent_within_one_second(broker, controls_topic):
    async with guard_for(broker, controls_topic, "agent-1") as guard:
        started = time.monotonic()
        await publish(broker.bootstrap, controls_topic, [control("agent-1", 1, "halted")])
        assert await guard.wait_for_mode("halted", 5)
        assert time.monotonic() - started < 1.0


@pytest.mark.parametrize("agent_id", ["agent-1", "crm-sync-7", "é", "x" * 40])
def test_reads_the_partition_the_default_partitioner_picks(agent_id: str):
    partitions = list(range(PARTITIONS))
    key = agent_id.encode()
    assert key_partition(key, PARTITIONS) == DefaultPartitioner()(key, partitions, partitions)


# -- staleness -----------------------------------------------------------------------------


@pytest.fixture
def own_broker(tmp_path) -> Iterator[EmbeddedBroker]:
    """A broker this test may kill and restart (on the same port)."""
    broker = EmbeddedBroker(port=free_port(), log_path=tmp_path / "tansu.log").start()
    yield broker
    broker.stop()


async def test_broker_loss_drives_the_safe_mode_within_the_limit_and_recovers(own_broker):
    topic, spec = "agent-controls", TopicSpec("agent-controls", PARTITIONS,
                                              {"cleanup.policy": "compact"})
    await ensure_topics(own_broker.bootstrap, [spec])
    staleness = 1.5
    async with AsyncGuard(own_broker.bootstrap, "agent-1", topic=topic,
                          staleness_s=staleness) as guard:
        assert guard.check("crm.update", "write").verdict == "allow"
        own_broker.stop()
        lost = time.monotonic()
        assert await guard.wait_for_mode("read_only", staleness + 2)
        assert time.monotonic() - lost <= staleness + 1.0
        decision = guard.check("crm.update", "write")
        assert decision.verdict == "deny" and decision.stale
        assert decision.rule == "guard.safe_mode.read_only"
        assert "no word from the control plane" in decision.reason
        assert guard.check("crm.get", "read").verdict == "allow"

        # The in-memory broker comes back empty: the topic has to be made again.
        own_broker.start()
        await ensure_topics(own_broker.bootstrap, [spec])
        assert await guard.wait_for_mode("autonomous", 20)
        assert not guard.check("crm.update", "write").stale
        await publish(own_broker.bootstrap, topic, [control("agent-1", 1, "suggest_only")])
        assert await guard.wait_for_mode("suggest_only", 10)


async def test_never_heard_from_means_safe_mode():
    guard = AsyncGuard(f"127.0.0.1:{free_port()}", "agent-1", staleness_s=1,
                       safe_mode="suggest_only")
    assert not await guard.start(timeout_s=0.5)
    try:
        decision = guard.check("email.send", "external")
        assert decision.verdict == "suggest_only" and decision.stale
        assert "not been heard from yet" in decision.reason
    finally:
        await guard.close()


async def test_the_safe_mode_never_raises_a_lower_mode(own_broker):
    topic = "agent-controls"
    await ensure_topics(own_broker.bootstrap, [TopicSpec(topic, PARTITIONS)])
    await publish(own_broker.bootstrap, topic, [control("agent-1", 1, "halted")])
    async with AsyncGuard(own_broker.bootstrap, "agent-1", topic=topic, staleness_s=1) as guard:
        own_broker.stop()
        await until(lambda: guard.status().stale, 5)
        decision = guard.check("crm.get", "read")
        assert decision.mode == Mode.HALTED and decision.verdict == "deny"


# -- authenticity of controls -------------------------------------------------------------

MASTER = "worker-master-secret"


async def test_only_authentic_controls_are_applied(broker, controls_topic):
    key = {"k1": derive_agent_key(MASTER, "agent-1")}
    async with guard_for(broker, controls_topic, "agent-1", control_keys=key) as guard:
        down = control("agent-1", 1, "read_only")
        await publish(broker.bootstrap, controls_topic, [down],
                      headers=sign_control(down, "k1", MASTER))
        assert await guard.wait_for_mode("read_only")

        lift = control("agent-1", 2, "autonomous")
        await publish(broker.bootstrap, controls_topic, [lift])  # unsigned
        await publish(broker.bootstrap, controls_topic, [lift],  # signed with a guessed key
                      headers=sign_control(lift, "k1", "guessed"))
        tampered = dict(lift, seq=3)
        await publish(broker.bootstrap, controls_topic, [tampered],  # signature of another
                      headers=sign_control(lift, "k1", MASTER))
        other = control("agent-2", 4, "autonomous")  # authentic, but for another agent
        await publish(broker.bootstrap, controls_topic, [other], key="agent-1",
                      headers=sign_control(other, "k1", MASTER))
        await until(lambda: sum(guard.follower.rejected.values()) == 4)
        assert guard.follower.rejected == {"unsigned": 1, "bad_signature": 2, "wrong_agent": 1}
        assert guard.status().mode == Mode.READ_ONLY

        real = control("agent-1", 5, "autonomous")
        await publish(broker.bootstrap, controls_topic, [real],
                      headers=sign_control(real, "k1", MASTER))
        assert await guard.wait_for_mode("autonomous")


async def test_an_agent_cannot_lift_its_own_downgrade(broker, make_topics):
    """The agent's credentials reach agent-commands and agent-controls (in production ACLs
    stop even that, see docs/security.md); what it writes there still changes nothing."""
    topics = await asyncio.to_thread(
        lambda: make_topics(("controls", PARTITIONS), ("commands", PARTITIONS), compacted=True))
    agent_key = {"k1": derive_agent_key(MASTER, "agent-1")}  # what the agent is provisioned
    async with guard_for(broker, topics["controls"], "agent-1", control_keys=agent_key) as guard:
        down = control("agent-1", 1, "read_only")
        await publish(broker.bootstrap, topics["controls"], [down],
                      headers=sign_control(down, "k1", MASTER))
        assert await guard.wait_for_mode("read_only")

        # 1. Commands: the agent has no operator key. Unsigned, or signed with a key of its
        #    own (even its control key), the stream's verifier rejects the release.
        release = {"command_id": "c-1", "action": "release", "agent_id": "agent-1",
                   "reason": "I am fine", "operator": "agent-1",
                   "issued_at": int(time.time() * 1000)}
        forged = [release, sign_command(release, "k1", agent_key["k1"]),
                  sign_command(release, "ops", "made-up")]
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, enable_idempotence=False)
        await producer.start()
        try:
            for cmd in forged:
                await producer.send_and_wait(topics["commands"], command_codec().encode(cmd),
                                             key=b"agent-1")
        finally:
            await producer.stop()
        verifier = CommandVerifier({"ops": "the-operators-secret"})
        landed = await read_all(broker.bootstrap, topics["commands"], PARTITIONS)
        verdicts = [verifier.verify(command_codec().decode(r.value), int(time.time() * 1000))
                    for r in landed]
        assert verdicts == ["unsigned", "unknown_key", "bad_signature"]

        # 2. Controls: whatever the agent can sign, it is not the worker's signature.
        lift = control("agent-1", 2, "autonomous")
        await publish(broker.bootstrap, topics["controls"], [lift])
        await publish(broker.bootstrap, topics["controls"], [lift],
                      headers=sign_control(lift, "k1", agent_key["k1"]))
        await until(lambda: sum(guard.follower.rejected.values()) == 2)
        assert guard.status().mode == Mode.READ_ONLY
        assert guard.check("crm.update", "write").verdict == "deny"


# -- integration with agent code ----------------------------------------------------------


@pytest.fixture
def sync_guard(broker, controls_topic) -> Iterator[tuple[Guard, str]]:
    guard = Guard(broker.bootstrap, "agent-1", topic=controls_topic)
    assert guard.start()
    yield guard, controls_topic
    guard.close()


def set_mode(broker, topic: str, guard: Guard, seq: int, mode: str, **kw: Any) -> None:
    asyncio.run(publish(broker.bootstrap, topic, [control("agent-1", seq, mode, **kw)]))
    assert guard.wait_for_mode(mode, 10, run_id=kw.get("run_id"))


def test_decorated_sync_tools_obey_the_mode_and_record_it(broker, sync_guard):
    guard, topic = sync_guard
    calls: list[str] = []

    @guard.guarded("crm.update_contact", "write")
    def update_contact(contact_id: str, stage: str) -> str:
        calls.append(contact_id)
        return f"{contact_id}:{stage}"

    @guard.guarded("crm.get_contact", "read")
    def get_contact(contact_id: str) -> str:
        return contact_id

    sink = ListSink()
    session = AgentSession(sink, "agent-1")
    with session.run() as run, guard.bind(run):
        assert update_contact("C-1", stage="won") == "C-1:won"
        tool_calls = sink.of_kind("tool_call")
        assert tool_calls[-1]["tool"] == "crm.update_contact"
        assert tool_calls[-1]["status"] == "ok" and tool_calls[-1]["params_hash"]
        assert sink.of_kind("policy_decision") == []  # plain allows are not emitted

        set_mode(broker, topic, guard, 1, "read_only")
        with pytest.raises(ToolRefused) as refused:
            update_contact("C-2", stage="lost")
        assert calls == ["C-1"]
        assert refused.value.decision.rule == "guard.mode.read_only"
        assert get_contact("C-3") == "C-3"
        decision_event = sink.of_kind("policy_decision")[-1]
        assert decision_event["policy_outcome"] == "denied"
        assert decision_event["policy_rule"] == "guard.mode.read_only"
        assert decision_event["attributes"]["decided_by"] == "tripwire-guard"
        assert decision_event["tool"] == "crm.update_contact"

        set_mode(broker, topic, guard, 2, "suggest_only")
        proposal = update_contact("C-4", stage="won")
        assert isinstance(proposal, Proposal) and calls == ["C-1"]
        assert proposal.params == {"contact_id": "C-4", "stage": "won"}
        assert "Proposed, not executed" in proposal.describe()
        assert sink.of_kind("policy_decision")[-1]["policy_outcome"] == "escalated"

        set_mode(broker, topic, guard, 3, "halted")
        with pytest.raises(RunHalted):
            get_contact("C-5")
    assert run.outcome == "abandoned"
    assert sink.events[-1]["kind"] == "run_end"
    assert sink.events[-1]["attributes"]["stopped_by"] == "tripwire-guard"


def test_approve_to_act_asks_the_hook_and_records_the_wait(broker, sync_guard):
    guard, topic = sync_guard
    asked: list[str] = []

    def approve_small_refunds(request) -> Approval:
        asked.append(request.tool)
        time.sleep(0.05)
        return Approval(request.params["amount"] < 100, approver="alice")

    guard.approval_hook = approve_small_refunds

    @guard.guarded("payments.refund", "money")
    def refund(amount: int) -> str:
        return f"refunded {amount}"

    set_mode(broker, topic, guard, 1, "approve_to_act")
    sink = ListSink()
    with AgentSession(sink, "agent-1").run() as run, guard.bind(run):
        assert refund(20) == "refunded 20"
        with pytest.raises(ToolRefused, match="approval refused by alice"):
            refund(500)
    assert asked == ["payments.refund", "payments.refund"]
    requests, decisions = sink.of_kind("approval_request"), sink.of_kind("approval_decision")
    assert len(requests) == 2 and [d["approved"] for d in decisions] == [True, False]
    assert all(d["approver"] == "alice" and d["wait_ms"] >= 50 for d in decisions)
    assert [e["policy_outcome"] for e in sink.of_kind("policy_decision")] == [
        "approval_required", "approval_required", "denied"]


def test_no_approval_hook_means_no_side_effects(broker, sync_guard):
    guard, topic = sync_guard
    guard.approval_hook = guard.approvals = None  # as with Guard(..., route_approvals=False)
    set_mode(broker, topic, guard, 1, "approve_to_act")
    with pytest.raises(ToolRefused) as refused, guard.action("email.send", "external"):
        pytest.fail("must not run")
    assert refused.value.decision.rule == "guard.approval.no_hook"


def test_context_manager_integration(broker, sync_guard):
    guard, topic = sync_guard
    sink = ListSink()
    with AgentSession(sink, "agent-1").run() as run:
        with guard.action("crm.update", "write", {"id": 1}, run=run) as decision:
            assert decision.allowed
        assert sink.of_kind("tool_call")[-1]["tool"] == "crm.update"
        set_mode(broker, topic, guard, 1, "suggest_only")
        with pytest.raises(ProposalOnly) as proposal, \
                guard.action("crm.update", "write", {"id": 2}, run=run):
            pytest.fail("must not run")
        assert proposal.value.proposal.params == {"id": 2}


def test_a_stopped_run_ends_at_its_next_step(broker, sync_guard):
    guard, topic = sync_guard
    sink = ListSink()
    session = AgentSession(sink, "agent-1")

    @guard.guarded("web.search", "read")
    def search(q: str) -> str:
        return q

    with session.run(run_id="run-a") as run_a, guard.bind(run_a):
        assert search("x") == "x"
        set_mode(broker, topic, guard, 1, "halted", scope="run", run_id="run-a",
                 previous_mode="autonomous")
        with pytest.raises(RunHalted):
            search("y")
    assert run_a.outcome == "abandoned"
    with session.run(run_id="run-b") as run_b, guard.bind(run_b):
        assert search("z") == "z"
    assert run_b.outcome == "success"


async def test_decorated_async_tools_with_an_async_approval_hook(broker, controls_topic):
    async def hook(request):
        await asyncio.sleep(0.01)
        return Approval(True, approver="bob")

    async with guard_for(broker, controls_topic, "agent-1", approval_hook=hook) as guard:

        @guard.guarded("email.send", "external")
        async def send(to: str) -> str:
            return f"sent to {to}"

        sink = ListSink()
        async with AgentSession(sink, "agent-1").run() as run, guard.bind(run):
            assert await send("a@example.com") == "sent to a@example.com"
            await publish(broker.bootstrap, controls_topic,
                          [control("agent-1", 1, "approve_to_act")])
            assert await guard.wait_for_mode("approve_to_act")
            assert await send("b@example.com") == "sent to b@example.com"
            assert sink.of_kind("approval_decision")[-1]["approver"] == "bob"
            await publish(broker.bootstrap, controls_topic, [control("agent-1", 2, "read_only")])
            assert await guard.wait_for_mode("read_only")
            with pytest.raises(ToolRefused):
                await send("c@example.com")
        statuses = [e["status"] for e in sink.of_kind("tool_call")]
        assert statuses == ["ok", "ok"]


async def test_a_mode_drop_during_the_approval_wait_wins(broker, controls_topic):
    async def slow_yes(request):
        await publish(broker.bootstrap, controls_topic, [control("agent-1", 2, "halted")])
        await until(lambda: guard.status().mode == Mode.HALTED)
        return True

    await publish(broker.bootstrap, controls_topic, [control("agent-1", 1, "approve_to_act")])
    async with guard_for(broker, controls_topic, "agent-1", approval_hook=slow_yes) as guard:
        ran = []

        @guard.guarded("db.drop_table", "destructive")
        async def drop() -> None:
            ran.append(True)

        with pytest.raises(RunHalted):
            await drop()
        assert ran == []
