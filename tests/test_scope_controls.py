"""Controls on every scope, end to end: a real broker, a real worker, guards following the
control topics, operators using the `tripwire` CLI from an empty directory.

Each scope test sets a ceiling on one scope and checks that exactly the calls it covers are
refused and nothing else (guards on the other side of every selector stay autonomous). The
fleet tests cover agents that emitted before a kill, guards that start after it and never
emit, and agents first seen after it; and that `release --all` restores them. A standing
approval rule from the policy file binds a brand-new agent's first destructive call.

One broker and one worker serve the module; names are unique per test so ceilings set by one
test cannot touch another's guards.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from chdb_fixtures import store_control_acks
from tripwire.bench.worker_process import WorkerProcess, operator_cli_env, signed_worker_env
from tripwire.dashboards.runner import run_query
from tripwire.schemas.command_signing import SHARED_AGENT, derive_agent_key
from tripwire.schemas.topics import ensure_topics, tripwire_topics
from tripwire.sdk import AgentSession, Emitter
from tripwire.sdk.guard import Approval, ApprovalRequest, Guard
from tripwire.sinks.clickhouse import Client
from tripwire.streams.broker import EmbeddedBroker, free_port

pytestmark = pytest.mark.integration
PARTITIONS = 4
OPERATOR_KEY = ("ops-2026", "operator-secret-for-tests")
CONTROL_KEY = ("ctl-2026", "control-master-for-tests")
POLICY = """
defaults:
  breaker:
    cooldown_ms: 2000
    probation_ms: 2000
standing:
  rules:
    - name: prod-destructive-needs-human
      action_class: destructive
      environment: prod
      effect: approve
    - name: no-warehouse-drops
      tool: "warehouse.drop_*"
      effect: deny
    - name: big-refunds
      tool: payments.refund_card
      when: {param: amount, above: 500}
      effect: approve
