"""The guard's acknowledgements: "I applied control X at time T", and "I am following".

Each applied control becomes one small ControlAck record (``schemas/control_ack.avsc``) on
``agent-control-acks``, keyed by agent id and signed with the agent's derived control key when
the guard has one. A ``hello`` goes out when the guard has caught up and then every
``heartbeat_s``, so ``tripwire kill`` can say how many of the guards heard from recently obeyed
and name the silent ones.

Acknowledging is best effort by design: it never delays or blocks a decision. A guard that
cannot reach the broker is stale anyway (and in its safe mode), and it shows up as silent.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import time
from collections.abc import Mapping
from typing import Any

from aiokafka import AIOKafkaProducer

from tripwire.schemas.codec import control_ack_codec
from tripwire.schemas.command_signing import Secret, sign_ack

__all__ = ["AckPublisher", "default_instance_id"]

log = logging.getLogger("tripwire.sdk.guard")

MAX_QUEUED = 10_000
"""Acks held while the broker is unreachable; beyond that the oldest are dropped (a guard
restarting against a long history applies every record once, and that must not grow memory
without bound)."""


def default_instance_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


class AckPublisher:
    def __init__(
        self,
        bootstrap: str,
        agent_id: str,
        *,
        topic: str,
        instance_id: str | None = None,
        agent_keys: Mapping[str, Secret] | None = None,
        heartbeat_s: float = 30.0,
        agent_version: str | None = None,
        workflow: str | None = None,
        environment: str | None = None,
    ) -> None:
        self.bootstrap = bootstrap
        self.agent_id = agent_id
        self.topic = topic
        self.instance_id = instance_id or default_instance_id()
        self.heartbeat_s = heartbeat_s
        # Sent with every ack, so `tripwire kill --workflow w` counts only w's guards.
        self.identity: dict[str, str | None] = {
            "agent_version": agent_version, "workflow": workflow, "environment": environment}
        self._key = next(iter(agent_keys.items())) if agent_keys else None
        self._codec = control_ack_codec()
        self._queue: asyncio.Queue[dict[str, Any]] | None = None
        self._pending: list[dict[str, Any]] = []
        self._identity_changed = False
        self.sent = 0

    def learn(self, agent_version: str | None, workflow: str | None,
              environment: str | None) -> None:
        """Fill in identity the guard was not given, from the first run that states it (a
        guard's agent runs in one workflow and environment; a later hello carries it)."""
        identity = self.identity
        for name, value in (("agent_version", agent_version), ("workflow", workflow),
                            ("environment", environment)):
            if value is not None and identity[name] is None:
                identity[name] = value
                # Called from agent threads: the ack loop sends the hello that says so.
                self._identity_changed = True

    def applied(self, control: Mapping[str, Any], key: str) -> None:
        """Queue the ack of one applied control (called on the follower's event loop)."""
        self._put({
            "kind": "applied",
            "guard_instance": self.instance_id,
            "agent_id": self.agent_id,
            "control_key": key,
            "seq": int(control["seq"]),
            "mode": str(control["mode"]),
            "command_id": control.get("command_id"),
            "issued_at": control.get("issued_at"),
            "applied_at": time.time_ns() // 1_000_000,
            **self.identity,
        })

    def hello(self) -> None:
        self._put({"kind": "hello", "guard_instance": self.instance_id,
                   "agent_id": self.agent_id, "applied_at": time.time_ns() // 1_000_000,
                   **self.identity})

    def _put(self, ack: dict[str, Any]) -> None:
        if self._queue is None:
            self._pending.append(ack)
            del self._pending[:-MAX_QUEUED]
            return
        if self._queue.qsize() >= MAX_QUEUED:
            self._queue.get_nowait()
        self._queue.put_nowait(ack)

    async def run(self, ready: Any = None) -> None:
        """Send queued acks until cancelled; ``ready`` (a threading.Event) gates the first
        hello so it means "caught up"."""
        self._queue = asyncio.Queue()
        for ack in self._pending:
            self._queue.put_nowait(ack)
        self._pending.clear()
        producer: AIOKafkaProducer | None = None
        next_hello = 0.0
        try:
            while True:
                if producer is None:
                    producer = await self._connect()
                    if producer is None:
                        await asyncio.sleep(1.0)
                        continue
                now = time.monotonic()
                if (now >= next_hello or self._identity_changed) \
                        and (ready is None or ready.is_set()):
                    self._identity_changed = False
                    self.hello()
                    next_hello = now + self.heartbeat_s
                try:
                    # Not asyncio.wait_for: on Python 3.11 it drops a cancellation that
                    # arrives with an ack, and the guard's close then waited forever.
                    async with asyncio.timeout(0.5):
                        ack = await self._queue.get()
                except TimeoutError:
                    continue
                batch = [ack]
                while not self._queue.empty():
                    batch.append(self._queue.get_nowait())
                try:
                    for item in batch:
                        headers = sign_ack(item, *self._key) if self._key else None
                        await producer.send(self.topic, self._codec.encode(item),
                                            key=self.agent_id.encode("utf-8"), headers=headers)
                    await producer.flush()
                    self.sent += len(batch)
                except Exception as exc:  # noqa: BLE001 - best effort: retry on a new producer
                    log.debug("tripwire guard %s: ack send failed: %r", self.agent_id, exc)
                    for item in batch:
                        self._put(item)
                    await _stop(producer)
                    producer = None
        finally:
            if producer is not None:
                await _stop(producer)

    async def _connect(self) -> AIOKafkaProducer | None:
        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks=1, linger_ms=0,
                                    client_id="tripwire-guard-acks", enable_idempotence=False)
        try:
            await producer.start()
        except Exception as exc:  # noqa: BLE001 - the broker may be down; the guard goes on
            log.debug("tripwire guard %s: ack producer unavailable: %r", self.agent_id, exc)
            await _stop(producer)
            return None
        return producer


async def _stop(producer: AIOKafkaProducer) -> None:
    try:
        await producer.stop()
    except Exception as exc:  # noqa: BLE001
        log.debug("tripwire guard: ack producer stop failed: %r", exc)
