"""The worker's first-take line: readable on the console, and read back exactly by the bench."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from tripwire.streams.step_feed import first_take_line, first_take_time


@given(st.floats(min_value=0, max_value=4_102_444_800))  # up to 2100-01-01
def test_the_bench_reads_back_the_time_the_line_shows(now: float) -> None:
    line = first_take_line(now)
    # As the bench finds it: a console line with the logger's prefix.
    taken = first_take_time(f"tripwire: {line}")
    assert taken == round(now, 3)
    shown = datetime.fromisoformat(line.split()[-4].replace("Z", "+00:00"))
    assert shown.tzinfo == UTC
    assert abs(shown.timestamp() - taken) < 0.0005  # the same millisecond


def test_other_lines_are_not_taken_for_it() -> None:
    assert first_take_time("tripwire: Worker ready: consuming agent-steps") is None
    assert first_take_time("first agent-steps records taken at wall time 12.5") is None
