"""``streams/fetch_batches.py`` against aiokafka's own unpacking, on generated record batches:
the same records (key, value, headers, offset) and the same consumed position, through
aiokafka's real ``FetchResult`` and ``SubscriptionState`` (what a drain of a fetch does),
for batches compressed or not, with compacted-away offsets, control batches, a fetch offset
inside the first batch, and a corrupted CRC."""

from __future__ import annotations

import asyncio
import struct
from collections import OrderedDict
from typing import Any

import pytest
from aiokafka.consumer.fetcher import (
    READ_COMMITTED,
    READ_UNCOMMITTED,
    FetchError,
    FetchResult,
    PartitionRecords,
)
from aiokafka.consumer.subscription_state import SubscriptionState
from aiokafka.errors import CorruptRecordException
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from aiokafka.record.memory_records import MemoryRecords
from aiokafka.record.util import calc_crc32c
from aiokafka.structs import TopicPartition
from hypothesis import given, settings
from hypothesis import strategies as st

from tripwire.streams import fetch_batches
from tripwire.streams.fetch_batches import TappedResults, tap, unpack_batches
from tripwire.streams.step_feed import _record_tuples

TP = TopicPartition("agent-steps", 3)
CONTROL = 0x20
ATTRIBUTES_OFFSET = struct.calcsize(">qiibI")
CRC_OFFSET = struct.calcsize(">qiib")

records_in_batch = st.lists(st.tuples(
    st.integers(1, 3),  # offset step (more than 1: offsets compacted away)
    st.one_of(st.none(), st.binary(max_size=8)),
    st.one_of(st.none(), st.binary(max_size=40)),
    st.lists(st.tuples(st.sampled_from(["content-type", "x", ""]),
                       st.one_of(st.none(), st.binary(max_size=6))), max_size=2),
), min_size=1, max_size=12)
batches = st.lists(st.tuples(records_in_batch, st.sampled_from([0, 1, 3]), st.booleans()),
                   min_size=1, max_size=5)


def _log(layout: list[tuple[list[Any], int, bool]], base: int = 100) -> tuple[bytes, int]:
    """Record batches as a fetch response holds them (``control``: a control batch), and the
    offset after the last."""
    out = bytearray()
    offset = base
    for recs, codec, control in layout:
        builder = DefaultRecordBatchBuilder(2, codec, 0, -1, -1, -1, 1 << 20)
        delta = 0
        for step, key, value, headers in recs:
            builder.append(delta, 1_700_000_000_000 + delta, key, value, headers)
            delta += step
        raw = builder.build()
        last_delta = struct.unpack_from(">i", raw, ATTRIBUTES_OFFSET + 2)[0]
        struct.pack_into(">q", raw, 0, offset)
        if control:
            attributes = struct.unpack_from(">h", raw, ATTRIBUTES_OFFSET)[0] | CONTROL
            struct.pack_into(">h", raw, ATTRIBUTES_OFFSET, attributes)
            struct.pack_into(">I", raw, CRC_OFFSET, calc_crc32c(bytes(raw[ATTRIBUTES_OFFSET:])))
        out += raw
        offset += last_delta + 1
    return bytes(out), offset


def _drain(data: bytes, fetch_offset: int, tapped: bool,
           isolation: int = READ_UNCOMMITTED) -> tuple[list[tuple], int]:
    """A fetch of ``data`` at ``fetch_offset`` drained as the fetcher drains it (getall);
    the record tuples and the partition's consumed position after."""
    async def run() -> tuple[list[tuple], int]:
        subscription = SubscriptionState()
        subscription.assign_from_user({TP})
        assignment = subscription.subscription.assignment
        assignment.state_value(TP).seek(fetch_offset)
        records = PartitionRecords(TP, MemoryRecords(data), [], fetch_offset, None, None, True,
                                   isolation)
        result = FetchResult(TP, assignment=assignment, partition_records=records, backoff=0)
        if tapped:
            assert tap(result)
        got = result.getall()
        assert not result.has_more()
        if tapped:
            tuples = _record_tuples(got)
        else:
            tuples = [(r.key, r.value, r.headers, r.topic, r.partition, r.offset) for r in got]
        return ([(k, v, tuple(h), t, p, o) for k, v, h, t, p, o in tuples],
                assignment.state_value(TP).position)

    return asyncio.run(run())


