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

from tripwire.dashboards.runner import run_query
from tripwire.schemas.codec import DecodeError, control_codec
from tripwire.schemas.command_signing import ControlVerifier, Secret, derive_agent_key
from tripwire.schemas.modes import Mode
from tripwire.schemas.topics import CONTROLS
from tripwire.sdk.operator import OperatorKey, _status_of, issue, new_command, parse_duration
from tripwire.sdk.scopes import AGENT_KEY_SEPARATOR, Scope
from tripwire.sinks.clickhouse import Client

log = logging.getLogger(__name__)


def attach_ack_counts(client: Client, agents: list[dict[str, Any]], now_ms: int) -> None:
    """Give each listed control (``row["controls"]``) its ``acks`` from ClickHouse: how many
    of the guards its scope covers acknowledged applying it (``obeyed``) and the slowest apply
    time (``slowest_ms``), None when no guard acknowledged it (yet); and its ``guards``: how
    many guards its scope covers were heard from around it (``heard_from``, None when the
    scope is not known, e.g. acks stored before migration 0019) and how many heard from did
    not state what the scope selects on (``unknown_scope``). The safety dashboard's "Controls
    obeyed by guards" query, over the listed agents since the oldest listed control; the
    console lists an agent's own and agent-scoped controls, so those are its guards."""
    listed = [c for row in agents for c in row.get("controls", [])]
    if not listed:
        return
    result = run_query(client, "safety_control_acks", {
        "from_ms": min(c["issued_at"] for c in listed), "to_ms": now_ms + 1,
        "agents": sorted({row["agent_id"] for row in agents if row.get("controls")})})
    acks = {r["control"]: r for r in result.records()}
    for control in listed:
        found = acks.get(control["control"])
        control["acks"] = None if found is None or not found["obeyed"] else {
            "obeyed": found["obeyed"], "slowest_ms": found["slowest_ms"]}
        control["guards"] = None if found is None else {
            "heard_from": found["heard_from"], "unknown_scope": found["unknown_scope"]}


class ConsoleError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class ConsoleAction:
    name: str
    label: str
    fields: tuple[str, ...]
    """Form fields besides agent_id and reason: ``mode``, ``duration``, ``tool``."""
    build: Callable[[Mapping[str, Any], str], dict[str, Any]]
    """(form, operator) -> an unsigned command record; ValueError for bad input."""
    danger: bool = False


def _duration(form: Mapping[str, Any]) -> int | None:
    text = str(form.get("duration") or "").strip()
    return parse_duration(text) if text else None


def _agent(form: Mapping[str, Any]) -> str:
    # Without an agent the scope would be the tool across the fleet: not this button's job.
    agent = str(form.get("agent_id") or "").strip()
    if not agent:
        raise ValueError("restrict from the console needs an agent_id")
    return agent


def _tool(form: Mapping[str, Any]) -> str:
    tool = str(form.get("tool") or "").strip()
    if not tool:
        raise ValueError("name the tool to restrict (a name or a pattern, warehouse.drop_*)")
    return tool


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
    # The command `tripwire restrict AGENT --tool TOOL --mode MODE` sends (same builder, same
    # scope): a ceiling on this agent's use of one tool, until released.
    "restrict": ConsoleAction(
        "restrict", "Restrict tool", ("tool", "mode"),
        build=lambda f, op: new_command("restrict", reason=str(f.get("reason") or ""),
                                        operator=op, mode=Mode(str(f.get("mode") or "")),
                                        scope=Scope(agent_id=_agent(f), tool=_tool(f)))),
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
        self.scoped: dict[str, dict[str, dict[str, Any]]] = {}
        """Per agent, its scoped controls (agent + tool, ...) in force, by record key."""
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
        key = None if record.key is None else record.key.decode("utf-8", "replace")
        scoped_of = key.split(AGENT_KEY_SEPARATOR, 1)[0] \
            if key is not None and AGENT_KEY_SEPARATOR in key else None
        if record.value is None:
            if scoped_of is not None:  # a released scope's tombstone
                self.scoped.get(scoped_of, {}).pop(key, None)
            return
        try:
            control = self._codec.decode(record.value)
        except DecodeError:
            return
        agent = control["agent_id"]
        if key is not None and key != agent and scoped_of != agent:
            return
        if self.control_keys:
            keys = {k: derive_agent_key(s, agent) for k, s in self.control_keys.items()}
            if ControlVerifier(agent, keys).verify(control, record.headers) is not None:
                self.unauthenticated[agent] = self.unauthenticated.get(agent, 0) + 1
                return
        if scoped_of is not None:
            held = self.scoped.setdefault(agent, {})
            if key not in held or held[key]["seq"] <= control["seq"]:
                held[key] = {**control, "key": key}
            return
        self.controls.setdefault(agent, []).append(control)

    def listed_controls(self, agent: str) -> list[dict[str, Any]]:
        """The controls the page lists for ``agent``: its own mode's and its scoped ones, each
        with ``control``, the name guards' acknowledgements give it (command id, or record key
        and seq, as in the ``safety_control_acks`` query)."""
        own = self.controls.get(agent, [])
        status = _status_of(agent, own)
        current = [c for c in own if c["seq"] == status.seq][-1:]
        out = []
        # A released scope is a record with the autonomous ceiling (streams/scope_controls.py):
        # nothing in force, not listed.
        for key, control in [(agent, c) for c in current] + [
                (k, c) for k, c in sorted(self.scoped.get(agent, {}).items())
                if c["mode"] != str(Mode.AUTONOMOUS)]:
            scope = "agent" if key == agent else Scope.from_record(control).key()
            out.append({"scope": scope, "mode": control["mode"], "reason": control["reason"],
                        "issued_at": control["issued_at"],
                        "control": control.get("command_id") or f"{key}#{control['seq']}"})
        return out

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
            row["controls"] = self.listed_controls(agent)
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
