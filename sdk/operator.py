"""Operator control: signed commands onto ``agent-commands``, and what the fleet is doing now.

Commands are built with :func:`new_command`, signed with the operator's key and produced by
:func:`issue`. The Tripwire worker verifies them (``schemas.command_signing``), applies them in
order with the agent's events and publishes the resulting mode on ``agent-controls``.

Record keys: a command for one agent is keyed by its ``agent_id``, so it lands on the same
partition as the agent's steps and controls. ``kill_all`` goes to *every* partition, keyed
:data:`KILL_ALL_KEY`, one separately signed copy each (same ``command_id``, own nonce), so a
worker applying partition p halts the agents of partition p without any fan-out of its own;
the copy on partition 0 also sets the fleet ceiling on ``agent-controls-shared``, which binds
agents no worker knows (never emitted, started later, state dropped) until ``release_all``.
A command on a shared scope (workflow, environment, tool, ...) is keyed by its scope key, so one
worker publishes its ceiling; one on an agent's scope is keyed by the agent.

:func:`read_status` answers "what mode is each agent in, since when, why" from Kafka alone
(``agent-controls`` and ``agent-detections``), so it works while the embedded ClickHouse is
held by the worker.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from tripwire.schemas.codec import DecodeError, command_codec, control_codec, detection_codec
from tripwire.schemas.command_signing import ControlVerifier, Secret, derive_agent_key, sign_command
from tripwire.schemas.modes import Mode
from tripwire.schemas.service_errors import TopicMissing, kafka_errors
from tripwire.schemas.topics import COMMANDS, CONTROLS, CONTROLS_SHARED, DETECTIONS
from tripwire.sdk.control_follower import key_partition
from tripwire.sdk.scopes import Scope

__all__ = [
    "KILL_ALL_KEY",
    "AgentStatus",
    "OperatorKey",
    "command_key",
    "command_scope",
    "format_status",
    "issue",
    "new_command",
    "publish_scope_control",
    "read_shared_controls",
    "parse_duration",
    "read_status",
]

KILL_ALL_KEY = "*"
"""Record key of the per-partition copies of a kill_all command."""

_DURATION_RE = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNIT_MS = {"s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_UNTIL_RELEASED = frozenset({"indefinite", "forever", "until-release"})


@dataclass(frozen=True)
class OperatorKey:
    key_id: str
    secret: Secret = field(repr=False)


def parse_duration(text: str) -> int | None:
    """``90s``, ``15m``, ``2h``, ``1d`` to milliseconds; ``indefinite`` to None (until
    released). ValueError for anything else."""
    text = text.strip().lower()
    if text in _UNTIL_RELEASED:
        return None
    m = _DURATION_RE.match(text)
    if m is None:
        raise ValueError(f"duration {text!r}: expected e.g. 90s, 15m, 2h, 1d or indefinite")
    ms = int(float(m.group(1)) * _UNIT_MS[m.group(2)])
    if ms <= 0:
        raise ValueError("duration must be positive")
    return ms


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def new_command(
    action: str,
    *,
    reason: str,
    operator: str,
    agent_id: str | None = None,
    mode: Mode | str | None = None,
    duration_ms: int | None = None,
    now_ms: int | None = None,
    command_id: str | None = None,
    scope: Scope | None = None,
) -> dict[str, Any]:
    """An unsigned Command record; ValueError if it is not one the breaker can apply.

    ``scope`` (selectors beyond the agent: version, environment, workflow, tool, action class)
    makes kill / pin / restrict / release act on that scope's ceiling instead of the agent's
    breaker; ``agent_id`` combines with it (agent + tool, agent + version).
    """
    if not reason or not reason.strip():
        raise ValueError("a reason is required: it is shown to the agent's owner and audited")
    if not operator:
        raise ValueError("the operator's name is required")
    if scope is not None and agent_id is not None and scope.agent_id not in (None, agent_id):
        raise ValueError("agent_id and scope.agent_id disagree")
    if scope is not None and scope.agent_id is not None:
        agent_id = scope.agent_id
    selectors = {} if scope is None else {k: v for k, v in scope.selectors().items()
                                          if k != "agent_id"}
    if action in ("kill_all", "release_all"):
        if agent_id is not None or selectors:
            raise ValueError(f"{action} names no agent and no scope (it is the whole fleet)")
    elif action in ("kill", "pin", "release", "restrict"):
        if not agent_id and not selectors:
            raise ValueError(f"{action} needs an agent id or a scope (or --all for the fleet)")
    else:
        raise ValueError(f"unknown action {action!r}")
    if action in ("pin", "restrict"):
        if mode is None:
            raise ValueError(f"{action} needs a mode")
        mode = Mode(mode)
    elif mode is not None or duration_ms is not None:
        raise ValueError(f"{action} takes no mode or duration")
    if action == "restrict" and duration_ms is not None:
        raise ValueError("restrict lasts until released; use pin for a time-limited ceiling")
    if duration_ms is not None and duration_ms <= 0:
        raise ValueError("duration must be positive")
    return {
        "command_id": command_id or str(uuid.uuid4()),
        "action": action,
        "agent_id": agent_id,
        "mode": None if mode is None else str(mode),
        "duration_ms": duration_ms,
        "reason": reason.strip(),
        "operator": operator,
        "issued_at": _now_ms() if now_ms is None else now_ms,
        **selectors,
    }


def command_scope(command: Mapping[str, Any]) -> Scope | None:
    """The scope a command sets a ceiling on; None when it acts on an agent's breaker (plain
    kill / pin / release of one agent) or on the whole fleet's breakers (kill_all,
    release_all, which also set or lift the fleet ceiling)."""
    scope = Scope.from_record(command)
    if command["action"] in ("kill_all", "release_all"):
        return None
    if command["action"] != "restrict" and scope.selectors().keys() <= {"agent_id"}:
        return None
    return scope


def command_key(command: Mapping[str, Any]) -> str:
    """The record key of a command on ``agent-commands``: the agent (applied in order with its
    events), the scope key for a shared scope, :data:`KILL_ALL_KEY` for fleet-wide copies."""
    if command["action"] in ("kill_all", "release_all"):
        return KILL_ALL_KEY
    if command.get("agent_id"):
        return command["agent_id"]
    return Scope.from_record(command).key()


async def publish_scope_control(
    bootstrap: str,
    key: OperatorKey,
    *,
    scope: Scope,
    mode: Mode | str | None,
    reason: str,
    operator: str,
    duration_ms: int | None = None,
    topic: str = COMMANDS,
    idempotence: bool = True,
) -> dict[str, Any]:
    """Set (``mode``) or lift (``mode=None``) the mode ceiling of any scope, as a signed,
    audited operator command; returns the command as sent (its ``command_id`` names the
    control in guards' acknowledgements, see :func:`wait_for_acks`).

    A fleet scope (no selectors) with ``halted`` is ``kill --all`` and lifting it is
    ``release --all``. For one agent's own mode use :func:`new_command` with kill/pin/release.
    """
    if scope.is_fleet:
        if mode is not None and Mode(mode) != Mode.HALTED:
            raise ValueError("the fleet scope takes halted (kill --all) or a release")
        action = "kill_all" if mode is not None else "release_all"
        command = new_command(action, reason=reason, operator=operator)
    elif mode is None:
        command = new_command("release", reason=reason, operator=operator, scope=scope)
    elif duration_ms is not None:
        command = new_command("pin", reason=reason, operator=operator, scope=scope, mode=mode,
                              duration_ms=duration_ms)
    else:
        command = new_command("restrict", reason=reason, operator=operator, scope=scope,
                              mode=mode)
    sent = await issue(bootstrap, command, key, topic=topic, idempotence=idempotence)
    return sent[0]


async def issue(
    bootstrap: str,
    command: Mapping[str, Any],
    key: OperatorKey,
    *,
    topic: str = COMMANDS,
    idempotence: bool = True,
    timeout_s: float = 15.0,
) -> list[dict[str, Any]]:
    """Sign ``command`` and produce it (acks=all); returns the signed records as sent."""
    codec = command_codec()
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        client_id="tripwire-operator",
        acks="all",
        enable_idempotence=idempotence,
        request_timeout_ms=int(timeout_s * 1000),
    )
    try:
        with kafka_errors(bootstrap):
            await producer.start()
        with kafka_errors(bootstrap):
            partitions = await _partitions(producer, topic, bootstrap, timeout_s)
        if command["action"] in ("kill_all", "release_all"):
            sends = [(p, KILL_ALL_KEY) for p in sorted(partitions)]
        else:
            sends = [(None, command_key(command))]
        sent = []
        for partition, record_key in sends:
            signed = sign_command(command, key.key_id, key.secret)
            with kafka_errors(bootstrap):
                await producer.send_and_wait(topic, codec.encode(signed),
                                             key=record_key.encode("utf-8"), partition=partition)
            sent.append(signed)
        return sent
    finally:
        await producer.stop()


async def _partitions(producer: AIOKafkaProducer, topic: str, bootstrap: str,
                      timeout_s: float) -> set[int]:
    # Asked of the whole cluster's metadata, not the topic's: a broker that auto-creates
    # topics (the embedded one does) would create a mistyped topic on a metadata request for
    # it, and one that does not would make the send wait out its whole request timeout.
    metadata = await asyncio.wait_for(producer.client.fetch_all_metadata(), timeout_s)
    partitions = metadata.partitions_for_topic(topic)
    if not partitions:
        raise TopicMissing(topic, bootstrap)
    return set(partitions)


# --- status -------------------------------------------------------------------------------


@dataclass
class AgentStatus:
    agent_id: str
    mode: str
    """The current mode; ``autonomous`` when no control was ever published."""
    since_ms: int | None
    """When the agent entered ``mode`` (the first of the latest same-mode controls)."""
    reason: str
    rule: str | None = None
    source: str | None = None
    seq: int | None = None
    expires_at: int | None = None
    stopped_runs: list[dict[str, Any]] = field(default_factory=list)
    detections: list[dict[str, Any]] = field(default_factory=list)
    """Latest detections first."""
    unauthenticated: int = 0
    """Control records skipped because their signature did not verify."""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


async def _read_to_end(
    bootstrap: str, topic: str, agent_id: str | None, timeout_s: float
) -> list[Any]:
    """Every record of ``topic`` (only the agent's partition if given) up to now.

    "Now" is the high watermark from Fetch responses: tansu's ListOffsets answers the last
    batch's base offset + 1, which undercounts batched topics.
    """
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                client_id="tripwire-operator-status")
    try:
        with kafka_errors(bootstrap):
            await consumer.start()
        with kafka_errors(bootstrap):
            await consumer.topics()
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            raise TopicMissing(topic, bootstrap)
        if agent_id is not None:
            partitions = {key_partition(agent_id.encode("utf-8"), len(partitions))}
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        records: list[Any] = []
        deadline = time.monotonic() + timeout_s
        pending = set(tps)
        while pending:
            if time.monotonic() > deadline:
                raise TimeoutError(f"could not read {topic} to its end in {timeout_s} s")
            batches = await consumer.getmany(*pending, timeout_ms=200)
            for msgs in batches.values():
                records.extend(msgs)
            for tp in list(pending):
                highwater = consumer.highwater(tp)
                if highwater is not None and await consumer.position(tp) >= highwater:
                    pending.discard(tp)
        return records
    finally:
        await consumer.stop()


async def read_shared_controls(
    bootstrap: str, *, topic: str = CONTROLS_SHARED, timeout_s: float = 30.0
) -> dict[str, dict[str, Any]]:
    """The latest decoded control per key on the shared-scope topic (what guards enforce),
    unverified: callers that need authenticity verify with the shared key."""
    codec = control_codec()
    latest: dict[str, dict[str, Any]] = {}
    for record in await _read_to_end(bootstrap, topic, None, timeout_s):
        if record.value is None or record.key is None:
            continue
        try:
            control = codec.decode(record.value)
        except DecodeError:
            continue
        key = record.key.decode("utf-8", "replace")
        if key not in latest or control["seq"] > latest[key]["seq"]:
            latest[key] = control
    return latest


def _latest_controls(
    records: Sequence[Any],
    agent_id: str | None,
    control_keys: Mapping[str, Secret] | None,
) -> tuple[dict[str, list[dict[str, Any]]], dict[str, int]]:
    codec = control_codec()
    by_agent: dict[str, list[dict[str, Any]]] = {}
    unauthenticated: dict[str, int] = {}
    for record in records:
        if record.value is None:
            continue
        try:
            ctl = codec.decode(record.value)
        except DecodeError:
            continue
        agent = ctl["agent_id"]
        if agent_id is not None and agent != agent_id:
            continue
        if record.key is not None and record.key != agent.encode("utf-8"):
            continue
        if control_keys:
            verifier = ControlVerifier(
                agent, {k: derive_agent_key(secret, agent) for k, secret in control_keys.items()})
            if verifier.verify(ctl, record.headers) is not None:
                unauthenticated[agent] = unauthenticated.get(agent, 0) + 1
                continue
        by_agent.setdefault(agent, []).append(ctl)
    return by_agent, unauthenticated


def _status_of(agent_id: str, controls: list[dict[str, Any]]) -> AgentStatus:
    # Applied the way the guard applies them: in seq order, duplicates ignored.
    ordered = sorted({c["seq"]: c for c in controls}.values(), key=lambda c: c["seq"])
    agent_scoped = [c for c in ordered if c["scope"] == "agent"]
    stopped = [
        {"run_id": c["run_id"], "at": c["issued_at"], "reason": c["reason"]}
        for c in ordered if c["scope"] == "run" and c["mode"] == "halted"
    ]
    latest = ordered[-1] if ordered else None
    if latest is not None and latest["scope"] == "run" and latest.get("previous_mode"):
        # Compaction may have left only a run stop; it carries the agent's mode.
        if not agent_scoped or agent_scoped[-1]["mode"] != latest["previous_mode"]:
            agent_scoped.append({**latest, "mode": latest["previous_mode"],
                                 "reason": "mode in force at the latest run stop"})
    if not agent_scoped:
        return AgentStatus(agent_id, str(Mode.AUTONOMOUS), None,
                           "no mode change recorded", stopped_runs=stopped[::-1])
    current = agent_scoped[-1]
    since = current["issued_at"]
    for earlier in reversed(agent_scoped[:-1]):
        if earlier["mode"] != current["mode"]:
            break
        since = earlier["issued_at"]
    return AgentStatus(
        agent_id=agent_id,
        mode=current["mode"],
        since_ms=since,
        reason=current["reason"],
        rule=current.get("rule"),
        source=current.get("source"),
        seq=current["seq"],
        expires_at=current.get("expires_at"),
        stopped_runs=stopped[::-1],
    )


async def read_status(
    bootstrap: str,
    agent_id: str | None = None,
    *,
    controls_topic: str = CONTROLS,
    detections_topic: str = DETECTIONS,
    last_detections: int = 3,
    control_keys: Mapping[str, Secret] | None = None,
    timeout_s: float = 30.0,
) -> list[AgentStatus]:
    """Current mode, since when, why and the latest detections, per agent (or of one agent).

    With ``control_keys`` (the worker's master keys) controls whose signature does not
    verify are skipped and counted, so a forged record cannot make the status lie.
    """
    control_records = await _read_to_end(bootstrap, controls_topic, agent_id, timeout_s)
    detection_records = await _read_to_end(bootstrap, detections_topic, agent_id, timeout_s)
    by_agent, unauthenticated = _latest_controls(control_records, agent_id, control_keys)

    codec = detection_codec()
    detections: dict[str, list[dict[str, Any]]] = {}
    for record in detection_records:
        try:
            det = codec.decode(record.value)
        except DecodeError:
            continue
        if agent_id is None or det["agent_id"] == agent_id:
            detections.setdefault(det["agent_id"], []).append(det)

    agents = sorted(set(by_agent) | set(detections) | ({agent_id} if agent_id else set()))
    out = []
    for agent in agents:
        status = _status_of(agent, by_agent.get(agent, []))
        status.detections = sorted(detections.get(agent, []), key=lambda d: d["ts"],
                                   reverse=True)[:last_detections]
        status.unauthenticated = unauthenticated.get(agent, 0)
        out.append(status)
    return out


def _when(ms: int | None, now_ms: int) -> str:
    if ms is None:
        return "-"
    ago = max(0, (now_ms - ms) // 1000)
    span = f"{ago}s" if ago < 120 else f"{ago // 60}m" if ago < 7200 else f"{ago // 3600}h"
    stamp = datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    return f"{stamp} ({span} ago)"


def _detection_line(det: Mapping[str, Any], now_ms: int) -> str:
    run = f" run {det['run_id']}" if det.get("run_id") else ""
    return (f"{_when(det['ts'], now_ms)}  {det['severity']}  {det['detector']}  "
            f"{det['metric']}={det['value']:g} > {det['threshold']:g}{run}  {det['message']}")


def format_status(statuses: Sequence[AgentStatus], now_ms: int | None = None) -> str:
    """Human-readable status: a detailed block for one agent, a table for the fleet."""
    now = _now_ms() if now_ms is None else now_ms
    if not statuses:
        return "no agents have controls or detections yet"
    if len(statuses) == 1:
        return _format_one(statuses[0], now)
    rows = [("AGENT", "MODE", "SINCE", "WHY", "LAST DETECTION")]
    for s in statuses:
        last = s.detections[0] if s.detections else None
        rows.append((
            s.agent_id, s.mode, _when(s.since_ms, now), _clip(s.reason, 60),
            f"{last['detector']} {last['severity']} {_when(last['ts'], now)}" if last else "-",
        ))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(r[:-1], widths, strict=True)) + "  " + r[-1]
        for r in rows
    )


def _format_one(s: AgentStatus, now: int) -> str:
    lines = [f"agent    {s.agent_id}", f"mode     {s.mode}", f"since    {_when(s.since_ms, now)}",
             f"why      {s.reason}"]
    if s.rule or s.source:
        lines.append(f"by       {s.source or '-'}{f' (rule {s.rule})' if s.rule else ''}"
                     f"{f', seq {s.seq}' if s.seq is not None else ''}")
    if s.expires_at is not None:
        lines.append(f"until    {_when(s.expires_at, now)}")
    if s.unauthenticated:
        lines.append(f"WARNING  {s.unauthenticated} unauthenticated control record(s) ignored")
    if s.stopped_runs:
        lines.append("stopped runs:")
        lines += [f"  {r['run_id']}  {_when(r['at'], now)}  {r['reason']}"
                  for r in s.stopped_runs[:5]]
    lines.append("last detections:" if s.detections else "last detections: none")
    lines += [f"  {_detection_line(d, now)}" for d in s.detections]
    return "\n".join(lines)


def _clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"
