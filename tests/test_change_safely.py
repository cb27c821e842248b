"""Changing the breaker safely, on the real stack (SDK -> embedded broker -> worker -> chDB):

* a shadow rule records would-be trips and changes no control;
* ``tripwire backtest`` over the recorded traffic reproduces exactly the transitions the live
  worker made when given the live policy, and reports the expected differences for a
  stricter and a looser one;
* ``tripwire evidence --export`` writes a replay set that ``backtest --replay`` replays to
  the same transitions.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import subprocess
import sys
import time

import pytest

from tripwire.bench.worker_process import WorkerProcess, wait_caught_up, worker_env
from tripwire.dashboards.filters import Filters
from tripwire.dashboards.runner import run_query
from tripwire.detectors.backtest import Backtest, event_keys
from tripwire.detectors.injection import scan_text
from tripwire.detectors.policy import load_policy
from tripwire.schemas import topics
from tripwire.schemas.topics import ensure_topics, tripwire_topics
from tripwire.sdk.operator import read_shared_controls
from tripwire.simulator.fleet import fleet_events, scenario_of
from tripwire.sinks.clickhouse import connect
from tripwire.sinks.step_history import agent_chunks
from tripwire.streams.broker import EmbeddedBroker, free_port

pytestmark = pytest.mark.integration
PARTITIONS = 4
# never_ending_run is left out: its check is time-driven, and a worker fed this backlog far
# faster than real time runs it at the agent's next event, where the backtest (modelling live
# traffic, whose timer fires within a second of the deadline) runs it at the deadline itself.
SCENARIOS = ("denial_storm", "runaway_loop", "overspend", "injection")
# The built-in policy, plus two shadow elements: a stricter denial-rate band and a rule that
# would downgrade an agent for a costly run instead of only stopping the run.
LIVE_POLICY = """
defaults:
  denial_rate:
    bands:
      - {at: 0.1, severity: S3, shadow: true}
      - {at: 0.3, severity: S3}
      - {at: 0.5, severity: S2}
      - {at: 0.8, severity: S1}
  breaker:
    rules:
      - {name: costly_run_halts_agent, detector: spend, scope: run, target: read_only,
         shadow: true}
      - {name: runaway_run, scope: run, target: stop_run}
      - {name: spend_warning, detector: spend, severity: S3, target: none}
      - {name: harmful, severity: S1, target: read_only}
      - {name: repeated_or_costly, severity: S2, target: suggest_only}
      - {name: local_quality, severity: S3, target: approve_to_act}
standing:
  rules:
    - {name: prod-destructive-needs-human, action_class: destructive, environment: prod,
       effect: approve}
    - {name: writes-need-human, action_class: write, effect: approve, shadow: true}
"""
SHADOW_STANDING = "writes-need-human"
STRICTER = """
defaults:
  denial_rate:
    bands:
      - {at: 0.05, severity: S2}
      - {at: 0.5, severity: S1}
"""
LOOSER = """
defaults:
  breaker:
    rules:
      - {name: runaway_run, scope: run, target: stop_run}
"""


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Scenario traffic through a real worker under LIVE_POLICY; the worker is stopped after."""
    tmp = tmp_path_factory.mktemp("change")
    for name, text in (("live", LIVE_POLICY), ("stricter", STRICTER), ("looser", LOOSER)):
        (tmp / f"{name}.yaml").write_text(text)
    now = int(time.time()) * 1000
    start = now - 2 * 3600_000
    events = [e for e in itertools.islice(
        fleet_events(seed=5, agents=6, scenarios=SCENARIOS, start_ms=start), 9000)
        if e["ts"] < now - 60_000]
    with EmbeddedBroker(free_port(), log_path=tmp / "tansu.log") as broker:
        bootstrap = broker.bootstrap
        asyncio.run(ensure_topics(bootstrap, tripwire_topics(PARTITIONS)))
        env = worker_env(bootstrap, tmp / "data", PARTITIONS,
                         TRIPWIRE_POLICY_FILE=str(tmp / "live.yaml"))
        worker = WorkerProcess(env, tmp / "worker.log").start()
        try:
            from test_scenarios import emit  # the suite's SDK emitter helper

            asyncio.run(emit(bootstrap, events))
            asyncio.run(wait_caught_up(bootstrap, "tripwire", topics.STEPS, PARTITIONS, worker))
            time.sleep(1.5)  # a last sink flush for the breaker tables
            # What guards would enforce: the shared topic's controls, read as a guard does.
            shared = asyncio.run(read_shared_controls(bootstrap, timeout_s=10.0))
        finally:
            assert worker.stop() == 0, worker.log()[-3000:]
    return {"tmp": tmp, "env": env, "events": events, "start": start, "now": now,
            "dsn": env["TRIPWIRE_CLICKHOUSE_URL"], "shared": shared}


def query(dsn: str, sql: str) -> list[tuple]:
    client = connect(dsn)
    try:
        return list(client.query(sql).result_rows)
    finally:
        client.close()


