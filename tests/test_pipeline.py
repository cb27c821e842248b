"""End to end on real components: SDK → embedded broker → `tripwire worker` → chDB.

Each test gets its own broker (so the default topic names are free) and its own worker process
owning its own chDB directory; ClickHouse is read after the worker stopped, through
`tripwire sql`, exactly as an operator would.
"""

from __future__ import annotations

import asyncio
import io
import json
import random
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import fastavro
import pytest
from aiokafka import AIOKafkaProducer

from chdb_fixtures import tabsep_reader
from tripwire.bench.worker_process import (
    ROOT,
    WorkerProcess,
    committed,
    read_all,
    wait_caught_up,
    worker_env,
)
from tripwire.schemas import topics
from tripwire.schemas.codec import StepBatchCodec
from tripwire.schemas.topics import ensure_topics, tripwire_topics
from tripwire.sdk.emitter import AsyncEmitter
from tripwire.simulator.fleet import fleet_events
from tripwire.streams import dead_letters
from tripwire.streams.broker import EmbeddedBroker, free_port

pytestmark = pytest.mark.integration
PARTITIONS = 8
SCHEMAS = ROOT / "schemas"
# Recent event time: `steps` has a retention TTL, and older rows would expire on insert.
RECENT = (int(time.time()) - 3600) * 1000


@pytest.fixture
def fresh_broker(tmp_path: Path) -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker(port=free_port(), log_path=tmp_path / "tansu.log") as b:
        asyncio.run(ensure_topics(b.bootstrap, tripwire_topics(PARTITIONS)))
        yield b


