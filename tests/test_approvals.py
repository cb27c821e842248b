"""Approvals routed to Tripwire's inbox, on the real embedded broker: the guard publishes the
request and waits, the inbox (dashboards/inbox.py) decides, the signed decision reaches the
guard, and the call runs or is refused. No browser here (tests/test_inbox_browser.py)."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from conftest import ListSink, until

from tripwire.dashboards.inbox import INBOX_DECIDED_BY, Inbox, InboxError, masked_params
from tripwire.schemas.codec import StepBatchCodec, approval_decision_codec, control_codec
from tripwire.schemas.command_signing import derive_agent_key, sign_control
from tripwire.schemas.topics import APPROVAL_DECISIONS, APPROVAL_REQUESTS, STEPS, TopicSpec
from tripwire.schemas.topics import ensure_topics as ensure
from tripwire.sdk import AgentSession
from tripwire.sdk.approvals import rationale
from tripwire.sdk.guard import AsyncGuard, ProposalOnly, ToolRefused

pytestmark = pytest.mark.integration
PARTITIONS = 4
KEY = ("ctl-test", "control-master-secret")
INBOX_WAIT_S = 15.0  # how long a condition below may take to hold


@pytest.fixture
def topics(broker, make_topics) -> str:
    asyncio.run(ensure(broker.bootstrap, [TopicSpec(APPROVAL_REQUESTS, PARTITIONS),
                                          TopicSpec(APPROVAL_DECISIONS, PARTITIONS),
                                          TopicSpec(STEPS, PARTITIONS)]))
    return make_topics(("controls", PARTITIONS), compacted=True)["controls"]


async def set_mode(bootstrap: str, topic: str, agent: str, mode: str) -> None:
    control = {"agent_id": agent, "mode": mode, "previous_mode": None, "scope": "agent",
               "run_id": None, "reason": "test", "detection_ids": [], "seq": 1,
               "issued_at": int(time.time() * 1000), "rule": "test", "expires_at": None,
               "source": "operator"}
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(topic, control_codec().encode(control), key=agent.encode(),
                                     headers=sign_control(control, *KEY))
    finally:
        await producer.stop()


async def recording_inbox(broker, topic: str, agent: str) -> tuple[Inbox, list[dict[str, Any]]]:
    """A started inbox whose stored decisions land in the returned list, and ``agent`` set to
    approve_to_act."""
    stored: list[dict[str, Any]] = []

    async def store(row: dict[str, Any]) -> None:
        stored.append(row)

    inbox = Inbox(broker.bootstrap, store_decision=store, control_key=KEY)
    await inbox.start()
    await set_mode(broker.bootstrap, topic, agent, "approve_to_act")
    return inbox, stored


def guard(broker, topic: str, agent: str, **options: Any) -> AsyncGuard:
    keys = {KEY[0]: derive_agent_key(KEY[1], agent)}
    return AsyncGuard(broker.bootstrap, agent, topic=topic, control_keys=keys, **options)


async def test_approve_runs_the_call_and_decline_refuses_it_with_the_reason(broker, topics):
    agent = f"agent-{uuid.uuid4().hex[:8]}"
    inbox, stored = await recording_inbox(broker, topics, agent)
    ran: list[dict] = []
    sink = ListSink()
    async with guard(broker, topics, agent) as g:
        assert await g.wait_for_mode("approve_to_act")

        @g.guarded("email.send", "external")
        async def send(to: str, body: str, password: str) -> str:
            ran.append({"to": to})
            return "sent"

        session = AgentSession(sink, agent, agent_version="1.2", workflow="outreach")
        with session.run() as run, g.bind(run):
            with rationale("the customer asked for the invoice"):
                call = asyncio.create_task(send("ann@example.com", "invoice", "hunter2"))
            await until(lambda: len(inbox.pending) == 1, INBOX_WAIT_S)
            request = next(iter(inbox.pending.values()))
            assert request["tool"] == "email.send" and request["action_class"] == "external"
            assert request["rationale"] == "the customer asked for the invoice"
            assert request["agent_version"] == "1.2" and request["run_id"] == run.run_id
            assert request["trigger"] == "mode.approve_to_act"
            assert request["params"]["to"] == "[EMAIL]"  # masked before it is shown
            assert request["params"]["password"] != "hunter2"
            assert not ran and not call.done()  # the guard waits
            await inbox.decide(request["request_id"], approver="alice", approved=True)
            assert await asyncio.wait_for(call, 10) == "sent"
            assert ran == [{"to": "ann@example.com"}]

            call = asyncio.create_task(send("bob@example.com", "x", "pw"))
            await until(lambda: len(inbox.pending) == 1, INBOX_WAIT_S)
            rid = next(iter(inbox.pending))
            with pytest.raises(InboxError, match="needs a reason"):
                await inbox.decide(rid, approver="alice", approved=False)
            await inbox.decide(rid, approver="alice", approved=False,
                               reason_code="wrong_recipient", reason_text="bob left")
            with pytest.raises(ToolRefused, match="wrong_recipient - bob left"):
                await asyncio.wait_for(call, 10)
            assert len(ran) == 1
            with pytest.raises(InboxError, match="already decided"):
                await inbox.decide(rid, approver="carol", approved=True)
    await inbox.stop()
    assert [(r["approved"], r["approver"], r["reason_code"]) for r in stored] == [
        (1, "alice", ""), (0, "alice", "wrong_recipient")]
    assert all(r["wait_ms"] >= 0 and r["tool"] == "email.send" for r in stored)
    # The inbox recorded the decisions, so the guard did not emit its own.
    kinds = [e["kind"] for e in sink.events]
    assert kinds.count("approval_request") == 2 and "approval_decision" not in kinds


async def test_the_decision_is_a_signed_step_event_and_forgeries_are_ignored(broker, topics):
    agent = f"agent-{uuid.uuid4().hex[:8]}"
    inbox = Inbox(broker.bootstrap, control_key=KEY)
    await inbox.start()
    await set_mode(broker.bootstrap, topics, agent, "approve_to_act")
    async with guard(broker, topics, agent) as g:
        assert await g.wait_for_mode("approve_to_act")
        sink = ListSink()
        with AgentSession(sink, agent).run() as run, g.bind(run):
            call = asyncio.create_task(_write(g))
            await until(lambda: len(inbox.pending) == 1, INBOX_WAIT_S)
            request = next(iter(inbox.pending.values()))
            # An unsigned "approval" for the same request is not accepted.
            forged = {k: request.get(k) for k in ("request_id", "agent_id", "run_id", "tool",
                                                  "action_class", "kind", "requested_at")}
            forged |= {"approved": True, "approver": "mallory", "reason_code": None,
                       "reason_text": None, "decided_at": int(time.time() * 1000)}
            producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap)
            await producer.start()
            await producer.send_and_wait(APPROVAL_DECISIONS,
                                         approval_decision_codec().encode(forged),
                                         key=agent.encode())
            await producer.stop()
            await until(lambda: g.approvals.rejected.get("unsigned", 0) == 1, INBOX_WAIT_S)
            assert not call.done()
            await inbox.decide(request["request_id"], approver="alice", approved=True)
            assert await asyncio.wait_for(call, 10) == "done"
    await inbox.stop()
    steps = await _read_steps(broker.bootstrap, agent)
    assert [(s["kind"], s["approver"], s["approved"]) for s in steps] == [
        ("approval_decision", "alice", True)]
    assert steps[0]["attributes"]["decided_by"] == INBOX_DECIDED_BY
    assert steps[0]["run_id"] == request["run_id"]


async def _write(g: AsyncGuard) -> str:
    async with g.action("crm.update", "write", {"id": 7}):
        return "done"


async def _read_steps(bootstrap: str, agent: str) -> list[dict[str, Any]]:
    from tripwire.bench.worker_process import read_all

    codec = StepBatchCodec()
    out = []
    for record in await read_all(bootstrap, STEPS, PARTITIONS):
        if record.key == agent.encode():
            out += codec.decode(record.value)
    return out


async def test_an_unanswered_request_expires_as_a_decline(broker, topics):
    agent = f"agent-{uuid.uuid4().hex[:8]}"
    inbox, stored = await recording_inbox(broker, topics, agent)
    async with guard(broker, topics, agent, approval_timeout_s=1.0) as g:
        assert await g.wait_for_mode("approve_to_act")
        with pytest.raises(ToolRefused, match="expired"):
            await asyncio.wait_for(_write(g), 15)
    await inbox.stop()
    assert [(r["approver"], r["reason_code"]) for r in stored] == [("tripwire-expiry",
                                                                     "expired")]


async def test_a_proposal_is_offered_without_waiting(broker, topics):
    agent = f"agent-{uuid.uuid4().hex[:8]}"
    inbox = Inbox(broker.bootstrap, control_key=KEY)
    await inbox.start()
    await set_mode(broker.bootstrap, topics, agent, "suggest_only")
    async with guard(broker, topics, agent) as g:
        assert await g.wait_for_mode("suggest_only")
        with pytest.raises(ProposalOnly):
            async with g.action("crm.update", "write", {"id": 1}):
                pytest.fail("must not run")
        await until(lambda: len(inbox.pending) == 1, INBOX_WAIT_S)
        proposal = next(iter(inbox.pending.values()))
        assert proposal["kind"] == "proposal" and proposal["trigger"] == "mode.suggest_only"
        entry = await inbox.decide(proposal["request_id"], approver="alice", approved=True)
        assert entry["approved"] and entry["kind"] == "proposal"
    await inbox.stop()


def test_masked_params_mask_values_by_field() -> None:
    masked = masked_params('{"to": "ann@example.com", "api_key": "sk-1234567890abcdef",'
                           ' "n": 3, "nested": {"card": "4111 1111 1111 1111"}}')
    assert masked is not None
    assert masked["to"] == "[EMAIL]" and masked["n"] == 3
    assert "1111 1111" not in str(masked["nested"]) and "sk-1234567890abcdef" not in str(masked)


def test_an_unreachable_inbox_declines_and_the_next_request_tries_again(tmp_path) -> None:
    from tripwire.sdk.approvals import TripwireApprovals
    from tripwire.sdk.decisions import ApprovalRequest, Decision
    from tripwire.streams.broker import free_port

    route = TripwireApprovals(f"127.0.0.1:{free_port()}", "agent-x", timeout_s=5)
    decision = Decision("needs_approval", "approve_to_act", "t", "write", "guard.mode.x", "r")
    request = ApprovalRequest("agent-x", None, "t", "write", None, decision)
    for _ in range(2):
        approval = route(request)
        assert not approval.approved and "unreachable" in (approval.note or "")
    route.close()