def live_transitions(dsn: str) -> dict[str, list[tuple]]:
    out: dict[str, list[tuple]] = {}
    for agent, seq, ts, mode, prev, scope, run_id, rule in query(dsn, (
            "SELECT agent_id, seq, toUnixTimestamp64Milli(issued_at), mode, previous_mode, "
            "scope, run_id, rule FROM mode_changes FINAL ORDER BY agent_id, seq")):
        out.setdefault(agent, []).append((seq, ts, mode, prev, scope, run_id, rule))
    return out


def replayed_transitions(report) -> dict[str, list[tuple]]:
    out: dict[str, list[tuple]] = {}
    for a in report.agents:
        for t in a.current.transitions:
            # As the sink stores the control record: a tool restriction is a scoped record
            # with no previous mode.
            c = t.to_control()
            out.setdefault(a.agent_id, []).append(
                (t.seq, t.ts, c["mode"], c["previous_mode"] or "", c["scope"], t.run_id or "",
                 t.rule or ""))
    return out


def backtest(recorded: dict, candidate: str):
    policies = recorded["tmp"]
    client = connect(recorded["dsn"])
    try:
        last = max(e["ts"] for e in recorded["events"]) + 1
        live, new = load_policy(policies / "live.yaml"), load_policy(policies / candidate)
        bt = Backtest(live, new, scanner=scan_text, from_ms=recorded["start"] - 60_000,
                      to_ms=last, keep_transitions=10_000)
        # Only the keys the two policies read, as `tripwire backtest` reads them.
        for agent, workflow, chunk, ts in agent_chunks(
                client, recorded["start"] - 60_000, last,
                keys=event_keys(live, new, scanner=scan_text)):
            bt.feed(agent, workflow, chunk, ts)
        return bt.finish()
    finally:
        client.close()


def test_shadow_rules_record_would_be_trips_and_change_no_control(recorded):
    dsn = recorded["dsn"]
    shadow = query(dsn, "SELECT shadow_rule, agent_id, action, mode FROM shadow_mode_changes "
                        "FINAL")
    by_rule: dict[str, set[tuple[str, str, str]]] = {}
    for rule, agent, action, mode in shadow:
        by_rule.setdefault(rule, set()).add((agent, action, mode))
    # The costly-run rule would have put the overspending agent in read_only...
    overspender = {(a, m) for a, act, m in by_rule.get("costly_run_halts_agent", set())
                   if act == "downgrade"}
    assert any(scenario_of(a) == "overspend" and m == "read_only" for a, m in overspender), by_rule
    # ... and its would-be detections are recorded too, for the stricter band.
    assert query(dsn, "SELECT count() FROM shadow_detections WHERE shadow_rule = "
                      "'denial_rate.bands[0.1]'")[0][0] > 0
    # No control carries a shadow rule, and what was published is exactly what the
    # policy without its shadow elements decides (the backtest's replay of it, below).
    rules = {r for (r,) in query(dsn, "SELECT DISTINCT rule FROM mode_changes")}
    assert not rules & {"costly_run_halts_agent"}, rules
    live = live_transitions(dsn)
    assert not any(m == "read_only" and r == "costly_run_halts_agent"
                   for rows in live.values() for *_, m, _p, _s, _r, r in rows)
    report = backtest(recorded, "live.yaml")
    assert replayed_transitions(report) == live


def test_shadow_standing_rule_records_would_be_decisions_and_publishes_no_control(recorded):
    # The enforced standing rule is on the shared topic for guards; the shadow one is not.
    keys = set(recorded["shared"])
    assert "policy:prod-destructive-needs-human" in keys, keys
    assert f"policy:{SHADOW_STANDING}" not in keys, keys
    dsn = recorded["dsn"]
    assert not query(dsn, "SELECT count() FROM mode_changes WHERE rule = "
                          f"'standing.{SHADOW_STANDING}'")[0][0]
    # One would-be approval per write tool call the worker saw, each citing its step.
    writes = {e["event_id"] for e in recorded["events"]
              if e["kind"] == "tool_call" and e.get("action_class") == "write"}
    assert writes, "the scenarios make write calls"
    rows = query(dsn, "SELECT detector, metric, evidence_event_ids, message FROM "
                      f"shadow_detections FINAL WHERE shadow_rule = '{SHADOW_STANDING}'")
    assert {(d, m) for d, m, _, _ in rows} == {("standing", "would_approve")}
    assert sorted(ids[0] for _, _, ids, _ in rows) == sorted(writes)
    assert all(SHADOW_STANDING in msg for *_, msg in rows)
    # The safety dashboard's panel: per agent, beside the enforced standing decisions.
    client = connect(dsn)
    try:
        panel = run_query(client, "safety_shadow_standing", Filters(
            from_ms=recorded["start"] - 60_000, to_ms=recorded["now"]).values())
    finally:
        client.close()
    got = {(r[0], r[1]): (r[2], r[3]) for r in panel.rows}
    per_agent: dict[str, int] = {}
    for e in recorded["events"]:
        if e["event_id"] in writes:
            per_agent[e["agent_id"]] = per_agent.get(e["agent_id"], 0) + 1
    assert got == {(a, SHADOW_STANDING): (n, 0) for a, n in per_agent.items()}
    assert panel.columns[-1] == "enforced_standing"


