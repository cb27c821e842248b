"""How long Faust's consumer lets the broker hold a fetch that has no data yet.

Faust hard-codes ``fetch_max_wait_ms=1500`` for its worker consumer. Real Kafka answers a
fetch as soon as ``fetch_min_bytes`` (1) are there, so the setting only bounds idle polls; the
embedded broker (tansu) holds every fetch for the full wait even when records arrive (measured:
335-753 ms per message at 1500, 3-14 ms at 20), which alone would put detection latency at
hundreds of milliseconds. A short wait costs real Kafka only cheap idle polls, so it is
applied everywhere.
"""

from __future__ import annotations

from typing import Any

from faust.transport.drivers import aiokafka as faust_aiokafka

_original = faust_aiokafka.AIOKafkaConsumerThread._create_worker_consumer
_fetch_max_wait_ms = 1500


def set_fetch_max_wait(ms: int) -> None:
    """Make Faust's worker consumers (created after this call) wait at most ``ms``."""
    global _fetch_max_wait_ms
    _fetch_max_wait_ms = ms
    faust_aiokafka.AIOKafkaConsumerThread._create_worker_consumer = _create_worker_consumer


def _create_worker_consumer(self: Any, transport: Any) -> Any:
    consumer = _original(self, transport)
    # Read by AIOKafkaConsumer.start() when it builds its fetcher; set before start.
    consumer._fetch_max_wait_ms = _fetch_max_wait_ms
    return consumer
