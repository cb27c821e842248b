"""What Tripwire relies on inside Faust and aiokafka, checked against the installed versions.

streams/step_feed.py, streams/ack_guard.py and streams/consumer_fetch.py reach below Faust's
public API (its per-record delivery is the cost they remove, its commit rule the risk the
guard removes). Each private attribute and method they use is asserted here with the shape
they expect, so an upgrade of faust-streaming or aiokafka fails in this file, naming what
moved, before it can lose or double a record. The commit rule itself is checked against a
brute-force reference.
"""

from __future__ import annotations

import asyncio
import inspect
from collections import defaultdict
from typing import Any

import aiokafka
import faust
import pytest
from aiokafka.consumer.fetcher import Fetcher as AIOKafkaFetcher
from aiokafka.structs import ConsumerRecord
from faust.transport import consumer as faust_consumer
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP
from hypothesis import given, settings
from hypothesis import strategies as st

from tripwire.streams import ack_guard, step_feed
from tripwire.streams.step_feed import StepFeed, ack_offsets

TESTED_FAUST = "0.15."
TESTED_AIOKAFKA = "0.14."
STEPS = "agent-steps"


def _params(fn: Any) -> list[str]:
    return list(inspect.signature(fn).parameters)


@pytest.fixture(scope="module")
def consumer() -> Any:
    """A real, unstarted Faust consumer (nothing connects until it starts)."""
    app = faust.App("contract-test", broker="kafka://127.0.0.1:1", store="memory://")
    return app.consumer


def test_versions_are_the_tested_ones() -> None:
    assert faust.__version__.startswith(TESTED_FAUST), (
        f"faust-streaming {faust.__version__}: streams/step_feed.py and ack_guard.py were "
        f"written against {TESTED_FAUST}x; re-check every assertion in this file, then pin")
    assert aiokafka.__version__.startswith(TESTED_AIOKAFKA), (
        f"aiokafka {aiokafka.__version__}: consumer_fetch.py and step_feed.py were written "
        f"against {TESTED_AIOKAFKA}x")


def test_consumer_methods_the_feed_and_guard_replace_or_call() -> None:
    c = faust_consumer.Consumer
    expected = {
        "_wait_next_records": ["self", "timeout"],  # wrapped by step_feed
        "_new_offset": ["self", "tp"],  # replaced by ack_guard
        "ack": ["self", "message"],  # replaced by ack_guard
        "seek": ["self", "partition", "offset"],  # rewinds, gap healer
        "earliest_offsets": ["self", "partitions"],
        "assignment": ["self"],
        "highwater": ["self", "tp"],  # timers run only for partitions read to the end
        "perform_seek": ["self"],
        "_add_gap": ["self", "tp", "offset_from", "offset_to"],  # offsets a fetch jumped
    }
    for name, params in expected.items():
        fn = getattr(c, name, None)
        assert fn is not None, f"faust Consumer.{name} is gone"
        got = [p.lstrip("*") for p in _params(fn)]
        assert got == params, f"faust Consumer.{name}{inspect.signature(fn)}: expected {params}"
    assert inspect.iscoroutinefunction(step_feed._original_wait_next_records), (
        "Consumer._wait_next_records must stay a coroutine: the feed awaits it")
    # The feed sees every fetch only because getmany gets its records from this one method,
    # and Faust must still re-check flow itself after it returns.
    getmany = inspect.getsource(c.getmany)
    assert "await self._wait_next_records(timeout)" in getmany, (
        "Consumer.getmany no longer fetches through _wait_next_records")
    assert "if self.flow_active:" in getmany and "perform_seek" in getmany, (
        "Consumer.getmany no longer seeks back to committed when flow stopped")


