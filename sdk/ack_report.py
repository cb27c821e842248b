"""Did the control reach the agents? Count guards' acknowledgements of one command.

``tripwire kill ...`` issues a command, then :func:`wait_for_acks` reads ``agent-control-acks``
until every guard heard from recently (an ack or hello within ``recent_s``) whose agent the
command's scope covers has acknowledged a control carrying the command's id, or until
``timeout_s``. Guards state their agent's version, workflow and environment in their acks, so
a workflow kill waits for that workflow's guards only. The report says: obeyed by N of the M
guards heard from (of the scope), the slowest apply time (applied_at - the command's
issued_at, both epoch ms: guard and operator clocks, so skew adds in), and the silent guards by
name.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from tripwire.schemas.codec import ACK_IDENTITY_FIELDS, DecodeError, control_ack_codec
from tripwire.schemas.command_signing import Secret, verify_ack
from tripwire.schemas.topics import CONTROL_ACKS
from tripwire.sdk.scopes import Scope

__all__ = ["AckReport", "format_ack_report", "wait_for_acks"]


@dataclass
class AckReport:
    command_id: str
    issued_at: int
    scope: Scope | None = None
    """The command's scope: only guards it covers are expected to obey (None: every guard)."""
    heard: dict[str, tuple[str, dict[str, str | None]]] = field(default_factory=dict)
    """Guard instance -> (agent, identity) of every guard heard from within the window; the
    identity (agent_version, workflow, environment) as its latest ack stated it."""
    applied: dict[str, int] = field(default_factory=dict)
    """Guard instance -> apply time in ms after the command was issued."""
    unauthenticated: int = 0
    waited_s: float = 0.0

    def _coverage(self, instance: str) -> bool | None:
        if self.scope is None:
            return True
        agent, identity = self.heard[instance]
        return self.scope.covers_guard(agent, identity)

    @property
    def guards(self) -> dict[str, str]:
        """Guard instance -> agent, of the guards heard from whose agent the scope covers."""
        return {g: agent for g, (agent, _) in self.heard.items() if self._coverage(g)}

    @property
    def unknown(self) -> dict[str, str]:
        """Guards heard from that did not state what the scope selects on (e.g. their
        workflow, for a workflow kill): whether they must obey cannot be told."""
        return {g: agent for g, (agent, _) in self.heard.items() if self._coverage(g) is None}

    @property
    def obeyed(self) -> dict[str, int]:
        """Apply times of the covered guards that acknowledged the command."""
        covered = self.guards
        return {g: ms for g, ms in self.applied.items() if g in covered}

    @property
    def silent(self) -> list[str]:
        obeyed = self.obeyed
        return sorted(g for g in self.guards if g not in obeyed)

    @property
    def slowest_ms(self) -> int | None:
        obeyed = self.obeyed
        return max(obeyed.values()) if obeyed else None


def format_ack_report(report: AckReport, max_named: int = 20) -> str:
    n, m = len(report.obeyed), len(report.guards)
    covered = ("" if report.scope is None or report.scope.is_fleet
               else f" of {report.scope.key()}")
    line = f"obeyed by {n} of {m} guards{covered} heard from recently"
    if report.slowest_ms is not None:
        line += f"; slowest applied {report.slowest_ms} ms after issue"
    if report.silent:
        names = [f"{g} ({report.guards[g]})" for g in report.silent[:max_named]]
        more = len(report.silent) - max_named
        line += "; silent: " + ", ".join(names) + (f" and {more} more" if more > 0 else "")
    unknown = report.unknown
    if unknown:
        needs = [n for n in ("agent_version", "workflow", "environment")
                 if report.scope is not None and getattr(report.scope, n) is not None]
        line += (f"; {len(unknown)} more heard from did not say their "
                 f"{' or '.join(needs)} (not counted)")
    if report.unauthenticated:
        line += f"; {report.unauthenticated} unauthenticated ack(s) ignored"
    return line


async def wait_for_acks(
    bootstrap: str,
    command_id: str,
    issued_at: int,
    *,
    agent_id: str | None = None,
    scope: Scope | None = None,
    timeout_s: float = 10.0,
    recent_s: float = 300.0,
    topic: str = CONTROL_ACKS,
    control_keys: Mapping[str, Secret] | None = None,
) -> AckReport:
    """Read acknowledgements until every recently heard guard that ``scope`` covers (the
    guards of ``agent_id``, if given instead) has acknowledged ``command_id``, or
    ``timeout_s`` passed. With ``control_keys`` (the worker's master keys) unsigned or forged
    acks are ignored and counted."""
    if scope is None and agent_id is not None:
        scope = Scope(agent_id=agent_id)
    report = AckReport(command_id, issued_at, scope)
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
                    _take(report, record, codec, since, control_keys)
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


def _take(report: AckReport, record: Any, codec: Any, since: int,
          control_keys: Mapping[str, Secret] | None) -> None:
    if record.value is None:
        return
    try:
        ack = codec.decode(record.value)
    except DecodeError:
        return
    if ack["applied_at"] < since:
        return
    if control_keys and verify_ack(ack, record.headers, control_keys) is not None:
        report.unauthenticated += 1
        return
    instance = ack["guard_instance"]
    known = report.heard.get(instance, (None, {}))[1]
    # An older ack may have said more (a guard learns its workflow from its first run).
    identity = {n: ack.get(n) or known.get(n) for n in ACK_IDENTITY_FIELDS}
    report.heard[instance] = (ack["agent_id"], identity)
    if ack["kind"] == "applied" and ack.get("command_id") == report.command_id:
        took = max(0, ack["applied_at"] - report.issued_at)
        report.applied[instance] = min(took, report.applied.get(instance, took))
