"""The operator console: every agent with its mode, since when and why; actions on them.

:class:`Console` tails every partition of ``agent-controls`` from the beginning and keeps
each agent's controls (applied like the guard applies them, see ``sdk.operator``), so the
page shows what the guards enforce. Actions are operator commands (``sdk.operator``),
signed by this server's operator key under the logged-in operator's name, and audited.

The actions are a table (:data:`ACTIONS`): each names the fields it takes and builds its
command, and the page draws a button per action from ``GET /api/console``. A new control
(e.g. scoped restrictions) is one more entry.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from tripwire.schemas.codec import DecodeError, control_codec
from tripwire.schemas.command_signing import ControlVerifier, Secret, derive_agent_key
from tripwire.schemas.modes import Mode
from tripwire.schemas.topics import CONTROLS
from tripwire.sdk.operator import OperatorKey, _status_of, issue, new_command, parse_duration

log = logging.getLogger(__name__)


class ConsoleError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class ConsoleAction:
    name: str
    label: str
    fields: tuple[str, ...]
    """Form fields besides agent_id and reason: ``mode``, ``duration``."""
    build: Callable[[Mapping[str, Any], str], dict[str, Any]]
    """(form, operator) -> an unsigned command record; ValueError for bad input."""
    danger: bool = False


def _duration(form: Mapping[str, Any]) -> int | None:
    text = str(form.get("duration") or "").strip()
    return parse_duration(text) if text else None


ACTIONS: dict[str, ConsoleAction] = {
    "kill": ConsoleAction(
        "kill", "Kill", (), danger=True,
        build=lambda f, op: new_command("kill", reason=str(f.get("reason") or ""), operator=op,
                                        agent_id=str(f.get("agent_id") or ""))),
    "pin": ConsoleAction(
        "pin", "Pin", ("mode", "duration"),
        build=lambda f, op: new_command("pin", reason=str(f.get("reason") or ""), operator=op,
                                        agent_id=str(f.get("agent_id") or ""),
                                        mode=Mode(str(f.get("mode") or "")),
                                        duration_ms=_duration(f))),
    "release": ConsoleAction(
        "release", "Release", (),
        build=lambda f, op: new_command("release", reason=str(f.get("reason") or ""),
                                        operator=op, agent_id=str(f.get("agent_id") or ""))),
}


class Console:
    def __init__(
        self,
        bootstrap: str,
        *,
        operator_key: OperatorKey | None,
        control_keys: Mapping[str, Secret] | None = None,
        idempotence: bool = False,
        fetch_max_wait_ms: int = 50,
    ) -> None:
        self.bootstrap = bootstrap
        self.operator_key = operator_key
        self.control_keys = dict(control_keys or {})
        self.idempotence = idempotence
        self.fetch_max_wait_ms = fetch_max_wait_ms
        self.controls: dict[str, list[dict[str, Any]]] = {}
        self.unauthenticated: dict[str, int] = {}
        self._codec = control_codec()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False,
                                    fetch_max_wait_ms=self.fetch_max_wait_ms,
                                    client_id="tripwire-console")
        await consumer.start()
        await consumer.topics()
        parts = consumer.partitions_for_topic(CONTROLS)
        if not parts:
            await consumer.stop()
            raise LookupError(f"topic {CONTROLS} does not exist (run tripwire init)")
        tps = [TopicPartition(CONTROLS, p) for p in sorted(parts)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        self._task = asyncio.create_task(self._follow(consumer, tps))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task

    async def _follow(self, consumer: AIOKafkaConsumer, tps: list[TopicPartition]) -> None:
        try:
            while True:
                batches = await consumer.getmany(*tps, timeout_ms=self.fetch_max_wait_ms)
                for records in batches.values():
                    for record in records:
                        self._on_record(record)
        finally:
            await consumer.stop()

    def _on_record(self, record: Any) -> None:
        if record.value is None:
            return
        try:
            control = self._codec.decode(record.value)
        except DecodeError:
            return
        agent = control["agent_id"]
        if record.key is not None and record.key != agent.encode("utf-8"):
            return
        if self.control_keys:
            keys = {k: derive_agent_key(s, agent) for k, s in self.control_keys.items()}
            if ControlVerifier(agent, keys).verify(control, record.headers) is not None:
                self.unauthenticated[agent] = self.unauthenticated.get(agent, 0) + 1
                return
        self.controls.setdefault(agent, []).append(control)

    def agents(self, known: list[str] = ()) -> list[dict[str, Any]]:  # type: ignore[assignment]
        """Every agent with a control, plus ``known`` ones (seen in ClickHouse or the inbox)."""
        out = []
        for agent in sorted(set(self.controls) | set(known)):
            status = _status_of(agent, self.controls.get(agent, []))
            row = status.to_json()
            row["unauthenticated"] = self.unauthenticated.get(agent, 0)
            # The agent's rung of earned autonomy and what the next one needs (the reason
            # of its latest autonomy.* control carries the numbers).
            earned = [c for c in self.controls.get(agent, [])
                      if (c.get("rule") or "").startswith("autonomy.")]
            latest = max(earned, key=lambda c: c["seq"]) if earned else None
            row["earned"] = None if latest is None else {
                "mode": latest["mode"], "rule": latest["rule"], "reason": latest["reason"],
                "at": latest["issued_at"]}
            out.append(row)
        return out

    def action_list(self) -> list[dict[str, Any]]:
        return [{"name": a.name, "label": a.label, "fields": list(a.fields), "danger": a.danger}
                for a in ACTIONS.values()]

    async def act(self, action: str, form: Mapping[str, Any], operator: str) -> dict[str, Any]:
        spec = ACTIONS.get(action)
        if spec is None:
            raise ConsoleError(404, f"unknown action {action!r}")
        if self.operator_key is None:
            raise ConsoleError(503, "this server has no operator key (TRIPWIRE_OPERATOR_KEY_ID "
                               "and TRIPWIRE_OPERATOR_KEY): it cannot sign commands")
        try:
            command = spec.build(form, operator)
        except ValueError as exc:
            raise ConsoleError(400, str(exc)) from None
        sent = await issue(self.bootstrap, command, self.operator_key,
                           idempotence=self.idempotence)
        return {"command_id": command["command_id"], "action": action,
                "agent_id": command.get("agent_id"), "copies": len(sent)}