def test_consumer_state_the_feed_and_guard_read(consumer: Any) -> None:
    for name, kind in (("_read_offset", defaultdict), ("_acked", defaultdict),
                       ("_acked_index", defaultdict), ("_committed_offset", defaultdict)):
        value = getattr(consumer, name, None)
        assert isinstance(value, kind), f"faust Consumer.{name} is {type(value)}, not {kind}"
    tp = TP(STEPS, 0)
    assert consumer._read_offset[tp] is None and consumer._committed_offset[tp] is None, (
        "unknown partitions must default to None in _read_offset/_committed_offset")
    assert consumer._acked[tp] == [] and consumer._acked_index[tp] == set(), (
        "_acked must map a partition to a list of offsets, _acked_index to a set")
    assert consumer.flow_active is True, "Consumer.flow_active must be a bool, True at start"
    assert isinstance(consumer.app.consumer_generation_id, int), (
        "app.consumer_generation_id must be the consumer group's generation (int)")
    from faust.types.tuples import ack_lock
    assert hasattr(ack_lock, "acquire"), "faust.types.tuples.ack_lock must stay a lock"


def test_revocation_still_forgets_acks_and_offsets() -> None:
    # The feed relies on a revoked partition's acks and offsets being dropped by Faust.
    src = inspect.getsource(faust_consumer.Consumer.on_partitions_revoked)
    for attr in ("_acked", "_acked_index", "_read_offset", "_committed_offset"):
        assert f"self.{attr}.pop(tp" in src, f"on_partitions_revoked no longer pops {attr}"


def test_recovery_seeks_to_committed_after_every_rebalance() -> None:
    # Dropped stale fetches are re-read only because of this seek.
    from faust.tables.recovery import Recovery

    assert "consumer.perform_seek()" in inspect.getsource(Recovery._resume_streams), (
        "Faust's recovery no longer seeks stream partitions to committed offsets")


def test_aiokafka_records_and_fetch_wait() -> None:
    fields = {f for f in ConsumerRecord.__dataclass_fields__}
    needed = {"topic", "partition", "offset", "key", "value", "headers",
              "serialized_value_size"}
    assert needed <= fields, f"aiokafka ConsumerRecord lost {needed - fields}"
    thread = faust_aiokafka.AIOKafkaConsumerThread
    assert _params(thread._create_worker_consumer) == ["self", "transport"], (
        "AIOKafkaConsumerThread._create_worker_consumer changed: consumer_fetch.py wraps it")
    assert "fetch_max_wait_ms=1500" in inspect.getsource(thread._create_worker_consumer)
    assert "self._fetch_max_wait_ms" in inspect.getsource(aiokafka.AIOKafkaConsumer.start), (
        "AIOKafkaConsumer.start no longer reads _fetch_max_wait_ms: consumer_fetch.py sets it")
    assert "fetched_records" in inspect.getsource(thread._fetch_records)
    assert _params(AIOKafkaFetcher.fetched_records)[:2] == ["self", "partitions"]


# --- behaviour, on a real (unstarted) Faust consumer ------------------------------------------


def _record(partition: int, offset: int) -> ConsumerRecord:
    return ConsumerRecord(STEPS, partition, offset, 0, 0, b"k", b"v", None, 1, 1, ())


def _fresh(consumer: Any) -> Any:
    for d in (consumer._read_offset, consumer._acked, consumer._acked_index,
              consumer._committed_offset):
        d.clear()
    consumer.flow_active = True
    return consumer


def test_feed_takes_only_its_topic_and_respects_read_offsets(consumer: Any) -> None:
    c = _fresh(consumer)
    feed = StepFeed({STEPS})
    other = TP("agent-commands", 0)
    records = {TP(STEPS, 0): [_record(0, o) for o in range(5)],
               TP(STEPS, 1): [_record(1, o) for o in range(3)], other: ["untouched"]}
    c._read_offset[TP(STEPS, 1)] = 2  # sought there: offsets 0-1 are stale re-reads

    async def run() -> Any:
        await feed._offer(c, records, None)
        return await feed.take(c, 100)

    batch = asyncio.run(run())
    assert records == {other: ["untouched"]}, "other topics stay on Faust's path"
    # Handed on as record tuples: (key, value, headers, topic, partition, offset).
    assert [r[5] for r in batch.records[TP(STEPS, 0)]] == [0, 1, 2, 3, 4]
    assert [r[5] for r in batch.records[TP(STEPS, 1)]] == [2]
    assert c._read_offset[TP(STEPS, 0)] == 4