"""


class Plane:
    def __init__(self, broker: EmbeddedBroker, worker: WorkerProcess, env: dict[str, str],
                 cwd: Path) -> None:
        self.broker, self.worker, self.env, self.cwd = broker, worker, env, cwd
        self.guards: list[Guard] = []

    def guard(self, agent: str, **options: object) -> Guard:
        keys = {CONTROL_KEY[0]: derive_agent_key(CONTROL_KEY[1], agent)}
        shared = {CONTROL_KEY[0]: derive_agent_key(CONTROL_KEY[1], SHARED_AGENT)}
        g = Guard(self.broker.bootstrap, agent, staleness_s=30, control_keys=keys,
                  shared_control_keys=shared, fetch_max_wait_ms=50, **options)
        assert g.start(timeout_s=15), "guard did not catch up"
        self.guards.append(g)
        return g

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = operator_cli_env(self.env, OPERATOR_KEY)
        out = subprocess.run([sys.executable, "-m", "tripwire.streams.cli", *args], cwd=self.cwd,
                             env=env, capture_output=True, text=True, timeout=90)
        assert out.returncode == 0, out.stderr
        return out


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Plane]:
    tmp = tmp_path_factory.mktemp("scopes")
    (tmp / "policy.yaml").write_text(POLICY)
    empty = tmp / "operator-cwd"
    empty.mkdir()
    with EmbeddedBroker(free_port(), log_path=tmp / "tansu.log") as broker:
        asyncio.run(ensure_topics(broker.bootstrap, tripwire_topics(PARTITIONS)))
        env = signed_worker_env(
            broker.bootstrap, tmp / "data", PARTITIONS, OPERATOR_KEY, CONTROL_KEY,
            TRIPWIRE_POLICY_FILE=str(tmp / "policy.yaml"),
        )
        worker = WorkerProcess(env, tmp / "worker.log").start().wait_ready(90)
        plane = Plane(broker, worker, env, empty)
        try:
            yield plane
        finally:
            for g in plane.guards:
                g.close()
            worker.stop()


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def eventually(check: Callable[[], bool], timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def verdict(guard: Guard, tool: str, action_class: str, **kw: object) -> str:
    return guard.decide(tool, action_class, **kw).verdict


# --- one test per scope ----------------------------------------------------------------------


def test_tool_pattern_scope_refuses_only_that_tool(plane: Plane) -> None:
    tool_ns = uid("vault")
    a, b = plane.guard(uid("agent")), plane.guard(uid("agent"))
    plane.cli("restrict", "--tool", f"{tool_ns}.delete_*", "--reason", "leaking secrets",
              "--no-wait")
    assert eventually(lambda: verdict(a, f"{tool_ns}.delete_key", "destructive") == "deny")
    for g in (a, b):
        d = g.decide(f"{tool_ns}.delete_key", "destructive")
        assert d.verdict == "deny" and d.control == f"tool={tool_ns}.delete_*"
        assert d.rule == "guard.scope.tool.read_only"
        assert verdict(g, f"{tool_ns}.rotate_key", "write") == "allow"
        assert verdict(g, f"{tool_ns}.delete_key", "read") == "allow"  # ceiling read_only
        assert verdict(g, "crm.update", "write") == "allow"


def test_agent_plus_tool_scope_leaves_the_agents_other_tools_and_other_agents(plane: Plane):
    agent, other = uid("refund-bot"), uid("refund-bot")
    a, b = plane.guard(agent), plane.guard(other)
    plane.cli("restrict", agent, "--tool", "payments.refund", "--reason", "refund storm",
              "--no-wait")
    assert eventually(lambda: verdict(a, "payments.refund", "money") == "deny")
    assert a.decide("payments.refund", "money").control.startswith(agent + "\x1f")
    assert verdict(a, "crm.update", "write") == "allow"
    assert verdict(b, "payments.refund", "money") == "allow"


def test_workflow_scope(plane: Plane) -> None:
    wf = uid("billing")
    inside = plane.guard(uid("agent"), workflow=wf)
    outside = plane.guard(uid("agent"), workflow=uid("support"))
    plane.cli("kill", "--workflow", wf, "--reason", "billing incident", "--no-wait")
    assert eventually(lambda: verdict(inside, "crm.update", "write") == "deny")
    d = inside.decide("crm.get", "read")
    assert d.verdict == "deny" and d.mode == "halted" and d.control == f"workflow={wf}"
    assert verdict(outside, "crm.update", "write") == "allow"


def test_workflow_kill_counts_the_acks_of_that_workflows_guards_only(plane: Plane) -> None:
    wf = uid("ledger")
    inside = [plane.guard(uid("agent"), workflow=wf) for _ in range(2)]
    # A guard not told its workflow learns it from its agent's run, and says so in a hello.
    learner_agent = uid("agent")
    learner = plane.guard(learner_agent)
    assert learner.acks is not None
    sent = learner.acks.sent
    with Emitter(plane.broker.bootstrap, idempotence=False, linger_ms=1) as em:
        session = AgentSession(em, learner_agent, workflow=wf, environment="test")
        assert learner.decide("crm.get", "read", session=session).verdict == "allow"
    assert eventually(lambda: learner.acks.sent > sent)
    outside = [plane.guard(uid("agent"), workflow=uid("other")) for _ in range(2)]
    out = plane.cli("kill", "--workflow", wf, "--reason", "ledger incident", "--wait", "30")
    # The other workflow's guards (and every other guard of this module) are not counted;
    # guards that never said their workflow are named apart.
    assert f"obeyed by 3 of 3 guards of workflow={wf} heard from recently" in out.stdout, \
        out.stdout
    for g in inside:
        assert verdict(g, "crm.update", "write") == "deny"
    assert verdict(learner, "crm.update", "write", session=session) == "deny"
    for g in outside:
        assert verdict(g, "crm.update", "write") == "allow"


def test_the_dashboard_counts_the_guards_a_control_covers_as_the_cli_does(
        plane: Plane, ch_migrated: Client) -> None:
    started = int(time.time() * 1000)
    wf = uid("payroll")
    for _ in range(2):
        plane.guard(uid("agent"), workflow=wf)
    for _ in range(2):
        plane.guard(uid("agent"), workflow=uid("other"))
    plane.guard(uid("agent"))  # never says its workflow
    twin = uid("agent")
    for _ in range(2):  # two guards of one agent, e.g. two replicas
        plane.guard(twin, workflow=uid("other"))
    killed = plane.cli("kill", "--workflow", wf, "--reason", "payroll incident", "--wait", "30")
    pinned = plane.cli("kill", twin, "--reason", "replica check", "--wait", "30")
    store_control_acks(plane.broker.bootstrap, ch_migrated, PARTITIONS)
    panel = {r["control"]: r for r in run_query(ch_migrated, "safety_control_acks", {
        "from_ms": started, "to_ms": int(time.time() * 1000) + 1, "agents": []}).records()}

    for out, scope, obeyed, covered in ((killed, f"workflow={wf}", 2, 2),
                                        (pinned, f"agent={twin}", 2, 2)):
        row = panel[_command_id(out.stdout)]
        # The CLI's own figures for the same command, read from Kafka.
        assert f"obeyed by {obeyed} of {covered} guards of {scope} heard from" in out.stdout, \
            out.stdout
        assert (row["scope"], row["obeyed"], row["heard_from"]) == (scope, obeyed, covered)
        unknown = re.search(r"; (\d+) more heard from did not say", out.stdout)
        assert row["unknown_scope"] == (int(unknown.group(1)) if unknown else 0), out.stdout
    # The guard that never said its workflow (and others of this module) counted apart.
    assert panel[_command_id(killed.stdout)]["unknown_scope"] >= 1


def _command_id(stdout: str) -> str:
    found = re.search(r": command (\S+) signed with key", stdout)
    assert found, stdout
    return found.group(1)


def test_environment_scope(plane: Plane) -> None:
    env = uid("staging")
    inside = plane.guard(uid("agent"), environment=env)
    outside = plane.guard(uid("agent"), environment="test")
    plane.cli("restrict", "--environment", env, "--mode", "suggest_only", "--reason", "freeze",
              "--no-wait")
    assert eventually(lambda: verdict(inside, "crm.update", "write") == "suggest_only")
    assert verdict(inside, "crm.get", "read") == "allow"
    assert verdict(outside, "crm.update", "write") == "allow"


def test_version_scope_pauses_the_canary_only(plane: Plane) -> None:
    canary = uid("2.0")
    new = plane.guard(uid("agent"), agent_version=canary)
    old = plane.guard(uid("agent"), agent_version="1.9")
    plane.cli("restrict", "--version", canary, "--mode", "read_only", "--reason", "canary bad",
              "--no-wait")
    assert eventually(lambda: verdict(new, "crm.update", "write") == "deny")
    assert verdict(old, "crm.update", "write") == "allow"


def test_agent_plus_version_scope(plane: Plane) -> None:
    agent = uid("agent")
    v2 = plane.guard(agent, agent_version="2.0", instance_id=uid("v2"))
    v1 = plane.guard(agent, agent_version="1.0", instance_id=uid("v1"))
    other = plane.guard(uid("agent"), agent_version="2.0")
    plane.cli("kill", agent, "--version", "2.0", "--reason", "2.0 of this agent misbehaves",
              "--no-wait")
    assert eventually(lambda: verdict(v2, "crm.update", "write") == "deny")
    assert verdict(v1, "crm.update", "write") == "allow"
    assert verdict(other, "crm.update", "write") == "allow"


def test_action_class_scope(plane: Plane) -> None:
    # Fleet-wide on one action class: scope it to a workflow so other tests stay unaffected.
    wf = uid("payouts")
    g = plane.guard(uid("agent"), workflow=wf)
    plane.cli("restrict", "--workflow", wf, "--action-class", "money", "--mode",
              "approve_to_act", "--reason", "payout fraud suspected", "--no-wait")
    assert eventually(lambda: verdict(g, "payments.payout", "money") == "needs_approval")
    assert g.decide("payments.payout", "money").rule == \
        "guard.scope.workflow+action_class.approve_to_act"
    assert verdict(g, "crm.update", "write") == "allow"
    assert verdict(g, "payments.get_balance", "read") == "allow"


def test_action_class_alone_and_its_release(plane: Plane) -> None:
    a, b = plane.guard(uid("agent")), plane.guard(uid("agent"))
    plane.cli("restrict", "--action-class", "external", "--reason", "exfiltration", "--no-wait")
    for g in (a, b):
        assert eventually(lambda g=g: verdict(g, "http.post", "external") == "deny")
        assert verdict(g, "crm.update", "write") == "allow"
    plane.cli("release", "--action-class", "external", "--reason", "contained", "--no-wait")
    for g in (a, b):
        assert eventually(lambda g=g: verdict(g, "http.post", "external") == "allow")


def test_run_and_agent_scopes_still_work_through_the_breaker(plane: Plane) -> None:
    agent = uid("agent")
    g, other = plane.guard(agent), plane.guard(uid("agent"))
    plane.cli("kill", agent, "--reason", "rogue", "--no-wait")
    assert eventually(lambda: verdict(g, "crm.get", "read") == "deny")
    assert g.decide("crm.get", "read").control == agent
    assert verdict(other, "crm.get", "read") == "allow"


def test_tool_by_name_scope(plane: Plane) -> None:
    tool = f"{uid('mail')}.send_bulk"
    a, b = plane.guard(uid("agent")), plane.guard(uid("agent"))
    plane.cli("restrict", "--tool", tool, "--mode", "approve_to_act", "--reason", "spam wave",
              "--no-wait")
    assert eventually(lambda: verdict(a, tool, "external") == "needs_approval")
    for g in (a, b):
        assert g.decide(tool, "external").control == f"tool={tool}"
        assert verdict(g, tool + "_preview", "external") == "allow"  # a name, not a prefix
        assert verdict(g, "crm.update", "write") == "allow"


def test_run_scope_stops_that_run_only(plane: Plane) -> None:
    # The breaker's run scope: a runaway run (over the loop detector's step budget, 50) is
    # stopped; the agent's other runs and its mode are untouched.
    agent = uid("agent")
    g = plane.guard(agent)
    with Emitter(plane.broker.bootstrap, idempotence=False, linger_ms=1) as em:
        session = AgentSession(em, agent, workflow="loops", environment="test")
        runaway, other = session.start_run(), session.start_run()
        for i in range(60):
            runaway.tool_call("crm.get", "read", {"i": i})
        other.tool_call("crm.get", "read", {"i": 0})
        em.flush(10)
    assert eventually(lambda: runaway.run_id in g.state.stopped_runs(), timeout_s=15)
    stopped = g.decide("crm.get", "read", runaway.run_id)
    assert stopped.verdict == "deny" and stopped.rule == "guard.run_stopped"
    assert g.decide("crm.get", "read", other.run_id).verdict == "allow"
    assert verdict(g, "crm.update", "write", run_id=other.run_id) == "allow"
    assert g.status().mode == "autonomous"


def test_breaker_restricts_the_denied_tool_before_the_agent(plane: Plane) -> None:
    agent = uid("refund-bot")
    g = plane.guard(agent)
    with Emitter(plane.broker.bootstrap, idempotence=False, linger_ms=1) as em:
        session = AgentSession(em, agent, workflow="refunds", environment="test")
        with session.run() as run:
            for i in range(8):
                run.policy_decision("payments.refund", "money", "denied", "refund_limit",
                                    params={"ticket": i})
        em.flush(10)
    assert eventually(lambda: verdict(g, "payments.refund", "money") == "deny")
    d = g.decide("payments.refund", "money")
    assert d.control == f"{agent}\x1fagent={agent};tool=payments.refund"
    assert "narrow containment" in d.reason
    assert verdict(g, "crm.update", "write") == "allow"
    assert g.status().mode == "autonomous"


# --- standing rules --------------------------------------------------------------------------


def test_standing_rule_makes_a_new_agents_first_destructive_call_wait_for_approval(plane):
    asked: list[ApprovalRequest] = []

    def approve(request: ApprovalRequest) -> Approval:
        asked.append(request)
        return Approval(True, "bob")

    agent = uid("janitor")
    g = plane.guard(agent, environment="prod", approval_hook=approve)
    ran: list[str] = []

    @g.guarded("files.purge", "destructive")
    def purge(path: str) -> str:
        ran.append(path)
        return "purged"

    # No event ever emitted, no control for this agent: autonomous, yet the first
    # destructive call goes to a human first.
    assert g.status().mode == "autonomous"
    assert purge("/tmp/x") == "purged"
    assert [r.tool for r in asked] == ["files.purge"]
    decision = asked[0].decision
    assert decision.control == "policy:prod-destructive-needs-human"
    assert ran == ["/tmp/x"]
    assert verdict(g, "files.list", "read") == "allow"
    assert verdict(g, "crm.update", "write") == "allow"
    dev = plane.guard(uid("janitor"), environment="dev")
    assert verdict(dev, "files.purge", "destructive") == "allow"


def test_standing_deny_and_parameter_conditions(plane: Plane) -> None:
    g = plane.guard(uid("agent"))
    d = g.decide("warehouse.drop_table", "destructive")
    assert d.verdict == "deny" and d.control == "policy:no-warehouse-drops"
    assert verdict(g, "warehouse.query", "read") == "allow"
    assert verdict(g, "payments.refund_card", "money", params={"amount": 20}) == "allow"
    assert verdict(g, "payments.refund_card", "money", params={"amount": 900}) == \
        "needs_approval"
    # Unknown parameters meet the condition: standing rules fail closed.
    assert verdict(g, "payments.refund_card", "money") == "needs_approval"


# --- the fleet -------------------------------------------------------------------------------


def emit(plane: Plane, agent: str, n: int = 1) -> None:
    with Emitter(plane.broker.bootstrap, idempotence=False, linger_ms=1) as em:
        session = AgentSession(em, agent, workflow="fleet-test", environment="test")
        with session.run() as run:
            for i in range(n):
                run.tool_call("crm.get", "read", {"i": i})
        em.flush(10)


def test_zz_fleet_kill_binds_every_agent_until_release_all(plane: Plane) -> None:
    before = uid("emitted-before")
    emit(plane, before)
    g_before = plane.guard(before)
    time.sleep(1.0)  # the worker holds state for it now
    out = plane.cli("kill", "--all", "--reason", "incident 5150: halt everything", "--wait", "10")
    assert "obeyed by" in out.stdout, out.stdout
    print(out.stdout)
    assert eventually(lambda: verdict(g_before, "crm.update", "write") == "deny")
    assert g_before.decide("crm.get", "read").verdict == "deny"

    never = plane.guard(uid("started-after"))  # never emits
    assert verdict(never, "crm.update", "write") == "deny"
    assert never.decide("crm.update", "write").control == "fleet"

    late = uid("first-seen-after")
    g_late = plane.guard(late)
    emit(plane, late, 3)
    time.sleep(1.0)
    assert verdict(g_late, "crm.update", "write") == "deny"

    plane.cli("release", "--all", "--reason", "incident over", "--no-wait")
    # No emitted state to recover: straight back to autonomous once the fleet ceiling lifts.
    assert eventually(lambda: verdict(never, "crm.update", "write") == "allow")
    assert eventually(lambda: verdict(g_late, "crm.update", "write") == "allow")
    # The agent the worker knew was pinned at halted by the kill: the breaker's recovery climbs
    # from there (cool-down 2 s, then probation one mode up), not a jump to autonomous.
    assert g_before.decide("crm.get", "read").mode == "halted"
    assert g_before.wait_for_mode("read_only", timeout_s=15)
    assert g_before.wait_for_mode("autonomous", timeout_s=40)
