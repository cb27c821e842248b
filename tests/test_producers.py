"""Producers written the ordinary way, with only the shipped .avsc files, land.

Each producer is written as its library's documentation shows: fastavro's ``parse_schema``
with ``named_schemas`` over the split files, fastavro's ``load_schema`` (which resolves
``dev.tripwire.StepEvent.avsc`` beside ``step_batch.avsc``), the reference ``avro`` package on
the self-contained ``step_batch.full.avsc``, and librdkafka (confluent-kafka) as the transport.
Each frames with its own library's fingerprint function, never the codec's.
"""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import avro.io
import avro.schema
import fastavro
import fastavro.schema
import pytest
from aiokafka import AIOKafkaProducer

from tripwire.bench.worker_process import ROOT, WorkerProcess, wait_caught_up, worker_env
from tripwire.schemas import topics
from tripwire.schemas.codec import (
    STEP_BATCH_SCHEMA,
    STEP_EVENT_SCHEMA,
    DecodeError,
    StepBatchCodec,
    canonical_form_variants,
    parsing_canonical_form,
)
from tripwire.simulator.fleet import fleet_events

SCHEMAS = ROOT / "schemas"
FULL_BATCH = SCHEMAS / "step_batch.full.avsc"
LOAD_SCHEMA_EVENT = SCHEMAS / "dev.tripwire.StepEvent.avsc"


def frame(fingerprint: bytes, body: bytes) -> bytes:
    return b"\xc3\x01" + fingerprint + body


# --- the producers ------------------------------------------------------------------------


def fastavro_named_schemas(events: list[dict[str, Any]]) -> bytes:
    """The split files one by one, as fastavro documents for schemas that reference others."""
    named: dict[str, Any] = {}
    fastavro.parse_schema(json.loads(STEP_EVENT_SCHEMA.read_text()), named)
    batch = fastavro.parse_schema(json.loads(STEP_BATCH_SCHEMA.read_text()), named)
    canonical = fastavro.schema.to_parsing_canonical_form(batch)
    fingerprint = bytes.fromhex(fastavro.schema.fingerprint(canonical, "CRC-64-AVRO"))
    body = io.BytesIO()
    fastavro.schemaless_writer(body, batch, {"events": events})
    return frame(fingerprint, body.getvalue())


def fastavro_load_schema(events: list[dict[str, Any]], path: Path = STEP_BATCH_SCHEMA) -> bytes:
    batch = fastavro.schema.load_schema(str(path))
    canonical = fastavro.schema.to_parsing_canonical_form(batch)
    fingerprint = bytes.fromhex(fastavro.schema.fingerprint(canonical, "CRC-64-AVRO"))
    body = io.BytesIO()
    fastavro.schemaless_writer(body, batch, {"events": events})
    return frame(fingerprint, body.getvalue())


def _avro_datum(event: dict[str, Any]) -> dict[str, Any]:
    # The avro package wants logical types as Python objects: a datetime for timestamp-millis.
    return event | {"ts": datetime.fromtimestamp(event["ts"] / 1000, UTC)}


def avro_reference_batch(events: list[dict[str, Any]]) -> bytes:
    schema = avro.schema.parse(FULL_BATCH.read_text())
    body = io.BytesIO()
    avro.io.DatumWriter(schema).write(
        {"events": [_avro_datum(e) for e in events]}, avro.io.BinaryEncoder(body)
    )
    return frame(schema.fingerprint("CRC-64-AVRO"), body.getvalue())


def avro_reference_event(event: dict[str, Any]) -> bytes:
    schema = avro.schema.parse(STEP_EVENT_SCHEMA.read_text())
    body = io.BytesIO()
    avro.io.DatumWriter(schema).write(_avro_datum(event), avro.io.BinaryEncoder(body))
    return frame(schema.fingerprint("CRC-64-AVRO"), body.getvalue())


PRODUCERS: dict[str, Callable[[list[dict[str, Any]]], bytes]] = {
    "fastavro-named-schemas": fastavro_named_schemas,
    "fastavro-load-schema": fastavro_load_schema,
    "fastavro-load-full": lambda events: fastavro_load_schema(events, FULL_BATCH),
    "avro-reference-batch": avro_reference_batch,
    "avro-reference-event": lambda events: avro_reference_event(events[0]),
}


def some_events(seed: int, n: int, start_ms: int = 1_767_225_600_000) -> list[dict[str, Any]]:
    out = []
    for event in fleet_events(seed=seed, agents=1, start_ms=start_ms):
        out.append(event)
        if len(out) == n:
            return out
    raise AssertionError("fleet ran dry")


# --- unit: the codec reads every producer's frames ------------------------------------------


@pytest.mark.parametrize("name", list(PRODUCERS))
def test_codec_reads_each_ordinary_producer(name: str) -> None:
    events = some_events(seed=3, n=1 if name.endswith("-event") else 4)
    assert StepBatchCodec().decode(PRODUCERS[name](events)) == events


def test_shipped_schema_files_agree_with_the_split_contract() -> None:
    event = json.loads(STEP_EVENT_SCHEMA.read_text())
    assert json.loads(LOAD_SCHEMA_EVENT.read_text()) == event, (
        "dev.tripwire.StepEvent.avsc is the copy fastavro.load_schema looks for; keep it equal"
    )
    full = json.loads(FULL_BATCH.read_text())
    split = json.loads(STEP_BATCH_SCHEMA.read_text())
    assert full["fields"][0]["type"]["items"] == event
    full["fields"][0]["type"]["items"] = split["fields"][0]["type"]["items"]
    assert {k: v for k, v in full.items() if k != "doc"} == \
        {k: v for k, v in split.items() if k != "doc"}


