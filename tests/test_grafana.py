"""Grafana's dashboards are generated from the named queries and their SQL runs on chDB."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from chdb_fixtures import client_on, sample_fleet_database
from tripwire.dashboards.catalog import DASHBOARDS, catalog, panels
from tripwire.dashboards.filters import Filters, now_ms
from tripwire.dashboards.grafana import DATASOURCE, GRAFANA_DIR, GRAFANA_PARAMETERS, render
from tripwire.dashboards.runner import run_query
from tripwire.sinks.clickhouse import Client

REPO = Path(__file__).resolve().parent.parent
END_MS = now_ms() - 60_000
FROM_MS = END_MS - 6 * 3600_000


def committed(board: str) -> dict:
    return json.loads((GRAFANA_DIR / f"{board}.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize("board", DASHBOARDS)
def test_committed_dashboards_are_generated_from_the_sql_files(board: str) -> None:
    on_disk = (GRAFANA_DIR / f"{board}.json").read_text(encoding="utf-8")
    assert on_disk == render(board), "run: python -m tripwire.dashboards.grafana"


@pytest.mark.parametrize("board", DASHBOARDS)
def test_every_panel_is_one_named_query(board: str) -> None:
    model = committed(board)
    by_title = {q.title: q for q in panels(board)}
    assert [p["title"] for p in model["panels"]] == [q.title for q in panels(board)]
    reverse = {v: f"{{{k}:{_type(k)}}}" for k, v in GRAFANA_PARAMETERS.items()}
    for panel in model["panels"]:
        (target,) = panel["targets"]
        assert target["datasource"] == DATASOURCE
        sql = target["rawSql"]
        for grafana, ours in sorted(reverse.items(), key=lambda kv: -len(kv[0])):
            sql = sql.replace(grafana, ours)
        assert sql.rstrip() == by_title[panel["title"]].sql.rstrip()
        grid = panel["gridPos"]
        assert 0 <= grid["x"] and grid["x"] + grid["w"] <= 24


def _type(name: str) -> str:
    from tripwire.dashboards.catalog import PARAMETER_TYPES

    return PARAMETER_TYPES[name]


def test_provisioning_points_at_the_compose_clickhouse() -> None:
    ds = yaml.safe_load((REPO / "grafana/provisioning/datasources/clickhouse.yaml").read_text())
    (source,) = ds["datasources"]
    assert source["uid"] == DATASOURCE["uid"] and source["type"] == DATASOURCE["type"]
    assert source["jsonData"]["host"] == "clickhouse"
    prov = yaml.safe_load((REPO / "grafana/provisioning/dashboards/tripwire.yaml").read_text())
    compose = yaml.safe_load((REPO / "compose.yaml").read_text())
    grafana = compose["services"]["grafana"]
    mounts = {m.split(":")[1]: m.split(":")[0] for m in grafana["volumes"] if m.startswith("./")}
    assert mounts[prov["providers"][0]["options"]["path"]] == "./grafana/dashboards"
    assert "grafana-clickhouse-datasource" in grafana["environment"]["GF_INSTALL_PLUGINS"]


@pytest.fixture(scope="module")
def fleet_dsn(chdb_dir: Path) -> Iterator[str]:
    with sample_fleet_database(chdb_dir, "graf", END_MS) as (dsn, _):
        yield dsn


@pytest.fixture
def client(fleet_dsn: str) -> Iterator[Client]:
    with client_on(fleet_dsn) as c:
        yield c


def same_rows(left: list, right: list) -> bool:
    """Equal, but floats only to 2 %: merged t-digest quantiles depend on merge order."""
    if len(left) != len(right):
        return False
    for a, b in zip(left, right, strict=True):
        for x, y in zip(a, b, strict=True):
            if isinstance(x, float) and isinstance(y, float):
                if x != pytest.approx(y, rel=0.02):
                    return False
            elif x != y:
                return False
    return True


def interpolate(sql: str, values: dict[str, str | list[str]]) -> str:
    """What Grafana does to a panel's SQL before sending it: global and dashboard variables
    replaced by their current values (``singlequote``: each value quoted, comma separated)."""
    def var(m: re.Match[str]) -> str:
        name, fmt = m.group(1), m.group(2)
        value = values[name]
        if fmt == "singlequote":
            items = value if isinstance(value, list) else [value]
            return ",".join("'" + v.replace("'", "\\'") + "'" for v in items)
        return str(value)

    sql = sql.replace("$__from", str(FROM_MS)).replace("$__to", str(END_MS + 60_000))
    sql = sql.replace("$__interval_ms", "300000")
    return re.sub(r"\$\{(\w+)(?::(\w+))?\}", var, sql)


@pytest.mark.integration
@pytest.mark.parametrize("board", DASHBOARDS)
def test_every_panel_sql_runs_in_grafana_form_with_the_same_rows(client: Client,
                                                                 board: str) -> None:
    model = committed(board)
    options = run_query(client, "filter_options", Filters(FROM_MS, END_MS + 60_000).values())
    everything = {d: [v for dim, v in options.rows if dim == d]
                  for d in ("agent", "workflow", "environment")}
    # "All" in Grafana lists every value of the variable.
    values: dict[str, str | list[str]] = {**everything, "sla_ms": "2000",
                                          "daily_budget_usd": "200"}
    ours = Filters(FROM_MS, END_MS + 60_000, bucket_s=300).values()
    by_title = {q.title: q for q in catalog().values() if board in q.dashboards}
    for panel in model["panels"]:
        sql = interpolate(panel["targets"][0]["rawSql"], values)
        res = client.query(sql)
        assert res.result_rows, f"{panel['title']} returned nothing in Grafana form"
        direct = run_query(client, by_title[panel["title"]], ours)
        assert list(res.column_names) == direct.columns, panel["title"]
        if by_title[panel["title"]].name not in ("safety_mode_time",):  # uses now()
            assert same_rows(res.result_rows, direct.rows), panel["title"]
    for variable in model["templating"]["list"]:
        if variable["type"] == "query":
            rows = client.query(interpolate(variable["query"]["rawSql"], values)).result_rows
            assert [r[0] for r in rows] == everything[variable["name"]]
