"""Humans in the loop, in headless chromium on the real stack: an embedded broker, a real
`tripwire worker` process, the dashboard server (inbox, console, access control) on chDB,
and an agent whose guard routes its approvals to Tripwire.

* an approver sees the waiting write with its parameters, clicks Approve, the tool runs
  (the time from click to tool run is printed);
* Decline with a reason refuses the call and the reason lands in ClickHouse;
* a viewer sees the request but cannot approve (disabled button, 403 from the API);
* an operator's Kill from the console halts the running agent's guard.

With TRIPWIRE_WRITE_SCREENSHOTS=1 the inbox and console screenshots go to docs/.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chdb_fixtures import store_control_acks
from tripwire.bench.worker_process import WorkerProcess, signed_worker_env
from tripwire.dashboards.screenshots import chromium_page
from tripwire.dashboards.server import DashboardServer
from tripwire.schemas.command_signing import derive_agent_key
from tripwire.schemas.topics import ensure_topics, tripwire_topics
from tripwire.sdk import AgentSession, Emitter
from tripwire.sdk.guard import Guard, ToolRefused
from tripwire.sdk.operator import OperatorKey, issue, new_command
from tripwire.sinks.clickhouse import Client
from tripwire.streams.broker import EmbeddedBroker, free_port
from tripwire.streams.settings import TripwireSettings

pytestmark = pytest.mark.integration
PARTITIONS = 4
OPERATOR_KEY = ("ops-web", "operator-secret-for-web-tests")
CONTROL_KEY = ("ctl-web", "control-master-for-web-tests")
USERS = {"ann": ("approver", "ann-token-1"), "vic": ("viewer", "vic-token-1"),
         "oscar": ("operator", "oscar-token-1")}
DOCS = Path(__file__).resolve().parent.parent / "docs"
# A new integration that must earn its autonomy (shown on the console).
POLICY = """
agents:
  onboarding-bot:
    autonomy: {start_mode: suggest_only, ceiling: approve_to_act, earn: true}
