"""DenialRateDetector: brute-force reference over random streams, plus the documented rules."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from tripwire.detectors.denial_rate import DenialKey, DenialRateDetector
from tripwire.detectors.policy import DenialRatePolicy, EventTimePolicy, RateBand, ResolvedPolicy
from tripwire.detectors.windows import BucketRing

FIELDS = [
    f["name"]
    for f in json.loads((Path(__file__).parents[1] / "schemas/step_event.avsc").read_text())[
        "fields"
    ]
]
ID_SPACE = uuid.UUID("6d9a7e2c-0000-4000-8000-000000000001")


def decision(
    n: int, ts: int, outcome: str = "denied", tool: str | None = "shell"
) -> dict[str, Any]:
    event: dict[str, Any] = dict.fromkeys(FIELDS)
    event.update(
        event_id=str(uuid.uuid5(ID_SPACE, str(n))),
        ts=ts,
        agent_id="agent-1",
        run_id="run-1",
        step=n,
        kind="policy_decision",
        tool=tool,
        policy_outcome=outcome,
        attributes={},
    )
    return event


def policy(**denial: Any) -> ResolvedPolicy:
    grace = denial.pop("grace_ms", 0)
    return ResolvedPolicy(
        event_time=EventTimePolicy(grace_ms=grace), denial_rate=DenialRatePolicy(**denial)
    )


# --- reference ----------------------------------------------------------------------------


def reference_detections(
    stream: list[tuple[int, str | None, bool]],
    window_ms: int,
    buckets: int,
    grace_ms: int,
    min_agent: int,
    min_tool: int,
    thresholds: tuple[float, ...],
    severities: tuple[str, ...],
    rearm: float,
) -> list[tuple[str | None, str, float]]:
    bucket_ms = window_ms // buckets
    watermark: int | None = None
    admitted: list[tuple[int, str | None, bool]] = []
    levels: dict[str | None, int] = {}
    fired = []
    for ts, tool, denied in stream:
        watermark = ts if watermark is None else max(watermark, ts)
        if ts < watermark - grace_ms:
            continue
        head = watermark // bucket_ms

        def in_window(t: int, head: int = head) -> bool:
            return head - buckets < t // bucket_ms <= head

        keys: list[tuple[str | None, int]] = [(None, min_agent)]
        if tool is not None:
            keys.append((tool, min_tool))
        for key, minimum in keys:
            mine = [(t, d) for t, k, d in admitted if (key is None or k == key) and in_window(t)]
            if not mine:
                levels[key] = 0
            if not in_window(ts):
                continue
            decided = len(mine) + 1
            denials = sum(d for _, d in mine) + denied
            if decided < minimum:
                continue
            rate = denials / decided
            level = levels.get(key, 0)
            reached = sum(rate >= t for t in thresholds)
            if reached > level:
                fired.append((key, severities[reached - 1], rate))
                levels[key] = reached
            else:
                while level > 0 and rate < thresholds[level - 1] * rearm:
                    level -= 1
                levels[key] = level
        admitted.append((ts, tool, denied))
    return fired


@settings(max_examples=300, deadline=None)
@given(
    st.integers(1, 20),
    st.integers(1, 10),
    st.integers(1, 6),
    st.integers(1, 4),
    st.data(),
    st.lists(
        st.tuples(st.integers(0, 2_000), st.sampled_from([None, "a", "b"]), st.booleans()),
        max_size=120,
    ),
)
def test_denial_rate_matches_brute_force(
    bucket_ms: int,
    buckets: int,
    min_agent: int,
    min_tool: int,
    data: st.DataObject,
    stream: list[tuple[int, str | None, bool]],
) -> None:
    grace = data.draw(st.integers(0, bucket_ms * (buckets - 1)))
    window_ms = bucket_ms * buckets
    p = policy(
        window_ms=window_ms,
        buckets=buckets,
        min_decisions=min_agent,
        min_decisions_per_tool=min_tool,
        grace_ms=grace,
    )
    detector = DenialRateDetector("agent-1", p)
    got = []
    for n, (ts, tool, denied) in enumerate(stream):
        for d in detector.feed(decision(n, ts, "denied" if denied else "allowed", tool)):
            got.append((d.tool, d.severity, d.value))
    bands = p.denial_rate.bands
    expected = reference_detections(
        stream,
        window_ms,
        buckets,
        grace,
        min_agent,
        min_tool,
        tuple(b.at for b in bands),
        tuple(b.severity for b in bands),
        p.event_time.rearm_ratio,
    )
    assert got == expected


# --- documented behaviour -----------------------------------------------------------------


def feed_all(detector: DenialRateDetector, events: list[dict[str, Any]]) -> list:
    return [d for e in events for d in detector.feed(e)]


def test_nothing_trips_below_the_minimum_number_of_decisions() -> None:
    detector = DenialRateDetector("agent-1", policy(per_tool=False))
    assert feed_all(detector, [decision(n, n * 1000) for n in range(9)]) == []
    [det] = detector.feed(decision(9, 9_000))
    assert (det.metric, det.severity, det.value, det.threshold) == ("denial_rate", "S1", 1.0, 0.8)
    assert det.scope == "agent" and det.tool is None and det.run_id is None
    assert det.window_ms == 300_000 and det.ts == 9_000


def test_each_band_maps_to_its_severity_and_fires_once() -> None:
    detector = DenialRateDetector("agent-1", policy(per_tool=False))
    events = [decision(n, n, "allowed") for n in range(7)]
    events += [decision(n, n, "denied") for n in range(7, 10)]  # 3 / 10
    dets = feed_all(detector, events)
    assert [(d.severity, d.value) for d in dets] == [("S3", 0.3)]
    more = feed_all(detector, [decision(n, n) for n in range(10, 14)])  # 7/14 = 0.5
    assert [(d.severity, round(d.value, 2)) for d in more] == [("S2", 0.5)]
    most = feed_all(detector, [decision(n, n) for n in range(14, 40)])  # rate climbs to 0.825
    assert [d.severity for d in most] == ["S1"]
    assert feed_all(detector, [decision(n, n) for n in range(40, 60)]) == []  # held


def test_rearms_below_the_margin_then_fires_again() -> None:
    detector = DenialRateDetector("agent-1", policy(per_tool=False, min_decisions=4))
    assert [d.severity for d in feed_all(detector, [decision(n, n) for n in range(4)])] == ["S1"]
    # 4 denied of 11: 0.36 is under S1's re-arm point (0.64) and S2's (0.4), above S3's (0.24).
    assert feed_all(detector, [decision(n, n, "allowed") for n in range(4, 11)]) == []
    again = feed_all(detector, [decision(n, n) for n in range(11, 50)])
    assert [d.severity for d in again] == ["S2", "S1"]


def test_a_dip_that_stays_above_the_margin_does_not_refire() -> None:
    detector = DenialRateDetector("agent-1", policy(per_tool=False, min_decisions=4))
    assert [d.severity for d in feed_all(detector, [decision(n, n) for n in range(4)])] == ["S1"]
    # 4 of 9 = 0.44: S1 re-armed, S2 held, so climbing back fires only S1 again.
    assert feed_all(detector, [decision(n, n, "allowed") for n in range(4, 9)]) == []
    again = feed_all(detector, [decision(n, n) for n in range(9, 50)])
    assert [d.severity for d in again] == ["S1"]


def test_per_tool_rate_names_the_tool() -> None:
    detector = DenialRateDetector("agent-1", policy())
    events = [decision(n, n, "allowed", "read") for n in range(20)]
    events += [decision(n, n, "denied", "shell") for n in range(20, 25)]
    dets = feed_all(detector, events)
    # Agent-wide 5/25 = 0.2 is quiet; the shell tool alone is denied 5 of 5.
    assert [(d.tool, d.severity) for d in dets] == [("shell", "S1")]
    assert "shell" in dets[0].message


def test_a_window_that_emptied_forgets_what_fired() -> None:
    detector = DenialRateDetector("agent-1", policy(per_tool=False, min_decisions=2))
    assert len(feed_all(detector, [decision(0, 0), decision(1, 1)])) == 1
    assert feed_all(detector, [decision(2, 2)]) == []
    later = 10 * 60_000
    dets = feed_all(detector, [decision(3, later), decision(4, later + 1)])
    assert [d.severity for d in dets] == ["S1"]


def test_evidence_is_the_latest_denials_bounded_by_evidence_max() -> None:
    detector = DenialRateDetector("agent-1", policy(per_tool=False, min_decisions=30))
    events = [decision(n, n) for n in range(30)]
    [det] = feed_all(detector, events)
    assert det.evidence_event_ids == tuple(e["event_id"] for e in events[-20:])


def test_allowed_decisions_are_not_evidence() -> None:
    detector = DenialRateDetector("agent-1", policy(per_tool=False, min_decisions=4))
    events = [decision(0, 0, "allowed"), decision(1, 1), decision(2, 2), decision(3, 3)]
    [det] = feed_all(detector, events)
    assert det.evidence_event_ids == tuple(e["event_id"] for e in events[1:])


def test_detection_ids_are_deterministic_and_distinct() -> None:
    events = [decision(n, n * 100, "denied", f"tool-{n % 2}") for n in range(30)]
    first = feed_all(DenialRateDetector("agent-1", policy()), events)
    second = feed_all(DenialRateDetector("agent-1", policy()), events)
    assert [d.detection_id for d in first] == [d.detection_id for d in second]
    assert len({d.detection_id for d in first}) == len(first) > 1


def test_events_beyond_grace_are_counted_late_not_used() -> None:
    detector = DenialRateDetector("agent-1", policy(per_tool=False, min_decisions=2, grace_ms=5))
    detector.feed(decision(0, 1_000, "allowed"))
    assert detector.feed(decision(1, 10)) == []  # 990 ms late: beyond the grace
    assert detector.clock.late_events == 1
    assert (detector.agent.total0, detector.agent.total1) == (1, 0)
    detector.feed(decision(2, 996))  # 4 ms late: within the grace, counted
    assert (detector.agent.total0, detector.agent.total1) == (2, 1)


def test_other_kinds_are_ignored() -> None:
    detector = DenialRateDetector("agent-1", policy(min_decisions=1))
    event = decision(0, 0)
    event["kind"] = "tool_call"
    assert detector.feed(event) == []
    assert detector.agent.empty


def test_tool_windows_are_capped_and_expire() -> None:
    detector = DenialRateDetector("agent-1", policy(max_tools=2))
    for n, tool in enumerate(["a", "b", "c"]):
        detector.feed(decision(n, n * 1000, "allowed", tool))
    assert set(detector.tools) == {"b", "c"}  # "a" was least recently used
    detector.expire(10 * 60_000)
    assert detector.tools == {} and detector.agent.empty


def test_thresholds_come_from_the_policy() -> None:
    p = policy(
        per_tool=False,
        min_decisions=2,
        bands=(RateBand(at=0.5, severity="S2"),),
    )
    detector = DenialRateDetector("agent-1", p)
    dets = feed_all(detector, [decision(0, 0, "allowed"), decision(1, 1)])
    assert [(d.severity, d.threshold) for d in dets] == [("S2", 0.5)]


def test_state_round_trip_resumes_identically() -> None:
    events = [
        decision(n, n * 7_000, "denied" if n % 3 else "allowed", f"t{n % 4}") for n in range(90)
    ]
    straight = DenialRateDetector("agent-1", policy())
    expected = feed_all(straight, events)
    resumed = DenialRateDetector("agent-1", policy())
    got = feed_all(resumed, events[:45])
    state = json.loads(json.dumps(resumed.to_state()))
    resumed = DenialRateDetector.from_state(state, "agent-1", policy(), resumed.clock)
    got += feed_all(resumed, events[45:])
    assert got == expected
    assert resumed.to_state() == straight.to_state()


def test_the_guards_own_refusals_do_not_count_as_the_agents_denials() -> None:
    # After a downgrade the SDK guard refuses the agent's writes and emits each refusal as a
    # denied policy decision; counting those would punish the agent for obeying.
    from tripwire.sdk.decisions import DECIDED_BY

    detector = DenialRateDetector("agent-1", policy(per_tool=True))
    guard_refusals = [decision(n, n * 1000) | {"attributes": {"decided_by": DECIDED_BY}}
                      for n in range(30)]
    assert feed_all(detector, guard_refusals) == []
    own = [decision(n, 30_000 + n * 1000) for n in range(30, 40)]
    assert feed_all(detector, own), "the agent's own denials still count"


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3_000), st.booleans(), st.booleans()), max_size=80),
       st.sampled_from([(1_000, 10), (300, 3), (2_000, 7)]))
def test_a_denial_keys_advance_matches_the_rings(
    steps: list[tuple[int, bool, bool]], geometry: tuple[int, int]
) -> None:
    """DenialKey.advance skips the denials of buckets without decisions: the same window,
    totals and cells as BucketRing.advance, which reads every dropped cell."""
    window_ms, buckets = geometry
    key = DenialKey(window_ms, buckets)
    ring = BucketRing(window_ms, buckets, width=2, counts=True)
    now = 0
    for delta, denied, sweep in steps:
        now += delta
        if sweep:
            assert key.advance(now) == ring.advance(now)
        else:
            assert key.add2(now - delta // 2, 1, int(denied)) == ring.add2(
                now - delta // 2, 1, int(denied))
        assert key.to_state() == ring.to_state()
