"""Earned autonomy end to end on the stack: a real `tripwire worker`, the embedded broker, the
approval inbox (dashboards/inbox.py) standing in for the humans, and agents whose guards route
their approvals and proposals to it.

The policy starts every agent in suggest_only with small thresholds (4 decisions at >= 80 %
to climb, 3 at < 50 % to fall), so the whole ladder takes a dozen decisions:

* grad-bot: suggest_only -> approve_to_act -> autonomous, one rung at a time;
* capped-bot (ceiling approve_to_act): climbs to its ceiling, stays there however well it
  does, and drops back to suggest_only when the humans keep declining.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator

import pytest

from tripwire.bench.worker_process import WorkerProcess, worker_env
from tripwire.dashboards.console import Console
from tripwire.dashboards.inbox import Inbox
from tripwire.schemas.command_signing import derive_agent_key
from tripwire.schemas.topics import ensure_topics, tripwire_topics
from tripwire.sdk import AgentSession, Emitter
from tripwire.sdk.guard import AsyncGuard, Proposal, ToolRefused
from tripwire.streams.broker import EmbeddedBroker, free_port

pytestmark = pytest.mark.integration
PARTITIONS = 4
CONTROL_KEY = ("ctl-earn", "control-master-for-autonomy-tests")
POLICY = """
defaults:
  autonomy:
    start_mode: suggest_only
    ceiling: autonomous
    earn: true
    window_ms: 600000
    buckets: 10
    promote_agreement: 0.8
    promote_min_decisions: 4
    demote_agreement: 0.5
    demote_min_decisions: 3
agents:
  capped-bot:
    autonomy:
      ceiling: approve_to_act
"""


@pytest.fixture(scope="module")
def bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("earned")
    (tmp / "policy.yaml").write_text(POLICY)
    with EmbeddedBroker(free_port(), log_path=tmp / "tansu.log") as broker:
        asyncio.run(ensure_topics(broker.bootstrap, tripwire_topics(PARTITIONS)))
        env = worker_env(broker.bootstrap, tmp / "data", PARTITIONS,
                         TRIPWIRE_POLICY_FILE=str(tmp / "policy.yaml"),
                         TRIPWIRE_CONTROL_KEY_ID=CONTROL_KEY[0],
                         TRIPWIRE_CONTROL_KEYS=json.dumps({CONTROL_KEY[0]: CONTROL_KEY[1]}))
        worker = WorkerProcess(env, tmp / "worker.log").start().wait_ready(120)
        try:
            yield broker.bootstrap
        finally:
            worker.stop()


async def until(condition, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


class Humans:
    """Decide each request for ``agent`` as told, through the inbox."""

    def __init__(self, inbox: Inbox) -> None:
        self.inbox = inbox

    async def decide_next(self, agent: str, approve: bool) -> dict:
        await until(lambda: any(r["agent_id"] == agent for r in self.inbox.pending.values()))
        rid = next(r for r, req in self.inbox.pending.items() if req["agent_id"] == agent)
        return await self.inbox.decide(rid, approver="reviewer", approved=approve,
                                       reason_code=None if approve else "wrong_data")


async def one_call(guard: AsyncGuard, humans: Humans, approve: bool) -> None:
    """The agent tries a write; in suggest_only it is a proposal, in approve_to_act it waits."""
    @guard.guarded("crm.update_contact", "write")
    async def update(contact_id: str) -> str:
        return "updated"

    call = asyncio.create_task(update(f"C-{uuid.uuid4().hex[:4]}"))
    if guard.decide("crm.update_contact", "write").verdict == "allow":
        assert await call == "updated"
        return
    await humans.decide_next(guard.agent_id, approve)
    try:
        result = await asyncio.wait_for(call, 30)
    except ToolRefused:
        assert not approve
        return
    assert isinstance(result, Proposal) or (approve and result == "updated")


async def run_agent(bootstrap: str, agent: str, humans: Humans, emitter: Emitter,
                    script: list[tuple[bool, str | None]]) -> list[str]:
    """Decide one call per script entry (approve?, expected mode after it or None)."""
    keys = {CONTROL_KEY[0]: derive_agent_key(CONTROL_KEY[1], agent)}
    modes = []
    async with AsyncGuard(bootstrap, agent, control_keys=keys, staleness_s=30) as guard:
        session = AgentSession(emitter, agent, agent_version="1.0")
        with session.run() as run, guard.bind(run):
            emitter.flush(10)
            # A new agent starts where the policy says, as soon as the worker sees it.
            assert await guard.wait_for_mode("suggest_only", 30)
            modes.append(str(guard.status().mode))
            for approve, expect in script:
                await one_call(guard, humans, approve)
                if expect is not None:
                    assert await guard.wait_for_mode(expect, 30), (
                        f"{agent} expected {expect}, is {guard.status().mode}")
                    modes.append(expect)
            await asyncio.sleep(1.0)  # nothing pending moves it further
            modes.append(str(guard.status().mode))
            print(f"\n{agent}: {guard.status().reason}")
    return modes


async def test_graduation_and_the_ceiling(bootstrap: str) -> None:
    inbox = Inbox(bootstrap, control_key=CONTROL_KEY)
    await inbox.start()
    console = Console(bootstrap, operator_key=None,
                      control_keys={CONTROL_KEY[0]: CONTROL_KEY[1]})
    await console.start()
    humans = Humans(inbox)
    emitter = Emitter(bootstrap, idempotence=False, linger_ms=1)
    try:
        grad = f"grad-bot-{uuid.uuid4().hex[:6]}"
        climb = [(True, None)] * 3 + [(True, "approve_to_act")] + \
            [(True, None)] * 3 + [(True, "autonomous")]
        modes = await run_agent(bootstrap, grad, humans, emitter, climb)
        assert modes == ["suggest_only", "approve_to_act", "autonomous", "autonomous"]

        capped = "capped-bot"
        script = [(True, None)] * 3 + [(True, "approve_to_act")] + \
            [(True, None)] * 4 + [(False, None)] * 4 + [(False, "suggest_only")]
        modes = await run_agent(bootstrap, capped, humans, emitter, script)
        assert modes == ["suggest_only", "approve_to_act", "suggest_only", "suggest_only"]
        decided = [d for d in inbox.decided.values() if d["agent_id"] == capped]
        # Four approvals at approve_to_act (100 %, enough to climb) did not pass the ceiling;
        # 4 of 9 (44 %) then took it back down.
        assert sum(1 for d in decided if d["kind"] == "approval" and d["approved"]) == 4
        # The console shows each agent's rung, the numbers behind it and what the next needs.
        await until(lambda: any(a["agent_id"] == capped and a["earned"]
                                and a["earned"]["rule"] == "autonomy.demote"
                                for a in console.agents()))
        row = next(a for a in console.agents() if a["agent_id"] == capped)
        assert "4 of 9 human decisions agreed (44.4 %)" in row["earned"]["reason"]
        assert "next: approve_to_act after 4 more decision(s)" in row["earned"]["reason"]
        row = next(a for a in console.agents() if a["agent_id"] == grad)
        assert row["earned"]["rule"] == "autonomy.promote" and row["mode"] == "autonomous"
        assert "at its ceiling autonomous" in row["earned"]["reason"]
    finally:
        emitter.close()
        await console.stop()
        await inbox.stop()