def test_feed_drops_fetches_from_an_old_generation_or_stopped_flow(consumer: Any) -> None:
    c = _fresh(consumer)
    feed = StepFeed({STEPS})

    async def run() -> Any:
        await feed._offer(c, {TP(STEPS, 0): [_record(0, 0)]}, None)
        c.app.consumer_generation_id += 1  # a rebalance happened meanwhile
        await feed._offer(c, {TP(STEPS, 0): [_record(0, 1)]}, None)
        c.flow_active = False
        await feed._offer(c, {TP(STEPS, 0): [_record(0, 2)]}, None)  # during a rebalance
        c.flow_active = True
        return await feed.take(c, 100)

    batch = asyncio.run(run())
    assert [r[5] for r in batch.records[TP(STEPS, 0)]] == [1]
    assert feed.dropped_records == 1


@settings(max_examples=200, deadline=None)
@given(start=st.integers(0, 5), batches=st.lists(
    st.lists(st.integers(0, 30), max_size=12), max_size=10))
def test_commits_are_the_contiguous_stored_run(start: int, batches: list[list[int]]) -> None:
    """Whatever order and repetition acks come in (re-fetches store records twice), a commit
    covers exactly the offsets acked without a gap from the committed position."""
    # The guard's rule itself, without installing it (other tests read Faust's own methods).
    guarded, ack_guard._guarded_topics = ack_guard._guarded_topics, frozenset({STEPS})
    try:
        _check_commits(start, batches)
    finally:
        ack_guard._guarded_topics = guarded


def _check_commits(start: int, batches: list[list[int]]) -> None:
    app = faust.App("contract-commit", broker="kafka://127.0.0.1:1", store="memory://")
    c = app.consumer
    tp = TP(STEPS, 0)
    c._committed_offset[tp] = start
    c.assignment = lambda: {tp}  # type: ignore[method-assign]
    committed, seen = start, set()
    for offsets in batches:
        ack_offsets(c, {tp: offsets})
        seen.update(offsets)
        new = ack_guard._new_offset(c, tp)
        expected = committed
        while expected in seen:
            expected += 1
        assert (new or committed) == expected, (offsets, committed, sorted(seen))
        if new is not None:
            committed = c._committed_offset[tp] = new


def test_acks_for_partitions_no_longer_assigned_are_ignored(consumer: Any) -> None:
    c = _fresh(consumer)
    c.assignment = lambda: {TP(STEPS, 0)}  # type: ignore[method-assign]
    try:
        assert ack_offsets(c, {TP(STEPS, 0): [0, 1], TP(STEPS, 1): [0]}) == 2
        assert TP(STEPS, 1) not in c._acked
    finally:
        del c.assignment



def test_feed_records_jumped_offsets_as_gaps_short_of_the_next_record(consumer: Any) -> None:
    """Offsets a fetch jumps over reach Faust's gap intervals, which the ack guard commits
    across; the record after the jump is not in them (only its ack may count it)."""
    c = _fresh(consumer)
    c._gap.clear()
    feed = StepFeed({STEPS})
    tp = TP(STEPS, 0)
    c._read_offset[tp] = 9  # the last record read
    records = {tp: [_record(0, o) for o in (10, 11, 14, 15, 17)]}

    async def run() -> Any:
        await feed._offer(c, records, None)
        return await feed.take(c, 100)

    asyncio.run(run())
    assert sorted(o for iv in c._gap[tp] for o in range(iv.begin, iv.end)) == [12, 13, 16]


