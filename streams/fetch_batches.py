"""agent-steps fetch results unpacked a Kafka record batch at a time into plain tuples.

aiokafka turns every fetched record into a ``ConsumerRecord`` (a dataclass of eleven fields,
built by a Python method, its headers copied into a tuple) through a generator the fetcher
resumes once per record; the feed (``streams/step_feed.py``) then read six of those fields
back into the tuple the detectors take. On a backlog of one JSON event per record that was
~2.9 us an event of the worker's interpreter (1.5 of them ``_consumer_record`` and the
per-record generator, measured with a micro-benchmark of the worker's hot path over real
lz4-compressed record batches; py-spy had aiokafka's record building at ~8 % of the worker's
samples during a drain).

Here, for the topics the feed takes, each fetched partition's records come out as one list
of ``(key, value, headers, topic, partition, offset)`` tuples per record batch, built by a
list comprehension over aiokafka's own batch reader (its C extension: decompression, CRC
check, record parsing). Everything around it stays aiokafka's: the fetch requests, the
``FetchResult`` that checks assignment and position before it hands anything out (seeks,
pauses, rebalances), and the consumed position it records afterwards. Only the generator
inside ``PartitionRecords`` is swapped, and it keeps ``next_fetch_offset`` exactly where
aiokafka's own does at every point it yields (after a whole batch), including records before
the fetch offset in a batch (skipped) and control batches (skipped).

Only the Faust worker consumer's fetcher is tapped, and only when the unpacking would give the
same records as aiokafka: read_uncommitted (no aborted-transaction filtering to redo), no key
or value deserializer, no ``max_poll_records`` (a list per batch would count as one record).
Anything not tapped keeps aiokafka's ``ConsumerRecord`` lists, which the feed also takes.

Pinned to aiokafka 0.14.x and faust-streaming 0.15.x: ``tests/test_faust_contract.py``
checks the attributes used here and compares the records and positions with aiokafka's own
unpacking on generated record batches.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Iterator
from typing import Any

from aiokafka.consumer.fetcher import READ_UNCOMMITTED, FetchResult
from aiokafka.errors import CorruptRecordException
from faust.transport.drivers import aiokafka as faust_aiokafka

_original_fetch_records = faust_aiokafka.AIOKafkaConsumerThread._fetch_records
_tapped_topics: frozenset[str] = frozenset()


def install(topics: Iterable[str]) -> None:
    """Unpack ``topics``' records batch by batch in every Faust worker consumer's fetcher
    (idempotent; the feed must take those topics: Faust cannot read the tuples)."""
    global _tapped_topics
    _tapped_topics = frozenset(topics)
    faust_aiokafka.AIOKafkaConsumerThread._fetch_records = _fetch_records


async def _fetch_records(self: Any, consumer: Any, active_partitions: Any,
                         timeout: float | None = None,  # noqa: ASYNC109 - Faust's signature
                         max_records: int | None = None) -> Any:
    fetcher = consumer._fetcher
    results = fetcher._records
    if type(results) is not TappedResults and consumer._max_poll_records is None:
        # Swapped on the consumer thread's loop, between two of its steps: the fetch routine
        # stores each new result through the attribute, so from now on through this mapping.
        fetcher._records = TappedResults(_tapped_topics, results)
    return await _original_fetch_records(self, consumer, active_partitions, timeout=timeout,
                                         max_records=max_records)


class TappedResults(OrderedDict):
    """The fetcher's ``tp -> FetchResult`` map; results stored for the tapped topics are
    unpacked by :func:`unpack_batches` when they are drained."""

    def __init__(self, topics: frozenset[str], results: Any = ()) -> None:
        # What the map holds already stays as it is (the feed takes ConsumerRecords too).
        self.topics: frozenset[str] = frozenset()
        super().__init__(results)
        self.topics = topics

    def __setitem__(self, tp: Any, result: Any) -> None:
        if tp.topic in self.topics and type(result) is FetchResult:
            tap(result)
        super().__setitem__(tp, result)


def tap(result: FetchResult) -> bool:
    """Make ``result`` hand out per-batch tuple lists when it can give the same records as
    aiokafka would; whether it was tapped."""
    records = result._partition_records
    if (records is None or records._isolation_level != READ_UNCOMMITTED
            or records._key_deserializer is not None
            or records._value_deserializer is not None):
        return False
    records._records_iterator = unpack_batches(records)
    return True


def unpack_batches(records: Any) -> Iterator[list[tuple]]:
    """``PartitionRecords``' records, one list of record tuples per record batch, moving its
    ``next_fetch_offset`` as aiokafka's ``_unpack_records`` does (read_uncommitted)."""
    tp = records._tp
    topic, partition = tp.topic, tp.partition
    memory = records._records
    check_crcs = records._check_crcs
    while memory.has_next():
        batch = memory.next_batch()
        if check_crcs and not batch.validate_crc():
            # As aiokafka: the iterator ends here and the partition is fetched again.
            raise CorruptRecordException(f"Invalid CRC - {tp}")
        if batch.is_control_batch:
            records.next_fetch_offset = batch.next_offset
            continue
        # A fetch from inside a (compressed) batch returns the whole batch: its records
        # before the fetch offset were delivered already.
        start = records.next_fetch_offset
        chunk = [(r.key, r.value, r.headers, topic, partition, r.offset)
                 for r in batch if r.offset >= start]
        records.next_fetch_offset = batch.next_offset
        if chunk:
            yield chunk
