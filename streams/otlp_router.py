"""The OTLP router: spans from the Collector's Kafka topic -> steps on ``agent-steps``, by agent.

Why a router stage rather than a second source inside the Faust worker: the Collector's Kafka
exporter keys records by trace id (or not at all), so a span's partition says nothing about
its agent, while each agent's detector state lives in the ``agent-steps`` partition its id
hashes to (co-partitioned with the state table's changelog). The router consumes the OTLP
topic in its own consumer group, maps spans to steps (``streams/otlp_mapping.py``) and
produces one Avro StepBatch record per agent per fetched batch, keyed by the agent id, to
``agent-steps``. From there the events take exactly the SDK's path: validation and dead
letters, detectors, breaker, controls, ClickHouse.

Delivery: at least once. The router commits its source offsets only after the broker
acknowledged every step record and dead letter produced from them; if it dies in between,
the records are routed again and produce the same event ids (name-based, from trace and span
ids), which the ClickHouse sink stores once. The worker's detector state is protected
against re-delivery by ``agent-steps`` offsets, which a re-routed span does not share, so in
that window a re-routed span can be counted twice by rate windows (never lost).

The router runs as a child process of ``tripwire worker`` / ``tripwire run`` when
``TRIPWIRE_OTLP_TOPIC`` is set (its own interpreter: decoding and mapping never take the
detection loop's lock), or alone as ``tripwire otlp-router``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, KafkaError, TopicAlreadyExistsError

from tripwire.detectors.policy import Policy
from tripwire.schemas import topics
from tripwire.schemas.codec import StepBatchCodec
from tripwire.streams.dead_letters import CONTENT_TYPE, DeadLetter
from tripwire.streams.otlp_decoding import OtlpDecodeError, OtlpEncoding, decode_request
from tripwire.streams.otlp_mapping import MappingConfig, SpanMapper
from tripwire.streams.settings import TripwireSettings
from tripwire.streams.step_decoding import ROUTED_CONTENT_TYPE

log = logging.getLogger("tripwire.otlp")

# Events per produced StepBatch record: big enough that the worker's per-record cost (~200 us
# in Faust's delivery path, README "Benchmarks") is spread over many events, small enough to
# stay far below Kafka's 1 MiB default record limit (~320 bytes an event: ~160 KB).
MAX_EVENTS_PER_RECORD = 500
FETCH_MAX_RECORDS = 500
# Fetched batches routed while earlier ones await the broker's acknowledgement (bounds the
# router's memory to a few fetches' worth of records).
MAX_IN_FLIGHT = 4
CONTENT_TYPES = {"otlp_proto": "application/x-protobuf", "otlp_json": "application/json"}

ROUTED_HEADERS = [(CONTENT_TYPE, ROUTED_CONTENT_TYPE.encode())]

SourceRecord = tuple[bytes | None, bytes | None, str, int, int]
"""(key, value, topic, partition, offset) of one OTLP record."""


@dataclass
class RouterCounters:
    records: int = 0
    spans: int = 0
    events: int = 0
    skipped_spans: int = 0
    dead_letters: int = 0
    step_records: int = 0


@dataclass
class RoutedBatch:
    steps: list[tuple[bytes, bytes]] = field(default_factory=list)
    """(agent id, framed StepBatch) records for agent-steps."""
    dead: list[DeadLetter] = field(default_factory=list)


class SpanRouter:
    """Kafka-free core: OTLP records in, step records and dead letters out."""

    def __init__(self, encoding: OtlpEncoding, mapper: SpanMapper,
                 codec: StepBatchCodec | None = None) -> None:
        self.encoding = encoding
        self.mapper = mapper
        self.codec = codec or StepBatchCodec()
        self.counters = RouterCounters()
        self._ctype = CONTENT_TYPES[encoding]

    def route(self, records: Sequence[SourceRecord]) -> RoutedBatch:
        out = RoutedBatch()
        by_agent: dict[str, list[dict]] = {}
        c = self.counters
        for key, value, topic, partition, offset in records:
            c.records += 1
            try:
                spans = decode_request(value, self.encoding)
            except OtlpDecodeError as exc:
                out.dead.append(DeadLetter(exc.reason, key, value, topic, partition, offset,
                                           None, self._ctype))
                continue
            mapped = self.mapper.map_request(spans)
            c.spans += len(spans)
            c.skipped_spans += mapped.skipped
            for index, reason in mapped.refused:
                out.dead.append(DeadLetter(reason, key, value, topic, partition, offset, index,
                                           self._ctype))
            for ev in mapped.events:
                by_agent.setdefault(ev["agent_id"], []).append(ev)
            c.events += len(mapped.events)
        for agent, events in by_agent.items():
            key = agent.encode()
            for start in range(0, len(events), MAX_EVENTS_PER_RECORD):
                out.steps.append((key, self.codec.encode(
                    events[start:start + MAX_EVENTS_PER_RECORD])))
        c.step_records += len(out.steps)
        c.dead_letters += len(out.dead)
        return out


def mapping_config(settings: TripwireSettings) -> MappingConfig:
    groups = tuple(tuple(k.strip() for k in group.split("+") if k.strip())
                   for group in settings.otlp_agent_keys.split(","))
    return MappingConfig(agent_keys=tuple(g for g in groups if g), run_key=settings.otlp_run_key)


def router_group(settings: TripwireSettings) -> str:
    return f"{settings.app_id}-otlp-router"


async def ensure_source_topic(settings: TripwireSettings, timeout_s: float = 30.0) -> None:
    """Create the OTLP topic if nobody has (the Collector may start after Tripwire). An existing
    topic keeps its partition count: the router does not need it to match anything."""
    assert settings.otlp_topic is not None
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap(), request_timeout_ms=10_000)
    deadline = time.monotonic() + timeout_s
    # aiokafka logs every failed attempt as an ERROR; a broker still starting is expected,
    # and one that never answers is reported once, by the caller.
    client_log = logging.getLogger("aiokafka")
    level = client_log.level
    client_log.setLevel(logging.CRITICAL)
    try:
        while True:
            try:
                await admin.start()
                break
            except KafkaConnectionError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)
    finally:
        client_log.setLevel(level)
    try:
        if settings.otlp_topic not in set(await admin.list_topics()):
            try:
                await admin.create_topics([NewTopic(settings.otlp_topic, settings.partitions,
                                                    settings.replication_factor)])
            except TopicAlreadyExistsError:
                pass
    finally:
        await admin.close()


async def route_forever(settings: TripwireSettings, policy: Policy,
                        stop: asyncio.Event) -> RouterCounters:
    assert settings.otlp_topic is not None
    await ensure_source_topic(settings)
    router = SpanRouter(settings.otlp_encoding, SpanMapper(policy, mapping_config(settings)))
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap(),
        group_id=router_group(settings), enable_auto_commit=False,
        auto_offset_reset="earliest", fetch_max_wait_ms=settings.fetch_max_wait_ms,
        session_timeout_ms=int(settings.kafka_session_timeout_s * 1000),
        heartbeat_interval_ms=int(min(3.0, settings.kafka_session_timeout_s / 3) * 1000),
        rebalance_timeout_ms=int(settings.kafka_rebalance_timeout_s * 1000),
        max_partition_fetch_bytes=4 * 1024 * 1024)
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap(), acks="all",
        enable_idempotence=settings.idempotence(), linger_ms=2,
        # aiokafka keeps one batch in flight per partition, and a record larger than the
        # batch size travels alone: with the 16 KiB default each ~160 KB StepBatch record
        # waited for the previous one's acknowledgement (measured: 102 records took 9.2 s to
        # hand over; with room for a partition's share of a fetch in one batch, 0.02 s).
        max_batch_size=2 * 1024 * 1024, max_request_size=4 * 1024 * 1024)
    await producer.start()
    try:
        await consumer.start()
        acks = _Acks(consumer)
        consumer.subscribe([settings.otlp_topic], listener=_CommitBeforeRevoke(acks))
        try:
            log.info("otlp router: %s (%s) -> %s, group %s", settings.otlp_topic,
                     settings.otlp_encoding, topics.STEPS, router_group(settings))
            print(f"tripwire: otlp router       {settings.otlp_topic} ({settings.otlp_encoding})"
                  f" -> {topics.STEPS}", flush=True)
            last_report = time.monotonic()
            while not stop.is_set():
                batch = await consumer.getmany(timeout_ms=200, max_records=FETCH_MAX_RECORDS)
                if batch:
                    acks.add(*await _route_batch(router, producer, batch))
                await acks.commit_acknowledged(MAX_IN_FLIGHT)
                if time.monotonic() - last_report > 10:
                    last_report = time.monotonic()
                    log.info("otlp router: %s", router.counters)
            await acks.commit_acknowledged(0)
        finally:
            await consumer.stop()
    finally:
        await producer.stop()
    return router.counters


async def _route_batch(router: SpanRouter, producer: AIOKafkaProducer, batch: dict
                       ) -> tuple[list[asyncio.Future], dict[TopicPartition, int]]:
    """Route one fetched batch; the send futures and the offsets to commit once they are
    all acknowledged."""
    records = [(m.key, m.value, m.topic, m.partition, m.offset)
               for msgs in batch.values() for m in msgs]
    routed = router.route(records)
    futures = [await producer.send(topics.STEPS, value, key=key, headers=ROUTED_HEADERS)
               for key, value in routed.steps]
    for d in routed.dead:
        futures.append(await producer.send(topics.STEPS_DLQ, d.value, key=d.key,
                                           headers=d.headers()))
    if routed.dead:
        log.warning("otlp router: dead-lettered %d: first reason: %s", len(routed.dead),
                    routed.dead[0].reason)
    return futures, {tp: msgs[-1].offset + 1 for tp, msgs in batch.items()}


class _Acks:
    """Routed batches whose records the broker has not acknowledged yet, committed strictly in
    fetch order once they are (at least once: a source offset never moves past a record
    whose steps are not durable). Waiting for each batch's acknowledgement before fetching
    the next would cost a broker round trip per batch; up to MAX_IN_FLIGHT overlap instead."""

    def __init__(self, consumer: AIOKafkaConsumer) -> None:
        self.consumer = consumer
        self.pending: deque[tuple[asyncio.Future, dict[TopicPartition, int]]] = deque()

    def add(self, futures: list[asyncio.Future], offsets: dict[TopicPartition, int]) -> None:
        self.pending.append((asyncio.gather(*futures), offsets))

    async def commit_acknowledged(self, max_pending: int) -> None:
        """Commit every leading batch already acknowledged, and wait for more until at most
        ``max_pending`` remain. A failed send raises: the router stops and restarts from the
        committed offsets."""
        while self.pending and (self.pending[0][0].done() or len(self.pending) > max_pending):
            acknowledged, offsets = self.pending.popleft()
            await acknowledged
            try:
                await self.consumer.commit(offsets)
            except KafkaError as exc:
                # The partitions went to another router: it routes these records again, with
                # the same event ids (the sink stores them once).
                log.warning("otlp router: commit failed (%r); records will be routed again", exc)


class _CommitBeforeRevoke(ConsumerRebalanceListener):
    def __init__(self, acks: _Acks) -> None:
        self.acks = acks

    async def on_partitions_revoked(self, revoked: object) -> None:
        # Hand over with everything routed so far committed, so the next owner starts after it.
        await self.acks.commit_acknowledged(0)

    async def on_partitions_assigned(self, assigned: object) -> None:
        return None


def run_router(settings: TripwireSettings, policy: Policy, duration: float | None = None,
               parent_pid: int | None = None) -> int:
    """``tripwire otlp-router``: route until SIGTERM/SIGINT (or ``duration`` seconds, or
    until ``parent_pid``, the worker that started it, is gone: a SIGKILLed worker must not
    leave its router behind)."""
    if settings.otlp_topic is None:
        print("tripwire: invalid configuration\n  TRIPWIRE_OTLP_TOPIC: required by "
              "`tripwire otlp-router`", file=sys.stderr)
        return 2
    logging.basicConfig(level=settings.log_level.upper(),
                        format="[%(asctime)s] [%(process)d] [%(levelname)s] %(message)s")

    async def main() -> RouterCounters:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        if duration is not None:
            loop.call_later(duration, stop.set)
        if parent_pid is not None:
            loop.create_task(_exit_with(parent_pid, stop))
        return await route_forever(settings, policy, stop)

    try:
        counters = asyncio.run(main())
    except KafkaConnectionError as exc:
        print(f"tripwire: otlp router: cannot reach Kafka at {settings.bootstrap()}: {exc}",
              file=sys.stderr)
        return 1
    print(f"tripwire: otlp router stopped: {counters}", flush=True)
    return 0


async def _exit_with(parent_pid: int, stop: asyncio.Event) -> None:
    while not stop.is_set():
        if os.getppid() != parent_pid:  # re-parented: the worker is gone
            stop.set()
            return
        try:
            await asyncio.wait_for(stop.wait(), 0.5)
        except TimeoutError:
            pass


class RouterProcess:
    """The router as a child of the worker: started with it, restarted if it dies, stopped
    with it. Its settings travel as the environment the worker resolved."""

    def __init__(self, settings: TripwireSettings) -> None:
        self.settings = settings
        self._proc: subprocess.Popen[bytes] | None = None
        self._stopping = threading.Event()
        self._watcher: threading.Thread | None = None

    def _env(self) -> dict[str, str]:
        s = self.settings
        env = dict(os.environ)
        env.update(TRIPWIRE_KAFKA_BOOTSTRAP=s.bootstrap(),
                   TRIPWIRE_KAFKA_IDEMPOTENCE=str(s.idempotence()).lower(),
                   TRIPWIRE_DATA_DIR=str(s.data_dir), TRIPWIRE_PARTITIONS=str(s.partitions),
                   TRIPWIRE_APP_ID=s.app_id, TRIPWIRE_OTLP_TOPIC=s.otlp_topic or "",
                   TRIPWIRE_OTLP_ENCODING=s.otlp_encoding)
        if s.policy_file is not None:
            env["TRIPWIRE_POLICY_FILE"] = str(s.policy_file)
        return env

    def _spawn(self) -> None:
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "tripwire.streams.cli", "otlp-router",
             "--parent-pid", str(os.getpid())], env=self._env())

    def start(self) -> RouterProcess:
        self._spawn()
        self._watcher = threading.Thread(target=self._watch, name="otlp-router-watch",
                                         daemon=True)
        self._watcher.start()
        return self

    def _watch(self) -> None:
        while not self._stopping.is_set():
            proc = self._proc
            if proc is not None and proc.poll() is not None and not self._stopping.is_set():
                if proc.returncode == 2:  # invalid configuration: restarting cannot help
                    log.error("otlp router refused its configuration; not restarting it")
                    return
                log.error("otlp router exited with %s; restarting it", proc.returncode)
                self._stopping.wait(1.0)
                if not self._stopping.is_set():
                    self._spawn()
            self._stopping.wait(0.5)

    def stop(self, timeout_s: float = 15.0) -> None:
        self._stopping.set()
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
