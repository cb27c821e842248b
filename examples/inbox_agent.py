"""An agent whose approvals are answered by people in Tripwire's approval inbox.

A CRM hygiene agent works a few contacts: it reads each one (allowed), then wants to update
it (a write) and email the owner (external). Its guard has no approval hook of its own, so in
approve_to_act every write and email is published to the inbox and the agent waits for a
human to click Approve or Decline on http://127.0.0.1:8080/inbox; a decline comes back with
the approver's reason.

    tripwire run                                     # prints the login token and bootstrap
    python examples/inbox_agent.py --bootstrap 127.0.0.1:9092

In production the agent's mode comes from the policy (``autonomy.start_mode``) or an
operator's ``tripwire pin``; ``--start-in`` publishes it here directly for the demo, as the
worker would (only the worker may write agent-controls, see docs/security.md).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid

from aiokafka import AIOKafkaProducer

from tripwire.schemas.codec import control_codec
from tripwire.schemas.topics import CONTROLS
from tripwire.sdk import AgentSession, Emitter
from tripwire.sdk.approvals import rationale
from tripwire.sdk.guard import Guard, Proposal, ToolRefused

CONTACTS = [("C-1001", "dana@example.com", "won"), ("C-1002", "lee@example.com", "churned"),
            ("C-1003", "sam@example.com", "qualified")]


async def publish_mode(bootstrap: str, agent_id: str, mode: str) -> None:
    now = int(time.time() * 1000)
    control = {"agent_id": agent_id, "mode": mode, "previous_mode": None, "scope": "agent",
               "run_id": None, "reason": "example: humans approve this agent's side effects",
               "detection_ids": [], "seq": now, "issued_at": now, "rule": None,
               "expires_at": None, "source": "operator"}
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(CONTROLS, control_codec().encode(control),
                                     key=agent_id.encode())
    finally:
        await producer.stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bootstrap", default="127.0.0.1:9092")
    p.add_argument("--agent-id", default=f"crm-hygiene-{uuid.uuid4().hex[:6]}")
    p.add_argument("--start-in", default="approve_to_act",
                   choices=["autonomous", "approve_to_act", "suggest_only"])
    p.add_argument("--contacts", type=int, default=len(CONTACTS))
    p.add_argument("--approval-timeout", type=float, default=300.0,
                   help="seconds a request waits in the inbox before it expires (declined)")
    args = p.parse_args(argv)

    def say(text: str) -> None:
        print(text, flush=True)

    asyncio.run(publish_mode(args.bootstrap, args.agent_id, args.start_in))
    emitter = Emitter(args.bootstrap, linger_ms=5, idempotence=False)
    # No approval_hook: approvals go to Tripwire's inbox (sdk/approvals.py).
    guard = Guard(args.bootstrap, args.agent_id, approval_timeout_s=args.approval_timeout)
    if not guard.start(15):
        say(f"cannot reach the control plane on {args.bootstrap}")
        return 2
    guard.wait_for_mode(args.start_in, 10)

    @guard.guarded("crm.get_contact", "read")
    def get_contact(contact_id: str) -> dict:
        return {"contact_id": contact_id}

    @guard.guarded("crm.update_contact", "write")
    def update_contact(contact_id: str, stage: str) -> str:
        return f"{contact_id} set to {stage}"

    @guard.guarded("email.send", "external")
    def send_email(to: str, subject: str) -> str:
        return f"emailed {to}"

    session = AgentSession(emitter, args.agent_id, agent_version="1.0", workflow="crm-hygiene",
                           owner="revops-team", environment="dev")
    say(f"agent {args.agent_id} in {guard.status().effective_mode}: approve its actions on "
        "the dashboard's /inbox page")
    outcomes = {"ran": 0, "declined": 0, "proposed": 0}
    for contact_id, email, stage in CONTACTS[:args.contacts]:
        with session.run() as run, guard.bind(run):
            get_contact(contact_id)
            for label, tool, call_args in (
                (f"update {contact_id} to {stage}", update_contact, (contact_id, stage)),
                (f"email {email}", send_email, (email, f"Your account is now {stage}")),
            ):
                say(f"  {label}: waiting for a human ...")
                try:
                    with rationale(f"the CRM says {contact_id} is {stage}; the record lags"):
                        result = tool(*call_args)
                except ToolRefused as refused:
                    outcomes["declined"] += 1
                    say(f"  {label}: DECLINED ({refused.decision.reason})")
                    continue
                if isinstance(result, Proposal):
                    outcomes["proposed"] += 1
                    say(f"  {label}: proposed, not run")
                else:
                    outcomes["ran"] += 1
                    say(f"  {label}: APPROVED, ran: {result}")
    say(f"done: {outcomes['ran']} ran, {outcomes['declined']} declined, "
        f"{outcomes['proposed']} proposed")
    guard.close()
    emitter.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
