"""The dashboard rollups and named queries, on real chDB filled by the simulated fleet."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from chdb_fixtures import client_on, sample_fleet_database
from tripwire.dashboards.catalog import CHARTS, PARAMETER_TYPES, catalog, panels, parse_query
from tripwire.dashboards.filters import Filters, auto_bucket_s, now_ms
from tripwire.dashboards.runner import run_query
from tripwire.dashboards.sample_fleet import SampleFleet
from tripwire.sinks.clickhouse import Client
from tripwire.sinks.migrations import migrate

pytestmark = pytest.mark.integration

END_MS = now_ms() - 60_000
RANGE = Filters(from_ms=END_MS - 6 * 3600_000, to_ms=END_MS + 60_000)


@pytest.fixture(scope="module")
def fleet(chdb_dir: Path) -> Iterator[tuple[str, SampleFleet]]:
    """One database with two hours of the scenario fleet, shared by this module's tests."""
    with sample_fleet_database(chdb_dir, "dash", END_MS) as (dsn, sample):
        yield dsn, sample  # type: ignore[misc]


@pytest.fixture
def client(fleet: tuple[str, SampleFleet]) -> Iterator[Client]:
    with client_on(fleet[0]) as c:
        yield c


def _sum(client: Client, sql: str) -> float:
    return client.query(sql).result_rows[0][0]


def test_catalog_declares_every_panel_with_known_parameters() -> None:
    queries = catalog()
    assert {"safety_current_modes", "business_task_success", "evidence_run_steps"} <= set(queries)
    for q in queries.values():
        assert set(q.parameters) <= set(PARAMETER_TYPES), q.name
        if q.is_panel:
            assert q.chart in CHARTS and 1 <= q.width <= 24, q.name
    assert [p.name for p in panels("safety")][0] == "safety_summary"
    assert {"approval_rate", "time_to_approve"} <= {p.name for p in panels("business")}


def test_a_parameter_must_be_declared_with_its_one_type() -> None:
    with pytest.raises(ValueError, match="unknown parameter"):
        parse_query("x", "-- title: x\nSELECT {nope:String}")
    with pytest.raises(ValueError, match="is Int64"):
        parse_query("x", "-- title: x\nSELECT {from_ms:String}")


def test_rollups_count_every_stored_step_once(client: Client, fleet) -> None:
    _, sample = fleet
    assert _sum(client, "SELECT count() FROM steps") == sample.steps
    # Each resolution holds every step once.
    assert _sum(client, "SELECT sum(steps) FROM agent_stats WHERE resolution = 60") == sample.steps
    assert _sum(client, "SELECT sum(steps) FROM agent_stats WHERE resolution = 3600") == \
        sample.steps
    assert _sum(client, "SELECT sum(steps) FROM run_hour_stats") == sample.steps
    raw_cost = _sum(client, "SELECT sum(cost_usd) FROM steps")
    assert _sum(client, "SELECT sum(cost_usd) FROM agent_stats WHERE resolution = 3600") == \
        pytest.approx(raw_cost)
    assert _sum(client, "SELECT countIf(kind = 'policy_decision') FROM steps") == _sum(
        client, "SELECT sum(policy_decisions) FROM agent_stats WHERE resolution = 60")
    blocked = _sum(client, "SELECT countIf(policy_outcome IN ('denied', 'escalated') "
                           "OR approved = false) FROM steps")
    assert _sum(client, "SELECT sum(decisions) FROM block_stats WHERE resolution = 3600") == \
        blocked
    assert _sum(client, "SELECT sum(policy_denied + policy_escalated + approvals_rejected) "
                        "FROM agent_stats WHERE resolution = 60") == blocked
    assert _sum(client, "SELECT uniqExact(run_id) FROM steps") == _sum(
        client, "SELECT uniqExact(run_key) FROM run_hour_stats")
    # A finished run's length is its run_end step + 1, i.e. every step it stored.
    lengths = client.query(
        "SELECT r.n, s.c FROM (SELECT any(run_id) AS run_id, max(final_steps) AS n "
        "FROM run_hour_stats GROUP BY run_key HAVING n > 0) AS r "
        "INNER JOIN (SELECT run_id, count() AS c FROM steps GROUP BY run_id) AS s "
        "ON s.run_id = r.run_id").result_rows
    assert lengths and all(n == c for n, c in lengths)


@pytest.mark.parametrize("name", sorted(q.name for q in catalog().values() if q.is_panel))
def test_every_panel_returns_rows_of_its_shape(client: Client, name: str) -> None:
    q = catalog()[name]
    result = run_query(client, q, RANGE.values())
    assert result.rows, f"{name} returned no rows for the scenario fleet"
    check_shape(q.chart, result.columns, result.rows)


def check_shape(chart: str | None, columns: list[str], rows: list[list]) -> None:
    if chart == "timeseries":
        assert columns == ["t", "series", "value"]
        for t, series, value in rows:
            assert isinstance(t, datetime) and isinstance(series, str) and series
            assert value is None or isinstance(value, (int, float))
    elif chart == "bar":
        assert columns == ["category", "series", "value"]
        for category, series, value in rows:
            assert isinstance(category, str) and isinstance(series, str)
            assert isinstance(value, (int, float))
    elif chart == "stat":
        assert len(rows) == 1
        assert all(v is None or isinstance(v, (int, float)) for v in rows[0])
    elif chart == "timeline":
        assert columns[0] == "t" and all(isinstance(r[0], datetime) for r in rows)
    else:
        assert chart == "table" and columns


