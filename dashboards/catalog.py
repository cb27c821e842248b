"""The named dashboard queries: one ``.sql`` file each in ``dashboards/queries``.

These files are the single source of truth for what every chart shows: the built-in page,
the Grafana dashboards (``dashboards/grafana.py``) and the tests all read them from here.

A file starts with ``-- key: value`` header lines (continuation lines are ``--`` followed
by two spaces), then the SQL. Parameters are ClickHouse query parameters, ``{name:Type}``,
bound by the server, never pasted into the text; every name must be one of
:data:`PARAMETER_TYPES`, with that type, so a parameter means the same thing everywhere.

Header keys: ``title``, ``description``; for dashboard panels also ``chart`` (one of
:data:`CHARTS`), ``dashboards`` (comma separated), ``order``, ``width`` (of 24 columns),
``unit``, ``link`` (a column whose values open the evidence view), ``orientation``
(``horizontal`` bars for long category names); ``optional_table``: the
query reads a table that may not exist yet.

Result shapes by chart (checked by tests/test_dashboard_queries.py):

* ``timeseries``: columns ``t`` (DateTime), ``series`` (String), ``value`` (Float64), the
  long format Grafana's SQL data sources pivot into one line per series;
* ``bar``: ``category``, ``series``, ``value``;
* ``stat``: one row, every column a number (a tile each);
* ``table``, ``timeline``: any columns (``timeline`` has ``t`` first).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cache
from importlib.resources import files

CHARTS = ("timeseries", "bar", "stat", "table", "timeline")
DASHBOARDS = ("safety", "business")

PARAMETER_TYPES: dict[str, str] = {
    "from_ms": "Int64",  # range start, epoch ms (Grafana: $__from)
    "to_ms": "Int64",  # range end, epoch ms, exclusive (Grafana: $__to)
    "bucket_s": "UInt32",  # chart interval in seconds; rollups are per minute, so >= 60
    "agents": "Array(String)",  # empty: every agent
    "workflows": "Array(String)",  # empty: every workflow
    "environments": "Array(String)",  # empty: every environment
    "sla_ms": "UInt32",  # latency SLA for adherence (bounds stored in the rollup)
    "daily_budget_usd": "Float64",  # an agent's spend budget per day
    "run_id": "String",
    "agent": "String",
    "event_ids": "Array(String)",
    "detection_ids": "Array(String)",
    "versions": "Array(String)",  # agent versions; empty: every version
    "action_classes": "Array(String)",  # empty: every action class
}

_PARAM_RE = re.compile(r"\{(\w+):([^{}]+?)\}")
_HEADER_RE = re.compile(r"^--\s(\w+):\s?(.*)$")


class CatalogError(ValueError):
    pass


@dataclass(frozen=True)
class Query:
    name: str
    sql: str
    title: str
    description: str = ""
    chart: str | None = None
    dashboards: tuple[str, ...] = ()
    order: int = 0
    width: int = 12
    unit: str = ""
    link: str | None = None
    orientation: str = "vertical"
    optional_table: str | None = None
    parameters: dict[str, str] = field(default_factory=dict)

    @property
    def is_panel(self) -> bool:
        return bool(self.dashboards)


def parse_query(name: str, text: str) -> Query:
    """A :class:`Query` from a file's text; CatalogError names what is wrong."""
    header: dict[str, str] = {}
    key: str | None = None
    for line in text.splitlines():
        m = _HEADER_RE.match(line)
        if m:
            key = m.group(1)
            header[key] = m.group(2).strip()
        elif line.startswith("--  ") and key is not None:
            header[key] += " " + line[2:].strip()
        else:
            break
    if "title" not in header:
        raise CatalogError(f"query {name}: no '-- title:' header")
    parameters: dict[str, str] = {}
    for pname, ptype in _PARAM_RE.findall(text):
        want = PARAMETER_TYPES.get(pname)
        if want is None:
            raise CatalogError(f"query {name}: unknown parameter {{{pname}:{ptype}}}")
        if ptype != want:
            raise CatalogError(f"query {name}: parameter {pname} is {want}, not {ptype}")
        parameters[pname] = ptype
    chart = header.get("chart")
    if chart is not None and chart not in CHARTS:
        raise CatalogError(f"query {name}: chart {chart!r} is not one of {CHARTS}")
    boards = tuple(b.strip() for b in header.get("dashboards", "").split(",") if b.strip())
    for board in boards:
        if board not in DASHBOARDS:
            raise CatalogError(f"query {name}: unknown dashboard {board!r}")
    if boards and chart is None:
        raise CatalogError(f"query {name}: a panel needs a '-- chart:' header")
    return Query(
        name=name,
        sql=text,
        title=header["title"],
        description=header.get("description", ""),
        chart=chart,
        dashboards=boards,
        order=int(header.get("order", 0)),
        width=int(header.get("width", 12)),
        unit=header.get("unit", ""),
        link=header.get("link"),
        orientation=header.get("orientation", "vertical"),
        optional_table=header.get("optional_table"),
        parameters=parameters,
    )


@cache
def catalog() -> dict[str, Query]:
    """Every query file, by name (the file name without ``.sql``)."""
    found: dict[str, Query] = {}
    queries = files("tripwire.dashboards").joinpath("queries")
    for entry in sorted(queries.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".sql"):
            name = entry.name[: -len(".sql")]
            found[name] = parse_query(name, entry.read_text(encoding="utf-8"))
    return found


def query(name: str) -> Query:
    try:
        return catalog()[name]
    except KeyError:
        raise KeyError(f"no dashboard query named {name!r}") from None


def panels(dashboard: str) -> list[Query]:
    """The panels of one dashboard, in display order."""
    if dashboard not in DASHBOARDS:
        raise KeyError(f"no dashboard named {dashboard!r}")
    return sorted(
        (q for q in catalog().values() if dashboard in q.dashboards),
        key=lambda q: (q.order, q.name),
    )