def test_every_parser_of_the_full_file_computes_the_spec_fingerprint() -> None:
    codec = StepBatchCodec()
    spec = codec.batch_codec.fingerprint
    fast = fastavro.schema.fingerprint(
        fastavro.schema.to_parsing_canonical_form(fastavro.schema.load_schema(str(FULL_BATCH))),
        "CRC-64-AVRO",
    )
    assert bytes.fromhex(fast) == spec
    # The avro package writes logical-type primitives as objects in its canonical form: one
    # of the variants, not the spec's value.
    reference = avro.schema.parse(FULL_BATCH.read_text())
    assert reference.canonical_form in canonical_form_variants(
        fastavro.parse_schema(json.loads(FULL_BATCH.read_text()))
    )


def test_variants_start_with_the_spec_form_and_are_distinct() -> None:
    named: dict[str, Any] = {}
    fastavro.parse_schema(json.loads(STEP_EVENT_SCHEMA.read_text()), named)
    batch = fastavro.parse_schema(json.loads(STEP_BATCH_SCHEMA.read_text()), named)
    variants = canonical_form_variants(batch)
    assert variants[0] == parsing_canonical_form(batch)
    assert len(set(variants)) == len(variants) == 3
    assert fastavro.schema.to_parsing_canonical_form(batch) in variants


def test_registered_writer_is_known_by_its_variant_fingerprints_too() -> None:
    # An older producer's StepEvent (no injection_flagged), framed by fastavro's bare-name form.
    old_event = json.loads(STEP_EVENT_SCHEMA.read_text())
    old_event["fields"] = [f for f in old_event["fields"] if f["name"] != "injection_flagged"]
    codec = StepBatchCodec()
    codec.register_writer(old_event)
    named: dict[str, Any] = {}
    fastavro.parse_schema(old_event, named)
    batch = fastavro.parse_schema(json.loads(STEP_BATCH_SCHEMA.read_text()), named)
    events = some_events(seed=4, n=3)
    body = io.BytesIO()
    fastavro.schemaless_writer(
        body, batch, {"events": [{k: v for k, v in e.items() if k != "injection_flagged"}
                                 for e in events]})
    fp = fastavro.schema.fingerprint(fastavro.schema.to_parsing_canonical_form(batch),
                                     "CRC-64-AVRO")
    decoded = codec.decode(frame(bytes.fromhex(fp), body.getvalue()))
    assert decoded == [e | {"injection_flagged": None} for e in events]


# --- integration: the real broker and worker store what they produced ----------------------


@pytest.mark.integration
def test_ordinary_producers_land_in_clickhouse(tmp_path: Path) -> None:
    from confluent_kafka import Producer
    from test_pipeline import PARTITIONS, RECENT, sql

    from tripwire.schemas.topics import ensure_topics, tripwire_topics
    from tripwire.streams.broker import EmbeddedBroker, free_port

    batches = {name: some_events(seed=40 + i, n=1 if name.endswith("-event") else 5,
                                 start_ms=RECENT)
               for i, name in enumerate(PRODUCERS)}
    with EmbeddedBroker(port=free_port(), log_path=tmp_path / "tansu.log") as broker:
        bootstrap = broker.bootstrap
        asyncio.run(ensure_topics(bootstrap, tripwire_topics(PARTITIONS)))
        # librdkafka carries the fastavro frames, aiokafka the avro package's.
        librdkafka = Producer({"bootstrap.servers": bootstrap})
        for name, events in batches.items():
            if name.startswith("fastavro"):
                librdkafka.produce(topics.STEPS, key=events[0]["agent_id"].encode(),
                                   value=PRODUCERS[name](events))
        assert librdkafka.flush(15) == 0

        async def produce_aiokafka() -> None:
            producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
            await producer.start()
            try:
                for name, events in batches.items():
                    if name.startswith("avro"):
                        await producer.send_and_wait(topics.STEPS, PRODUCERS[name](events),
                                                     key=events[0]["agent_id"].encode())
            finally:
                await producer.stop()

        asyncio.run(produce_aiokafka())
        env = worker_env(bootstrap, tmp_path / "data", PARTITIONS)
        worker = WorkerProcess(env, tmp_path / "worker.log").start()
        try:
            asyncio.run(wait_caught_up(bootstrap, "tripwire", topics.STEPS, PARTITIONS, worker))
        finally:
            assert worker.stop() == 0, worker.log()[-3000:]
        assert "dead-lettered" not in worker.log()

    rows = {r[0]: r[1:] for r in sql(
        env, "SELECT toString(event_id), agent_id, run_id, kind, toUnixTimestamp64Milli(ts)"
             " FROM steps")}
    for name, events in batches.items():
        for e in events:
            assert rows.get(e["event_id"]) == [e["agent_id"], e["run_id"], e["kind"],
                                               str(e["ts"])], f"{name} did not land"
    assert len(rows) == sum(len(v) for v in batches.values())


def test_confluent_wire_format_is_refused_with_a_reason_that_names_it() -> None:
    events = some_events(seed=5, n=2)
    body = io.BytesIO()
    fastavro.schemaless_writer(body, fastavro.schema.load_schema(str(FULL_BATCH)),
                               {"events": events})
    confluent = b"\x00" + (42).to_bytes(4, "big") + body.getvalue()
    with pytest.raises(DecodeError, match="schema id 42 is the Confluent wire format"):
        StepBatchCodec().decode(confluent)