def test_the_safety_dashboard_tells_who_was_downgraded_and_why(client: Client, fleet) -> None:
    _, sample = fleet
    modes = {r["agent_id"]: r for r in run_query(client, "safety_current_modes",
                                                 RANGE.values()).records()}
    assert modes["agent-denial-storm-1"]["mode"] == "read_only"
    assert "denial_rate" in modes["agent-denial-storm-1"]["reason"]
    assert modes["agent-overspend-1"]["mode"] == "suggest_only"
    assert "spend" in modes["agent-overspend-1"]["reason"]
    assert modes["agent-000"]["mode"] == "autonomous" and modes["agent-000"]["since"] is None
    assert {a: r["mode"] for a, r in modes.items() if r["mode"] != "autonomous"} == \
        sample.final_modes()
    summary = run_query(client, "safety_summary", RANGE.values()).records()[0]
    assert summary["agents_downgraded"] == len(sample.final_modes())
    assert summary["detections"] == len(sample.detections)
    rules = run_query(client, "safety_blocks_by_rule", RANGE.values()).records()
    top = max(rules, key=lambda r: r["value"])
    assert top["series"] == "agent-denial-storm-1"


def test_the_business_dashboard_shows_what_the_overspender_cost(client: Client) -> None:
    by_agent = run_query(client, "business_cost_per_task_by_agent", RANGE.values()).records()
    assert by_agent[0]["category"] == "agent-overspend-1"
    assert by_agent[0]["value"] > 10 * by_agent[-1]["value"]
    budget = run_query(client, "business_spend_vs_budget", RANGE.values()).records()
    spend = {r["category"]: r["value"] for r in budget if r["series"] == "spend"}
    limit = {r["category"]: r["value"] for r in budget if r["series"] == "budget"}
    assert spend["agent-overspend-1"] > limit["agent-overspend-1"]


def test_filters_change_what_is_shown(client: Client) -> None:
    def blocked(**kw: object) -> float:
        f = Filters(from_ms=RANGE.from_ms, to_ms=RANGE.to_ms, **kw)  # type: ignore[arg-type]
        return sum(r["value"] for r in run_query(client, "safety_blocked_actions",
                                                 f.values()).records())

    everyone = blocked()
    storm = blocked(agents=("agent-denial-storm-1",))
    healthy = blocked(agents=("agent-000",))
    assert everyone == storm + blocked(agents=tuple(
        r["value"] for r in run_query(client, "filter_options", RANGE.values()).records()
        if r["dimension"] == "agent" and r["value"] != "agent-denial-storm-1"))
    assert storm > healthy
    wf = blocked(workflows=("data-cleanup",))
    assert 0 < wf < everyone
    assert blocked(environments=("nowhere",)) == 0


def test_parameters_are_bound_never_pasted(client: Client) -> None:
    hostile = "x') OR 1=1 OR agent_id IN ('"
    f = Filters(from_ms=RANGE.from_ms, to_ms=RANGE.to_ms, agents=(hostile,))
    assert run_query(client, "safety_blocked_actions", f.values()).rows == []
    assert run_query(client, "evidence_run_steps", {"run_id": "' OR 1=1 --"}).rows == []


def test_time_range_and_buckets() -> None:
    assert auto_bucket_s(0, 3600_000) == 60
    assert auto_bucket_s(0, 6 * 3600_000) == 300
    assert auto_bucket_s(0, 7 * 86400_000) == 7200
    assert auto_bucket_s(0, 86400_000) == 3600  # past 6 h: the hourly rollup rows
    with pytest.raises(ValueError):
        Filters(from_ms=10, to_ms=10)
    f = Filters.from_request({"range": "1h", "agent": "a,b", "sla_ms": "5000"})
    assert f.to_ms - f.from_ms == 3600_000 and f.agents == ("a", "b")
    assert f.values()["sla_ms"] == 5000


def test_rollup_migration_is_idempotent_and_follows_retention(ch_client: Client) -> None:
    assert 3 in migrate(ch_client, 30)
    assert migrate(ch_client, 30) == []
    migrate(ch_client, 45)
    for table in ("agent_stats", "block_stats", "run_hour_stats"):
        ddl = ch_client.query("SELECT engine_full FROM system.tables WHERE database = "
                              "currentDatabase() AND name = {t:String}",
                              parameters={"t": table}).result_rows[0][0]
        assert "toIntervalDay(45)" in ddl, table


def test_minute_and_hour_rows_agree_on_whole_hours(client: Client) -> None:
    hour = 3600_000
    end = END_MS // hour * hour
    minute = Filters(from_ms=end - 2 * hour, to_ms=end, bucket_s=60).values()
    hourly = Filters(from_ms=end - 2 * hour, to_ms=end, bucket_s=3600).values()
    for name in ("safety_summary", "safety_blocks_by_rule", "business_spend_vs_budget"):
        a = run_query(client, name, minute).rows
        b = run_query(client, name, hourly).rows
        assert len(a) == len(b), name
        for x, y in zip(a, b, strict=True):
            assert [v if not isinstance(v, float) else pytest.approx(v) for v in x] == y, name
