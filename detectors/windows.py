"""Event-time windows: one small class per responsibility (after Quix Streams' windows).

* ``EventClock`` decides *when* it is: the watermark (newest event time seen) and whether an
  event is too late to count in time windows.
* ``BucketRing`` answers *how much in the last W ms*: a ring of time buckets with running
  totals (resilience4j's time-based sliding window), so a read is O(1) and an update touches
  one bucket; only crossing into a new bucket clears the buckets that fell out.
* ``EwmaBaseline`` answers *how much is usual*: an exponentially weighted average of closed
  periods, for spike detection.
* ``CoalescedWindows`` feeds several rings and a baseline through one pending bucket, so an
  event costs one addition however many windows watch the same quantity.

Semantics shared by the windows and their brute-force references in ``tests/test_windows.py``:
a window of ``size`` buckets of ``bucket_ms`` covers the buckets ``head - size + 1 .. head``,
where ``head`` is the bucket of the newest time it was advanced to. So the span is between
``window_ms - bucket_ms`` and ``window_ms``; the bucket count trades precision for memory.
"""

from __future__ import annotations

from array import array
from functools import lru_cache, reduce
from math import gcd

NO_TIME = -(2**62)
"""Watermark/bucket before any event; an int so serialised state stays plain numbers."""

NO_DEADLINE = 2**62
"""A time that never comes."""


@lru_cache(maxsize=64)
def _shared(value: int) -> int:
    """One int object per distinct bucket length, instead of one per ring (32 bytes each)."""
    return value


class EventClock:
    """An agent's event-time watermark, with a bounded grace for events that arrive late.

    An event is *on time* when its time is at least ``watermark - grace_ms``. A later one is
    counted in ``late_events`` and kept out of time windows (their buckets may already have
    been reported on), but run-scoped checks still see it: see ``AgentMonitor.feed``.
    """

    __slots__ = ("grace_ms", "watermark", "late_events")

    def __init__(self, grace_ms: int, watermark: int = NO_TIME, late_events: int = 0) -> None:
        self.grace_ms = grace_ms
        self.watermark = watermark
        self.late_events = late_events

    def admit(self, ts: int) -> bool:
        """Advance the watermark to ``ts`` if newer; False (and counted) if beyond the grace."""
        if ts > self.watermark:
            self.watermark = ts
            return True
        if ts >= self.watermark - self.grace_ms:
            return True
        self.late_events += 1
        return False

    def to_state(self) -> list[int]:
        return [self.watermark, self.late_events]

    @classmethod
    def from_state(cls, state: list, grace_ms: int) -> EventClock:
        return cls(grace_ms, int(state[0]), int(state[1]))


