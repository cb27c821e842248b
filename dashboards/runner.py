"""Run a named query with bound parameters; results as JSON-ready columns and rows."""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from tripwire.dashboards.catalog import Query, query
from tripwire.sinks.clickhouse import Client


@dataclass
class Result:
    name: str
    columns: list[str]
    types: list[str]
    rows: list[list[Any]]
    elapsed_ms: float = 0.0
    notes: list[str] = field(default_factory=list)

    def records(self) -> list[dict[str, Any]]:
        return [dict(zip(self.columns, row, strict=True)) for row in self.rows]

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "columns": self.columns,
            "types": self.types,
            "rows": [[json_value(v) for v in row] for row in self.rows],
            "elapsed_ms": round(self.elapsed_ms, 1),
            "notes": self.notes,
        }


def table_exists(client: Client, table: str) -> bool:
    rows = client.query(
        "SELECT count() FROM system.tables"
        " WHERE database = currentDatabase() AND name = {t:String}",
        parameters={"t": table},
    ).result_rows
    return bool(rows and rows[0][0])


def run_query(client: Client, name: str | Query, values: dict[str, Any]) -> Result:
    """Run query ``name`` binding only the parameters it declares (all must be given)."""
    q = name if isinstance(name, Query) else query(name)
    missing = [p for p in q.parameters if p not in values]
    if missing:
        raise ValueError(f"query {q.name} needs parameters {missing}")
    if q.optional_table and not table_exists(client, q.optional_table):
        return Result(q.name, [], [], [], notes=[f"table {q.optional_table} does not exist"])
    bound = {p: values[p] for p in q.parameters}
    res = client.query(q.sql, parameters=bound)
    elapsed = _elapsed_ms(res)
    types = [t.name for t in res.column_types]
    return Result(q.name, list(res.column_names), types, [list(r) for r in res.result_rows],
                  elapsed)


def _elapsed_ms(res: Any) -> float:
    summary = getattr(res, "summary", None) or {}
    try:
        return float(summary.get("elapsed_ns", 0)) / 1e6
    except (TypeError, ValueError):
        return 0.0


def json_value(v: Any) -> Any:
    """A JSON-safe form: datetimes as ISO-8601 UTC with ``Z``, NaN/inf as null."""
    if isinstance(v, datetime):
        if v.tzinfo is None:
            v = v.replace(tzinfo=UTC)
        return v.astimezone(UTC).isoformat(timespec="milliseconds").replace(
            "+00:00", "Z"
        )
    if isinstance(v, date):
        return v.isoformat()
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, Decimal):
        return float(v)
    if isinstance(v, uuid.UUID):
        return str(v)
    if isinstance(v, (list, tuple)):
        return [json_value(x) for x in v]
    if isinstance(v, dict):
        return {str(k): json_value(x) for k, x in v.items()}
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    return v
