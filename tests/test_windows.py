"""Windows, clock, evidence ring and severity latch against brute-force references.

Each reference recomputes from the full list of events seen so far, the way the window is
specified (see detectors/windows.py), with no incremental state shared with the code under
test.
"""

from __future__ import annotations

import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tripwire.detectors.evidence import SLOT, EvidenceRing
from tripwire.detectors.severity import SeverityBands
from tripwire.detectors.windows import (
    NO_TIME,
    BucketRing,
    CoalescedWindows,
    EventClock,
    EwmaBaseline,
)

# --- strategies ---------------------------------------------------------------------------


@st.composite
def window_geometry(draw: st.DrawFn) -> tuple[int, int, int]:
    """(bucket_ms, buckets, grace_ms) with the grace inside the window, as policy requires."""
    bucket_ms = draw(st.integers(1, 40))
    buckets = draw(st.integers(1, 12))
    grace_ms = draw(st.integers(0, bucket_ms * (buckets - 1)))
    return bucket_ms, buckets, grace_ms


# Times in arbitrary order: plenty of late events, some within the grace, some beyond.
timestamps = st.lists(st.integers(0, 1_500), min_size=1, max_size=80)
amounts = st.integers(0, 9)


# --- EventClock ---------------------------------------------------------------------------


@given(st.integers(0, 300), timestamps)
def test_clock_admits_exactly_the_events_within_grace(grace_ms: int, times: list[int]) -> None:
    clock = EventClock(grace_ms)
    newest = None
    late = 0
    for ts in times:
        newest = ts if newest is None else max(newest, ts)
        expected_on_time = ts >= newest - grace_ms
        late += not expected_on_time
        assert clock.admit(ts) is expected_on_time
        assert clock.watermark == newest
        assert clock.late_events == late


def test_clock_counts_late_events_instead_of_dropping_them_silently() -> None:
    clock = EventClock(grace_ms=10)
    assert clock.admit(100)
    assert clock.admit(90)  # exactly at the grace boundary: on time
    assert not clock.admit(89)
    assert not clock.admit(0)
    assert clock.late_events == 2
    assert clock.watermark == 100


def test_clock_state_round_trip() -> None:
    clock = EventClock(5)
    for ts in (10, 3, 12, 1):
        clock.admit(ts)
    again = EventClock.from_state(clock.to_state(), 5)
    assert (again.watermark, again.late_events) == (clock.watermark, clock.late_events)


# --- BucketRing ---------------------------------------------------------------------------