@settings(max_examples=300, deadline=None)
@given(batches, st.data())
def test_batches_unpack_to_aiokafkas_records_and_position(layout: Any,
                                                          data: st.DataObject) -> None:
    log, end = _log(layout)
    fetch_offset = data.draw(st.integers(100, end))
    expected = _drain(log, fetch_offset, tapped=False)
    assert _drain(log, fetch_offset, tapped=True) == expected


def test_a_corrupt_batch_fails_as_aiokafkas_does() -> None:
    log, _ = _log([([(1, b"k", b"v", [])], 0, False)] * 2)
    broken = bytearray(log)
    broken[-1] ^= 0xFF  # the second batch's last byte: its CRC no longer matches
    for tapped in (False, True):
        with pytest.raises(CorruptRecordException):
            _drain(bytes(broken), 100, tapped)


def test_only_the_topics_fetch_results_are_tapped() -> None:
    log, _ = _log([([(1, b"k", b"v", [])], 0, False)])

    def result(tp: TopicPartition, isolation: int = READ_UNCOMMITTED,
               deserializer: Any = None) -> FetchResult:
        records = PartitionRecords(tp, MemoryRecords(log), [], 100, deserializer, None, True,
                                   isolation)
        return FetchResult(tp, assignment=None, partition_records=records, backoff=0)

    results = TappedResults(frozenset({"agent-steps"}))
    other = TopicPartition("agent-commands", 0)
    results[TP] = mine = result(TP)
    results[other] = theirs = result(other)
    results[TopicPartition("agent-steps", 1)] = error = FetchError(error=ValueError(),
                                                                   backoff=0)
    assert mine._partition_records._records_iterator.__name__ == "unpack_batches"
    assert theirs._partition_records._records_iterator.__name__ == "_unpack_records"
    assert results[TopicPartition("agent-steps", 1)] is error
    assert isinstance(results, OrderedDict) and list(results) == [
        TP, other, TopicPartition("agent-steps", 1)]
    # What the unpacking would not reproduce stays aiokafka's.
    assert not tap(result(TP, isolation=READ_COMMITTED))
    assert not tap(result(TP, deserializer=bytes))


def test_the_worker_consumers_fetcher_gets_the_tapped_map() -> None:
    """``_fetch_records`` swaps the map once, keeping what it held, and leaves a consumer
    with ``max_poll_records`` (lists per batch would count as one record) alone."""
    calls = []

    async def original(self: Any, consumer: Any, active: Any,
                       timeout: Any = None,  # noqa: ASYNC109 - Faust's signature
                       max_records: Any = None) -> dict:
        calls.append((active, timeout, max_records))
        return {}

    class Fetcher:
        _records: Any = None

    class Consumer:
        def __init__(self, max_poll_records: int | None) -> None:
            self._fetcher = Fetcher()
            self._fetcher._records = OrderedDict({TP: "held"})
            self._max_poll_records = max_poll_records

    saved = fetch_batches._original_fetch_records, fetch_batches._tapped_topics
    fetch_batches._original_fetch_records = original
    fetch_batches._tapped_topics = frozenset({"agent-steps"})
    try:
        plain, limited = Consumer(None), Consumer(10)
        for c in (plain, limited, plain):
            asyncio.run(fetch_batches._fetch_records(None, c, {TP}, timeout=1.0,
                                                     max_records=c._max_poll_records))
    finally:
        fetch_batches._original_fetch_records, fetch_batches._tapped_topics = saved
    assert type(plain._fetcher._records) is TappedResults
    assert plain._fetcher._records == {TP: "held"}
    assert plain._fetcher._records.topics == {"agent-steps"}
    assert type(limited._fetcher._records) is OrderedDict
    assert calls == [({TP}, 1.0, None), ({TP}, 1.0, 10), ({TP}, 1.0, None)]


def test_unpacking_keeps_the_partitions_position_between_batches() -> None:
    """After each list it hands out, ``next_fetch_offset`` is where aiokafka's own would be
    after the batch's last record: what ``FetchResult.check_assignment`` compares."""
    log, end = _log([([(1, b"k", b"v", [])] * 3, 0, False), ([(2, None, b"w", [])] * 2, 3,
                                                            False)])
    records = PartitionRecords(TP, MemoryRecords(log), [], 101, None, None, True,
                               READ_UNCOMMITTED)
    it = unpack_batches(records)
    assert [r[5] for r in next(it)] == [101, 102]
    assert records.next_fetch_offset == 103
    assert [r[5] for r in next(it)] == [103, 105]
    assert records.next_fetch_offset == end == 106
    assert next(it, None) is None
