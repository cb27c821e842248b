"""Evidence for a scope and window, on real chDB holding the scenario fleet: the steps are
exactly the raw rows the scope covers, side effects are grouped by how they are undone, and
what changed (versions, models) is listed with when it appeared."""

from __future__ import annotations

import json
from collections.abc import Iterator
from fnmatch import fnmatchcase
from pathlib import Path

import pytest

from chdb_fixtures import client_on, sample_fleet_database
from tripwire.dashboards.evidence import SIDE_EFFECT_CLASSES
from tripwire.dashboards.filters import now_ms
from tripwire.dashboards.sample_fleet import SampleFleet
from tripwire.dashboards.scope_evidence import scope_evidence
from tripwire.detectors.standing_rules import StandingPolicy
from tripwire.sdk.scopes import Scope
from tripwire.sinks.clickhouse import Client

pytestmark = pytest.mark.integration

END_MS = now_ms() - 60_000
FROM_MS = END_MS - 30 * 60_000


@pytest.fixture(scope="module")
def fleet(chdb_dir: Path) -> Iterator[tuple[str, SampleFleet]]:
    with sample_fleet_database(chdb_dir, "scopeev", END_MS) as (dsn, sample):
        yield dsn, sample  # type: ignore[misc]


@pytest.fixture
def client(fleet: tuple[str, SampleFleet]) -> Iterator[Client]:
    with client_on(fleet[0]) as c:
        yield c


def raw_ids(client: Client, where: str = "1") -> set[str]:
    rows = client.query(
        f"SELECT toString(event_id) FROM steps FINAL WHERE ts >= fromUnixTimestamp64Milli("
        f"{FROM_MS}, 'UTC') AND ts < fromUnixTimestamp64Milli({END_MS}, 'UTC') AND {where}"
    ).result_rows
    return {r[0] for r in rows}


def test_fleet_scope_is_every_step_of_the_window(client: Client) -> None:
    ev = scope_evidence(client, Scope(), FROM_MS, END_MS)
    assert {s["event_id"] for s in ev.steps} == raw_ids(client)
    effects = [s for rows in ev.side_effects.values() for s in rows]
    assert len(effects) == sum(1 for s in ev.steps if s["kind"] == "tool_call"
                               and s["action_class"] in SIDE_EFFECT_CLASSES)
    by_class = {kind: {s["action_class"] for s in rows} for kind, rows in ev.side_effects.items()}
    assert by_class.get("irreversible", set()) <= {"money", "destructive"}
    assert by_class.get("compensable", set()) <= {"write", "external"}
    json.dumps(ev.to_json())
    text = ev.to_markdown()
    assert "### irreversible" in text and "## What changed just before" in text


def test_workflow_and_tool_scopes_cover_exactly_their_steps(client: Client) -> None:
    workflow = client.query("SELECT any(toString(workflow)) FROM steps WHERE workflow != ''"
                            ).result_rows[0][0]
    ev = scope_evidence(client, Scope(workflow=workflow), FROM_MS, END_MS)
    assert {s["event_id"] for s in ev.steps} == raw_ids(client, f"workflow = '{workflow}'")
    tool = next(s["tool"] for s in ev.steps if s["tool"])
    pattern = tool.split(".")[0] + ".*"
    ev = scope_evidence(client, Scope(tool=pattern), FROM_MS, END_MS)
    assert ev.steps and all(fnmatchcase(s["tool"], pattern) for s in ev.steps)
    assert {s["event_id"] for s in ev.steps} == {
        i for i, t in client.query(
            f"SELECT toString(event_id), toString(tool) FROM steps FINAL WHERE ts >= "
            f"fromUnixTimestamp64Milli({FROM_MS}, 'UTC') AND ts < "
            f"fromUnixTimestamp64Milli({END_MS}, 'UTC')").result_rows
        if fnmatchcase(t, pattern)}


def test_reversibility_map_and_changes_before(client: Client) -> None:
    standing = StandingPolicy(reversibility={"*": "reversible"})
    ev = scope_evidence(client, Scope(), FROM_MS, END_MS, standing)
    assert set(ev.side_effects) <= {"reversible"}
    versions = ev.changes["agent versions"]
    assert versions and all(v["steps"] > 0 and v["first_seen"] <= v["last_seen"]
                            for v in versions)
    assert {v["value"] for v in versions} == {
        r[0] for r in client.query(
            f"SELECT DISTINCT toString(agent_version) FROM steps FINAL WHERE agent_version != '' "
            f"AND ts >= fromUnixTimestamp64Milli({FROM_MS - 15 * 60_000}, 'UTC') AND ts < "
            f"fromUnixTimestamp64Milli({END_MS}, 'UTC')").result_rows}


def test_bad_windows_and_scopes_are_refused() -> None:
    with pytest.raises(ValueError):
        Scope.from_key("team=x")
    assert Scope.from_key("workflow=w;tool=a.*") == Scope(workflow="w", tool="a.*")
    assert Scope.from_key("fleet") == Scope()
    assert Scope.from_key(Scope(agent_id="a", agent_version="2").key()) == \
        Scope(agent_id="a", agent_version="2")


def test_cli_scope_evidence(fleet, capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    from tripwire.dashboards import commands

    parser = argparse.ArgumentParser(prog="tripwire")
    commands.add_parsers(parser.add_subparsers(dest="command", required=True))
    dsn = fleet[0]
    args = parser.parse_args(["evidence", "--scope", "fleet", "--since", str(FROM_MS),
                              "--until", str(END_MS), "--clickhouse-url", dsn])
    assert args.handler(args) == 0
    assert capsys.readouterr().out.startswith("# Incident evidence: scope `fleet`")
    args = parser.parse_args(["evidence", "--scope", "action_class=money", "--since",
                              str(FROM_MS), "--format", "json", "--clickhouse-url", dsn])
    assert args.handler(args) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["kind"] == "scope" and doc["summary"]["scope"] == "action_class=money"
    assert all(s["action_class"] == "money" for s in doc["steps"])
    args = parser.parse_args(["evidence", "--scope", "team=x", "--since", str(FROM_MS),
                              "--clickhouse-url", dsn])
    assert args.handler(args) == 2
    args = parser.parse_args(["evidence", "--scope", "fleet", "--clickhouse-url", dsn])
    assert args.handler(args) == 2
