"""agent-steps records in whole fetches, below Faust's per-message path.

Faust hands a stream one record at a time: a Message and an Event per record, the
conductor's callback, the stream's queue and iterator, one ack each. Profiled (py-spy) on a
worker draining one JSON event per record, that machinery took about as much of the main
thread as decoding, detection and publishing together: a cost per *record*, so every producer
that is not the batching SDK paid it per *event*.

So the agent-steps records of each fetch the Faust consumer already makes are taken out of
it before Faust turns them into messages, after the same checks Faust applies (flow active,
partition active, not before the read position), and queued whole for one task that hands
them to the detectors as a batch. Nothing else changes hands: Faust keeps the consumer group,
partition assignment (the state table's changelog partitions follow agent-steps'),
recovery, commits and the app's lifecycle, and every other topic (operator commands,
changelogs) takes its ordinary path. An ack here is one call per batch that puts its offsets
where Faust's own acks go, so commits still go through the ack guard
(``streams/ack_guard.py``): a contiguous run of stored records from the committed position.

Rebalances: the queue is emptied when partitions are revoked, and a batch is only handed on
if it was fetched under the consumer generation that is current and while flow is active;
anything dropped was never acked, and after every rebalance Faust seeks each assigned
partition back to its committed offset, so it is fetched again. Re-fetched records that were
already handled are deduplicated by the per-agent applied offsets and by the sink.

Below that, ``streams/fetch_batches.py`` has aiokafka unpack these topics' fetched record
batches into lists of plain record tuples instead of a ``ConsumerRecord`` per record; the feed
takes either form and hands on record tuples.

Pinned to faust-streaming 0.15.x on aiokafka 0.14.x: this relies on ``Consumer``'s
``_wait_next_records``, ``_read_offset``, ``_add_gap``, ``_acked``, ``_acked_index``,
``_committed_offset``, ``flow_active`` and the app's ``consumer_generation_id``;
``tests/test_faust_contract.py`` checks each one, so an upgrade fails there first.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import chain
from typing import TYPE_CHECKING, Any

from faust.transport.consumer import Consumer
from faust.types.tuples import ack_lock

from tripwire.streams import fetch_batches
from tripwire.streams.ack_guard import learn_start

if TYPE_CHECKING:
    from tripwire.streams.step_processor import RecordTuple

_original_wait_next_records = Consumer._wait_next_records
_feed: StepFeed | None = None
log = logging.getLogger("tripwire.streams")

FIRST_TAKE = "first agent-steps records taken at"
"""Logged once per process, with the time in UTC for a reader and in epoch seconds for
``tripwire bench``, which starts timing a drain there (``bench/pipeline.py: drain_rate``;
read back with :func:`first_take_time`)."""


def first_take_line(now: float) -> str:
    """The line logged at the first take, ``now`` being ``time.time()``."""
    now = round(now, 3)
    utc = datetime.fromtimestamp(now, UTC).isoformat(timespec="milliseconds")
    return f"{FIRST_TAKE} {utc.replace('+00:00', 'Z')} (epoch {now:.3f} s)"


def first_take_time(line: str) -> float | None:
    """The epoch seconds in a line :func:`first_take_line` wrote, None in any other line."""
    if FIRST_TAKE not in line or "(epoch " not in line:
        return None
    return float(line.rsplit("(epoch ", 1)[1].split()[0])


@dataclass(slots=True)
class FetchedBatch:
    """The records of the tapped topics from one fetch."""

    generation: int
    records: dict[Any, list[RecordTuple]]
    """TopicPartition -> its records in offset order."""

    def count(self) -> int:
        return sum(len(r) for r in self.records.values())


class StepFeed:
    """Whole fetches of ``topics``' records, for one consuming task (one app per process)."""

    def __init__(self, topics: Iterable[str], max_pending: int = 4) -> None:
        self.topics = frozenset(topics)
        # Back-pressure: while this many fetches wait, the next one waits to be queued and
        # Faust's fetcher with it, as Faust's own stream buffer would hold it.
        self._queue: asyncio.Queue[FetchedBatch] = asyncio.Queue(max_pending)
        self.dropped_records = 0
        self._first_taken = False
        self._learning: set[Any] = set()
        """Partitions whose never-committed start is being looked up (``learn_start``)."""

    def install(self) -> None:
        """Tap every Faust consumer of this process (idempotent)."""
        global _feed
        _feed = self
        Consumer._wait_next_records = _wait_next_records  # type: ignore[method-assign]
        fetch_batches.install(self.topics)

    async def take(self, consumer: Consumer, max_records: int) -> FetchedBatch:
        """Wait for the next fetched records, plus whatever else is queued (up to about
        ``max_records``), as one list per partition; stale fetches are dropped."""
        out = FetchedBatch(-1, {})
        n = 0
        while not out.records:
            batch = await self._queue.get()
            while True:
                if current(consumer, batch.generation):
                    out.generation = batch.generation
                    for tp, records in batch.records.items():
                        out.records.setdefault(tp, []).extend(records)
                    n += batch.count()
                else:
                    self.dropped_records += batch.count()
                if n >= max_records or self._queue.empty():
                    break
                batch = self._queue.get_nowait()
        if not self._first_taken:
            self._first_taken = True
            log.info("%s", first_take_line(time.time()))
        return out

    def _learned(self, tp: Any, task: asyncio.Future[int]) -> None:
        self._learning.discard(tp)
        if not task.cancelled() and task.exception() is not None:
            # The healer's next check asks again; nothing is committed there meanwhile.
            log.warning("could not read the log start of %s: %r", tp, task.exception())

    def clear(self) -> int:
        """Forget queued fetches (partitions were revoked); the number of records dropped."""
        n = 0
        while not self._queue.empty():
            n += self._queue.get_nowait().count()
        self.dropped_records += n
        return n

    async def _offer(self, consumer: Consumer, records: dict[Any, list[Any]],
                     active: set | None) -> None:
        generation = consumer.app.consumer_generation_id
        flowing = consumer.flow_active
        read_offset = consumer._read_offset
        taken: dict[Any, list[RecordTuple]] = {}
        for tp in [tp for tp in records if tp.topic in self.topics]:
            recs = _record_tuples(records.pop(tp))
            if not flowing or not recs:
                continue  # Faust seeks every partition back to its committed offset
            if active is not None and tp not in active:
                continue  # paused (recovering): Faust drops these too and seeks back later
            r_offset = read_offset[tp]
            if r_offset is not None and recs[0][5] < r_offset:
                recs = [r for r in recs if r[5] >= r_offset]
                if not recs:
                    continue
            if r_offset and recs[-1][5] - r_offset > len(recs):
                await _record_gaps(consumer, tp, r_offset, recs)
            read_offset[tp] = recs[-1][5]
            taken[tp] = recs
            if consumer._committed_offset.get(tp) is None and tp not in self._learning:
                self._learning.add(tp)
                task = asyncio.ensure_future(learn_start(consumer, tp))
                task.add_done_callback(lambda t, tp=tp: self._learned(tp, t))
        if taken:
            await self._queue.put(FetchedBatch(generation, taken))


