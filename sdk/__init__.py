"""Tripwire's agent SDK: record an agent's steps and ship them to Kafka.

    from tripwire.sdk import Emitter, AgentSession

    emitter = Emitter("kafka:9092")
    session = AgentSession(emitter, "agent-007", workflow="crm-sync", owner="revops-team",
                           environment="prod")
    with session.run() as run:
        run.tool_call("crm.get_contact", "read", {"contact_id": "C-1"})
    emitter.close()
"""

from tripwire.sdk.emitter import AsyncEmitter, Emitter, EmitterStats, default_compression
from tripwire.sdk.steps import (
    AgentSession,
    EventSink,
    Run,
    RunAlreadyEnded,
    blank_event,
    canonical_params_json,
    params_hash,
)

__all__ = [
    "AgentSession",
    "AsyncEmitter",
    "Emitter",
    "EmitterStats",
    "EventSink",
    "Run",
    "RunAlreadyEnded",
    "blank_event",
    "canonical_params_json",
    "default_compression",
    "params_hash",
]
