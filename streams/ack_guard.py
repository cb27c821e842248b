"""Only records Tripwire has stored may be acknowledged to Faust.

Faust's stream loop acks a record it *skips* because it was fetched under an older consumer
generation (a rebalance happened in between) or while flow control was paused, without any
agent seeing it. Faust expects to seek back to the committed offset after the rebalance, but
if its next commit includes the skipped offset first, that record is never processed: seen
once in CI as 5 of 12,000 events missing after a SIGKILL and restart. For Tripwire's topics
an ack therefore only counts once the sink buffer has stored the record. A skipped record
stays unacked, so no commit passes it, and the consumer is sought back to it so it is
fetched again (leaving it to Faust stalled a partition's commits in CI instead: no second
rebalance came to re-deliver it). Re-fetched records that were already handled are
deduplicated by the sink and by the per-agent applied offsets.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from faust.transport.consumer import Consumer

log = logging.getLogger("tripwire.streams")

_original_ack = Consumer.ack
_guarded_topics: frozenset[str] = frozenset()
_stored: set[tuple[Any, int]] = set()
_rewind: dict[Any, int] = {}
_tasks: set[asyncio.Task[None]] = set()


_original_new_offset = Consumer._new_offset


def guard_acks(topics: set[str]) -> None:
    """Install the guard for these topics (idempotent; one app per process)."""
    global _guarded_topics
    _guarded_topics = frozenset(topics)
    Consumer.ack = _ack  # type: ignore[method-assign]
    Consumer._new_offset = _new_offset  # type: ignore[method-assign]


def _new_offset(self: Consumer, tp: Any) -> int | None:
    """Commit only a run of acks that starts exactly at the committed position.

    Faust's own rule tolerates a one-record gap at the head and commits blind while the
    position is unknown; either can commit past a record that was never stored (seen in
    tests: up to 146 events lost after a SIGKILL and restart).

    Offsets that will never arrive (a transactional producer's commit markers, a compacted
    log's holes) must not stall the partition, so like Faust's rule this one fills the run
    with the offsets Faust recorded in ``_gap`` when the fetched sequence jumped over them.
    Faust's gap interval also covers the record that arrived after the jump (``_add_gap(tp,
    last + 1, offset)`` adds ``[last + 1, offset + 1)``), and a commit can run before that
    record is handled, so a gap offset only counts once a later record has been acked and no
    record delivered at that offset is still unacked: Kafka delivers a partition in order, so
    by then anything at that offset would have been seen.
    """
    if tp.topic not in _guarded_topics:
        return _original_new_offset(self, tp)
    committed = self._committed_offset.get(tp)
    acked = self._acked.get(tp)
    if committed is None or not acked:
        return None
    acked.sort()
    # An ack below the committed position is already committed (e.g. a record re-fetched and
    # stored twice); left at the head it would hold every later commit back.
    below = 0
    while below < len(acked) and acked[below] < committed:
        below += 1
    if below:
        self._acked_index[tp].difference_update(acked[:below])
        del acked[:below]
        if not acked:
            return None
    fillers = _never_arriving(self, tp, committed, acked[-1])
    position = committed
    taken = 0
    while True:
        if taken < len(acked) and acked[taken] == position:
            taken += 1
        elif position in fillers:
            pass
        else:
            break
        position += 1
    if position == committed:
        return None
    run = acked[:taken]
    del acked[:taken]
    self._acked_index[tp].difference_update(run)
    if fillers:
        self._gap[tp].chop(0, position)
    return position


def _never_arriving(consumer: Consumer, tp: Any, committed: int, last_acked: int) -> set[int]:
    """Gap offsets between the committed position and the last ack that no record holds.

    Faust's ``_add_gap`` starts a gap no lower than ``committed + 1`` (it reads the committed
    offset as the last one handled, but it is the next one to read), so a jump over the record
    at the committed position itself is recorded from the one after it. A gap that starts
    exactly there is therefore taken to start one lower; the record at the committed position,
    if it was delivered, is still acked or unacked, and is then not filled.
    """
    gap = consumer._gap.get(tp)
    if not gap:
        return set()
    fillers = {o for iv in gap.overlap(committed, last_acked + 1)
               for o in range(max(iv.begin - (iv.begin == committed + 1), committed),
                              min(iv.end, last_acked))}
    if fillers:
        fillers -= {m.offset for m in consumer._unacked_messages if m.tp == tp}
    return fillers


def stored(tp: Any, offset: int) -> None:
    """The record at (tp, offset) is stored: its ack may now reach the commit."""
    _stored.add((tp, offset))


def _ack(self: Consumer, message: Any) -> bool:
    if message.topic in _guarded_topics:
        key = (message.tp, message.offset)
        if key not in _stored:
            _schedule_rewind(self, message.tp, message.offset)
            return False
        _stored.discard(key)
    return _original_ack(self, message)


def _schedule_rewind(consumer: Consumer, tp: Any, offset: int) -> None:
    first = tp not in _rewind
    _rewind[tp] = min(offset, _rewind.get(tp, offset))
    if first:
        task = asyncio.get_event_loop().create_task(_rewind_soon(consumer, tp))
        _tasks.add(task)
        task.add_done_callback(_tasks.discard)


async def _rewind_soon(consumer: Consumer, tp: Any) -> None:
    # Let the rebalance that caused the skip settle, then fetch from the skipped record on.
    await asyncio.sleep(0.5)
    offset = _rewind.pop(tp)
    try:
        await consumer.seek(tp, offset)
        log.warning("re-fetching %s from offset %d: Faust skipped it across a rebalance",
                    tp, offset)
    except Exception as exc:  # noqa: BLE001 - a revoked partition is re-read by its new owner
        log.warning("could not rewind %s to %d (%s); its owner re-reads from the commit",
                    tp, offset, exc)


async def learn_start(consumer: Consumer, tp: Any) -> int:
    """The committed position of a partition this group has never committed: its log start,
    where the consumer starts reading it. Until it is known the guard commits nothing there
    (``_new_offset``); the feed asks at a partition's first fetch (``streams/step_feed.py``)
    rather than leaving it to the healer's next check (every 2 s), which held a fresh group's
    first commit back by up to that long (first commits 3.8-6.7 s after the first fetch,
    measured on bench drains)."""
    earliest = (await consumer.earliest_offsets(tp))[tp]
    committed = consumer._committed_offset.get(tp)
    if committed is None:  # unless a commit came meanwhile
        consumer._committed_offset[tp] = committed = earliest
    return committed


class CommitGapHealer:
    """Re-fetches records that would otherwise block a partition's commits forever.

    On a restart Faust resumes fetching before its post-recovery seek; a fetch already in
    flight can then move the read position past the sought offset and the record there is
    dropped as "already read" (seen in tests: one partition's commit stuck at one offset while
    everything after it was processed). Faust only commits a contiguous run of acks, so that
    partition would lag forever. When the same gap at the head of a partition's acks survives
    two checks, this seeks back to the first missing offset; the re-read records are
    deduplicated by the sink and by the per-agent applied offsets.
    """

    def __init__(self, topics: set[str]) -> None:
        self.topics = frozenset(topics)
        self._seen: dict[Any, tuple[int, int]] = {}

    async def check(self, consumer: Consumer) -> None:
        acked_by_tp: dict[Any, list[int]] = consumer._acked
        committed_by_tp: dict[Any, int | None] = consumer._committed_offset
        for tp, acked in list(acked_by_tp.items()):
            if tp.topic not in self.topics or not acked:
                self._seen.pop(tp, None)
                continue
            committed = committed_by_tp.get(tp)
            if committed is None:
                committed = await learn_start(consumer, tp)
            head = min(acked)
            if head <= committed:
                self._seen.pop(tp, None)
                continue
            earliest = (await consumer.earliest_offsets(tp))[tp]
            if committed < earliest <= head:
                # Retention deleted the records from the committed position on: they will
                # never arrive, and seeking back to them lands on the log start anyway.
                log.warning("%s: committed offset %d is below the log start %d; records in "
                            "between were deleted by retention", tp, committed, earliest)
                committed_by_tp[tp] = committed = earliest
                if head <= committed:
                    self._seen.pop(tp, None)
                    continue
            gap = (committed, head)
            if self._seen.get(tp) != gap:
                self._seen[tp] = gap  # may still fill by itself: look again next time
                continue
            self._seen.pop(tp, None)
            try:
                await consumer.seek(tp, committed)
                log.warning("re-fetching %s from offset %d: offsets %d-%d were never "
                            "delivered (Faust fetch/seek race)", tp, committed, committed,
                            head - 1)
            except Exception as exc:  # noqa: BLE001 - a revoked partition is re-read by its owner
                log.warning("could not re-fetch %s from %d: %s", tp, committed, exc)
