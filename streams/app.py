"""The Faust application: topics, agents and their wiring to decoders, detectors and sinks.

Built by a factory rather than at import time because the app's broker, partition count and
sink come from validated settings.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol

import faust
from faust.types import EventT

from streams import topics
from streams.dead_letters import DeadLetter
from streams.settings import TripwireSettings
from streams.step_decoding import StepRecordDecoder

log = logging.getLogger("tripwire.streams")


class StepStore(Protocol):
    def insert(self, events: list[dict]) -> int: ...


@dataclass
class IngestCounters:
    records: int = 0
    events_accepted: int = 0
    rows_stored: int = 0
    dead_letters: int = 0
    sink_retries: int = 0
    extra: dict[str, int] = field(default_factory=dict)


def build_app(settings: TripwireSettings, store: StepStore) -> TripwireApp:
    return TripwireApp(settings, store)


class TripwireApp:
    def __init__(self, settings: TripwireSettings, store: StepStore) -> None:
        self.settings = settings
        self.store = store
        self.counters = IngestCounters()
        self.decoder = StepRecordDecoder()
        # One thread: chDB is one engine per process and ordered inserts keep the sink simple.
        self._sink_pool = ThreadPoolExecutor(1, thread_name_prefix="clickhouse-sink")
        s = settings
        self.app = faust.App(
            s.app_id,
            broker=[f"kafka://{hp.strip()}" for hp in s.bootstrap().split(",")],
            store="memory://",
            datadir=str(s.data_dir / "faust"),
            topic_partitions=s.partitions,
            topic_replication_factor=s.replication_factor,
            processing_guarantee="at_least_once",
            broker_session_timeout=s.kafka_session_timeout_s,
            broker_heartbeat_interval=min(3.0, s.kafka_session_timeout_s / 3),
            broker_rebalance_timeout=s.kafka_rebalance_timeout_s,
            consumer_auto_offset_reset="earliest",
            broker_commit_interval=1.0,
            web_enabled=False,
            autodiscover=False,
            stream_wait_empty=False,
            producer_acks=-1,
        )
        raw = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw",
               "value_serializer": "raw", "partitions": s.partitions}
        self.steps_topic = self.app.topic(topics.STEPS, **raw)
        self.app.agent(self.steps_topic, name="ingest-steps")(self._ingest)
        self.app.timer(10.0, name="report-counters")(self._report)

    async def _ingest(self, stream: faust.StreamT) -> None:
        """Decode, dead-letter and store; offsets are acked only after the rows are stored."""
        s = self.settings
        async for batch in stream.take_events(s.sink_batch_rows, within=s.sink_flush_seconds):
            accepted, dead = self.decode_events(batch)
            if dead:
                await self.send_dead_letters(dead)
            if accepted:
                await self._store_until_done(accepted)

    def decode_events(self, batch: Sequence[EventT]) -> tuple[list[dict], list[DeadLetter]]:
        accepted: list[dict] = []
        dead: list[DeadLetter] = []
        for ev in batch:
            m = ev.message
            ok, bad = self.decoder.decode(m.key, m.value, m.headers, m.topic, m.partition, m.offset)
            accepted.extend(ok)
            dead.extend(bad)
        self.counters.records += len(batch)
        self.counters.events_accepted += len(accepted)
        return accepted, dead

    async def send_dead_letters(self, dead: list[DeadLetter]) -> None:
        producer = self.app.producer
        futs = [
            await producer.send(topics.STEPS_DLQ, d.key, d.value, None, None, d.headers())
            for d in dead
        ]
        await asyncio.gather(*futs)
        self.counters.dead_letters += len(dead)
        log.warning("dead-lettered %d: first reason: %s", len(dead), dead[0].reason)

    async def _store_until_done(self, rows: list[dict]) -> None:
        # A failing ClickHouse stalls the stream instead of dropping rows: nothing is acked
        # until the insert succeeds, so back-pressure reaches Kafka rather than data loss.
        loop = asyncio.get_running_loop()
        delay = 0.5
        while True:
            try:
                stored = await loop.run_in_executor(self._sink_pool, self.store.insert, rows)
                self.counters.rows_stored += stored
                return
            except Exception as exc:  # noqa: BLE001 - any sink failure means retry, not loss
                self.counters.sink_retries += 1
                log.error("ClickHouse insert of %d rows failed, retrying in %.1fs: %s",
                          len(rows), delay, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)

    async def _report(self) -> None:
        c = self.counters
        log.info("records=%d accepted=%d stored=%d dead_letters=%d sink_retries=%d",
                 c.records, c.events_accepted, c.rows_stored, c.dead_letters, c.sink_retries)