def sql(env: dict[str, str], query: str) -> list[list[str]]:
    out = subprocess.run(
        [sys.executable, "-m", "tripwire.streams.cli", "sql", query],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    return [line.split("\t") for line in out.stdout.splitlines()]


async def emit(bootstrap: str, events: list[dict], rate: float | None = None) -> None:
    async with AsyncEmitter(bootstrap, idempotence=False, linger_ms=5) as em:
        for i, ev in enumerate(events):
            assert await em.emit_wait(ev, timeout_s=5.0)
            if rate and i % 100 == 99:
                await asyncio.sleep(100 / rate)
        assert await em.flush(30)
        stats = em.stats()
        assert stats.dropped == 0 and stats.errors == 0, stats


def malformed_records(good: dict) -> list[tuple[bytes | None, bytes, list[tuple[str, bytes]]]]:
    """300 records no reader can accept, in the ways producers actually get it wrong."""
    rng = random.Random(5)
    codec = StepBatchCodec()
    framed = codec.encode([good])
    js = [("content-type", b"application/json")]
    key = good["agent_id"].encode()
    out: list[tuple[bytes | None, bytes, list[tuple[str, bytes]]]] = []
    for _ in range(50):  # no framing at all
        out.append((key, rng.randbytes(rng.randint(1, 200)), []))
    for _ in range(50):  # framed, body cut short
        out.append((key, framed[: rng.randint(10, len(framed) - 1)], []))
    for _ in range(40):  # framing with a fingerprint nobody registered
        out.append((key, b"\xc3\x01" + rng.randbytes(8) + framed[10:], []))
    for i in range(40):  # JSON that is not JSON
        out.append((key, b'{"event_id": "' + str(i).encode(), js))
    for _ in range(40):  # JSON missing required fields
        bad = {k: v for k, v in good.items() if k != "run_id"} | {"event_id": str(uuid.uuid4())}
        out.append((key, json.dumps(bad).encode(), js))
    for i in range(40):  # schema-valid JSON, semantically impossible
        bad = good | {"event_id": str(uuid.uuid4()), "input_tokens": -5 - i}
        out.append((key, json.dumps(bad).encode(), js))
    for _ in range(40):  # key that does not match the agent in the batch
        bad = good | {"event_id": str(uuid.uuid4())}
        out.append((b"someone-else", codec.encode([bad]), []))
    assert len(out) == 300
    return out


def independent_avro_record(events: list[dict]) -> bytes:
    """What a non-Tripwire producer does with only the .avsc files: fastavro, its own
    canonical-form fingerprint, its own single-object framing."""
    # As a schema parser in any language does: the batch with its StepEvent inlined.
    batch_json = json.loads((SCHEMAS / "step_batch.avsc").read_text())
    batch_json["fields"][0]["type"]["items"] = json.loads((SCHEMAS / "step_event.avsc").read_text())
    batch = fastavro.parse_schema(batch_json)
    canonical = fastavro.schema.to_parsing_canonical_form(batch)
    fp = bytes.fromhex(fastavro.schema.fingerprint(canonical, "CRC-64-AVRO"))
    body = io.BytesIO()
    fastavro.schemaless_writer(body, batch, {"events": events})
    return b"\xc3\x01" + fp + body.getvalue()


def test_valid_events_land_exactly_once_and_malformed_go_to_dlq(fresh_broker, tmp_path):
    bootstrap = fresh_broker.bootstrap
    events = list(_take(fleet_events(seed=7, agents=15, start_ms=RECENT), 3000))
    extra = list(_take(fleet_events(seed=8, agents=1, start_ms=RECENT), 5))
    mixed_good, confluent_events = extra[:3], extra[3:]
    impossible = extra[0] | {"event_id": str(uuid.uuid4()), "cost_usd": -1.0}
    bad = malformed_records(events[0])

    async def produce() -> None:
        await emit(bootstrap, events)
        p = AIOKafkaProducer(bootstrap_servers=bootstrap)
        await p.start()
        for key, value, headers in bad:
            await p.send(topics.STEPS, value, key=key, headers=headers)
        agent = mixed_good[0]["agent_id"].encode()
        await p.send(topics.STEPS, StepBatchCodec().encode([*mixed_good, impossible]), key=agent)
        await p.stop()

    asyncio.run(produce())

    from confluent_kafka import Producer

    cp = Producer({"bootstrap.servers": bootstrap})
    cp.produce(
        topics.STEPS,
        key=confluent_events[0]["agent_id"].encode(),
        value=independent_avro_record(confluent_events),
    )
    assert cp.flush(15) == 0

    env = worker_env(bootstrap, tmp_path / "data", PARTITIONS)
    worker = WorkerProcess(env, tmp_path / "worker.log").start()
    try:
        asyncio.run(wait_caught_up(bootstrap, "tripwire", topics.STEPS, PARTITIONS, worker))
    finally:
        assert worker.stop() == 0, worker.log()[-3000:]

    expected = {e["event_id"] for e in [*events, *mixed_good, *confluent_events]}
    # One client in this process for the three reads (the worker has exited): a `tripwire sql`
    # process each paid a chDB start-up (1.2-2 s).
    with tabsep_reader(env["TRIPWIRE_CLICKHOUSE_URL"]) as read:
        [[rows, distinct]] = read("SELECT count(), uniqExact(event_id) FROM steps")
        assert (int(rows), int(distinct)) == (len(expected), len(expected))
        stored = {r[0] for r in read("SELECT toString(event_id) FROM steps")}
        assert stored == expected

        # The independent producer's events are stored field for field.
        ev = confluent_events[0]
        [[agent, run, kind, ts]] = read(
            "SELECT agent_id, run_id, kind, toUnixTimestamp64Milli(ts)"
            f" FROM steps WHERE event_id = '{ev['event_id']}'",
        )
    assert (agent, run, kind, int(ts)) == (ev["agent_id"], ev["run_id"], ev["kind"], ev["ts"])

    dlq = asyncio.run(read_all(bootstrap, topics.STEPS_DLQ, PARTITIONS))
    assert len(dlq) == len(bad) + 1
    originals = {(k, v) for k, v, _ in bad}
    by_index = []
    for rec in dlq:
        h = dead_letters.header_map(rec.headers)
        assert h[dead_letters.REASON], "every dead letter says why"
        assert h[dead_letters.SOURCE_TOPIC] == topics.STEPS.encode()
        int(h[dead_letters.SOURCE_PARTITION]), int(h[dead_letters.SOURCE_OFFSET])
        if dead_letters.EVENT_INDEX in h:
            by_index.append((h[dead_letters.EVENT_INDEX], h[dead_letters.REASON]))
        if rec.key != mixed_good[0]["agent_id"].encode() or dead_letters.EVENT_INDEX not in h:
            assert (rec.key, rec.value) in originals, "the original bytes travel unchanged"
    # Event-level refusals name the event: the 40 impossible JSON events and the one bad
    # event inside an otherwise valid Avro batch (whose three good events were stored).
    assert sorted(by_index) == sorted(
        [(b"3", b"invalid cost_usd: -1.0")]
        + [(b"0", f"negative input_tokens: {-5 - i}".encode()) for i in range(40)])
    assert "dead-lettered" in worker.log()


def test_sigkill_mid_stream_loses_nothing_and_doubles_nothing(fresh_broker, tmp_path):
    bootstrap = fresh_broker.bootstrap
    events = list(_take(fleet_events(seed=11, agents=40, start_ms=RECENT), 12_000))
    head, tail = events[:3000], events[3000:]
    asyncio.run(emit(bootstrap, head))
    env = worker_env(bootstrap, tmp_path / "data", PARTITIONS)
    worker = WorkerProcess(env, tmp_path / "worker.log").start()

    async def scenario() -> None:
        # Kill once the worker has demonstrably stored and committed part of the stream,
        # while more traffic is still arriving.
        while sum((await committed(bootstrap, "tripwire", topics.STEPS, PARTITIONS)).values()) == 0:
            assert worker.alive(), worker.log()[-3000:]
            await asyncio.sleep(0.2)
        producing = asyncio.create_task(emit(bootstrap, tail, rate=2000))
        await asyncio.sleep(1.0)
        assert not producing.done(), "the kill must land mid-stream"
        worker.kill()
        worker.start()
        await producing
        await wait_caught_up(bootstrap, "tripwire", topics.STEPS, PARTITIONS, worker)

    try:
        asyncio.run(scenario())
    finally:
        worker.stop()
    codec = StepBatchCodec()
    on_topic = {e["event_id"] for r in asyncio.run(read_all(bootstrap, topics.STEPS, PARTITIONS))
                for e in codec.decode(r.value)}
    assert on_topic == {e["event_id"] for e in events}, "the broker holds every event"
    [[rows, distinct]] = sql(env, "SELECT count(), uniqExact(event_id) FROM steps")
    if int(distinct) != len(events):
        stored = {r[0] for r in sql(env, "SELECT toString(event_id) FROM steps")}
        missing = sorted(on_topic - stored)[:5]
        detail = asyncio.run(locate(bootstrap, set(missing)))
        raise AssertionError(f"{len(on_topic - stored)} events lost: {detail}\n"
                             + worker.log()[-2000:])
    assert (int(rows), int(distinct)) == (len(events), len(events))
    log = worker.log()
    assert log.count("Worker ready") == 2, "the worker started twice: before and after the kill"


async def locate(bootstrap: str, event_ids: set[str]) -> list[tuple[int, int, str]]:
    codec = StepBatchCodec()
    return [(r.partition, r.offset, e["event_id"])
            for r in await read_all(bootstrap, topics.STEPS, PARTITIONS)
            for e in codec.decode(r.value) if e["event_id"] in event_ids]


def _take(it: Iterator[dict], n: int) -> Iterator[dict]:
    for _, ev in zip(range(n), it, strict=False):
        yield ev
