"""The ack guard's commit rule against a fake Faust consumer: it never commits past a record that
is not stored, and it never stalls on offsets that will never arrive.

The fake carries exactly the bookkeeping Faust's ``Consumer`` keeps (``_acked``,
``_acked_index``, ``_committed_offset``, ``_gap``, ``_unacked_messages``...); that those
attributes still exist in the installed Faust is tests/test_patched_internals.py's job.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from faust.types import TP
from hypothesis import given, settings
from hypothesis import strategies as st
from intervaltree import IntervalTree

from tripwire.streams import ack_guard

TOPIC = "agent-steps"
PART = TP(TOPIC, 0)


@dataclass(eq=False)
class Message:
    tp: Any
    offset: int
    acked: bool = False

    @property
    def topic(self) -> str:
        return self.tp.topic


class Topics:
    @staticmethod
    def acks_enabled_for(topic: str) -> bool:
        return True


class App:
    topics = Topics()


class FakeConsumer:
    """Faust's consumer bookkeeping, with its own ``_add_gap`` rule: ``[last + 1, offset + 1)``."""

    def __init__(self, committed: int | None = 0) -> None:
        self.app = App()
        self._acked: dict[Any, list[int]] = defaultdict(list)
        self._acked_index: dict[Any, set[int]] = defaultdict(set)
        self._committed_offset: dict[Any, int | None] = defaultdict(lambda: None)
        self._committed_offset[PART] = committed
        self._gap: dict[Any, IntervalTree] = defaultdict(IntervalTree)
        self._unacked_messages: set[Message] = set()
        self._n_acked = 0
        self._waiting_for_ack = None
        self._read: int | None = None
        self.sought: list[tuple[Any, int]] = []
        self.log_start = 0

    def deliver(self, offset: int) -> Message:
        """What Faust's fetcher does with a record: record a jump as a gap, track the message."""
        if self._read is not None and offset - self._read > 1:
            committed = self._committed_offset[PART]
            start = self._read + 1 if committed is None else max(self._read + 1, committed + 1)
            self._gap[PART].addi(start, offset + 1)
            self._gap[PART].merge_overlaps()
        self._read = offset
        message = Message(PART, offset)
        self._unacked_messages.add(message)
        return message

    def store_and_ack(self, message: Message) -> bool:
        ack_guard.stored(message.tp, message.offset)
        return ack_guard._ack(self, message)  # type: ignore[arg-type]

    def commit(self) -> int | None:
        new = ack_guard._new_offset(self, PART)  # type: ignore[arg-type]
        if new is not None:
            self._committed_offset[PART] = new
        return new

    async def earliest_offsets(self, *tps: Any) -> dict[Any, int]:
        return {tp: self.log_start for tp in tps}

    async def seek(self, tp: Any, offset: int) -> None:
        self.sought.append((tp, offset))


def setup_module() -> None:
    ack_guard.guard_acks({TOPIC})


def test_contiguous_acks_commit_one_past_the_last() -> None:
    c = FakeConsumer(committed=0)
    for m in [c.deliver(o) for o in range(5)]:
        assert c.store_and_ack(m)
    assert c.commit() == 5
    assert c._acked[PART] == [] and c._acked_index[PART] == set()


def test_a_hole_at_the_head_holds_the_commit() -> None:
    c = FakeConsumer(committed=0)
    messages = [c.deliver(o) for o in range(4)]
    for m in messages[1:]:
        c.store_and_ack(m)
    assert c.commit() is None  # offset 0 was delivered but is not stored yet
    c.store_and_ack(messages[0])
    assert c.commit() == 4


def test_offsets_that_never_arrive_do_not_stall_the_partition() -> None:
    # 3 and 4 are a transaction marker and a compacted record: the fetch jumps from 2 to 5.
    c = FakeConsumer(committed=0)
    for o in (0, 1, 2, 5, 6):
        c.store_and_ack(c.deliver(o))
    assert c.commit() == 7
    assert not c._gap[PART].overlaps(0, 7), "used gap ranges are chopped off"


