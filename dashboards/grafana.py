"""Grafana dashboards generated from the named queries, so Grafana and the built-in page
show the same SQL.

``python -m tripwire.dashboards.grafana`` rewrites ``grafana/dashboards/*.json``;
tests/test_grafana.py fails when the committed files differ from what this generates, and
runs every panel's SQL (with Grafana's variables filled in) against chDB.

Each query's bound parameters become Grafana variables in the panel SQL; Grafana
interpolates them (its ClickHouse data source has no server-side binding), quoting the
dashboard's own variables with the ``singlequote`` format (see GRAFANA_PARAMETERS):

* ``from_ms`` / ``to_ms``: ``$__from`` / ``$__to``, the time picker in epoch ms;
* ``bucket_s``: Grafana's ``$__interval_ms`` for the panel, in seconds;
* ``agents`` / ``workflows`` / ``environments``: multi-value variables, ``[${agent:singlequote}]``;
  "All" lists every value, so the filter keeps them all;
* ``sla_ms``: a custom variable offering the rollup's latency bounds;
* ``daily_budget_usd``: a text box.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

from tripwire.dashboards.catalog import DASHBOARDS, Query, panels, query
from tripwire.dashboards.filters import DEFAULT_DAILY_BUDGET_USD, DEFAULT_SLA_MS, SLA_BOUNDS_MS

DATASOURCE = {"type": "grafana-clickhouse-datasource", "uid": "tripwire-clickhouse"}
GRAFANA_DIR = Path(__file__).resolve().parent.parent / "grafana" / "dashboards"
PANEL_HEIGHT = {"stat": 4, "table": 9, "timeline": 9}
DEFAULT_HEIGHT = 8

GRAFANA_PARAMETERS: dict[str, str] = {
    "from_ms": "toInt64($__from)",
    "to_ms": "toInt64($__to)",
    "bucket_s": "intDiv($__interval_ms, 1000)",
    "agents": "[${agent:singlequote}]",
    "workflows": "[${workflow:singlequote}]",
    "environments": "[${environment:singlequote}]",
    "sla_ms": "toUInt32(${sla_ms})",
    "daily_budget_usd": "toFloat64(${daily_budget_usd})",
}
_PARAM_RE = re.compile(r"\{(\w+):([^{}]+?)\}")

# Grafana's ClickHouse data source: format 0 = time series (long results are pivoted into
# one series per string value), 1 = table.
FORMAT_TIME_SERIES = 0
FORMAT_TABLE = 1


def grafana_sql(q: Query) -> str:
    """The query's SQL with its parameters replaced by Grafana variables."""

    def swap(m: re.Match[str]) -> str:
        name = m.group(1)
        if name not in GRAFANA_PARAMETERS:
            raise ValueError(f"query {q.name}: parameter {name} has no Grafana equivalent")
        return GRAFANA_PARAMETERS[name]

    return _PARAM_RE.sub(swap, q.sql).rstrip() + "\n"


def _target(q: Query, ref: str = "A") -> dict[str, Any]:
    series = q.chart == "timeseries"
    return {
        "refId": ref,
        "datasource": DATASOURCE,
        "editorType": "sql",
        "queryType": "timeseries" if series else "table",
        "format": FORMAT_TIME_SERIES if series else FORMAT_TABLE,
        "rawSql": grafana_sql(q),
    }