def test_aiokafka_fetch_internals_the_batch_unpacking_relies_on() -> None:
    """streams/fetch_batches.py swaps the generator inside PartitionRecords for the feed's
    topics, through the fetcher's result map (tests/test_fetch_batches.py compares what it
    yields with aiokafka's own on generated record batches)."""
    from aiokafka.consumer import fetcher as aiokafka_fetcher

    from tripwire.streams import fetch_batches

    pr = aiokafka_fetcher.PartitionRecords
    assert _params(pr.__init__) == [
        "self", "tp", "records", "aborted_transactions", "fetch_offset", "key_deserializer",
        "value_deserializer", "check_crcs", "isolation_level"]
    init = inspect.getsource(pr.__init__)
    for attr in ("_tp", "_records", "_key_deserializer", "_value_deserializer", "_check_crcs",
                 "_isolation_level", "next_fetch_offset"):
        assert f"self.{attr} = " in init, f"PartitionRecords no longer sets {attr}"
    assert "self._records_iterator = self._unpack_records()" in init
    assert "next(self._records_iterator)" in inspect.getsource(pr.__next__), (
        "PartitionRecords.__next__ no longer reads the swapped generator")
    unpack = inspect.getsource(pr._unpack_records)
    for line in ("if self._check_crcs and not next_batch.validate_crc():",
                 "if next_batch.is_control_batch:",
                 "if record.offset < self.next_fetch_offset:",
                 "self.next_fetch_offset = next_batch.next_offset",
                 "tuple(record.headers)"):
        assert line in unpack + inspect.getsource(pr._consumer_record), (
            f"aiokafka's record unpacking changed ({line!r}): re-check fetch_batches.py")
    result = aiokafka_fetcher.FetchResult
    assert "self._partition_records = partition_records" in inspect.getsource(result.__init__)
    assert "for msg in self._partition_records:" in inspect.getsource(result.getall)
    fetcher = aiokafka_fetcher.Fetcher
    assert "self._records = collections.OrderedDict()" in inspect.getsource(fetcher.__init__)
    assert "self._records[tp] = FetchResult(" in inspect.getsource(
        fetcher._proc_fetch_request), "the fetcher no longer stores results by item assignment"
    assert "self._max_poll_records = max_poll_records" in inspect.getsource(
        aiokafka.AIOKafkaConsumer.__init__)
    thread = faust_aiokafka.AIOKafkaConsumerThread
    original = fetch_batches._original_fetch_records
    assert _params(original) == ["self", "consumer", "active_partitions", "timeout",
                                 "max_records"]
    assert inspect.iscoroutinefunction(original)
    assert "consumer._fetcher" in inspect.getsource(original)
    assert "self._fetch_records" in inspect.getsource(thread.getmany), (
        "Faust's getmany no longer fetches through _fetch_records")


def test_table_manager_start_is_the_nap_then_channels_then_recovery() -> None:
    """streams/table_startup.py replaces TableManager.on_start with everything but its nap."""
    from faust.tables import TableManager

    from tripwire.streams.table_startup import PromptTableManager

    src = inspect.getsource(TableManager.on_start)
    body = [line.strip() for line in src.splitlines()[1:]
            if line.strip() and not line.strip().startswith('"""')]
    assert body == ["await self.sleep(1.0)", "if not self.should_stop:",
                    "await self._update_channels()", "await self.recovery.start()"], src
    assert PromptTableManager.__mro__[1] is TableManager


def test_mode_worker_sentinel_is_only_the_one_second_sleep() -> None:
    """streams/worker.py's _Worker._sentinel_task replaces mode's fixed 1.0 s sleep before the
    loop closes with one 10 ms pass; if mode's step ever does more, the override must too."""
    import mode.worker

    src = inspect.getsource(mode.worker.Worker._sentinel_task)
    body = [line.strip() for line in src.splitlines()[1:] if line.strip()]
    assert body == ["await asyncio.sleep(1.0)"], src