def test_the_record_after_a_jump_is_not_taken_for_a_gap_before_it_is_stored() -> None:
    # Faust's gap interval for the jump 2 -> 5 is [3, 6): it includes 5 itself, which is
    # delivered but not yet handled when a commit runs.
    c = FakeConsumer(committed=0)
    for o in (0, 1, 2):
        c.store_and_ack(c.deliver(o))
    late = c.deliver(5)
    assert c.commit() == 3
    assert c.commit() is None
    c.store_and_ack(late)
    assert c.commit() == 6


def test_a_gap_offset_still_unacked_is_never_filled() -> None:
    # Re-delivered after a rewind: 4 arrives again, unacked, while a later record is stored.
    c = FakeConsumer(committed=0)
    for o in (0, 1, 2):
        c.store_and_ack(c.deliver(o))
    c._gap[PART].addi(3, 6)
    pending = c.deliver(4)
    c._read = 5
    c.store_and_ack(c.deliver(6))
    assert c.commit() == 4  # 3 never arrives; 4 is pending
    c.store_and_ack(pending)
    assert c.commit() == 7


def test_committed_offset_below_the_log_start_moves_to_it() -> None:
    # Retention deleted 10..49 while the group was away: they will never be delivered.
    c = FakeConsumer(committed=10)
    c.log_start = 50
    for o in range(50, 56):
        c.store_and_ack(c.deliver(o))
    assert c.commit() is None
    asyncio.run(ack_guard.CommitGapHealer({TOPIC}).check(c))  # type: ignore[arg-type]
    assert c._committed_offset[PART] == 50 and c.sought == []
    assert c.commit() == 56


def test_a_hole_above_the_log_start_is_re_fetched_not_skipped() -> None:
    c = FakeConsumer(committed=10)
    for o in range(12, 15):
        c.store_and_ack(c.deliver(o))
    healer = ack_guard.CommitGapHealer({TOPIC})
    asyncio.run(healer.check(c))  # type: ignore[arg-type]
    assert c.sought == []  # first sighting: the gap may fill by itself
    asyncio.run(healer.check(c))  # type: ignore[arg-type]
    assert c.sought == [(PART, 10)] and c._committed_offset[PART] == 10


@st.composite
def schedules(draw: st.DrawFn) -> tuple[list[int], list[tuple[str, int]]]:
    """A log (existing offsets, some never arriving) and an interleaving of stores and commits."""
    n = draw(st.integers(1, 40))
    # The first record exists: a jump is only known once a record before it was read.
    existing = [o for o in range(n) if draw(st.booleans()) or o in (0, n - 1)]
    ops = draw(st.lists(st.tuples(st.sampled_from(["deliver", "store", "commit"]),
                                  st.integers(0, 10_000)), max_size=150))
    return existing, ops


@settings(max_examples=300, deadline=None)
@given(schedules())
def test_commit_never_passes_an_unstored_record_and_reaches_the_end(
        schedule: tuple[list[int], list[tuple[str, int]]]) -> None:
    existing, ops = schedule
    c = FakeConsumer(committed=0)
    to_deliver = list(existing)  # Kafka delivers a partition in order
    delivered: list[Message] = []
    stored: set[int] = set()

    def check() -> None:
        position = c._committed_offset[PART]
        # Brute force: every record below the committed position is stored.
        assert all(o in stored for o in existing if o < position), (position, stored)

    for op, pick in ops:
        if op == "deliver" and to_deliver:
            delivered.append(c.deliver(to_deliver.pop(0)))
        elif op == "store" and delivered:
            m = delivered.pop(pick % len(delivered))
            c.store_and_ack(m)
            stored.add(m.offset)
        elif op == "commit":
            c.commit()
        check()
    for o in to_deliver:
        delivered.append(c.deliver(o))
    for m in delivered:
        c.store_and_ack(m)
        stored.add(m.offset)
        c.commit()
        check()
    c.commit()
    assert c._committed_offset[PART] == existing[-1] + 1
