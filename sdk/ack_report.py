"""Did the control reach the agents? Count guards' acknowledgements of one command.

``tripwire kill ...`` issues a command, then :func:`wait_for_acks` reads ``agent-control-acks``
until every guard heard from recently (an ack or hello within ``recent_s``) has acknowledged a
control carrying the command's id, or until ``timeout_s``. The report says: obeyed by N of the
M guards heard from, the slowest apply time (applied_at - the command's issued_at, both epoch
ms: guard and operator clocks, so skew adds in), and the silent guards by name.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from tripwire.schemas.codec import DecodeError, control_ack_codec
from tripwire.schemas.command_signing import Secret, verify_ack
from tripwire.schemas.topics import CONTROL_ACKS

__all__ = ["AckReport", "format_ack_report", "wait_for_acks"]


@dataclass
class AckReport:
    command_id: str
    issued_at: int
    guards: dict[str, str] = field(default_factory=dict)
    """Guard instance -> agent, of every guard heard from within the window."""
    obeyed: dict[str, int] = field(default_factory=dict)
    """Guard instance -> apply time in ms after the command was issued."""
    unauthenticated: int = 0
    waited_s: float = 0.0

    @property
    def silent(self) -> list[str]:
        return sorted(g for g in self.guards if g not in self.obeyed)

    @property
    def slowest_ms(self) -> int | None:
        return max(self.obeyed.values()) if self.obeyed else None


def format_ack_report(report: AckReport, max_named: int = 20) -> str:
    n, m = len(report.obeyed), len(report.guards)
    line = f"obeyed by {n} of {m} guards heard from recently"
    if report.slowest_ms is not None:
        line += f"; slowest applied {report.slowest_ms} ms after issue"
    if report.silent:
        names = [f"{g} ({report.guards[g]})" for g in report.silent[:max_named]]
        more = len(report.silent) - max_named
        line += "; silent: " + ", ".join(names) + (f" and {more} more" if more > 0 else "")
    if report.unauthenticated:
        line += f"; {report.unauthenticated} unauthenticated ack(s) ignored"
    return line


async def wait_for_acks(
    bootstrap: str,
    command_id: str,
    issued_at: int,
    *,
    agent_id: str | None = None,
    timeout_s: float = 10.0,
    recent_s: float = 300.0,
    topic: str = CONTROL_ACKS,
    control_keys: Mapping[str, Secret] | None = None,
) -> AckReport:
    """Read acknowledgements until every recently heard guard (of ``agent_id`` if given) has
    acknowledged ``command_id``, or ``timeout_s`` passed. With ``control_keys`` (the worker's
    master keys) unsigned or forged acks are ignored and counted."""
    report = AckReport(command_id, issued_at)
    since = issued_at - int(recent_s * 1000)
    codec = control_ack_codec()
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                client_id="tripwire-operator-acks", fetch_max_wait_ms=100)
    started = time.monotonic()
    await consumer.start()
    try:
        await consumer.topics()
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            raise LookupError(f"topic {topic} does not exist on {bootstrap}")
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        await _seek_to_time(consumer, tps, since)
        deadline = started + timeout_s
        caught_up: set[TopicPartition] = set()
        while True:
            batches = await consumer.getmany(*tps, timeout_ms=100)
            for records in batches.values():
                for record in records:
                    _take(report, record, codec, since, agent_id, control_keys)
            for tp in tps:
                highwater = consumer.highwater(tp)
                if highwater is not None and await consumer.position(tp) >= highwater:
                    caught_up.add(tp)
            # Nobody heard from recently: nothing to wait for (the report says 0 of 0).
            done = len(caught_up) == len(tps) and not report.silent
            if done or time.monotonic() >= deadline:
                break
    finally:
        await consumer.stop()
    report.waited_s = time.monotonic() - started
    return report


async def _seek_to_time(consumer: AIOKafkaConsumer, tps: list[TopicPartition],
                        since_ms: int) -> None:
    try:
        found = await asyncio.wait_for(
            consumer.offsets_for_times(dict.fromkeys(tps, since_ms)), 5.0)
    except Exception:  # noqa: BLE001 - a broker without time index: read from the start
        found = {}
    for tp in tps:
        at = found.get(tp)
        if at is None:
            await consumer.seek_to_beginning(tp)
        else:
            consumer.seek(tp, at.offset)


def _take(report: AckReport, record: Any, codec: Any, since: int, agent_id: str | None,
          control_keys: Mapping[str, Secret] | None) -> None:
    if record.value is None:
        return
    try:
        ack = codec.decode(record.value)
    except DecodeError:
        return
    if ack["applied_at"] < since or (agent_id is not None and ack["agent_id"] != agent_id):
        return
    if control_keys and verify_ack(ack, record.headers, control_keys) is not None:
        report.unauthenticated += 1
        return
    instance = ack["guard_instance"]
    report.guards[instance] = ack["agent_id"]
    if ack["kind"] == "applied" and ack.get("command_id") == report.command_id:
        took = max(0, ack["applied_at"] - report.issued_at)
        report.obeyed[instance] = min(took, report.obeyed.get(instance, took))
