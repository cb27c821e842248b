"""DenialBands (another policy's denial-rate bands on a leader detector's counts) against the
reference it replaces: a full DenialRateDetector of that policy fed the same events.

Random streams of policy decisions (several tools, denials, time jumps past the window, late
events, guard refusals, sweeps at random points), a leader with random bands and one or two
followers with other random bands: after every event each follower finds exactly the reference
detector's detections and saves exactly its state, and a follower restored from a saved state
(its own, or the reference's) goes on deciding the same.
"""

from __future__ import annotations

import uuid
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from tripwire.detectors.denial_rate import DenialBands, DenialRateDetector, bands_only
from tripwire.detectors.policy import DenialRatePolicy, EventTimePolicy, RateBand, ResolvedPolicy
from tripwire.detectors.windows import EventClock

ID_SPACE = uuid.UUID("6d9a7e2c-0000-4000-8000-000000000002")
SEVERITIES = ("S3", "S2", "S1")

bands_strategy = st.lists(st.integers(1, 99), min_size=1, max_size=3, unique=True).map(
    lambda ats: tuple(RateBand(at=at / 100, severity=SEVERITIES[i])
                      for i, at in enumerate(sorted(ats))))

step = st.tuples(
    st.integers(-40_000, 90_000),            # ts step (negative: late or within grace)
    st.sampled_from(["shell", "crm", "mail", "pay", None]),
    st.booleans(),                           # denied
    st.integers(0, 19),                      # 0: the guard's own refusal; 1: a sweep first
)


def _policy(bands: tuple[RateBand, ...], max_tools: int) -> ResolvedPolicy:
    return ResolvedPolicy(
        event_time=EventTimePolicy(grace_ms=10_000),
        denial_rate=DenialRatePolicy(window_ms=120_000, buckets=4, min_decisions=3,
                                     min_decisions_per_tool=2, max_tools=max_tools,
                                     bands=bands))


def _event(n: int, ts: int, tool: str | None, denied: bool, guard: bool) -> dict[str, Any]:
    return {"event_id": str(uuid.uuid5(ID_SPACE, str(n))), "ts": ts, "kind": "policy_decision",
            "tool": tool, "policy_outcome": "denied" if denied else "allowed",
            "attributes": {"decided_by": "tripwire-guard"} if guard else {}}


class Side:
    """One detector with its own clock, fed as AgentMonitor feeds it."""

    def __init__(self, detector: DenialRateDetector, clock: EventClock) -> None:
        self.detector, self.clock = detector, clock


@settings(max_examples=150, deadline=None)
@given(leader_bands=bands_strategy, follower_bands=st.lists(bands_strategy, min_size=1,
                                                            max_size=2),
       max_tools=st.integers(1, 4), steps=st.lists(step, min_size=1, max_size=120),
       restore_at=st.integers(0, 120))
def test_a_follower_decides_what_a_detector_of_its_policy_would(
        leader_bands: tuple[RateBand, ...], follower_bands: list[tuple[RateBand, ...]],
        max_tools: int, steps: list[tuple[int, str | None, bool, int]], restore_at: int) -> None:
    leader_policy = _policy(leader_bands, max_tools)
    policies = [_policy(b, max_tools) for b in follower_bands]
    assert all(bands_only(p, leader_policy) for p in policies)
    clock = EventClock(10_000)
    leader = DenialRateDetector("a", leader_policy, clock)
    followers = [DenialBands(leader, p) for p in policies]
    refs = [Side(DenialRateDetector("a", p, c), c)
            for p, c in ((p, EventClock(10_000)) for p in policies)]
    ts = 1_700_000_000_000
    for n, (dt, tool, denied, roll) in enumerate(steps):
        ts += dt
        event = _event(n, ts, tool, denied, guard=roll == 0)
        if roll == 1:  # a maintenance sweep, as AgentMonitor._maintain runs it
            leader.expire(clock.watermark)
            for r in refs:
                r.detector.expire(r.clock.watermark)
        on_time = clock.admit(ts)
        for r in refs:
            assert r.clock.admit(ts) == on_time
        found: list[Any] = []
        leader.observe(event, on_time, found)
        for follower, ref in zip(followers, refs, strict=True):
            mine: list[Any] = []
            theirs: list[Any] = []
            if on_time:
                follower.observe(event, on_time, mine)
            ref.detector.observe(event, on_time, theirs)
            assert mine == theirs
            assert follower.to_state() == ref.detector.to_state()
        if n == restore_at:
            # A restart: the leader from its state, each follower from its own saved state
            # (even indexes) or from the reference detector's (what an earlier release saved).
            saved = [f.to_state() if i % 2 == 0 else r.detector.to_state()
                     for i, (f, r) in enumerate(zip(followers, refs, strict=True))]
            leader = DenialRateDetector.from_state(leader.to_state(), "a", leader_policy, clock)
            followers = [DenialBands(leader, p) for p in policies]
            for follower, state in zip(followers, saved, strict=True):
                follower.restore(state)
                assert follower.to_state() == state


def test_only_a_change_of_bands_alone_makes_a_follower() -> None:
    base = _policy((RateBand(at=0.5, severity="S2"),), 3)
    other_bands = _policy((RateBand(at=0.2, severity="S3"),), 3)
    other_tools = _policy((RateBand(at=0.5, severity="S2"),), 4)
    assert bands_only(other_bands, base)
    assert not bands_only(other_tools, base)
