"""SpendDetector: run budgets, rolling hour/day budgets and spend spikes."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tripwire.detectors.policy import EventTimePolicy, ResolvedPolicy, RunsPolicy, SpendPolicy
from tripwire.detectors.spend import SpendDetector, SpendSettings

FIELDS = [
    f["name"]
    for f in json.loads((Path(__file__).parents[1] / "schemas/step_event.avsc").read_text())[
        "fields"
    ]
]
ID_SPACE = uuid.UUID("6d9a7e2c-0000-4000-8000-000000000003")
MIN = 60_000
HOUR = 60 * MIN
T0 = 1_700_000_000_000 - 1_700_000_000_000 % HOUR  # on an hour boundary


class Calls:
    def __init__(self) -> None:
        self.n = 0

    def model_call(
        self,
        ts: int,
        usd: float | None = 0.01,
        tokens: int | None = None,
        run_id: str = "run-1",
        kind: str = "model_call",
    ) -> dict[str, Any]:
        event: dict[str, Any] = dict.fromkeys(FIELDS)
        event.update(
            event_id=str(uuid.uuid5(ID_SPACE, str(self.n))),
            ts=ts,
            agent_id="agent-1",
            run_id=run_id,
            step=self.n,
            kind=kind,
            cost_usd=usd,
            input_tokens=tokens,
            output_tokens=0 if tokens is not None else None,
            attributes={},
        )
        self.n += 1
        return event


def policy(grace_ms: int = 30_000, **spend: Any) -> ResolvedPolicy:
    return ResolvedPolicy(
        event_time=EventTimePolicy(grace_ms=grace_ms),
        runs=RunsPolicy(ttl_after_end_ms=5 * MIN),  # outlives the largest grace tested
        spend=SpendPolicy(**spend),
    )


NO_BUDGETS: dict[str, Any] = dict(
    run_budget_usd=None,
    run_budget_tokens=None,
    hour_budget_usd=None,
    day_budget_usd=None,
    spike_min_baseline=1e9,
)


def feed_all(detector: SpendDetector, events: list[dict[str, Any]]) -> list:
    return [d for e in events for d in detector.feed(e)]


def metrics(dets: list) -> list[tuple[str, str]]:
    return [(d.metric, d.severity) for d in dets]


# --- run budgets --------------------------------------------------------------------------


def test_run_cost_budget_fires_once_for_that_run() -> None:
    detector = SpendDetector("agent-1", policy(**{**NO_BUDGETS, "run_budget_usd": 5.0}))
    calls = Calls()
    events = [calls.model_call(T0 + i * 1000, usd=1.0) for i in range(8)]
    dets = feed_all(detector, events)
    assert [(d.metric, d.severity, d.value, d.scope, d.run_id) for d in dets] == [
        ("run_cost_usd", "S2", 5.0, "run", "run-1")
    ]
    assert dets[0].evidence_event_ids == tuple(e["event_id"] for e in events[:5])
    other = calls.model_call(T0 + 9_000, usd=5.0, run_id="run-2")
    assert metrics(detector.feed(other)) == [("run_cost_usd", "S2")]


def test_run_evidence_is_that_runs_spend_only() -> None:
    detector = SpendDetector("agent-1", policy(**{**NO_BUDGETS, "run_budget_usd": 2.0}))
    calls = Calls()
    events = []
    for i in range(6):
        events.append(calls.model_call(T0 + 2 * i, usd=0.1, run_id="quiet"))
        events.append(calls.model_call(T0 + 2 * i + 1, usd=0.5, run_id="costly"))
    [det] = feed_all(detector, events)
    costly = [e["event_id"] for e in events if e["run_id"] == "costly"]
    assert det.run_id == "costly" and det.evidence_event_ids == tuple(costly[:4])


def test_run_token_budget() -> None:
    detector = SpendDetector("agent-1", policy(**{**NO_BUDGETS, "run_budget_tokens": 1000}))
    calls = Calls()
    events = [calls.model_call(T0 + i, usd=None, tokens=400) for i in range(3)]
    assert metrics(feed_all(detector, events)) == [("run_tokens", "S2")]


def test_late_spend_still_counts_for_its_run_but_not_for_windows() -> None:
    detector = SpendDetector(
        "agent-1", policy(**{**NO_BUDGETS, "run_budget_usd": 3.0, "hour_budget_usd": 100.0})
    )
    calls = Calls()
    feed_all(detector, [calls.model_call(T0 + 10 * MIN, usd=1.0)])
    feed_all(detector, [calls.model_call(T0 + 11 * MIN, usd=1.0)])
    dets = detector.feed(calls.model_call(T0, usd=1.0))  # 11 minutes late
    assert metrics(dets) == [("run_cost_usd", "S2")]
    assert detector.clock.late_events == 1
    assert detector.windows.total(0) == 2.0  # the hour window, the only one with a budget


def test_refunds_and_empty_spend_are_ignored() -> None:
    detector = SpendDetector("agent-1", policy(**{**NO_BUDGETS, "run_budget_usd": 1.0}))
    calls = Calls()
    feed_all(detector, [calls.model_call(T0, usd=0.9), calls.model_call(T0 + 1, usd=-5.0)])
    feed_all(detector, [calls.model_call(T0 + 2, usd=None)])
    assert metrics(detector.feed(calls.model_call(T0 + 3, usd=0.1))) == [("run_cost_usd", "S2")]


# --- hour / day budgets -------------------------------------------------------------------


def test_hour_budget_warns_at_80_percent_then_trips_and_rearms_an_hour_later() -> None:
    detector = SpendDetector("agent-1", policy(**{**NO_BUDGETS, "hour_budget_usd": 10.0}))
    calls = Calls()
    events = [calls.model_call(T0 + i * MIN, usd=1.0, run_id=f"r{i}") for i in range(12)]
    dets = feed_all(detector, events)
    assert [(d.metric, d.severity, d.value, d.threshold) for d in dets] == [
        ("hour_cost_usd", "S3", 8.0, 8.0),
        ("hour_cost_usd", "S2", 10.0, 10.0),
    ]
    assert dets[0].scope == "agent" and dets[0].window_ms == HOUR
    # Two hours later the window has emptied: the same pattern trips again.
    later = [calls.model_call(T0 + 2 * HOUR + i * MIN, usd=1.0, run_id=f"s{i}") for i in range(10)]
    assert metrics(feed_all(detector, later)) == [("hour_cost_usd", "S3"), ("hour_cost_usd", "S2")]


def test_day_budget_on_tokens() -> None:
    detector = SpendDetector("agent-1", policy(**{**NO_BUDGETS, "day_budget_tokens": 1_000}))
    calls = Calls()
    events = [calls.model_call(T0 + i * HOUR, usd=None, tokens=100) for i in range(12)]
    assert metrics(feed_all(detector, events)) == [("day_tokens", "S3"), ("day_tokens", "S2")]


def reference_hour_detections(
    events: list[tuple[int, float]], budget: float, grace: int, rearm: float
) -> list[str]:
    bucket = 5 * MIN
    thresholds, severities = (0.8 * budget, 1.0 * budget), ("S3", "S2")
    watermark = None
    admitted: list[tuple[int, float]] = []
    level = 0
    fired = []
    for ts, usd in events:
        watermark = ts if watermark is None else max(watermark, ts)
        if ts < watermark - grace:
            continue
        admitted.append((ts, usd))
        head = watermark // bucket
        total = sum(a for t, a in admitted if head - 12 < t // bucket <= head)
        reached = sum(total >= t for t in thresholds)
        if reached > level:
            fired.append(severities[reached - 1])
            level = reached
        else:
            while level and total < thresholds[level - 1] * rearm:
                level -= 1
    return fired


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 4 * HOUR), st.sampled_from([0.5, 1.0, 2.5])), max_size=80),
    st.integers(0, 4 * MIN),  # policy keeps the grace inside the shortest window (5 min)
)
def test_hour_budget_matches_brute_force(events: list[tuple[int, float]], grace: int) -> None:
    p = policy(grace_ms=grace, **{**NO_BUDGETS, "hour_budget_usd": 6.0})
    detector = SpendDetector("agent-1", p)
    calls = Calls()
    got = [
        d.severity
        for ts, usd in events
        for d in detector.feed(calls.model_call(T0 + ts, usd=usd, run_id=f"r{calls.n}"))
    ]
    shifted = [(T0 + ts, usd) for ts, usd in events]
    assert got == reference_hour_detections(shifted, 6.0, grace, p.event_time.rearm_ratio)


def reference_window_detections(
    events: list[tuple[int, float]],
    grace: int,
    rearm: float,
    checks: dict[str, tuple[int, int, tuple[float, ...], tuple[str, ...]]],
    spike: tuple[int, int, float, float, tuple[float, ...], tuple[str, ...]],
) -> list[tuple[str, str]]:
    """Hour/day budgets and the spike ratio recomputed from every admitted event."""
    watermark = None
    admitted: list[tuple[int, float]] = []
    levels: dict[str, int] = {}
    fired = []

    def window_sum(bucket_ms: int, buckets: int) -> float:
        assert watermark is not None
        head = watermark // bucket_ms
        return sum(a for t, a in admitted if head - buckets < t // bucket_ms <= head)

    def latch(
        name: str, value: float, thresholds: tuple[float, ...], sevs: tuple[str, ...]
    ) -> None:
        level = levels.get(name, 0)
        reached = sum(value >= t for t in thresholds)
        if reached > level:
            fired.append((name, sevs[reached - 1]))
            levels[name] = reached
        else:
            while level and value < thresholds[level - 1] * rearm:
                level -= 1
            levels[name] = level

    for ts, usd in events:
        watermark = ts if watermark is None else max(watermark, ts)
        if ts < watermark - grace:
            continue
        admitted.append((ts, usd))
        for name, (bucket_ms, buckets, thresholds, sevs) in checks.items():
            latch(name, window_sum(bucket_ms, buckets), thresholds, sevs)
        period, buckets, alpha, floor, thresholds, sevs = spike
        current = window_sum(period // buckets, buckets)
        closed_below = (watermark - grace) // period
        sums: dict[int, float] = {}
        for t, a in admitted:
            sums[t // period] = sums.get(t // period, 0.0) + a
        usual = None
        for p in sorted(p for p in sums if p < closed_below and sums[p] > 0):
            usual = sums[p] if usual is None else alpha * sums[p] + (1 - alpha) * usual
        latch("spend_spike_usd", current / max(usual or 0.0, floor), thresholds, sevs)
    return fired


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 30 * HOUR), st.sampled_from([0.25, 0.5, 1.0, 4.0])),
        max_size=60,
    ).map(sorted)
    | st.lists(st.tuples(st.integers(0, 2 * HOUR), st.sampled_from([0.25, 1.0])), max_size=60),
    st.integers(0, 4 * MIN),
)
def test_hour_day_and_spike_match_brute_force(events: list[tuple[int, float]], grace: int) -> None:
    p = policy(
        grace_ms=grace,
        **{
            **NO_BUDGETS,
            "hour_budget_usd": 5.0,
            "day_budget_usd": 12.0,
            "spike_alpha": 0.5,
            "spike_min_baseline": 0.5,
        },
    )
    detector = SpendDetector("agent-1", p)
    calls = Calls()
    got = [
        (d.metric, d.severity)
        for ts, usd in events
        for d in detector.feed(calls.model_call(T0 + ts, usd=usd, run_id=f"r{calls.n}"))
    ]
    budget = (0.8, 1.0)
    checks = {
        "hour_cost_usd": (5 * MIN, 12, tuple(5.0 * b for b in budget), ("S3", "S2")),
        "day_cost_usd": (HOUR, 24, tuple(12.0 * b for b in budget), ("S3", "S2")),
    }
    spike = (5 * MIN, 10, 0.5, 0.5, (5.0, 10.0), ("S3", "S2"))
    expected = reference_window_detections(
        [(T0 + ts, usd) for ts, usd in events], grace, p.event_time.rearm_ratio, checks, spike
    )
    assert got == expected


# --- spikes -------------------------------------------------------------------------------


def spike_policy(**spend: Any) -> ResolvedPolicy:
    return policy(**{**NO_BUDGETS, "spike_min_baseline": 0.5, "spike_alpha": 0.3, **spend})


def test_a_new_agent_does_not_spike_below_the_minimum_baseline() -> None:
    detector = SpendDetector("agent-1", spike_policy())
    calls = Calls()
    events = [calls.model_call(T0 + i * 10_000, usd=0.2) for i in range(12)]  # $2.40 in 2 min
    assert feed_all(detector, events) == []
    [det] = detector.feed(calls.model_call(T0 + 121_000, usd=0.1))  # $2.50 = 5 x $0.50
    assert (det.metric, det.severity, det.value) == ("spend_spike_usd", "S3", pytest.approx(5.0))


def steady(calls: Calls, periods: int, usd_per_period: float, start: int) -> list[dict[str, Any]]:
    return [
        calls.model_call(start + p * 5 * MIN + k * MIN, usd=usd_per_period / 5)
        for p in range(periods)
        for k in range(5)
    ]


def test_spend_far_above_the_agents_own_baseline_spikes() -> None:
    detector = SpendDetector("agent-1", spike_policy())
    calls = Calls()
    assert feed_all(detector, steady(calls, 12, 2.0, T0)) == []
    assert detector.windows.baseline.baseline == pytest.approx(2.0)
    burst_start = T0 + 12 * 5 * MIN
    burst = [calls.model_call(burst_start + i * 1_000, usd=1.0) for i in range(25)]
    dets = feed_all(detector, burst)
    assert metrics(dets) == [("spend_spike_usd", "S3"), ("spend_spike_usd", "S2")]
    # The sliding window still holds the tail of the previous period, hence >= not ==.
    assert [d.threshold for d in dets] == [5.0, 10.0]
    assert dets[0].value >= 5.0 and dets[1].value >= 10.0


def test_idle_periods_do_not_dilute_the_baseline() -> None:
    detector = SpendDetector("agent-1", spike_policy())
    calls = Calls()
    feed_all(detector, steady(calls, 6, 2.0, T0))
    # Ten idle hours, then the same work again: not a spike.
    assert feed_all(detector, steady(calls, 6, 2.0, T0 + 10 * HOUR)) == []
    assert detector.windows.baseline.baseline == pytest.approx(2.0)


def test_spike_on_tokens_for_agents_without_cost() -> None:
    detector = SpendDetector(
        "agent-1", spike_policy(spike_metric="tokens", spike_min_baseline=1_000)
    )
    calls = Calls()
    dets = feed_all(detector, [calls.model_call(T0 + i, usd=None, tokens=1_000) for i in range(5)])
    assert metrics(dets) == [("spend_spike_tokens", "S3")]


# --- bounded state ------------------------------------------------------------------------


def test_finished_runs_and_empty_windows_are_dropped() -> None:
    detector = SpendDetector("agent-1", policy())
    calls = Calls()
    feed_all(detector, [calls.model_call(T0, usd=0.1), calls.model_call(T0 + 1, kind="run_end")])
    assert len(detector.runs) == 1 and detector.ids is not None
    detector.feed(calls.model_call(T0 + 2 * 24 * HOUR, usd=None, run_id="other", kind="run_end"))
    detector.expire(0)
    assert len(detector.runs) == 0 and detector.ids is None
    rings = detector.windows.rings  # hour, day, spike
    assert len(rings) == 3 and all(ring.empty for ring in rings)


def test_state_round_trip_resumes_identically() -> None:
    calls = Calls()
    events = steady(calls, 10, 1.0, T0)
    events += [calls.model_call(T0 + 50 * MIN + i * 1_000, usd=0.8, run_id="x") for i in range(30)]
    straight = SpendDetector("agent-1", policy())
    expected = feed_all(straight, events)
    resumed = SpendDetector("agent-1", policy())
    got = feed_all(resumed, events[:40])
    state = json.loads(json.dumps(resumed.to_state()))
    resumed = SpendDetector.from_state(state, "agent-1", policy(), resumed.clock)
    got += feed_all(resumed, events[40:])
    assert got == expected and len(expected) >= 3
    assert resumed.to_state() == straight.to_state()


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 40 * MIN), st.sampled_from([0.1, 0.5, 1.25, 2.5, 2.4999])),
             max_size=60).map(sorted),
    st.sampled_from([0.1, 0.5, 1.0]),
)
def test_skipping_the_spike_ratio_below_the_floor_changes_nothing(
    events: list[tuple[int, float]], floor: float
) -> None:
    """Below ``spike_below`` the ratio is not computed: the same detections and state as the
    detector that computes it for every spend event (the path it replaces)."""
    p = spike_policy(spike_min_baseline=floor)
    fast, full = SpendDetector("agent-1", p), SpendDetector("agent-1", p)
    full.settings = SpendSettings(p)
    full.settings.spike_below = float("-inf")
    calls = [Calls(), Calls()]
    for ts, usd in events:
        got = fast.feed(calls[0].model_call(T0 + ts, usd=usd, run_id="r"))
        want = full.feed(calls[1].model_call(T0 + ts, usd=usd, run_id="r"))
        assert got == want
    assert fast.to_state() == full.to_state()
