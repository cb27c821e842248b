"""Which guards a control covers, on the safety dashboard as in `tripwire kill`'s report.

The "Controls obeyed by guards" query (``dashboards/queries/safety_control_acks.sql``) counts,
per control, the guards its scope covers (``heard_from``), those of them that acknowledged it
(``obeyed``) and those heard from that did not state what the scope selects on
(``unknown_scope``). The reference is the CLI's own code: ``sdk.ack_report`` reading the same
acknowledgements as records. Real chDB; the end-to-end test with a real broker, worker and
guards is in tests/test_scope_controls.py.
"""

from __future__ import annotations

import shutil
import time
from importlib.resources import files
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tripwire.dashboards.console import attach_ack_counts
from tripwire.dashboards.runner import run_query
from tripwire.schemas.codec import control_ack_codec
from tripwire.sdk.ack_report import AckReport, _take
from tripwire.sdk.scopes import (
    AGENT_KEY_SEPARATOR,
    BREAKER_KEY_PREFIX,
    POLICY_KEY_PREFIX,
    Scope,
    scope_of_control_key,
)
from tripwire.sinks.clickhouse import Client
from tripwire.sinks.control_audit import RecordRef, control_ack_row, insert_rows
from tripwire.sinks.migrations import applied_versions, migrate

RETENTION_DAYS = 30
AGENTS = ("a1", "a2", "a3")
VERSIONS = (None, "1.0", "2.0")
WORKFLOWS = (None, "billing", "support")
ENVIRONMENTS = (None, "prod", "staging")

names = st.text("abz.-_*0", min_size=1, max_size=6).filter(lambda s: s not in ("fleet", "*"))
scopes = st.builds(
    Scope, agent_id=st.none() | names, agent_version=st.none() | names,
    environment=st.none() | names, workflow=st.none() | names, tool=st.none() | names,
    action_class=st.none() | names)


# --- a control's scope, read back from its record key ---------------------------------------


@settings(max_examples=300)
@given(scope=scopes, guard_agent=names)
def test_every_key_the_worker_writes_reads_back_as_its_scope(scope: Scope,
                                                             guard_agent: str) -> None:
    # streams/scope_controls.py: an operator control under Scope.kafka_key(), the breaker's
    # shared ceilings under breaker: + the scope key.
    assert scope_of_control_key(scope.kafka_key(), scope.agent_id or guard_agent) == scope
    if scope.shared:
        assert scope_of_control_key(BREAKER_KEY_PREFIX + scope.key(), guard_agent) == scope


def test_keys_that_do_not_name_their_scope() -> None:
    # The agent's own mode record: that agent's guards.
    assert scope_of_control_key("refund-bot", "refund-bot") == Scope(agent_id="refund-bot")
    assert scope_of_control_key("fleet", "refund-bot") == Scope()
    # A standing rule's scope is in its record only; garbage is not a scope.
    assert scope_of_control_key(POLICY_KEY_PREFIX + "workflow=x", "a") is None
    assert scope_of_control_key("what-is-this", "a") is None
    assert scope_of_control_key(f"a{AGENT_KEY_SEPARATOR}agent=b", "a") is None


# --- the query against the CLI's report ------------------------------------------------------


guards = st.lists(st.fixed_dictionaries({
    "agent": st.sampled_from(AGENTS),
    # What the first hello says, and what a later ack says (a guard learns its identity from
    # its agent's first run; a later ack that says nothing does not unsay it).
    "first": st.tuples(st.sampled_from(VERSIONS), st.sampled_from(WORKFLOWS),
                       st.sampled_from(ENVIRONMENTS)),
    "later": st.tuples(st.sampled_from(VERSIONS), st.sampled_from(WORKFLOWS),
                       st.sampled_from(ENVIRONMENTS)),
    # Seconds before the control of its hello: 400 is before anyone's 5 minutes.
    "hello_s": st.sampled_from([400, 200, 20]),
    "applies": st.booleans(),
    "apply_ms": st.integers(1, 5_000),
}), min_size=1, max_size=6)
control_scopes = st.builds(
    Scope, agent_id=st.none() | st.sampled_from(AGENTS),
    agent_version=st.none() | st.sampled_from(VERSIONS[1:]),
    environment=st.none() | st.sampled_from(ENVIRONMENTS[1:]),
    workflow=st.none() | st.sampled_from(WORKFLOWS[1:]),
    tool=st.none() | st.just("payments.*"))


def _key(scope: Scope) -> str:
    """The record key the worker writes the control under (a plain agent kill is the agent's
    own mode record)."""
    if scope.agent_id is not None and scope.selectors().keys() == {"agent_id"}:
        return scope.agent_id
    return scope.kafka_key()


