"""Per-run state of one agent, kept bounded.

An agent starts runs forever, so run entries must go away: an ended run is kept for
``runs.ttl_after_end_ms`` of event time after its ``run_end`` (its late events still belong
to it) and dropped at the next run start or sweep; a run that goes silent is dropped after
``runs.idle_expiry_ms`` (by then the never-ending-run check has fired); and a cap on open runs
evicts the least recently active one if an agent opens runs faster than they expire.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Generic, TypeVar

NOT_ENDED = -1


class RunEntry:
    """Timing shared by every detector's per-run state."""

    __slots__ = ("first_ts", "last_ts", "ended_ts")

    def __init__(self, ts: int) -> None:
        self.first_ts = ts
        self.last_ts = ts
        self.ended_ts = NOT_ENDED

    @property
    def ended(self) -> bool:
        return self.ended_ts != NOT_ENDED


EntryT = TypeVar("EntryT", bound=RunEntry)


class RunTable(Generic[EntryT]):
    """run_id -> entry, with expiry and an LRU-by-activity cap."""

    __slots__ = ("entries", "max_open", "evicted")

    def __init__(self, max_open: int, evicted: int = 0) -> None:
        self.entries: dict[str, EntryT] = {}
        self.max_open = max_open
        self.evicted = evicted  # runs dropped by the cap while still open, for reporting

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Iterator[tuple[str, EntryT]]:
        return iter(list(self.entries.items()))

    def insert(self, run_id: str, entry: EntryT, watermark: int, ttl_after_end_ms: int) -> None:
        """Add a new run, first dropping ended runs past their TTL: a run start is the
        natural moment (a few per minute), so finished runs do not wait for a sweep."""
        entries = self.entries
        if entries:
            # ``ended_ts`` compared directly rather than through the ``ended`` property: this
            # runs at every run start, for every run kept. A plain loop, not a list
            # comprehension: the table holds one or two runs at a run start (a 1 min TTL), and
            # a comprehension is a function call of its own in CPython 3.11 (``insert`` was 4 %
            # of a replay's py-spy samples on the 2M bench dataset, 3 % after).
            ended_by = watermark - ttl_after_end_ms
            dead: list[str] | None = None
            for r, e in entries.items():
                if NOT_ENDED != e.ended_ts <= ended_by:
                    if dead is None:
                        dead = [r]
                    else:
                        dead.append(r)
            if dead is not None:
                for r in dead:
                    del entries[r]
        if len(entries) >= self.max_open:
            # Ended runs go first (they are only kept for stragglers), then the one that has
            # been quiet longest. O(n) but only when the cap is hit.
            victim = min(entries, key=lambda r: (not entries[r].ended, entries[r].last_ts))
            if not entries[victim].ended:
                self.evicted += 1
            del entries[victim]
        entries[run_id] = entry

    def expire(self, watermark: int, now_ms: int, ttl_after_end_ms: int, idle_ms: int) -> None:
        """Drop runs ended ``ttl_after_end_ms`` before the watermark or idle ``idle_ms``.

        Ended runs expire on the watermark (event time), never on the caller's clock: an
        event of a run can only arrive on time while the watermark is within the grace of
        the run's end, and the TTL is validated to exceed the grace, so a run is never
        forgotten while its on-time stragglers can still show up.
        """
        entries = self.entries
        if not entries:
            return
        # The bounds computed once, not per run (times are ints: the same comparisons).
        ended_by = watermark - ttl_after_end_ms
        idle_by = (now_ms if now_ms > watermark else watermark) - idle_ms
        dead: list[str] | None = None  # a loop, not a comprehension: see ``insert``
        for run_id, entry in entries.items():
            if NOT_ENDED != entry.ended_ts <= ended_by or entry.last_ts <= idle_by:
                if dead is None:
                    dead = [run_id]
                else:
                    dead.append(run_id)
        if dead is not None:
            for run_id in dead:
                del entries[run_id]
