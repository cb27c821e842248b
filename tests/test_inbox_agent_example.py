"""examples/inbox_agent.py waits for humans in the inbox and obeys their decisions."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

import pytest

from tripwire.bench.worker_process import ROOT
from tripwire.dashboards.inbox import Inbox
from tripwire.schemas.topics import ensure_topics, tripwire_topics
from tripwire.streams.broker import EmbeddedBroker, free_port

pytestmark = pytest.mark.integration


async def answer(bootstrap: str, proc: subprocess.Popen[str]) -> list[dict]:
    """Approve the agent's first request and decline its second, as a human would."""
    inbox = Inbox(bootstrap)
    await inbox.start()
    decided = []
    try:
        for approve in (True, False):
            deadline = time.monotonic() + 60
            while not inbox.pending:
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                assert time.monotonic() < deadline, "no request reached the inbox"
                await asyncio.sleep(0.05)
            rid, request = next(iter(inbox.pending.items()))
            decided.append(request)
            await inbox.decide(rid, approver="ann", approved=approve,
                               reason_code=None if approve else "wrong_recipient",
                               reason_text=None if approve else "lee left the company")
    finally:
        await inbox.stop()
    return decided


def test_the_inbox_agent_runs_what_humans_approve(tmp_path) -> None:
    with EmbeddedBroker(port=free_port(), log_path=tmp_path / "tansu.log") as broker:
        asyncio.run(ensure_topics(broker.bootstrap, tripwire_topics(2)))
        proc = subprocess.Popen(
            [sys.executable, "examples/inbox_agent.py", "--bootstrap", broker.bootstrap,
             "--agent-id", "crm-hygiene-1", "--contacts", "1"],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            requests = asyncio.run(answer(broker.bootstrap, proc))
            out, err = proc.communicate(timeout=60)
        finally:
            proc.kill()
    assert proc.returncode == 0, err[-3000:]
    assert [r["tool"] for r in requests] == ["crm.update_contact", "email.send"]
    assert requests[0]["rationale"].startswith("the CRM says C-1001 is won")
    assert "update C-1001 to won: APPROVED, ran: C-1001 set to won" in out
    assert "email dana@example.com: DECLINED" in out and "wrong_recipient" in out
    assert "done: 1 ran, 1 declined, 0 proposed" in out