def _acks(scope: Scope, spec: list[dict[str, Any]], issued: int) -> list[dict[str, Any]]:
    key = _key(scope)
    out: list[dict[str, Any]] = []
    for i, g in enumerate(spec):
        base = {"guard_instance": f"g{i}", "agent_id": g["agent"], "control_key": None,
                "seq": None, "mode": None, "command_id": None, "issued_at": None}
        first = dict(zip(("agent_version", "workflow", "environment"), g["first"], strict=True))
        later = dict(zip(("agent_version", "workflow", "environment"), g["later"], strict=True))
        out.append({**base, **first, "kind": "hello", "applied_at": issued - g["hello_s"] * 1000})
        # Only the agent's guards read an agent's records; every guard reads the shared ones.
        if g["applies"] and (scope.agent_id is None or scope.agent_id == g["agent"]):
            out.append({**base, **later, "kind": "applied", "control_key": key, "seq": issued,
                        "mode": "halted", "command_id": "cmd-1", "issued_at": issued,
                        "applied_at": issued + g["apply_ms"]})
        else:
            out.append({**base, **later, "kind": "hello", "applied_at": issued + 30_000})
    return out


def _cli_report(scope: Scope, acks: list[dict[str, Any]], issued: int) -> AckReport:
    """What `tripwire kill` reports from the same acknowledgements read from Kafka."""
    codec = control_ack_codec()
    report = AckReport("cmd-1", issued, scope)
    for ack in sorted(acks, key=lambda a: a["applied_at"]):
        record = SimpleNamespace(value=codec.encode(ack), headers=[])
        _take(report, record, codec, issued - 300_000, None)
    return report


