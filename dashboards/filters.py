"""What a dashboard view asks for: time range, agent/workflow/environment filters and the
few business settings, turned into the bound parameters of the named queries."""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

# Chart intervals to pick from: about BUCKETS_PER_CHART points per chart, never below the
# rollups' one minute.
NICE_BUCKETS_S = (60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400)
BUCKETS_PER_CHART = 90
# Longer ranges read the hourly rollup rows: a day is then 24 rows per agent, not 1,440.
HOURLY_FROM_SPAN_MS = 6 * 3600_000
SLA_BOUNDS_MS = (500, 1000, 2000, 5000, 10000, 30000)  # the rollup's latency_le_* columns
DEFAULT_SLA_MS = 2000
DEFAULT_DAILY_BUDGET_USD = 200.0  # the built-in policy's spend.day_budget_usd
DEFAULT_RANGE_MS = 6 * 3600_000
MAX_FILTER_VALUES = 200

_RANGE_RE = re.compile(r"^(\d+)([mhd])$")
_UNIT_MS = {"m": 60_000, "h": 3600_000, "d": 86400_000}


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def parse_range(text: str) -> int:
    """``15m``, ``6h``, ``7d`` → milliseconds."""
    m = _RANGE_RE.match(text.strip())
    if m is None or int(m.group(1)) <= 0:
        raise ValueError(f"range must look like 15m, 6h or 7d, got {text!r}")
    return int(m.group(1)) * _UNIT_MS[m.group(2)]


def parse_instant(text: str) -> int:
    """Epoch milliseconds from epoch ms digits, an ISO-8601 time (UTC when no offset) or a
    time that long ago: ``10m``, ``-10m``, ``6h``, ``7d`` (an incident's "the last minutes")."""
    text = text.strip()
    if text.lstrip("-").isdigit():
        return int(text)
    if _RANGE_RE.match(text.removeprefix("-")):
        return now_ms() - parse_range(text.removeprefix("-"))
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError("expected epoch ms, an ISO-8601 time or a time ago like 10m, 6h, 7d; "
                         f"got {text!r}") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1000)


def auto_bucket_s(from_ms: int, to_ms: int) -> int:
    span_s = max(1, (to_ms - from_ms) // 1000)
    floor = 3600 if to_ms - from_ms > HOURLY_FROM_SPAN_MS else 60
    for bucket in NICE_BUCKETS_S:
        if bucket >= floor and span_s / bucket <= BUCKETS_PER_CHART:
            return bucket
    return NICE_BUCKETS_S[-1]


@dataclass(frozen=True)
class Filters:
    from_ms: int
    to_ms: int
    agents: tuple[str, ...] = ()
    workflows: tuple[str, ...] = ()
    environments: tuple[str, ...] = ()
    bucket_s: int | None = None
    sla_ms: int = DEFAULT_SLA_MS
    daily_budget_usd: float = DEFAULT_DAILY_BUDGET_USD
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.to_ms <= self.from_ms:
            raise ValueError("the time range must end after it starts")
        if self.sla_ms <= 0 or self.daily_budget_usd < 0:
            raise ValueError("sla_ms must be > 0 and daily_budget_usd >= 0")
        for values in (self.agents, self.workflows, self.environments):
            if len(values) > MAX_FILTER_VALUES:
                raise ValueError(f"at most {MAX_FILTER_VALUES} values per filter")

    @classmethod
    def last(cls, range_ms: int = DEFAULT_RANGE_MS, **kwargs: Any) -> Filters:
        end = now_ms()
        return cls(from_ms=end - range_ms, to_ms=end, **kwargs)

    @classmethod
    def from_request(cls, query: Mapping[str, str] | Any, *, default_budget: float | None = None,
                     default_sla_ms: int | None = None) -> Filters:
        """From a URL query: ``from``/``to`` (epoch ms or ISO) or ``range`` (``6h``, relative
        to now), ``agent``/``workflow``/``environment`` (repeatable or comma separated),
        ``bucket_s``, ``sla_ms``, ``daily_budget_usd``."""
        end = parse_instant(query["to"]) if query.get("to") else now_ms()
        if query.get("from"):
            start = parse_instant(query["from"])
        else:
            start = end - parse_range(query.get("range") or "6h")
        bucket = query.get("bucket_s")
        return cls(
            from_ms=start,
            to_ms=end,
            agents=_values(query, "agent"),
            workflows=_values(query, "workflow"),
            environments=_values(query, "environment"),
            bucket_s=int(bucket) if bucket else None,
            sla_ms=int(query.get("sla_ms") or default_sla_ms or DEFAULT_SLA_MS),
            daily_budget_usd=float(
                query.get("daily_budget_usd") or default_budget or DEFAULT_DAILY_BUDGET_USD
            ),
        )

    def values(self) -> dict[str, Any]:
        """Every standard parameter's value; a query binds the ones it declares."""
        return {
            "from_ms": self.from_ms,
            "to_ms": self.to_ms,
            "bucket_s": self.bucket_s or auto_bucket_s(self.from_ms, self.to_ms),
            "agents": list(self.agents),
            "workflows": list(self.workflows),
            "environments": list(self.environments),
            "sla_ms": self.sla_ms,
            "daily_budget_usd": self.daily_budget_usd,
            **self.extra,
        }


def _values(query: Mapping[str, str] | Any, key: str) -> tuple[str, ...]:
    raw: Iterable[str]
    getall = getattr(query, "getall", None)
    raw = getall(key, []) if getall is not None else [query.get(key) or ""]
    out: list[str] = []
    for item in raw:
        out.extend(v.strip() for v in item.split(",") if v.strip())
    return tuple(dict.fromkeys(out))
