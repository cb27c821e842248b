import asyncio

import pytest
from aiokafka import AIOKafkaProducer

from tripwire.schemas.topics import TopicMismatch, TopicSpec, ensure_topics
from tripwire.streams.broker import EmbeddedBroker


def test_topics_are_created_with_configured_partitions(broker: EmbeddedBroker, make_topics):
    names = make_topics(("a", 8), ("b", 3))

    async def roundtrip() -> list[int]:
        p = AIOKafkaProducer(bootstrap_servers=broker.bootstrap)
        await p.start()
        await p.send_and_wait(names["b"], b"v", key=b"k", partition=2)
        parts = [len(await p.partitions_for(names[n])) for n in ("a", "b")]
        await p.stop()
        return parts

    assert asyncio.run(roundtrip()) == [8, 3]


def test_partition_mismatch_fails_fast(broker: EmbeddedBroker, make_topics):
    names = make_topics(("x", 2))
    with pytest.raises(TopicMismatch, match="2 partitions, configured 4"):
        asyncio.run(ensure_topics(broker.bootstrap, [TopicSpec(names["x"], 4)]))


def test_second_broker_on_taken_port_is_refused(broker: EmbeddedBroker):
    with pytest.raises(RuntimeError, match="already in use"):
        EmbeddedBroker(port=broker.port).start()