def _panel(q: Query, panel_id: int, grid: dict[str, int]) -> dict[str, Any]:
    panel: dict[str, Any] = {
        "id": panel_id,
        "title": q.title,
        "description": q.description,
        "datasource": DATASOURCE,
        "gridPos": grid,
        "targets": [_target(q)],
        "fieldConfig": {"defaults": {"unit": _unit(q.unit)}, "overrides": []},
    }
    if q.chart == "timeseries":
        panel["type"] = "timeseries"
        panel["options"] = {"legend": {"displayMode": "list", "placement": "bottom"}}
    elif q.chart == "bar":
        panel["type"] = "barchart"
        # category, series, value → one row per category, one column per series.
        panel["transformations"] = [{"id": "groupingToMatrix", "options": {
            "columnField": "series", "rowField": "category", "valueField": "value"}}]
        panel["options"] = {
            "orientation": "horizontal" if q.orientation == "horizontal" else "vertical",
            "stacking": "none" if q.name == "business_spend_vs_budget" else "normal",
            "legend": {"displayMode": "list", "placement": "bottom"},
            "xField": "category\\series",
        }
    elif q.chart == "stat":
        panel["type"] = "stat"
        panel["options"] = {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "textMode": "value_and_name", "colorMode": "none", "graphMode": "none",
        }
    else:  # table, timeline: the rows themselves
        panel["type"] = "table"
        panel["options"] = {"showHeader": True}
    return panel


def _unit(unit: str) -> str:
    return {"usd": "currencyUSD", "percent": "percent", "ms": "ms", "s": "s", "min": "m",
            "count": "short", "runs": "short", "steps": "short"}.get(unit, "none")


def _variables() -> list[dict[str, Any]]:
    variables: list[dict[str, Any]] = []
    for name in ("agent", "workflow", "environment"):
        sql = (f"SELECT value FROM (\n{grafana_sql(query('filter_options')).strip()}\n)\n"
               f"WHERE dimension = '{name}'")
        variables.append({
            "name": name, "label": name.capitalize(), "type": "query",
            "datasource": DATASOURCE,
            "query": {"rawSql": sql, "editorType": "sql", "format": FORMAT_TABLE},
            "definition": sql,
            "refresh": 2,  # on time range change
            "multi": True, "includeAll": True,
            "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
            "sort": 1,
        })
    variables.append({
        "name": "sla_ms", "label": "SLA (ms)", "type": "custom",
        "query": ",".join(str(b) for b in SLA_BOUNDS_MS),
        "current": {"selected": True, "text": str(DEFAULT_SLA_MS), "value": str(DEFAULT_SLA_MS)},
        "options": [{"selected": b == DEFAULT_SLA_MS, "text": str(b), "value": str(b)}
                    for b in SLA_BOUNDS_MS],
    })
    budget = f"{DEFAULT_DAILY_BUDGET_USD:g}"
    variables.append({
        "name": "daily_budget_usd", "label": "Daily budget per agent (USD)", "type": "textbox",
        "query": budget, "current": {"selected": True, "text": budget, "value": budget},
    })
    return variables


def dashboard_json(board: str) -> dict[str, Any]:
    """The Grafana dashboard model of ``board`` (safety or business)."""
    if board not in DASHBOARDS:
        raise KeyError(board)
    x = y = row_height = 0
    out = []
    for i, q in enumerate(panels(board), start=1):
        height = PANEL_HEIGHT.get(q.chart or "", DEFAULT_HEIGHT)
        if x + q.width > 24:
            x, y, row_height = 0, y + row_height, 0
        out.append(_panel(q, i, {"x": x, "y": y, "w": q.width, "h": height}))
        x += q.width
        row_height = max(row_height, height)
    return {
        "uid": f"tripwire-{board}",
        "title": f"Tripwire · {board.capitalize()}",
        "description": f"Generated by dashboards/grafana.py from dashboards/queries "
                       f"(do not edit by hand). Same SQL as the built-in {board} page.",
        "tags": ["tripwire"],
        "timezone": "utc",
        "editable": True,
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {"list": _variables()},
        "panels": out,
    }


def render(board: str) -> str:
    return json.dumps(dashboard_json(board), indent=2, ensure_ascii=False) + "\n"


def write(directory: Path = GRAFANA_DIR) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for board in DASHBOARDS:
        path = directory / f"{board}.json"
        path.write_text(render(board), encoding="utf-8")
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="regenerate grafana/dashboards/*.json")
    p.add_argument("--out", type=Path, default=GRAFANA_DIR)
    args = p.parse_args(argv)
    for path in write(args.out):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