class BucketRing:
    """Totals of one or two quantities over the newest ``size`` event-time buckets.

    ``total0`` / ``total1`` are the window's sums of quantity 0 / 1. Callers ``advance`` to
    the watermark before reading, so buckets that fell out of the window are gone from them.
    Count windows (``counts=True``) keep unsigned ints: exact, and half the bytes of floats.
    """

    __slots__ = ("bucket_ms", "size", "width", "typecode", "head", "cells", "total0", "total1")

    def __init__(
        self, window_ms: int, size: int, width: int = 1, counts: bool = False, single: bool = False
    ) -> None:
        if width not in (1, 2):
            raise ValueError("a BucketRing holds one or two quantities")
        self.bucket_ms = _shared(window_ms // size)
        self.size = size
        self.width = width
        # Cells: unsigned ints for counts; floats, single precision when asked (~7 digits,
        # ample for money against a budget, half the memory). Totals stay Python floats.
        self.typecode = "I" if counts else "f" if single else "d"
        self.head = NO_TIME
        # None while the window is empty: most keys are idle most of the time, and an idle
        # ring should cost no more than its object.
        self.cells: array | None = None
        self.total0: float = 0
        self.total1: float = 0

    @property
    def window_ms(self) -> int:
        return self.bucket_ms * self.size

    @property
    def empty(self) -> bool:
        return self.cells is None

    def total(self, quantity: int) -> float:
        return self.total1 if quantity else self.total0

    def advance(self, now_ms: int) -> bool:
        """Make ``now_ms``'s bucket the newest, dropping the buckets that left the window.

        Returns whether the window is empty afterwards.
        """
        idx = now_ms // self.bucket_ms
        head = self.head
        if idx <= head:
            return self.cells is None
        self.head = idx
        cells = self.cells
        if cells is None:
            return True
        size = self.size
        if idx - head >= size:
            self.cells, self.total0, self.total1 = None, 0, 0
            return True
        counts = self.typecode == "I"
        if counts and self.width == 2:
            # Counts are ints: subtracting the dropped buckets is exact, and skips summing
            # the whole ring (a denial key crosses a bucket on nearly every decision). A
            # sparse key mostly drops empty buckets: those are neither subtracted nor
            # rewritten (denial rate detector 0.66 -> 0.60 us an event, bench dataset).
            total0, total1 = self.total0, self.total1
            for bucket in range(head + 1, idx + 1):
                offset = (bucket % size) * 2
                value = cells[offset]
                if value:
                    total0 -= value
                    cells[offset] = 0
                value = cells[offset + 1]
                if value:
                    total1 -= value
                    cells[offset + 1] = 0
            self.total0, self.total1 = total0, total1
        elif self.width == 2:
            for bucket in range(head + 1, idx + 1):
                offset = (bucket % size) * 2
                cells[offset] = cells[offset + 1] = 0
            # Floats: recomputed rather than decremented so rounding cannot accumulate;
            # this runs once per bucket crossing, not per event.
            self.total0, self.total1 = sum(cells[0::2]), sum(cells[1::2])
        elif counts:
            total0 = self.total0
            for bucket in range(head + 1, idx + 1):
                offset = bucket % size
                value = cells[offset]
                if value:
                    total0 -= value
                    cells[offset] = 0
            self.total0 = total0
        else:
            if idx == head + 1:  # the usual crossing: one bucket
                cells[idx % size] = 0
            else:
                for bucket in range(head + 1, idx + 1):
                    cells[bucket % size] = 0
            # Floats: recomputed, as above.
            self.total0 = sum(cells)
        if not (self.total0 or self.total1):
            self.cells, self.total0, self.total1 = None, 0, 0
            return True
        return False

    def add(self, ts: int, quantity: int, amount: float) -> bool:
        """Add ``amount`` of quantity ``quantity`` at event time ``ts``.

        False when ``ts`` is older than the whole window: that event cannot affect any read.
        """
        bucket = ts // self.bucket_ms
        head = self.head
        if bucket != head:
            if bucket > head:
                self.advance(ts)
            elif bucket <= head - self.size:
                return False
        cells = self.cells
        if cells is None:
            cells = self.cells = array(self.typecode, (0,)) * (self.size * self.width)
        cells[bucket % self.size * self.width + quantity] += amount
        if quantity:
            self.total1 += amount
        else:
            self.total0 += amount
        return True

    def add2(self, ts: int, first: float, second: float) -> bool:
        """``add`` of quantities 0 and 1 at once (a width-2 ring), for the hot path."""
        bucket = ts // self.bucket_ms
        head = self.head
        if bucket != head:
            if bucket > head:
                self.advance(ts)
            elif bucket <= head - self.size:
                return False
        cells = self.cells
        if cells is None:
            cells = self.cells = array(self.typecode, (0,)) * (self.size * 2)
        offset = bucket % self.size * 2
        cells[offset] += first
        cells[offset + 1] += second
        self.total0 += first
        self.total1 += second
        return True

    def to_state(self) -> list[float]:
        if self.cells is None:
            return [self.bucket_ms, self.size, self.head]
        totals = [self.total0, self.total1][: self.width]
        return [self.bucket_ms, self.size, self.head, *totals, *self.cells]

    @classmethod
    def from_state(
        cls,
        state: list,
        window_ms: int,
        size: int,
        width: int = 1,
        counts: bool = False,
        single: bool = False,
    ) -> BucketRing:
        ring = cls(window_ms, size, width, counts, single)
        if int(state[0]) != ring.bucket_ms or int(state[1]) != size:
            return ring  # the policy changed the window's geometry: start it afresh
        ring.head = int(state[2])
        if len(state) == 3 + width + size * width:
            ring.total0 = state[3]
            if width == 2:
                ring.total1 = state[4]
            if counts:  # counts stay ints (``advance`` subtracts from them)
                ring.total0, ring.total1 = int(ring.total0), int(ring.total1)
            ring.cells = array(ring.typecode, state[3 + width :])
        return ring


class EwmaBaseline:
    """Exponentially weighted average of per-period totals: an agent's usual amount.

    A period is folded in once the watermark is past its end by more than the grace, so no
    on-time event can still land in it. Periods with nothing in them are skipped rather than
    folded as zeros: a bursty (cron-like) agent is compared with its usual *active* rate, not
    with an average diluted by idle hours that would make every burst look like a spike.
    """

    __slots__ = (
        "period_ms",
        "alpha",
        "grace_ms",
        "value",
        "periods",
        "open_from",
        "open_sums",
        "fold_at",
    )

    def __init__(self, period_ms: int, alpha: float, grace_ms: int) -> None:
        self.period_ms = period_ms
        self.alpha = alpha
        self.grace_ms = grace_ms
        self.value = -1.0  # negative: no period folded yet
        self.periods = 0
        self.open_from = NO_TIME  # first period not folded yet
        self.open_sums: list[float] = []  # totals of periods open_from, open_from + 1, ...
        self.fold_at = NO_DEADLINE  # watermark from which ``advance`` has something to fold

    @property
    def baseline(self) -> float | None:
        return None if self.value < 0 else self.value

    def add(self, ts: int, amount: float) -> None:
        period = ts // self.period_ms
        sums = self.open_sums
        if self.open_from == NO_TIME:
            self._open(period)
        k = period - self.open_from
        if k < 0:
            # An on-time event older than the first one seen: only possible before anything
            # was folded, so the earlier period is still open.
            sums[0:0] = [0.0] * -k
            self._open(period)
            k = 0
        while len(sums) <= k:
            sums.append(0.0)
        sums[k] += amount

    def advance(self, watermark: int) -> None:
        closed_below = (watermark - self.grace_ms) // self.period_ms
        if self.open_from == NO_TIME or self.open_from >= closed_below:
            return
        sums = self.open_sums
        n = min(closed_below - self.open_from, len(sums))
        alpha = self.alpha
        for total in sums[:n]:
            if total > 0:
                self.value = total if self.value < 0 else alpha * total + (1 - alpha) * self.value
                self.periods += 1
        del sums[:n]
        self._open(closed_below)

    def _open(self, period: int) -> None:
        self.open_from = period
        self.fold_at = (period + 1) * self.period_ms + self.grace_ms

    def to_state(self) -> list[float]:
        return [self.period_ms, self.value, self.periods, self.open_from, *self.open_sums]

    @classmethod
    def from_state(cls, state: list, period_ms: int, alpha: float, grace_ms: int) -> EwmaBaseline:
        baseline = cls(period_ms, alpha, grace_ms)
        if int(state[0]) != period_ms:
            return baseline  # period indexes of another length mean nothing now
        baseline.value, baseline.periods = float(state[1]), int(state[2])
        if int(state[3]) != NO_TIME:
            baseline._open(int(state[3]))
        baseline.open_sums = [float(v) for v in state[4:]]
        return baseline


class CoalescedWindows:
    """Sliding windows of several lengths over two quantities, fed through one pending bucket.

    An agent's events mostly land in the same short bucket as the one before. Summing them in
    ``pending`` and pushing the sum into every ring (and the baseline) only when the bucket
    changes turns one ring update per window per event into one addition per event.

    Exact, not approximate: the pending bucket is always the watermark's bucket of width
    ``fine_ms``, the gcd of all bucket and period lengths, so it lies inside the newest bucket
    of every ring and inside a baseline period that cannot be folded yet. A read is the ring's
    total plus the pending amount of its quantity. A late event from an older bucket goes
    straight into the rings.
    """

    __slots__ = (
        "rings",
        "quantities",
        "baseline",
        "baseline_quantity",
        "fine_ms",
        "bucket",
        "pending",
        "pairs",
    )

    def __init__(
        self,
        rings: tuple[BucketRing, ...],
        quantities: tuple[int, ...],
        baseline: EwmaBaseline,
        baseline_quantity: int,
    ) -> None:
        if any(r.width != 1 or r.typecode == "I" for r in rings):
            raise ValueError("coalesced windows are rings of one float quantity each")
        self.rings = rings
        self.quantities = quantities  # quantity (0 or 1) each ring sums
        self.pairs = tuple(zip(rings, quantities, strict=True))
        self.baseline = baseline
        self.baseline_quantity = baseline_quantity
        self.fine_ms = reduce(gcd, [r.bucket_ms for r in rings], baseline.period_ms)
        self.bucket = NO_TIME
        self.pending = [0.0, 0.0]

    def add(self, ts: int, now: int, first: float, second: float) -> None:
        """Count amounts of both quantities at ``ts``; ``now`` is the watermark."""
        fine_ms = self.fine_ms
        bucket = now // fine_ms
        if bucket != self.bucket:
            self._flush(now, bucket)
        if ts // fine_ms == bucket:
            pending = self.pending
            pending[0] += first
            pending[1] += second
        else:
            amounts = (first, second)
            for ring, quantity in zip(self.rings, self.quantities, strict=True):
                if amounts[quantity]:
                    ring.add(ts, 0, amounts[quantity])
            if amounts[self.baseline_quantity]:
                self.baseline.add(ts, amounts[self.baseline_quantity])
        if now >= self.baseline.fold_at:
            self.baseline.advance(now)

    def total(self, ring: int) -> float:
        return self.rings[ring].total0 + self.pending[self.quantities[ring]]

    def advance(self, now: int) -> bool:
        """Expire up to ``now``; returns whether every window is empty."""
        bucket = now // self.fine_ms
        if bucket != self.bucket:
            self._flush(now, bucket)
        if now >= self.baseline.fold_at:
            self.baseline.advance(now)
        for ring in self.rings:
            if ring.cells is not None:
                return False
        return not any(self.pending)

    def _flush(self, now: int, bucket: int) -> None:
        # Sparse agents (an event every few seconds) flush at nearly every event, so the
        # rings' add and advance are inlined for their usual cases (measured: a third of the
        # spend detector's time on the 10M-step bench dataset; iterating prebuilt (ring,
        # quantity) pairs instead of a strict zip: spend 1.25 -> 1.11 us an event). Each ring
        # is independent, so adding to and advancing one ring before the next is the same as
        # add all, advance all.
        # Every ring holds one float quantity (checked in __init__): cell ``index % size``.
        pending = self.pending
        first, second = pending
        if first or second:
            ts = self.bucket * self.fine_ms
            for ring, quantity in self.pairs:
                amount = second if quantity else first
                bucket_ms = ring.bucket_ms
                if amount:
                    index = ts // bucket_ms
                    cells = ring.cells
                    if index == ring.head and cells is not None:
                        cells[index % ring.size] += amount
                        ring.total0 += amount
                    else:
                        ring.add(ts, 0, amount)
                idx = now // bucket_ms
                head = ring.head
                if idx > head:
                    # BucketRing.advance for a ring of one float quantity, inlined: a spike
                    # window's 30 s buckets move at nearly every flush of a sparse agent (the
                    # call and its type tests: ~4 % of a replay's py-spy samples on the 2M
                    # bench dataset). The same steps and values.
                    ring.head = idx
                    cells = ring.cells
                    if cells is not None:
                        size = ring.size
                        if idx - head >= size:
                            ring.cells, ring.total0, ring.total1 = None, 0, 0
                        else:
                            if idx == head + 1:
                                cells[idx % size] = 0
                            else:
                                for dropped in range(head + 1, idx + 1):
                                    cells[dropped % size] = 0
                            # Recomputed, not decremented, as BucketRing.advance does.
                            ring.total0 = total = sum(cells)
                            if not (total or ring.total1):
                                ring.cells, ring.total0, ring.total1 = None, 0, 0
            amount = second if self.baseline_quantity else first
            if amount:
                self.baseline.add(ts, amount)
            pending[0] = pending[1] = 0.0
        else:
            for ring in self.rings:
                # advance's own first test, inlined: long buckets (an hour, a day) rarely move.
                if now // ring.bucket_ms > ring.head:
                    ring.advance(now)
        self.bucket = bucket

    def to_state(self) -> list:
        return [
            self.fine_ms,
            self.bucket,
            *self.pending,
            [ring.to_state() for ring in self.rings],
            self.baseline.to_state(),
        ]

    def restore(self, state: list) -> None:
        """Load ``to_state`` output into windows built from the current policy."""
        rings = state[4]
        if int(state[0]) != self.fine_ms or len(rings) != len(self.rings):
            return  # the policy changed the windows: they start empty
        self.bucket = int(state[1])
        self.pending = [float(state[2]), float(state[3])]
        self.rings = tuple(
            BucketRing.from_state(
                ring_state, ring.window_ms, ring.size, single=ring.typecode == "f"
            )
            for ring_state, ring in zip(rings, self.rings, strict=True)
        )
        self.pairs = tuple(zip(self.rings, self.quantities, strict=True))
        base = self.baseline
        self.baseline = EwmaBaseline.from_state(state[5], base.period_ms, base.alpha, base.grace_ms)