def _rows(acks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [control_ack_row(RecordRef("agent-control-acks", 0, i, 0), ack, verified=False)
            for i, ack in enumerate(acks)]


def _panel(client: Client, issued: int, agents: list[str] | None = None) -> dict[str, Any]:
    result = run_query(client, "safety_control_acks", {
        "from_ms": issued - 1000, "to_ms": issued + 1000, "agents": agents or []})
    return {r["control"]: r for r in result.records()}


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(scope=control_scopes, spec=guards)
def test_the_panel_counts_what_the_cli_counts(ch_migrated: Client, scope: Scope,
                                              spec: list[dict[str, Any]]) -> None:
    ch_migrated.command("TRUNCATE TABLE control_acks")
    issued = int(time.time() * 1000) - 120_000
    acks = _acks(scope, spec, issued)
    insert_rows(ch_migrated, "control_acks", _rows(acks))
    report = _cli_report(scope, acks, issued)
    row = _panel(ch_migrated, issued).get("cmd-1")
    if row is None:  # no guard acknowledged it: no control to list
        assert not report.applied
        return
    assert row["scope"] == scope.key()
    assert (row["obeyed"], row["heard_from"], row["unknown_scope"], row["slowest_ms"]) == (
        len(report.obeyed), len(report.guards), len(report.unknown), report.slowest_ms)


# --- the cases the panel is for, by hand ---------------------------------------------------


def _fleet(issued: int) -> list[dict[str, Any]]:
    """Two billing guards, two support guards, one guard that never said its workflow (all
    heard from in a hello), and two guards of agent b1."""
    def hello(guard: str, agent: str, workflow: str | None) -> dict[str, Any]:
        return {"kind": "hello", "guard_instance": guard, "agent_id": agent,
                "workflow": workflow, "applied_at": issued - 10_000}

    return [hello("bill-1", "billing-1", "billing"), hello("bill-2", "billing-2", "billing"),
            hello("sup-1", "support-1", "support"), hello("sup-2", "support-2", "support"),
            hello("anon-1", "anon", None),
            hello("b1-x", "b1", "billing"), hello("b1-y", "b1", "billing")]


def _applied(guard: str, agent: str, key: str, command_id: str, issued: int,
             ms: int, workflow: str | None = None) -> dict[str, Any]:
    return {"kind": "applied", "guard_instance": guard, "agent_id": agent, "control_key": key,
            "seq": issued, "mode": "halted", "command_id": command_id, "issued_at": issued,
            "applied_at": issued + ms, "workflow": workflow}


def test_a_workflow_control_counts_that_workflows_guards_and_the_unknown_apart(
        ch_migrated: Client) -> None:
    issued = int(time.time() * 1000) - 60_000
    acks = _fleet(issued) + [
        # Every guard reads the shared topic and applies (and acks) every shared control.
        _applied(g, a, "workflow=billing", "kill-billing", issued, ms, wf)
        for g, a, ms, wf in [("bill-1", "billing-1", 40, "billing"),
                             ("sup-1", "support-1", 900, "support"),
                             ("anon-1", "anon", 20, None)]]
    insert_rows(ch_migrated, "control_acks", _rows(acks))
    row = _panel(ch_migrated, issued)["kill-billing"]
    # Was "obeyed 3 of 7" fleet-wide: bill-1 obeyed; bill-2 and b1's two are silent; the
    # support guards are not counted; anon-1 never said its workflow.
    assert (row["scope"], row["obeyed"], row["heard_from"], row["unknown_scope"]) == (
        "workflow=billing", 1, 4, 1)
    assert row["slowest_ms"] == 40


def test_an_agent_control_counts_that_agents_guards(ch_migrated: Client) -> None:
    issued = int(time.time() * 1000) - 60_000
    acks = _fleet(issued) + [_applied("b1-x", "b1", "b1", "kill-b1", issued, 70, "billing")]
    insert_rows(ch_migrated, "control_acks", _rows(acks))
    row = _panel(ch_migrated, issued)["kill-b1"]
    assert (row["scope"], row["obeyed"], row["heard_from"], row["unknown_scope"]) == (
        "agent=b1", 1, 2, 0)
    # The console shows the same figures for the agent's control in force.
    listed = [{"agent_id": "b1", "controls": [{"control": "kill-b1", "issued_at": issued}]}]
    attach_ack_counts(ch_migrated, listed, issued + 1000)
    control = listed[0]["controls"][0]
    assert control["acks"] == {"obeyed": 1, "slowest_ms": 70}
    assert control["guards"] == {"heard_from": 2, "unknown_scope": 0}


def test_a_fleet_kill_is_as_wide_as_the_fleet(ch_migrated: Client) -> None:
    # kill --all: the fleet ceiling, and each known agent's own mode, under one command id.
    issued = int(time.time() * 1000) - 60_000
    acks = _fleet(issued) + [
        _applied("bill-1", "billing-1", "billing-1", "kill-all", issued, 30, "billing"),
        _applied("bill-1", "billing-1", "fleet", "kill-all", issued, 35, "billing"),
        _applied("anon-1", "anon", "fleet", "kill-all", issued, 50)]
    insert_rows(ch_migrated, "control_acks", _rows(acks))
    row = _panel(ch_migrated, issued)["kill-all"]
    assert (row["scope"], row["obeyed"], row["heard_from"], row["unknown_scope"]) == (
        "fleet", 2, 7, 0)


# --- upgrading a table from before the scope columns -----------------------------------------


def test_a_0015_table_with_rows_upgrades_in_place_and_old_rows_read_as_unknown_scope(
        ch_client: Client, tmp_path: Path) -> None:
    before = tmp_path / "sql"
    before.mkdir()
    for entry in (files("tripwire.sinks") / "sql").iterdir():
        if entry.name.endswith(".sql") and int(entry.name[:4]) < 19:
            (before / entry.name).write_text(entry.read_text(encoding="utf-8"))
    migrate(ch_client, RETENTION_DAYS, directory=before)
    issued = int(time.time() * 1000) - 60_000
    # Rows as the 0015-era worker stored them: no identity, no scope.
    old_columns = ["applied_at", "kind", "guard_instance", "agent_id", "control_key", "seq",
                   "mode", "command_id", "issued_at", "apply_ms", "verified",
                   "source_partition", "source_offset"]
    old = [[issued - 10_000, "hello", "old-1", "billing-1", "", None, "", "", None, None, 0, 0, 1],
           [issued - 9_000, "hello", "old-2", "support-1", "", None, "", "", None, None, 0, 0, 2],
           [issued + 40, "applied", "old-1", "billing-1", "workflow=billing", issued, "halted",
            "old-kill", issued, 40, 0, 0, 3]]
    ch_client.insert("control_acks", old, column_names=old_columns)
    shutil.rmtree(before)

    assert migrate(ch_client, RETENTION_DAYS) == [19]
    assert 19 in applied_versions(ch_client)
    assert migrate(ch_client, RETENTION_DAYS) == []  # and only once
    stored = ch_client.query(
        "SELECT guard_instance, workflow, scope_key, scope_workflow FROM control_acks "
        "ORDER BY source_offset").result_rows
    assert stored == [("old-1", None, "", None), ("old-2", None, "", None),
                      ("old-1", None, "", None)]
    # The old control: its scope is not known, so nobody is counted as covered or silent.
    row = _panel(ch_client, issued)["old-kill"]
    assert (row["scope"], row["obeyed"], row["heard_from"], row["unknown_scope"]) == (
        "unknown", 1, None, 2)
    # A new workflow control beside them: the old guards did not state their workflow.
    later = issued + 1
    new = [{"kind": "hello", "guard_instance": "new-1", "agent_id": "billing-2",
            "workflow": "billing", "applied_at": later - 5_000},
           _applied("new-1", "billing-2", "workflow=billing", "new-kill", later, 25, "billing")]
    insert_rows(ch_client, "control_acks", _rows(new))
    row = _panel(ch_client, later)["new-kill"]
    assert (row["scope"], row["obeyed"], row["heard_from"], row["unknown_scope"]) == (
        "workflow=billing", 1, 1, 2)
