"""Earned autonomy (detectors/autonomy.py): table tests of each rule, the tracker's counting,
and a property test against a brute-force reference that keeps every event."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tripwire.detectors.autonomy import AutonomyTracker, Record, next_level
from tripwire.detectors.autonomy_policy import AutonomyPolicy
from tripwire.schemas.modes import Mode

A, S, AUTO, RO = Mode.APPROVE_TO_ACT, Mode.SUGGEST_ONLY, Mode.AUTONOMOUS, Mode.READ_ONLY
DEFAULT = AutonomyPolicy(earn=True)


def rec(agreed: int, disagreed: int = 0, decided: int = 0, denied: int = 0,
        trips: int = 0) -> Record:
    return Record(agreed, disagreed, decided, denied, trips)


@pytest.mark.parametrize(("level", "record", "ceiling", "expected"), [
    # promotion: >= 95 % of >= 50, denial rate <= 5 %, no trip, one rung, not past the ceiling
    (S, rec(48, 2), AUTO, (A, "promote")),
    (A, rec(50, 0), AUTO, (AUTO, "promote")),
    (S, rec(49, 0), AUTO, (S, None)),                          # too few decisions
    (S, rec(47, 3), AUTO, (S, None)),                          # 94 % < 95 %
    (S, rec(50, 0, decided=100, denied=6), AUTO, (S, None)),   # denial rate 6 %
    (S, rec(50, 0, decided=100, denied=5), AUTO, (A, "promote")),
    (S, rec(50, 0, trips=1), AUTO, (S, None)),                 # a trip in the window
    (A, rec(500, 0), A, (A, None)),                            # at the ceiling
    (AUTO, rec(0), A, (A, "cap")),                             # above it: capped
    # demotion: < 80 % of >= 10, one rung, not below the floor
    (AUTO, rec(7, 3), AUTO, (A, "demote")),
    (A, rec(7, 3), AUTO, (S, "demote")),
    (S, rec(0, 10), AUTO, (S, None)),                          # at the floor
    (AUTO, rec(0, 9), AUTO, (AUTO, None)),                     # too few to judge
    (AUTO, rec(8, 2), AUTO, (AUTO, None)),                     # 80 % is not below 80 %
    (A, rec(17, 3), AUTO, (A, None)),                          # 85 %: neither
    (RO, rec(100), AUTO, (RO, None)),                          # below the floor: the breaker's
])
def test_next_level(level: Mode, record: Record, ceiling: Mode, expected: tuple) -> None:
    assert next_level(level, record, DEFAULT, ceiling) == expected


def test_policy_validation() -> None:
    with pytest.raises(ValueError, match="floor is above"):
        AutonomyPolicy(floor=AUTO, ceiling=A)
    with pytest.raises(ValueError, match="must be one of"):
        AutonomyPolicy(start_mode=RO)
    with pytest.raises(ValueError, match="demote_agreement must be below"):
        AutonomyPolicy(promote_agreement=0.8, demote_agreement=0.9)
    with pytest.raises(ValueError, match="multiple"):
        AutonomyPolicy(window_ms=1000, buckets=3)
    p = AutonomyPolicy(start_mode=AUTO, ceiling=A, versions={"2.0": {"start_mode": "suggest_only"}})
    assert p.for_version(None) == (A, A)  # the start never above the ceiling
    assert p.for_version("2.0") == (S, A)


def decision(ts: int, approved: bool, **attributes: str) -> dict:
    return {"kind": "approval_decision", "ts": ts, "approved": approved,
            "approver": "ann", "attributes": attributes}


def policy_decision(ts: int, outcome: str, decided_by: str = "crm-policy") -> dict:
    return {"kind": "policy_decision", "ts": ts, "policy_outcome": outcome,
            "attributes": {"decided_by": decided_by}}


def test_a_new_agent_starts_where_the_policy_says_and_a_new_version_starts_over() -> None:
    assert AutonomyTracker(AutonomyPolicy()).begin("1.0") is None  # autonomous: nothing to do
    policy = AutonomyPolicy(start_mode=S, ceiling=A, earn=True,
                            versions={"2.0": {"start_mode": "suggest_only"}})
    tracker = AutonomyTracker(policy)
    step = tracker.begin("1.0")
    assert step is not None and (step.action, step.level) == ("start", S)
    assert tracker.begin("1.0") is None and tracker.begin("1.1") is None
    tracker.level = A
    step = tracker.begin("2.0")
    assert step is not None and (step.previous, step.level) == (A, S)
    assert "version 2.0" in step.reason


def test_graduation_one_rung_at_a_time_never_past_the_ceiling() -> None:
    tracker = AutonomyTracker(AutonomyPolicy(start_mode=S, ceiling=A, earn=True))
    tracker.begin(None)
    ts = 1_000_000
    for i in range(49):
        tracker.observe(decision(ts + i, True))
        assert tracker.judge(ts + i) is None
    tracker.observe(decision(ts + 49, True))
    step = tracker.judge(ts + 49)
    assert step is not None and (step.action, step.previous, step.level) == ("promote", S, A)
    assert "50 of 50 human decisions agreed (100.0 %)" in step.reason
    assert tracker.record(ts + 50) == Record()  # each rung is earned afresh
    for i in range(200):
        tracker.observe(decision(ts + 100 + i, True))
        assert tracker.judge(ts + 100 + i) is None  # approve_to_act is the ceiling
    assert tracker.needs(ts + 400) == "at its ceiling approve_to_act"


def test_what_counts() -> None:
    tracker = AutonomyTracker(DEFAULT)
    tracker.begin(None)
    tracker.observe(decision(1, True))
    tracker.observe(decision(2, False, decline_reason="too_risky"))
    tracker.observe(decision(3, False, decline_reason="expired"))  # nobody decided it
    tracker.observe(policy_decision(4, "denied"))
    tracker.observe(policy_decision(5, "allowed"))
    tracker.observe(policy_decision(6, "denied", decided_by="tripwire-guard"))  # our refusal
    tracker.observe(policy_decision(7, "approval_required"))
    tracker.note_trip(8)
    assert tracker.record(10) == Record(1, 1, 2, 1, 1)


def test_the_window_rolls() -> None:
    day = 86_400_000
    tracker = AutonomyTracker(DEFAULT)  # 7 days in daily buckets
    tracker.begin(None)
    tracker.observe(decision(0, False))
    tracker.observe(decision(3 * day, True))
    assert tracker.record(6 * day).decisions == 2
    assert tracker.record(7 * day).decisions == 1  # day 0 left the window
    tracker.observe(decision(8 * day, True))
    tracker.observe(decision(1 * day, True))  # older than the window (days 2-8): ignored
    assert tracker.record(8 * day) == Record(2, 0)


def test_no_record_is_kept_for_agents_that_do_not_earn() -> None:
    tracker = AutonomyTracker(AutonomyPolicy())
    tracker.begin(None)
    tracker.observe(decision(1, False))
    tracker.note_trip(2)
    assert tracker.buckets == [] and tracker.judge(3) is None


def test_only_a_tracker_a_restart_would_rebuild_is_left_out_of_the_state() -> None:
    assert AutonomyTracker(AutonomyPolicy()).at_rest
    graduated = AutonomyTracker(AutonomyPolicy(start_mode=S, earn=True))
    graduated.begin(None)
    graduated.level = AUTO  # earned its way up, record reset: a restart must not demote it
    assert not graduated.at_rest


def test_state_round_trip() -> None:
    tracker = AutonomyTracker(DEFAULT)
    tracker.begin("1.0")
    for i in range(5):
        tracker.observe(decision(i * 3_600_000, i % 2 == 0))
    copy = AutonomyTracker.from_state(tracker.to_state(), DEFAULT)
    assert copy.to_state() == tracker.to_state() and copy.record(10**8) == tracker.record(10**8)


# --- property: the tracker agrees with a reference that keeps every event ------------------

SMALL = AutonomyPolicy(start_mode=S, ceiling=AUTO, earn=True, window_ms=1000, buckets=4,
                       promote_agreement=0.8, promote_min_decisions=5,
                       promote_max_denial_rate=0.3, promote_max_trips=0, demote_agreement=0.5,
                       demote_min_decisions=3)
OPS = st.lists(st.tuples(st.integers(0, 400),
                         st.sampled_from(["agree", "disagree", "allow", "deny", "trip"])),
               max_size=150)


def reference(ops: list[tuple[int, str]]) -> list[Mode]:
    """Levels after each op: counts every kept event in the window, brute force."""
    bucket = SMALL.window_ms // SMALL.buckets
    ladder = [S, A, AUTO]
    level, kept, out, ts = 0, [], [], 10_000
    for dt, op in ops:
        ts += dt
        kept.append((ts, op))
        in_window = [o for t, o in kept if t // bucket > ts // bucket - SMALL.buckets]
        agreed, disagreed = in_window.count("agree"), in_window.count("disagree")
        allowed, denied, trips = in_window.count("allow"), in_window.count("deny"), \
            in_window.count("trip")
        decisions = agreed + disagreed
        denial = denied / (allowed + denied) if allowed + denied else 0.0
        if decisions >= 3 and agreed / decisions < 0.5 and level > 0:
            level, kept = level - 1, []
        elif (decisions >= 5 and agreed / decisions >= 0.8 and denial <= 0.3 and trips == 0
              and level < 2):
            level, kept = level + 1, []
        out.append(ladder[level])
    return out


@settings(max_examples=300, deadline=None)
@given(OPS)
def test_tracker_matches_the_brute_force_reference(ops: list[tuple[int, str]]) -> None:
    tracker = AutonomyTracker(SMALL)
    tracker.begin(None)
    levels, ts = [], 10_000
    for dt, op in ops:
        ts += dt
        if op == "trip":
            tracker.note_trip(ts)
        elif op in ("agree", "disagree"):
            tracker.observe(decision(ts, op == "agree"))
        else:
            tracker.observe(policy_decision(ts, "allowed" if op == "allow" else "denied"))
        tracker.judge(ts)
        levels.append(tracker.level)
    assert levels == reference(ops)
