"""Incident evidence matches the raw steps rows exactly, on real chDB."""

from __future__ import annotations

import argparse
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from chdb_fixtures import client_on, sample_fleet_database
from tripwire.dashboards import commands
from tripwire.dashboards.evidence import (
    SIDE_EFFECT_CLASSES,
    EvidenceNotFound,
    agent_evidence,
    run_evidence,
)
from tripwire.dashboards.filters import now_ms
from tripwire.dashboards.runner import table_exists
from tripwire.dashboards.sample_fleet import SampleFleet, fill
from tripwire.sinks.clickhouse import Client

pytestmark = pytest.mark.integration

END_MS = now_ms() - 60_000
RAW_COLUMNS = ("event_id", "ts", "agent_id", "agent_version", "run_id", "step", "workflow",
               "kind", "tool", "action_class", "params_hash", "policy_outcome", "policy_rule",
               "status", "outcome", "approver", "approved", "wait_ms", "cost_usd",
               "input_tokens", "output_tokens", "latency_ms", "content", "injection_flagged")


@pytest.fixture(scope="module")
def fleet(chdb_dir: Path) -> Iterator[tuple[str, SampleFleet]]:
    """One database with two hours of the scenario fleet, shared by this module's tests."""
    with sample_fleet_database(chdb_dir, "evid", END_MS) as (dsn, sample):
        yield dsn, sample  # type: ignore[misc]


@pytest.fixture
def client(fleet: tuple[str, SampleFleet]) -> Iterator[Client]:
    with client_on(fleet[0]) as c:
        yield c


def raw_rows(client: Client, where: str, params: dict) -> list[dict]:
    cols = ", ".join(f"toString({c})" if c in ("event_id",) else c for c in RAW_COLUMNS)
    res = client.query(f"SELECT {cols} FROM steps WHERE {where} ORDER BY ts, step, event_id",
                       parameters=params)
    return [dict(zip(RAW_COLUMNS, r, strict=True)) for r in res.result_rows]


def project(steps: list[dict]) -> list[dict]:
    return [{c: s[c] for c in RAW_COLUMNS} for s in steps]


def tripped_run_with_side_effects(client: Client, sample: SampleFleet) -> str:
    for run_id in sample.tripped_runs:
        n = client.query("SELECT count() FROM steps WHERE run_id = {r:String} AND kind = "
                         "'tool_call' AND action_class IN ('write', 'external', 'money', "
                         "'destructive')", parameters={"r": run_id}).result_rows[0][0]
        if n:
            return run_id
    raise AssertionError("no tripped run caused a side effect")


def test_run_evidence_lists_every_step_and_side_effect_exactly(client: Client, fleet) -> None:
    _, sample = fleet
    run_id = tripped_run_with_side_effects(client, sample)
    ev = run_evidence(client, run_id)
    raw = raw_rows(client, "run_id = {r:String}", {"r": run_id})
    assert sorted(project(ev.steps), key=lambda s: s["event_id"]) == \
        sorted(raw, key=lambda s: s["event_id"])
    assert [s["step"] for s in ev.steps] == sorted(s["step"] for s in raw)
    effects = [s for s in raw if s["kind"] == "tool_call"
               and s["action_class"] in SIDE_EFFECT_CLASSES]
    assert {s["event_id"] for s in ev.side_effects()} == {s["event_id"] for s in effects}
    assert project(ev.side_effects()) == sorted(effects, key=lambda s: (s["step"], s["ts"]))
    summary = ev.summary()
    assert summary["cost_usd"] == pytest.approx(sum(s["cost_usd"] for s in raw))
    assert summary["agent_versions"] and summary["workflows"]
    # The breaker's reaction that this run caused is part of the evidence.
    agent = sample.tripped_runs[run_id]
    caused = [m for m in sample.mode_changes if m["agent_id"] == agent and (
        m["run_id"] == run_id or any(str(d["detection_id"]) in m["detection_ids"]
                                     for d in sample.detections
                                     if set(d["evidence_event_ids"]) & {s["event_id"]
                                                                        for s in raw}))]
    assert caused
    assert {m["seq"] for m in caused} <= {m["seq"] for m in ev.mode_changes}
    assert ev.detections