"""


class Stack:
    def __init__(self, broker: EmbeddedBroker, worker: WorkerProcess) -> None:
        self.broker, self.worker = broker, worker

    def settings(self) -> TripwireSettings:
        return TripwireSettings(
            kafka_bootstrap=self.broker.bootstrap, kafka_idempotence=False,
            partitions=PARTITIONS, control_key_id=CONTROL_KEY[0],
            control_keys={CONTROL_KEY[0]: CONTROL_KEY[1]}, operator_key_id=OPERATOR_KEY[0],
            operator_key=OPERATOR_KEY[1],
            web_users={name: {"role": role, "token": token}
                       for name, (role, token) in USERS.items()})

    def guard(self, agent: str) -> Guard:
        keys = {CONTROL_KEY[0]: derive_agent_key(CONTROL_KEY[1], agent)}
        g = Guard(self.broker.bootstrap, agent, staleness_s=30, control_keys=keys,
                  approval_timeout_s=120)
        assert g.start(30)
        return g

    def pin(self, agent: str, mode: str) -> None:
        command = new_command("pin", reason="new integration, humans first", operator="setup",
                              agent_id=agent, mode=mode)
        asyncio.run(issue(self.broker.bootstrap, command, OperatorKey(*OPERATOR_KEY),
                          idempotence=False))


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("inbox")
    (tmp / "policy.yaml").write_text(POLICY)
    with EmbeddedBroker(free_port(), log_path=tmp / "tansu.log") as broker:
        asyncio.run(ensure_topics(broker.bootstrap, tripwire_topics(PARTITIONS)))
        env = signed_worker_env(
            broker.bootstrap, tmp / "data", PARTITIONS, OPERATOR_KEY, CONTROL_KEY,
            TRIPWIRE_POLICY_FILE=str(tmp / "policy.yaml"))
        worker = WorkerProcess(env, tmp / "worker.log").start().wait_ready(120)
        try:
            yield Stack(broker, worker)
        finally:
            worker.stop()


@pytest.fixture
def server(stack: Stack, ch_migrated: Client) -> Iterator[DashboardServer]:
    with DashboardServer(ch_migrated, port=0, settings=stack.settings()) as s:
        yield s


class Agent:
    """An agent in a thread of its own: each ``write`` call blocks in the guard until decided."""

    def __init__(self, stack: Stack, agent_id: str) -> None:
        self.agent_id = agent_id
        self.guard = stack.guard(agent_id)
        self.ran: list[tuple[float, dict[str, Any]]] = []
        self.outcomes: list[Any] = []
        self.session = AgentSession(_Sink(), agent_id, agent_version="3.1", workflow="crm-sync",
                                    owner="revops", environment="test")

        @self.guard.guarded("crm.update_contact", "write")
        def update_contact(contact_id: str, email: str, stage: str) -> str:
            self.ran.append((time.monotonic(), {"contact_id": contact_id}))
            return f"updated {contact_id}"

        self.update_contact = update_contact

    def call_in_background(self, **params: Any) -> threading.Thread:
        def work() -> None:
            from tripwire.sdk.approvals import rationale

            with self.session.run() as run, self.guard.bind(run), \
                    rationale("the customer moved to the enterprise plan (ticket T-4411)"):
                try:
                    self.outcomes.append(self.update_contact(**params))
                except ToolRefused as exc:
                    self.outcomes.append(exc)

        t = threading.Thread(target=work, daemon=True)
        t.start()
        return t

    def close(self) -> None:
        self.guard.close()


class _Sink:
    def emit(self, event: dict[str, Any]) -> bool:
        return True


def login(page: Any, base: str, user: str, to: str) -> None:
    page.goto(f"{base}/login?next={to}")
    page.fill('input[name="token"]', USERS[user][1])
    page.click('button[type="submit"]')
    page.wait_for_url(f"**{to}")


def card_for(page: Any, agent: str) -> Any:
    card = page.locator(f'.request[data-agent="{agent}"]')
    card.wait_for(timeout=30_000)
    return card


def api(base: str, path: str, user: str, body: dict | None = None) -> tuple[int, Any]:
    req = urllib.request.Request(base + path, data=None if body is None else
                                 json.dumps(body).encode(), method="POST" if body is not None
                                 else "GET", headers={"Authorization":
                                                      f"Bearer {USERS[user][1]}",
                                                      "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as res:
            return res.status, json.loads(res.read())
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def shots_dir(tmp_path: Path) -> Path:
    return DOCS if os.environ.get("TRIPWIRE_WRITE_SCREENSHOTS") == "1" else tmp_path


def test_login_is_required(server: DashboardServer) -> None:
    for path in ("/api/inbox", "/api/console", "/api/panels/safety_summary", "/api/audit"):
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(server.url + path, timeout=10)
        assert err.value.code == 401, path
    status, me = api(server.url, "/api/whoami", "ann")
    assert status == 200 and me == {"name": "ann", "role": "approver", "via": "token"}


def test_approver_approves_and_declines_from_the_inbox(stack: Stack, server: DashboardServer,
                                                       ch_migrated: Client,
                                                       tmp_path: Path) -> None:
    agent = Agent(stack, f"crm-sync-{uuid.uuid4().hex[:6]}")
    try:
        stack.pin(agent.agent_id, "approve_to_act")
        assert agent.guard.wait_for_mode("approve_to_act", 30)
        worker = agent.call_in_background(contact_id="C-1042", email="dana@example.com",
                                          stage="won")
        with chromium_page() as page:
            login(page, server.url, "ann", "/inbox")
            card = card_for(page, agent.agent_id)
            text = card.inner_text()
            assert "crm.update_contact" in text and "C-1042" in text and "won" in text
            assert "[EMAIL]" in text and "dana@example.com" not in text  # masked
            assert "enterprise plan" in text and "approve_to_act" in text
            assert card.locator('a[href*="/#/evidence?run="]').count() == 1
            clicked = time.monotonic()
            card.locator("button.approve").click()
            worker.join(60)
            assert agent.outcomes == ["updated C-1042"]
            ran_at = agent.ran[0][0]
            print(f"\nclick on Approve -> tool ran: {(ran_at - clicked) * 1000:.0f} ms")
            page.locator(f'.request[data-agent="{agent.agent_id}"]').wait_for(state="detached")

            worker = agent.call_in_background(contact_id="C-2001", email="eve@example.com",
                                              stage="lost")
            card = card_for(page, agent.agent_id)
            card.locator("button.open-decline").click()
            card.locator('input[value="too_risky"]').check()
            card.locator('input[name="reason_text"]').fill("stage change needs the AE's OK")
            page.wait_for_function("() => document.querySelectorAll('#decided tbody tr').length")
            page.wait_for_timeout(300)
            page.screenshot(path=str(shots_dir(tmp_path) / "inbox.png"), full_page=True)
            card.locator("button.confirm-decline").click()
            worker.join(60)
            assert len(agent.outcomes) == 2 and isinstance(agent.outcomes[1], ToolRefused)
            assert "too_risky" in str(agent.outcomes[1])
            assert len(agent.ran) == 1  # the declined call never ran
            page.wait_for_function("""() => {
                const row = document.querySelector('#decided tbody tr');
                return row && row.innerText.includes('declined')
                    && row.innerText.includes('too_risky'); }""")
        rows = ch_migrated.query(
            "SELECT approved, approver, reason_code, reason_text, wait_ms >= 0 FROM "
            "approval_decisions WHERE agent_id = {a:String} ORDER BY decided_at",
            parameters={"a": agent.agent_id}).result_rows
        assert rows == [(1, "ann", "", "", 1),
                        (0, "ann", "too_risky", "stage change needs the AE's OK", 1)]
        audit = ch_migrated.query("SELECT user, action, outcome FROM web_audit WHERE "
                                  "action IN ('approve', 'decline')").result_rows
        assert sorted(audit) == [("ann", "approve", "ok"), ("ann", "decline", "ok")]
    finally:
        agent.close()


def test_a_viewer_cannot_approve(stack: Stack, server: DashboardServer,
                                 ch_migrated: Client) -> None:
    agent = Agent(stack, f"mailer-{uuid.uuid4().hex[:6]}")
    try:
        stack.pin(agent.agent_id, "approve_to_act")
        assert agent.guard.wait_for_mode("approve_to_act", 30)
        worker = agent.call_in_background(contact_id="C-7", email="x@example.com", stage="won")
        with chromium_page() as page:
            login(page, server.url, "vic", "/inbox")
            card = card_for(page, agent.agent_id)
            assert card.locator("button.approve").is_disabled()
            assert card.locator("button.open-decline").is_disabled()
            rid = card.get_attribute("data-request-id")
            status = page.evaluate(
                """rid => fetch(`/api/inbox/${rid}/approve`, {method: 'POST',
                   headers: {'X-Tripwire-Request': '1'}}).then(r => r.status)""", rid)
            assert status == 403
        assert api(server.url, f"/api/inbox/{rid}/approve", "vic", {})[0] == 403
        assert not agent.ran and worker.is_alive()
        # An approver's script (bearer token) settles it.
        status, _ = api(server.url, f"/api/inbox/{rid}/decline", "ann",
                        {"reason_code": "needs_review"})
        assert status == 200
        worker.join(60)
        assert isinstance(agent.outcomes[0], ToolRefused) and not agent.ran
        refused = ch_migrated.query("SELECT user, outcome FROM web_audit WHERE action = "
                                    "'approve'").result_rows
        assert ("vic", "forbidden") in refused
    finally:
        agent.close()


def test_operator_kills_a_running_agent_from_the_console(stack: Stack, server: DashboardServer,
                                                         tmp_path: Path) -> None:
    agent = Agent(stack, f"support-bot-{uuid.uuid4().hex[:6]}")
    try:
        stack.pin(agent.agent_id, "approve_to_act")
        assert agent.guard.wait_for_mode("approve_to_act", 30)
        with Emitter(stack.broker.bootstrap, idempotence=False, linger_ms=1) as emitter:
            with AgentSession(emitter, "onboarding-bot").run() as run:
                run.tool_call("crm.get_contact", "read", {"contact_id": "C-1"})
        with chromium_page() as page:
            login(page, server.url, "vic", "/console")
            row = page.locator(f'#agents tr[data-agent="{agent.agent_id}"]')
            row.wait_for(timeout=30_000)
            assert row.locator('button[data-action="kill"]').is_disabled()
            login(page, server.url, "oscar", "/console")
            row = page.locator(f'#agents tr[data-agent="{agent.agent_id}"]')
            row.wait_for(timeout=30_000)
            assert "approve_to_act" in row.inner_text()
            row.locator('button[data-action="kill"]').click()
            page.fill('#confirm-form input[name="reason"]', "incident 5120: wrong emails")
            clicked = time.monotonic()
            page.click("#confirm-ok")
            assert agent.guard.wait_for_mode("halted", 30)
            print(f"\nconsole Kill -> guard halted: {(time.monotonic() - clicked) * 1000:.0f} ms")
            assert agent.guard.decide("crm.get_contact", "read").verdict == "deny"
            page.wait_for_function(
                """agent => { const r = document.querySelector(`#agents tr[data-agent="${agent}"]`);
                    return r && r.querySelector('[data-mode="halted"]'); }""",
                arg=agent.agent_id, timeout=30_000)
            audit = page.locator("#audit tbody tr").first
            audit.wait_for()
            # The new integration started in shadow, with what its next rung needs.
            earned = page.locator('#agents tr[data-agent="onboarding-bot"]')
            earned.wait_for(timeout=30_000)
            assert "autonomy.start" in earned.inner_text()
            assert "next: approve_to_act after 50 more decision(s)" in earned.inner_text()
            page.wait_for_timeout(300)
            page.screenshot(path=str(shots_dir(tmp_path) / "console.png"), full_page=True)
        status, trail = api(server.url, "/api/audit", "vic")
        kills = [r for r in trail["audit"] if r["action"] == "kill"]
        assert [(r["user"], r["outcome"], r["target"]) for r in kills] == [
            ("oscar", "ok", agent.agent_id)]
        # The worker applied it as oscar's command.
        status, console = api(server.url, "/api/console", "vic")
        row = next(a for a in console["agents"] if a["agent_id"] == agent.agent_id)
        assert row["mode"] == "halted" and "operator oscar" in row["reason"]
    finally:
        agent.close()


def test_operator_restricts_one_tool_from_the_console(stack: Stack, server: DashboardServer,
                                                       ch_migrated: Client) -> None:
    agent = Agent(stack, f"billing-bot-{uuid.uuid4().hex[:6]}")
    try:
        stack.pin(agent.agent_id, "approve_to_act")  # so the console lists it
        assert agent.guard.wait_for_mode("approve_to_act", 30)
        assert agent.guard.decide("crm.update_contact", "write").verdict == "needs_approval"
        with chromium_page() as page:
            login(page, server.url, "oscar", "/console")
            row = page.locator(f'#agents tr[data-agent="{agent.agent_id}"]')
            row.wait_for(timeout=30_000)
            row.locator('button[data-action="restrict"]').click()
            page.fill('#confirm-form input[name="tool"]', "crm.update_contact")
            page.select_option('#confirm-form select[name="mode"]', "read_only")
            page.fill('#confirm-form input[name="reason"]', "incident 5121: bad stage writes")
            page.click("#confirm-ok")
            deadline = time.monotonic() + 30
            while agent.guard.decide("crm.update_contact", "write").verdict != "deny":
                assert time.monotonic() < deadline, "the guard never applied the restriction"
                time.sleep(0.1)
            # Only that tool's writes: another tool's writes still go to approval as before.
            assert agent.guard.decide("crm.update_contact", "read").verdict == "allow"
            assert agent.guard.decide("crm.send_invoice", "write").verdict == "needs_approval"
            scope = f"agent={agent.agent_id};tool=crm.update_contact"
            control = row.locator(f'.control[data-scope="{scope}"]')
            control.wait_for(timeout=30_000)
            assert "read_only" in control.inner_text()
            # The guard's acknowledgement, once in ClickHouse, is counted on the page.
            deadline = time.monotonic() + 30
            while True:
                store_control_acks(stack.broker.bootstrap, ch_migrated, PARTITIONS)
                if control.get_attribute("data-obeyed") != "0":
                    break
                assert time.monotonic() < deadline, control.inner_text()
                page.wait_for_timeout(1000)
            assert "obeyed by 1 guard(s)" in control.inner_text()
            # Of the guards the control covers: this agent's one, not every guard of the stack.
            assert "obeyed by 1 guard(s) of 1 heard from recently" in control.inner_text()
        status, console = api(server.url, "/api/console", "vic")
        listed = next(a for a in console["agents"] if a["agent_id"] == agent.agent_id)
        restricted = next(c for c in listed["controls"] if c["scope"] == scope)
        assert restricted["mode"] == "read_only" and restricted["acks"]["obeyed"] == 1
        assert restricted["acks"]["slowest_ms"] is not None
        assert restricted["guards"] == {"heard_from": 1, "unknown_scope": 0}
        status, trail = api(server.url, "/api/audit", "vic")
        assert [(r["user"], r["outcome"], r["target"]) for r in trail["audit"]
                if r["action"] == "restrict" and r["target"] == agent.agent_id] == [
            ("oscar", "ok", agent.agent_id)]
    finally:
        agent.close()
