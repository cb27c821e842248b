"""RunTable's expiry against the rule it implements, recomputed for every run kept."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from tripwire.detectors.runs import NOT_ENDED, RunEntry, RunTable

TTL, IDLE = 60, 500


def _kept_after_expire(runs: dict[str, RunEntry], watermark: int, now: int) -> set[str]:
    return {r for r, e in runs.items()
            if not ((e.ended and e.ended_ts + TTL <= watermark)
                    or e.last_ts + IDLE <= max(now, watermark))}


def _kept_after_insert(runs: dict[str, RunEntry], watermark: int) -> set[str]:
    return {r for r, e in runs.items() if not (e.ended and e.ended_ts + TTL <= watermark)}


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2_000), st.integers(0, 700),
                          st.one_of(st.none(), st.integers(0, 2_000)),
                          st.integers(0, 2_500), st.integers(-100, 2_500), st.booleans()),
                min_size=1, max_size=40))
def test_expiry_drops_exactly_the_ended_and_idle_runs(
    steps: list[tuple[int, int, int | None, int, int, bool]],
) -> None:
    """Each step adds a run (first/last activity, maybe an end) by ``insert`` or drops runs by
    ``expire``; the table keeps exactly what the TTL and idle rules keep (no cap reached)."""
    table: RunTable[RunEntry] = RunTable(max_open=1_000)
    for n, (first, length, ended, watermark, now, sweep) in enumerate(steps):
        if sweep:
            want = _kept_after_expire(table.entries, watermark, now)
            table.expire(watermark, now, TTL, IDLE)
        else:
            want = _kept_after_insert(table.entries, watermark) | {f"r{n}"}
            entry = RunEntry(first)
            entry.last_ts = first + length
            entry.ended_ts = NOT_ENDED if ended is None else ended
            table.insert(f"r{n}", entry, watermark, TTL)
        assert set(table.entries) == want