def reference_total(
    admitted: list[tuple[int, float]], now: int, bucket_ms: int, size: int
) -> float:
    head = now // bucket_ms
    return sum(a for ts, a in admitted if head - size < ts // bucket_ms <= head)


@settings(max_examples=300)
@given(window_geometry(), st.lists(st.tuples(st.integers(0, 1_500), amounts), max_size=80))
def test_bucket_ring_matches_brute_force(
    geometry: tuple[int, int, int], events: list[tuple[int, int]]
) -> None:
    bucket_ms, size, grace_ms = geometry
    clock = EventClock(grace_ms)
    ring = BucketRing(bucket_ms * size, size)
    admitted: list[tuple[int, float]] = []
    for ts, amount in events:
        if not clock.admit(ts):
            continue
        ring.advance(clock.watermark)
        ring.add(ts, 0, amount)
        admitted.append((ts, amount))
        assert ring.total0 == reference_total(admitted, clock.watermark, bucket_ms, size)
    # Reads after time moves on with no new events.
    for later in (clock.watermark + bucket_ms, clock.watermark + bucket_ms * size):
        ring.advance(later)
        assert ring.total0 == reference_total(admitted, later, bucket_ms, size)


@given(window_geometry(), st.lists(st.tuples(st.integers(0, 1_500), amounts, amounts), max_size=60))
def test_bucket_ring_keeps_quantities_apart(
    geometry: tuple[int, int, int], events: list[tuple[int, int, int]]
) -> None:
    bucket_ms, size, grace_ms = geometry
    clock = EventClock(grace_ms)
    ring = BucketRing(bucket_ms * size, size, width=2)
    first: list[tuple[int, float]] = []
    second: list[tuple[int, float]] = []
    for ts, a, b in events:
        if not clock.admit(ts):
            continue
        ring.advance(clock.watermark)
        if (ts + a) % 2:  # both ways of adding two quantities
            ring.add2(ts, a, b)
        else:
            ring.add(ts, 0, a)
            ring.add(ts, 1, b)
        first.append((ts, a))
        second.append((ts, b))
        now = clock.watermark
        assert [ring.total0, ring.total1] == [
            reference_total(first, now, bucket_ms, size),
            reference_total(second, now, bucket_ms, size),
        ]


@given(
    window_geometry(),
    st.lists(st.tuples(st.integers(0, 1_500), st.floats(0, 5, allow_nan=False)), max_size=60),
)
def test_bucket_ring_float_totals_do_not_drift(
    geometry: tuple[int, int, int], events: list[tuple[int, float]]
) -> None:
    bucket_ms, size, grace_ms = geometry
    clock = EventClock(grace_ms)
    ring = BucketRing(bucket_ms * size, size)
    admitted: list[tuple[int, float]] = []
    for ts, amount in events:
        if clock.admit(ts):
            ring.advance(clock.watermark)
            ring.add(ts, 0, amount)
            admitted.append((ts, amount))
            expected = reference_total(admitted, clock.watermark, bucket_ms, size)
            assert ring.total0 == pytest.approx(expected, abs=1e-9)


def test_bucket_ring_frees_its_cells_once_everything_expired() -> None:
    ring = BucketRing(100, 10)
    ring.add(5, 0, 1.0)
    assert not ring.empty
    assert ring.advance(95) is False
    assert ring.total0 == 1.0
    assert ring.advance(105) is True  # bucket 0 left the window (buckets 1..10 remain)
    assert ring.empty and ring.total0 == 0.0


def test_bucket_ring_ignores_an_event_older_than_the_window() -> None:
    ring = BucketRing(100, 10)
    ring.add(500, 0, 1.0)
    assert ring.add(400, 0, 1.0) is False  # bucket 40 is 10 buckets behind 50
    assert ring.add(410, 0, 1.0) is True
    assert ring.total0 == 2.0


@given(window_geometry(), st.lists(st.tuples(st.integers(0, 1_500), amounts), max_size=40))
def test_bucket_ring_state_round_trip_resumes_identically(
    geometry: tuple[int, int, int], events: list[tuple[int, int]]
) -> None:
    bucket_ms, size, grace_ms = geometry
    clock = EventClock(grace_ms)
    ring = BucketRing(bucket_ms * size, size)
    half = len(events) // 2
    for i, (ts, amount) in enumerate(events):
        if i == half:
            ring = BucketRing.from_state(ring.to_state(), bucket_ms * size, size)
        if clock.admit(ts):
            ring.advance(clock.watermark)
            ring.add(ts, 0, amount)
    straight = BucketRing(bucket_ms * size, size)
    clock = EventClock(grace_ms)
    for ts, amount in events:
        if clock.admit(ts):
            straight.advance(clock.watermark)
            straight.add(ts, 0, amount)
    assert ring.to_state() == straight.to_state()


def test_bucket_ring_restarts_when_the_geometry_changed() -> None:
    ring = BucketRing(100, 10)
    ring.add(5, 0, 3.0)
    restored = BucketRing.from_state(ring.to_state(), 100, 5)
    assert restored.empty and restored.head == NO_TIME


# --- EwmaBaseline -------------------------------------------------------------------------


def reference_ewma(
    admitted: list[tuple[int, float]], watermark: int, period_ms: int, alpha: float, grace: int
) -> tuple[float | None, int]:
    closed_below = (watermark - grace) // period_ms
    sums: dict[int, float] = {}
    for ts, amount in admitted:
        sums[ts // period_ms] = sums.get(ts // period_ms, 0.0) + amount
    value: float | None = None
    folded = 0
    for period in sorted(p for p in sums if p < closed_below and sums[p] > 0):
        value = sums[period] if value is None else alpha * sums[period] + (1 - alpha) * value
        folded += 1
    return value, folded


@settings(max_examples=300)
@given(
    st.integers(5, 60),
    st.floats(0.05, 1.0),
    st.data(),
    st.lists(st.tuples(st.integers(0, 1_500), st.integers(1, 9)), max_size=80),
)
def test_ewma_baseline_matches_brute_force(
    period_ms: int,
    alpha: float,
    data: st.DataObject,
    events: list[tuple[int, int]],
) -> None:
    grace = data.draw(st.integers(0, period_ms - 1))
    clock = EventClock(grace)
    baseline = EwmaBaseline(period_ms, alpha, grace)
    admitted: list[tuple[int, float]] = []
    for ts, amount in events:
        if not clock.admit(ts):
            continue
        baseline.advance(clock.watermark)
        baseline.add(ts, amount)
        admitted.append((ts, amount))
        value, folded = reference_ewma(admitted, clock.watermark, period_ms, alpha, grace)
        assert baseline.periods == folded
        if value is None:
            assert baseline.baseline is None
        else:
            assert baseline.baseline == pytest.approx(value)


def test_ewma_skips_idle_periods() -> None:
    baseline = EwmaBaseline(period_ms=10, alpha=0.5, grace_ms=0)
    baseline.add(1, 4.0)
    baseline.advance(55)  # periods 0..4 closed; only period 0 had spend
    assert baseline.baseline == 4.0 and baseline.periods == 1
    baseline.add(56, 8.0)
    baseline.advance(60)
    assert baseline.baseline == pytest.approx(0.5 * 8 + 0.5 * 4)


@settings(max_examples=300)
@given(window_geometry(), st.lists(st.tuples(st.integers(0, 1_500), amounts, amounts), max_size=80))
def test_count_rings_hold_exact_integers(
    geometry: tuple[int, int, int], events: list[tuple[int, int, int]]
) -> None:
    bucket_ms, size, grace_ms = geometry
    clock = EventClock(grace_ms)
    ring = BucketRing(bucket_ms * size, size, width=2, counts=True)
    first: list[tuple[int, float]] = []
    second: list[tuple[int, float]] = []
    for ts, a, b in events:
        if clock.admit(ts):
            ring.advance(clock.watermark)
            ring.add2(ts, a, b)
            first.append((ts, a))
            second.append((ts, b))
            now = clock.watermark
            assert (ring.total0, ring.total1) == (
                reference_total(first, now, bucket_ms, size),
                reference_total(second, now, bucket_ms, size),
            )
            assert type(ring.total0) is int
    restored = BucketRing.from_state(ring.to_state(), bucket_ms * size, size, 2, counts=True)
    assert restored.to_state() == ring.to_state()


# --- CoalescedWindows ---------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from([(10, 4, 30, 6), (6, 5, 15, 4), (7, 3, 21, 5)]),
    st.data(),
    st.lists(st.tuples(st.integers(0, 1_200), st.integers(0, 5), st.integers(0, 5)), max_size=80),
)
def test_coalesced_windows_read_like_separate_rings_and_baseline(
    shape: tuple[int, int, int, int], data: st.DataObject, events: list[tuple[int, int, int]]
) -> None:
    """Two rings of different bucket sizes (one per quantity) and a baseline, against the
    references: coalescing through the pending bucket must not change any read."""
    fine_bucket, fine_size, coarse_bucket, coarse_size = shape
    period = fine_bucket * fine_size
    grace = data.draw(st.integers(0, min(period, coarse_bucket * coarse_size) - coarse_bucket))
    clock = EventClock(grace)
    windows = CoalescedWindows(
        (BucketRing(period, fine_size), BucketRing(coarse_bucket * coarse_size, coarse_size)),
        (0, 1),
        EwmaBaseline(period, 0.5, grace),
        0,
    )
    firsts: list[tuple[int, float]] = []
    seconds: list[tuple[int, float]] = []
    for ts, a, b in events:
        if not clock.admit(ts):
            continue
        now = clock.watermark
        windows.add(ts, now, a, b)
        firsts.append((ts, a))
        seconds.append((ts, b))
        assert windows.total(0) == reference_total(firsts, now, fine_bucket, fine_size)
        assert windows.total(1) == reference_total(seconds, now, coarse_bucket, coarse_size)
        value, folded = reference_ewma(firsts, now, period, 0.5, grace)
        assert windows.baseline.periods == folded
        assert windows.baseline.baseline == (None if value is None else pytest.approx(value))
    later = clock.watermark + coarse_bucket * coarse_size
    empty = windows.advance(later)
    assert empty == (not windows.pending[0] and all(r.empty for r in windows.rings))
    assert windows.total(1) == 0


# --- EvidenceRing -------------------------------------------------------------------------


def test_evidence_ring_round_trips_every_id_shape() -> None:
    ids = [
        str(uuid.uuid4()),
        "00000000-0000-0000-0000-000000000000",
        str(uuid.uuid4()).upper(),  # not canonical: must come back exactly as given
        "e1",
        "",
        "sixteen-chars-id",
        "a-much-longer-id-that-is-not-a-uuid-at-all",
        "zzzzzzzz-zzzz-zzzz-zzzz-zzzzzzzzzzzz",
    ]
    ring = EvidenceRing(capacity=len(ids))
    for event_id in ids:
        ring.add(event_id)
    assert ring.last(100) == tuple(ids)
    restored = EvidenceRing.from_state(ring.to_state(), len(ids))
    assert restored.last(100) == tuple(ids)


def test_evidence_ring_keeps_the_newest_and_packs_uuids() -> None:
    ring = EvidenceRing(capacity=3)
    ids = [str(uuid.uuid4()) for _ in range(5)]
    for event_id in ids:
        ring.add(event_id)
    assert ring.last(10) == tuple(ids[2:])
    assert ring.last(2) == tuple(ids[3:])
    assert ring.id_at(1) is None and ring.id_at(4) == ids[4]
    assert len(ring.buf) == 3 * SLOT and not ring.side  # uuids live in the buffer


def test_evidence_ring_side_entries_do_not_leak_when_overwritten() -> None:
    ring = EvidenceRing(capacity=2)
    ring.add("x" * 40)
    ring.add("y" * 40)
    ring.add(str(uuid.uuid4()))
    ring.add(str(uuid.uuid4()))
    assert not ring.side


# Uuids (mostly, as on the stream) and ids of every other shape the ring keeps beside them.
evidence_ids = st.one_of(
    st.uuids().map(str), st.uuids().map(str), st.uuids().map(str),
    st.text(max_size=40), st.just("0" * SLOT), st.just("\x00" + "a" * (SLOT - 1)),
)


@settings(max_examples=300)
@given(st.integers(1, 6), st.lists(evidence_ids, max_size=30))
def test_evidence_ring_is_the_last_ids_added(capacity: int, ids: list[str]) -> None:
    """Against the brute-force reference, the list of every id added: each position still in
    the ring reads back as added, older ones as None, and the state round-trips."""
    ring = EvidenceRing(capacity)
    for n, event_id in enumerate(ids, start=1):
        ring.add(event_id)
        assert ring.last(capacity) == tuple(ids[max(0, n - capacity):n])
    for position in range(-1, len(ids) + 1):
        kept = 0 <= position < len(ids) and position >= len(ids) - capacity
        assert ring.id_at(position) == (ids[position] if kept else None)
    restored = EvidenceRing.from_state(ring.to_state(), capacity)
    assert restored.last(capacity) == ring.last(capacity)
    # Only slots holding an id that is not packed in the buffer have a side entry (no leak).
    packed = [len(i.encode()) == SLOT and i.encode()[0] != 0 for i in ids]
    assert set(ring.side or {}) == {
        p % capacity for p in range(max(0, len(ids) - capacity), len(ids)) if not packed[p]}


def test_evidence_ring_state_with_other_capacity_starts_empty() -> None:
    ring = EvidenceRing(capacity=4)
    ring.add("e1")
    assert EvidenceRing.from_state(ring.to_state(), 5).last(5) == ()


# --- SeverityBands (the fire / re-arm rule) -------------------------------------------------


def bands() -> SeverityBands:
    return SeverityBands((0.3, 0.5, 0.8), ("S3", "S2", "S1"), rearm_ratio=0.8)


def fire_sequence(values: list[float]) -> list[str | None]:
    """Severity fired per value (None when silent), applying rise then fall like detectors."""
    b, level, fired = bands(), 0, []
    for v in values:
        new = b.rise(v, level)
        if new > level:
            fired.append(b.severity(new))
            level = new
        else:
            fired.append(None)
            level = b.fall(v, level)
    return fired


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([0.1, 0.2, 0.29], [None, None, None]),
        ([0.3, 0.3, 0.4], ["S3", None, None]),  # fires once per band, not per event
        ([0.3, 0.5, 0.8], ["S3", "S2", "S1"]),  # each climb to a higher band fires
        ([0.9, 0.7, 0.9], ["S1", None, None]),  # 0.7 >= 0.8 x 0.8: S1 held, no re-fire
        ([0.9, 0.5, 0.9], ["S1", None, "S1"]),  # 0.5 < 0.64 re-armed S1 (S2 still held)
        ([0.85, 0.3, 0.6], ["S1", None, "S2"]),  # 0.3 < 0.4 re-armed S2 too
        ([0.31, 0.29, 0.31], ["S3", None, None]),  # hovering at the threshold: held
        ([0.31, 0.23, 0.31], ["S3", None, "S3"]),  # under 0.24 re-arms
        ([0.6, 0.2, 0.35], ["S2", None, "S3"]),  # full re-arm, then lower band fires
    ],
)
def test_severity_bands_fire_on_climbs_and_rearm_below_the_margin(
    values: list[float], expected: list[str | None]
) -> None:
    assert fire_sequence(values) == expected


def test_severity_bands_rearm_strictly_below_the_rearm_point() -> None:
    b = SeverityBands((0.5, 1.0), ("S3", "S2"), rearm_ratio=0.5)  # re-arm points 0.25, 0.5
    assert b.rise(1.0, 0) == 2
    assert b.fall(0.5, 2) == 2  # exactly at S2's re-arm point: held
    assert b.fall(0.49, 2) == 1
    assert b.fall(0.25, 1) == 1  # exactly at S3's re-arm point: held
    assert b.fall(0.24, 2) == 0
    assert b.rise(0.49, 0) == 0 and b.rise(0.5, 0) == 1  # a threshold is reached at equality


def test_severity_bands_reject_unordered_thresholds() -> None:
    with pytest.raises(ValueError):
        SeverityBands((0.5, 0.3), ("S3", "S2"), 0.8)