def test_run_evidence_renders_markdown_and_json(client: Client, fleet) -> None:
    _, sample = fleet
    run_id = tripped_run_with_side_effects(client, sample)
    ev = run_evidence(client, run_id)
    md = ev.to_markdown()
    assert md.startswith(f"# Incident evidence: run `{run_id}`")
    for section in ("## Summary", "## Side effects that ran", "## Blocked actions",
                    "## Detections", "## Mode changes", "## Every step"):
        assert section in md
    for effect in ev.side_effects():
        assert effect["event_id"] in md
    doc = json.loads(json.dumps(ev.to_json()))
    assert doc["kind"] == "run" and len(doc["steps"]) == len(ev.steps)
    assert doc["steps"][0]["ts"].endswith("Z")
    # Where migration 0010 has not created operator_commands the part is left out (None).
    assert doc["operator_commands"] == ([] if table_exists(client, "operator_commands")
                                        else None)


def test_agent_window_evidence_matches_raw_rows(client: Client) -> None:
    agent = "agent-denial-storm-1"
    lo, hi = END_MS - 3600_000, END_MS - 1800_000
    ev = agent_evidence(client, agent, lo, hi)
    raw = raw_rows(client, "agent_id = {a:String} AND ts >= fromUnixTimestamp64Milli({lo:Int64})"
                   " AND ts < fromUnixTimestamp64Milli({hi:Int64})",
                   {"a": agent, "lo": lo, "hi": hi})
    assert raw and project(ev.steps) == raw
    assert ev.summary()["runs"] == len({s["run_id"] for s in raw})


def test_unknown_run_is_not_found(client: Client) -> None:
    with pytest.raises(EvidenceNotFound):
        run_evidence(client, "no-such-run")


def test_operator_commands_are_included(ch_migrated: Client) -> None:
    fill(ch_migrated, end_ms=END_MS, hours=0.5, agents=2, scenarios=["denial_storm"])
    agent, lo, hi = "agent-denial-storm-1", END_MS - 1800_000, END_MS
    # Migration 0010 ships with the tree: the audit table must be there, not skipped around.
    assert table_exists(ch_migrated, "operator_commands")
    at = END_MS - 600_000
    ch_migrated.insert(
        "operator_commands",
        [[at, "agent-commands", 0, 7, agent, at, "accepted", "", "", str(uuid.uuid4()), "pin",
          agent, "halted", "incident 42", "alice", at],
         [at + 1, "agent-commands", 0, 8, agent, at + 1, "rejected", "bad_signature", "", "c2",
          "release", agent, "", "", "mallory", None]],
        column_names=["record_ts", "source_topic", "source_partition", "source_offset",
                      "record_key", "judged_at", "outcome", "rejection", "detail",
                      "command_id", "action", "agent_id", "mode", "reason", "operator",
                      "issued_at"])
    ev = agent_evidence(ch_migrated, agent, lo, hi)
    assert [c["operator"] for c in ev.operator_commands or []] == ["alice", "mallory"]
    assert ev.operator_commands[1]["reject_reason"] == "bad_signature"
    assert "## Operator commands (2)" in ev.to_markdown()
    ch_migrated.command("DROP TABLE operator_commands SYNC")
    assert agent_evidence(ch_migrated, agent, lo, hi).operator_commands is None


def _cli(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="tripwire")
    commands.add_parsers(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


def test_cli_prints_markdown_and_json(fleet, capsys: pytest.CaptureFixture[str]) -> None:
    dsn, sample = fleet
    run_id = next(iter(sample.tripped_runs))
    args = _cli(["evidence", run_id, "--clickhouse-url", dsn])
    assert args.handler(args) == 0
    assert capsys.readouterr().out.startswith(f"# Incident evidence: run `{run_id}`")
    args = _cli(["evidence", "--agent", "agent-overspend-1", "--since",
                 str(END_MS - 3600_000), "--format", "json", "--clickhouse-url", dsn])
    assert args.handler(args) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["kind"] == "agent" and doc["summary"]["agents"] == ["agent-overspend-1"]
    args = _cli(["evidence", "no-such-run", "--clickhouse-url", dsn])
    assert args.handler(args) == 1
    args = _cli(["evidence", "--clickhouse-url", dsn])
    assert args.handler(args) == 2


def test_instants_are_epoch_ms_iso_or_a_time_ago() -> None:
    from tripwire.dashboards.filters import now_ms, parse_instant

    assert parse_instant("1700000000000") == 1_700_000_000_000
    assert parse_instant("2023-11-14T22:13:20Z") == 1_700_000_000_000
    assert parse_instant("2023-11-14T22:13:20") == 1_700_000_000_000  # UTC when no offset
    for text, ago_ms in (("10m", 600_000), ("-10m", 600_000), ("6h", 21_600_000),
                         ("7d", 604_800_000)):
        before = now_ms()
        got = parse_instant(text)
        assert before - ago_ms <= got <= now_ms() - ago_ms
    with pytest.raises(ValueError, match="10m, 6h, 7d"):
        parse_instant("yesterday")