def test_backtest_reproduces_the_live_worker_and_reports_policy_differences(recorded):
    live = live_transitions(recorded["dsn"])
    assert any(scenario_of(a) for a in live), "the scenarios tripped the live breaker"
    same = backtest(recorded, "live.yaml")
    assert replayed_transitions(same) == live  # the same code, the same results
    assert not same.changed() and not same.newly_downgraded()

    looser = backtest(recorded, "looser.yaml")
    downgraded_live = {a.agent_id for a in looser.agents if a.current.downgraded}
    assert downgraded_live, "scenario agents were downgraded live"
    # Only run stops (and their escalation after repeated stops) are left to the breaker.
    assert set(looser.totals("candidate")["trips"]) <= {"runaway_run", "repeated_run_stops"}
    spared = {scenario_of(a.agent_id) for a in looser.no_longer_downgraded()}
    assert {"denial_storm", "injection"} <= spared, spared
    assert not looser.newly_downgraded() and not looser.fails("downgrade")
    assert looser.totals("candidate")["run_stops"] == looser.totals("current")["run_stops"]

    stricter = backtest(recorded, "stricter.yaml")
    newly = {a.agent_id for a in stricter.newly_downgraded()}
    assert newly and all(scenario_of(a) is None for a in newly), newly
    assert stricter.fails("downgrade")
    assert downgraded_live <= {a.agent_id for a in stricter.agents if a.candidate.downgraded}


def test_backtest_and_evidence_export_from_the_command_line(recorded, tmp_path):
    env, tmp = recorded["env"], recorded["tmp"]
    since = str(recorded["start"] - 60_000)
    run = subprocess.run(
        [sys.executable, "-m", "tripwire.streams.cli", "backtest", "--policy",
         str(tmp / "stricter.yaml"), "--current", str(tmp / "live.yaml"), "--from", since,
         "--format", "json", "--fail-on", "downgrade"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 1, run.stderr
    report = json.loads(run.stdout)
    assert report["newly_downgraded"] and "downgrades agents" in run.stderr
    assert report["events"] == len(recorded["events"])

    # An incident's steps as a replay set, replayed from the file alone.
    agent = next(a for a in live_transitions(recorded["dsn"]) if scenario_of(a) == "overspend")
    export = tmp_path / "incident.jsonl"
    ev = subprocess.run(
        [sys.executable, "-m", "tripwire.streams.cli", "evidence", "--agent", agent, "--since",
         since, "--export", str(export)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert ev.returncode == 0, ev.stderr
    lines = export.read_text().splitlines()
    assert len(lines) == sum(1 for e in recorded["events"] if e["agent_id"] == agent)
    first = json.loads(lines[0])
    assert set(first) >= {"event_id", "ts", "agent_id", "run_id", "step", "kind", "attributes"}
    rerun = subprocess.run(
        [sys.executable, "-m", "tripwire.streams.cli", "backtest", "--policy",
         str(tmp / "live.yaml"), "--current", str(tmp / "live.yaml"), "--replay", str(export),
         "--format", "json"],
        cwd=tmp_path, env={k: v for k, v in env.items() if k != "TRIPWIRE_CLICKHOUSE_URL"},
        capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    replay = json.loads(rerun.stdout)
    assert replay["totals"]["current"]["run_stops"] > 0
    live = live_transitions(recorded["dsn"])[agent]
    stops = sum(1 for row in live if row[4] == "run")
    assert replay["totals"]["current"]["run_stops"] == stops


def test_replay_set_roundtrip_matches_the_table_replay(recorded, tmp_path):
    from tripwire.dashboards.replay_set import by_agent, read_replay_set, write_replay_set
    from tripwire.dashboards.runner import run_query

    agent = next(a for a in live_transitions(recorded["dsn"]) if scenario_of(a) == "injection")
    client = connect(recorded["dsn"])
    try:
        rows = run_query(client, "evidence_agent_steps", {
            "agent": agent, "from_ms": recorded["start"] - 60_000,
            "to_ms": recorded["now"]}).records()
    finally:
        client.close()
    write_replay_set(tmp_path / "r.jsonl", rows)
    policy = load_policy(recorded["tmp"] / "live.yaml")
    bt = Backtest(policy, policy, scanner=scan_text, keep_transitions=10_000)
    for a, wf, events in by_agent(read_replay_set(tmp_path / "r.jsonl")):
        bt.feed(a, wf, events)
    from_file = replayed_transitions(bt.finish())[agent]
    live = live_transitions(recorded["dsn"])[agent]
    assert from_file == live
