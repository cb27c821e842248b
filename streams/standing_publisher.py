"""Publish the policy's standing rules onto ``agent-controls-shared``.

Run by the worker before it reports ready (so a guard that starts once the worker is up finds
them before its agent's first call) and again when the policy file changes. Rules already on
the topic unchanged are not rewritten; rules gone from the policy are lifted.
"""

from __future__ import annotations

import logging

from aiokafka import AIOKafkaProducer

from tripwire.detectors.policy import Policy
from tripwire.schemas.codec import control_codec
from tripwire.schemas.command_signing import sign_control
from tripwire.sdk.operator import read_shared_controls
from tripwire.streams.scope_controls import ScopeControlWriter
from tripwire.streams.settings import TripwireSettings

__all__ = ["publish_standing"]

log = logging.getLogger("tripwire.streams")


async def publish_standing(
    settings: TripwireSettings, policy: Policy, writer: ScopeControlWriter, now_ms: int
) -> list[dict]:
    """Bring the shared topic's standing rules in line with ``policy``; returns the control
    records written (published or lifted)."""
    bootstrap = settings.bootstrap()
    published = await read_shared_controls(bootstrap, timeout_s=30.0)
    records = writer.standing(policy.standing.controls(), published, now_ms)
    if not records:
        return []
    key = None
    if settings.control_key_id:
        key = (settings.control_key_id,
               settings.control_keys[settings.control_key_id].get_secret_value())
    codec = control_codec()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all",
                                enable_idempotence=bool(settings.idempotence()),
                                client_id="tripwire-standing-rules")
    await producer.start()
    try:
        for r in records:
            headers = sign_control(r.control, *key) if key else None
            await producer.send_and_wait(r.topic, codec.encode(r.control),
                                         key=r.key.encode("utf-8"), partition=r.partition,
                                         headers=headers)
            log.info("standing rule %s -> %s: %s", r.key, r.control["mode"], r.control["reason"])
    finally:
        await producer.stop()
    return [r.control for r in records]
