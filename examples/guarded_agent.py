"""A plain-Python tool-using agent wired with Tripwire's emitter and guard.

A support agent works through refund tickets: it looks the customer up, updates the CRM,
refunds and emails. Every step is emitted to ``agent-steps``; every tool call goes through
the guard, which follows the agent's mode on ``agent-controls``. With ``--scenario
denial_storm`` the agent keeps asking its own policy for refunds it is not allowed, the
denial-rate detector trips, the breaker downgrades it and the output shows the write tools
going away (``REFUSED``) while reads keep working.

    python examples/guarded_agent.py --bootstrap 127.0.0.1:9092 --scenario denial_storm

Without a Tripwire worker running, ``--simulate-trip-after N`` publishes the downgrade the
breaker would (as the worker: in production only the worker may write agent-controls).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaProducer

from tripwire.schemas.codec import control_codec
from tripwire.schemas.topics import CONTROLS, STEPS
from tripwire.sdk import AgentSession, Emitter
from tripwire.sdk.guard import Approval, ApprovalRequest, Guard, Proposal, RunHalted, ToolRefused

REFUND_LIMIT_USD = 100  # the agent's own policy: larger refunds are denied


def make_tools(guard: Guard) -> dict[str, Callable[..., Any]]:
    """The agent's tools; wrapping each in the guard is the one line per tool."""

    @guard.guarded("crm.get_contact", "read")
    def get_contact(contact_id: str) -> dict[str, Any]:
        return {"contact_id": contact_id, "email": f"{contact_id.lower()}@example.com"}

    @guard.guarded("crm.update_contact", "write")
    def update_contact(contact_id: str, status: str) -> str:
        return f"{contact_id} marked {status}"

    @guard.guarded("payments.refund", "money")
    def refund(contact_id: str, amount_usd: int) -> str:
        return f"refunded ${amount_usd} to {contact_id}"

    @guard.guarded("email.send", "external")
    def send_email(to: str, subject: str) -> str:
        return f"emailed {to}: {subject}"

    return {"get_contact": get_contact, "update_contact": update_contact, "refund": refund,
            "send_email": send_email}


def auto_approver(log: Callable[[str], None]) -> Callable[[ApprovalRequest], Approval]:
    """Stands in for a human in approve_to_act: approves anything but money."""

    def decide(request: ApprovalRequest) -> Approval:
        approved = request.action_class != "money"
        log(f"    [approval] {request.tool}: {'approved' if approved else 'refused'} by on-call")
        return Approval(approved, approver="on-call")

    return decide


def ticket_amounts(scenario: str, rng: random.Random) -> list[int]:
    if scenario == "denial_storm":
        # Keeps retrying refunds far above what it may grant.
        return [rng.choice([250, 400, 900]) for _ in range(4)]
    return [rng.choice([20, 35, 60])]


def work_ticket(session: AgentSession, guard: Guard, tools: dict[str, Callable[..., Any]],
                ticket: int, scenario: str, rng: random.Random,
                log: Callable[[str], None]) -> None:
    contact = f"C-{ticket:04d}"
    with session.run() as run, guard.bind(run):
        log(f"ticket {ticket} (run {run.run_id[:8]})")
        try:
            customer = tools["get_contact"](contact)
            run.model_call("gpt-4o-mini", 900, 120, cost_usd=0.0006, latency_ms=400)
            for amount in ticket_amounts(scenario, rng):
                if amount > REFUND_LIMIT_USD:
                    run.policy_decision("payments.refund", "money", "denied", "refund_limit",
                                        params={"contact_id": contact, "amount_usd": amount})
                    log(f"    policy: refund ${amount} denied (limit ${REFUND_LIMIT_USD})")
                    continue
                _act(log, tools["refund"], contact_id=contact, amount_usd=amount)
            _act(log, tools["update_contact"], contact_id=contact, status="refund-handled")
            _act(log, tools["send_email"], to=customer["email"], subject="Your refund")
        except RunHalted as halted:
            log(f"    HALTED: {halted.decision.reason} -> run ends")


def _act(log: Callable[[str], None], tool: Callable[..., Any], **kwargs: Any) -> None:
    try:
        result = tool(**kwargs)
    except RunHalted:
        raise
    except ToolRefused as refused:
        d = refused.decision
        log(f"    REFUSED {d.tool} [{d.mode}] {d.reason}")
        return
    if isinstance(result, Proposal):
        log(f"    PROPOSAL {result.describe()}")
    else:
        log(f"    ok {result}")


async def _publish_downgrade(bootstrap: str, agent_id: str, mode: str) -> None:
    # What the Tripwire worker's breaker publishes; here only for running without a worker.
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=False)
    await producer.start()
    try:
        await producer.send_and_wait(CONTROLS, control_codec().encode({
            "agent_id": agent_id, "mode": mode, "previous_mode": "autonomous",
            "scope": "agent", "run_id": None, "reason": "denial_rate: simulated trip",
            "detection_ids": [], "seq": 1,
            "issued_at": int(time.time() * 1000), "rule": "simulated", "expires_at": None,
            "source": "breaker"}), key=agent_id.encode())
    finally:
        await producer.stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bootstrap", default="127.0.0.1:9092")
    p.add_argument("--agent-id", default=f"support-agent-{uuid.uuid4().hex[:6]}")
    p.add_argument("--owner", default="support-team")
    p.add_argument("--scenario", choices=["healthy", "denial_storm"], default="denial_storm")
    p.add_argument("--tickets", type=int, default=12)
    p.add_argument("--pause", type=float, default=0.5, help="seconds between tickets")
    p.add_argument("--staleness", type=float, default=15.0)
    p.add_argument("--simulate-trip-after", type=int, default=None, metavar="N",
                   help="publish a read_only control after N tickets (no worker needed)")
    p.add_argument("--idempotence", action="store_true", help="on for real Kafka")
    args = p.parse_args(argv)

    def log(line: str) -> None:
        print(line, flush=True)

    rng = random.Random(7)
    emitter = Emitter(args.bootstrap, STEPS, idempotence=args.idempotence)
    guard = Guard(args.bootstrap, args.agent_id, staleness_s=args.staleness,
                  approval_hook=auto_approver(log))
    session = AgentSession(emitter, args.agent_id, owner=args.owner, workflow="refunds",
                           environment="dev")
    try:
        if not guard.start(timeout_s=10):
            log(f"[guard] control plane not reachable yet: safe mode {guard.safe_mode}")
        tools = make_tools(guard)
        mode = None
        for ticket in range(1, args.tickets + 1):
            if args.simulate_trip_after is not None and ticket == args.simulate_trip_after + 1:
                asyncio.run(_publish_downgrade(args.bootstrap, args.agent_id, "read_only"))
                guard.wait_for_mode("read_only", 5)
            status = guard.status()
            if status.effective_mode != mode:
                mode = status.effective_mode
                log(f"[guard] {args.agent_id} mode: {mode} ({status.reason})")
            work_ticket(session, guard, tools, ticket, args.scenario, rng, log)
            time.sleep(args.pause)
    except KeyboardInterrupt:
        pass
    finally:
        guard.close()
        emitter.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
