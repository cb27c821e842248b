"""Backlogs of each record shape a producer writes to agent-steps, for the benchmarks.

* ``json``: one event per record, a JSON object with ``content-type: application/json`` (a
  webhook bridge, a Go or Java service without Avro, the OpenTelemetry source);
* ``avro``: one event per record, a framed bare ``StepEvent`` (a producer in another language
  that has the ``.avsc`` but no batching);
* ``sdk``: records grouped as the SDK groups a busy fleet (see ``pipeline.steady_load``).

Encoded beforehand and written with librdkafka (confluent-kafka), keyed by agent id so
Kafka's default partitioner puts each agent's events in one partition, as any producer would:
the bench measures the consumers, not this producer's Python.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from tripwire.schemas import topics
from tripwire.schemas.codec import StepBatchCodec

JSON_HEADERS = [("content-type", b"application/json")]


def single_event_records(events: Iterable[Mapping[str, Any]],
                         shape: str) -> Iterator[tuple[bytes, bytes]]:
    """(key, value) of one record per event, ``shape`` ``json`` or ``avro``."""
    if shape == "json":
        for ev in events:
            yield ev["agent_id"].encode(), json.dumps(ev, separators=(",", ":")).encode()
    elif shape == "avro":
        codec = StepBatchCodec().event_codec
        for ev in events:
            yield ev["agent_id"].encode(), codec.encode(ev)
    else:
        raise ValueError(f"unknown single-event shape {shape!r}")


def write_records(bootstrap: str, records: Iterable[tuple[bytes, bytes]], shape: str,
                  topic: str = topics.STEPS) -> int:
    """Write keyed records as fast as the broker takes them; the number written."""
    try:
        from confluent_kafka import Producer
    except ImportError as exc:  # the bench extra; `tripwire --help` must not need it
        raise SystemExit("tripwire bench needs librdkafka: pip install 'tripwire[bench]'") from exc
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "compression.type": "lz4",
                  "enable.idempotence": False, "queue.buffering.max.messages": 1_000_000,
                  "batch.num.messages": 10_000})
    headers = JSON_HEADERS if shape == "json" else None
    n = 0
    for key, value in records:
        while True:
            try:
                p.produce(topic, value, key=key, headers=headers)
                break
            except BufferError:
                p.poll(0.05)
        n += 1
        if n % 10_000 == 0:
            p.poll(0)
    if p.flush(120) != 0:
        raise RuntimeError(f"{len(p)} records were not delivered to {bootstrap}")
    return n