async def _wait_next_records(self: Consumer, timeout: float) -> tuple[Any, Any]:  # noqa: ASYNC109
    records, active = await _original_wait_next_records(self, timeout)
    if records and _feed is not None:
        await _feed._offer(self, records, active)
    return records, active


async def _record_gaps(consumer: Consumer, tp: Any, last: int, records: list[Any]) -> None:
    """Tell Faust about offsets the fetch jumped over (transaction markers, compacted holes),
    as its own fetch loop does, so the ack guard can commit across them. Unlike Faust's
    interval, this one stops before the record after the jump: that record is delivered, and
    only an ack may count it."""
    for r in records:
        offset = r[5]
        if offset - last > 1:
            await consumer._add_gap(tp, last + 1, offset - 1)
        last = offset


def _record_tuples(fetched: list[Any]) -> list[RecordTuple]:
    """One partition's fetched records as record tuples in offset order: from the lists per
    record batch ``streams/fetch_batches.py`` unpacks, or from aiokafka's ConsumerRecords
    (fetches stored before that tap was in place, or that it leaves to aiokafka)."""
    if not fetched:
        return []
    if type(fetched[0]) is list:
        return fetched[0] if len(fetched) == 1 else list(chain.from_iterable(fetched))
    return [(r.key, r.value, r.headers, r.topic, r.partition, r.offset) for r in fetched]


def current(consumer: Consumer, generation: int) -> bool:
    """Whether records fetched under ``generation`` may still be processed."""
    return consumer.flow_active and generation == consumer.app.consumer_generation_id


def ack_offsets(consumer: Consumer, offsets: Mapping[Any, Sequence[int]]) -> int:
    """Acknowledge stored records by offset, as Faust's ``Consumer.ack`` would one by one
    (offsets below the committed position or already acked are ignored); the number acked."""
    n = 0
    # A partition revoked meanwhile is committed by its new owner; acks left here for it
    # would only wait below its committed offset if it came back.
    assigned = consumer.assignment()
    with ack_lock:
        for tp, offs in offsets.items():
            if tp not in assigned:
                continue
            committed = consumer._committed_offset[tp]
            index = consumer._acked_index[tp]
            acked = consumer._acked[tp]
            for offset in offs:
                if (committed is None or offset >= committed) and offset not in index:
                    index.add(offset)
                    acked.append(offset)
                    n += 1
    return n
