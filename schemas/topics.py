"""Names and shapes of Tripwire's Kafka topics, and their explicit creation.

Topics are created before any worker starts: a broker that auto-creates topics picks its own
partition count, which breaks co-partitioning between the steps topic and Faust's changelogs.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, TopicAlreadyExistsError

from tripwire.schemas.service_errors import KafkaUnreachable, ServiceError, kafka_errors

STEPS = "agent-steps"
STEPS_DLQ = "agent-steps-dlq"
CONTROLS = "agent-controls"
DETECTIONS = "agent-detections"
COMMANDS = "agent-commands"
CONTROLS_SHARED = "agent-controls-shared"
"""Compacted, one partition: controls on scopes without an agent (fleet, environment, workflow,
version, tool, action class) and standing policy rules; every guard reads it whole."""
CONTROL_ACKS = "agent-control-acks"
"""Guards' acknowledgements of the controls they applied (and their start-up hellos)."""
APPROVAL_REQUESTS = "approval-requests"
"""Guarded calls waiting for a human, keyed by agent (schemas/approval_request.avsc)."""
APPROVAL_DECISIONS = "approval-decisions"
"""Signed answers to them, keyed by agent; each guard follows its own partition."""


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    config: dict[str, str] = field(default_factory=dict)


def tripwire_topics(partitions: int) -> list[TopicSpec]:
    compacted = {"cleanup.policy": "compact"}
    return [
        TopicSpec(STEPS, partitions),
        TopicSpec(STEPS_DLQ, partitions),
        TopicSpec(CONTROLS, partitions, compacted),
        TopicSpec(DETECTIONS, partitions),
        TopicSpec(COMMANDS, partitions),
        # One partition: total order over shared controls, and a guard reads one partition
        # whatever the fleet size (sdk/scopes.py says why not a partition of CONTROLS).
        TopicSpec(CONTROLS_SHARED, 1, compacted),
        TopicSpec(CONTROL_ACKS, partitions),
        TopicSpec(APPROVAL_REQUESTS, partitions),
        TopicSpec(APPROVAL_DECISIONS, partitions),
    ]


class TopicMismatch(ServiceError, RuntimeError):
    """An existing topic has a different partition count than configured."""


async def ensure_topics(
    bootstrap: str, specs: list[TopicSpec], replication: int = 1, timeout_s: float = 30.0
) -> None:
    """Create missing topics; fail if an existing one has the wrong partition count.

    An unreachable broker is retried for ``timeout_s`` (a broker may still be starting next
    to the worker), then :class:`KafkaUnreachable`."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        try:
            await admin.start()
            break
        except KafkaConnectionError as exc:
            if asyncio.get_running_loop().time() > deadline:
                raise KafkaUnreachable(bootstrap, f"{exc}; retried {timeout_s:g} s") from exc
            await asyncio.sleep(0.2)
    try:
        with kafka_errors(bootstrap):
            await _ensure(admin, specs, replication)
    finally:
        await admin.close()


async def _ensure(admin: AIOKafkaAdminClient, specs: list[TopicSpec], replication: int) -> None:
    existing = set(await admin.list_topics())
    missing = [s for s in specs if s.name not in existing]
    if missing:
        try:
            await admin.create_topics(
                [NewTopic(s.name, s.partitions, replication, topic_configs=s.config or None)
                 for s in missing]
            )
        except TopicAlreadyExistsError:
            pass  # another worker won the race; the check below still applies
    described = await admin.describe_topics([s.name for s in specs])
    counts = {d["topic"]: len(d["partitions"]) for d in described}
    for s in specs:
        if counts.get(s.name) != s.partitions:
            raise TopicMismatch(
                f"topic {s.name} has {counts.get(s.name)} partitions, configured "
                f"{s.partitions} (TRIPWIRE_PARTITIONS); co-partitioned state needs them equal"
            )
