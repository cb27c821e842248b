"""The worker's GIL switch interval follows the stream: short while it is caught up (the next
records wait on Faust's consumer thread), Python's default while a backlog is queued."""

from __future__ import annotations

import sys

from tripwire.streams.app import (
    BACKLOG_SWITCH_INTERVAL_S,
    LIVE_SWITCH_INTERVAL_S,
    switch_interval_for,
)


def test_a_take_that_fills_a_batch_switches_to_the_backlog_interval() -> None:
    # Steady load: one fetch of SDK-shaped records (~16 a fetch at 19,000 events/s), or of
    # one-event records below the batch size.
    assert switch_interval_for(16, 500) == LIVE_SWITCH_INTERVAL_S
    assert switch_interval_for(499, 500) == LIVE_SWITCH_INTERVAL_S
    # A backlog: takes of whole queued fetches (37,000 records in the bench's JSON drain).
    assert switch_interval_for(500, 500) == BACKLOG_SWITCH_INTERVAL_S
    assert switch_interval_for(37_000, 500) == BACKLOG_SWITCH_INTERVAL_S


def test_the_intervals_are_ones_python_takes() -> None:
    before = sys.getswitchinterval()
    try:
        for interval in (LIVE_SWITCH_INTERVAL_S, BACKLOG_SWITCH_INTERVAL_S):
            sys.setswitchinterval(interval)
            assert abs(sys.getswitchinterval() - interval) < 1e-9
    finally:
        sys.setswitchinterval(before)
    # The backlog interval is Python's own default: a drain runs as before the change.
    assert BACKLOG_SWITCH_INTERVAL_S == 0.005
    assert LIVE_SWITCH_INTERVAL_S < BACKLOG_SWITCH_INTERVAL_S
