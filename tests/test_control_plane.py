"""The control plane end to end: a real worker downgrades an agent, the agent's guard obeys,
operators kill and release it with signed commands, forgeries are refused and audited, and
owners get one alert per transition.

One broker, one worker and one webhook receiver serve the whole module (in test order);
ClickHouse is read at the end, after the worker has stopped.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiokafka import AIOKafkaProducer

from tripwire.bench.worker_process import (
    ROOT,
    WorkerProcess,
    operator_cli_env,
    read_all,
    signed_worker_env,
    wait_caught_up,
)
from tripwire.schemas import topics
from tripwire.schemas.codec import command_codec, control_codec
from tripwire.schemas.command_signing import derive_agent_key, sign_command
from tripwire.schemas.topics import ensure_topics, tripwire_topics
from tripwire.sdk import AgentSession, Emitter
from tripwire.sdk.guard import Guard
from tripwire.sdk.operator import new_command
from tripwire.streams.broker import EmbeddedBroker, free_port

pytestmark = pytest.mark.integration
PARTITIONS = 4
OPERATOR_KEY = ("ops-2026", "operator-secret-for-tests")
CONTROL_KEY = ("ctl-2026", "control-master-for-tests")
POLICY = """
defaults:
  breaker:
    cooldown_ms: 3000
    probation_ms: 3000
    # These tests are about agent-wide downgrades; tool-narrow containment is
    # tests/test_scope_controls.py's.
    containment: {narrow_tools: false}
"""


class WebhookReceiver:
    """An owner's webhook endpoint on 127.0.0.1, in its own thread and event loop."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.port = free_port()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()
        self._ready.wait(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)

        async def handle(request: web.Request) -> web.Response:
            self.bodies.append(await request.json())
            return web.Response(status=200)

        app = web.Application()
        app.router.add_post("/hook", handle)
        runner = web.AppRunner(app)
        self._loop.run_until_complete(runner.setup())
        self._loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", self.port).start())
        self._ready.set()
        self._loop.run_forever()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"


class Plane:
    def __init__(self, broker: EmbeddedBroker, worker: WorkerProcess, env: dict[str, str],
                 hooks: WebhookReceiver) -> None:
        self.broker, self.worker, self.env, self.hooks = broker, worker, env, hooks
        self.applied_command: dict[str, Any] | None = None  # replayed after a restart

    def guard(self, agent: str) -> Guard:
        keys = {CONTROL_KEY[0]: derive_agent_key(CONTROL_KEY[1], agent)}
        g = Guard(self.broker.bootstrap, agent, staleness_s=30, control_keys=keys,
                  fetch_max_wait_ms=50)
        g.start()
        return g

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = operator_cli_env(self.env, OPERATOR_KEY)
        return subprocess.run([sys.executable, "-m", "tripwire.streams.cli", *args], cwd=ROOT,
                              env=env, capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Plane]:
    tmp = tmp_path_factory.mktemp("plane")
    hooks = WebhookReceiver()
    (tmp / "policy.yaml").write_text(POLICY)
    with EmbeddedBroker(free_port(), log_path=tmp / "tansu.log") as broker:
        asyncio.run(ensure_topics(broker.bootstrap, tripwire_topics(PARTITIONS)))
        env = signed_worker_env(
            broker.bootstrap, tmp / "data", PARTITIONS, OPERATOR_KEY, CONTROL_KEY,
            TRIPWIRE_POLICY_FILE=str(tmp / "policy.yaml"),
            TRIPWIRE_ALERT_WEBHOOKS=json.dumps({"default": hooks.url}),
            TRIPWIRE_ALERT_DEDUP_S="0",
        )
        worker = WorkerProcess(env, tmp / "worker.log").start().wait_ready(60)
        plane = Plane(broker, worker, env, hooks)
        yield plane
        worker.stop()


def storm(plane: Plane, agent: str, denials: int = 8) -> float:
    """The agent keeps asking its policy for refunds it may not make; returns when the last
    denial was handed to Kafka."""
    with Emitter(plane.broker.bootstrap, idempotence=False, linger_ms=1) as em:
        session = AgentSession(em, agent, owner="support-team", workflow="refunds",
                               environment="test")
        with session.run() as run:
            for i in range(denials):
                run.policy_decision("payments.refund", "money", "denied", "refund_limit",
                                    params={"ticket": i})
        em.flush(10)
        return time.monotonic()


def test_breaker_downgrade_binds_the_agents_next_write(plane: Plane) -> None:
    agent = f"refund-bot-{uuid.uuid4().hex[:6]}"
    guard = plane.guard(agent)
    try:
        assert guard.decide("crm.update_contact", "write").verdict == "allow"
        sent = storm(plane, agent)
        while guard.decide("crm.update_contact", "write").verdict == "allow":
            assert time.monotonic() - sent < 10, "the downgrade never reached the guard"
            time.sleep(0.005)
        refused_after_ms = (time.monotonic() - sent) * 1000
        decision = guard.decide("crm.update_contact", "write")
        assert decision.verdict in ("needs_approval", "suggest_only", "deny")
        assert decision.mode != "autonomous" and not decision.stale
        assert guard.decide("crm.get_contact", "read").verdict == "allow"
        print(f"first refused write {refused_after_ms:.0f} ms after the offending event")
    finally:
        guard.close()


def test_operator_kill_halts_within_a_second_and_release_recovers_gradually(plane: Plane):
    agent = f"crm-sync-{uuid.uuid4().hex[:6]}"
    guard = plane.guard(agent)
    try:
        out = plane.cli("kill", agent, "--reason", "incident 4711: mass email")
        assert out.returncode == 0, out.stderr
        t0 = time.monotonic()
        assert guard.wait_for_mode("halted", timeout_s=5)
        kill_ms = (time.monotonic() - t0) * 1000
        assert kill_ms < 1000, f"kill took {kill_ms:.0f} ms to reach the agent"
        assert guard.decide("crm.get_contact", "read").verdict == "deny"

        out = plane.cli("release", agent, "--reason", "fixed the prompt")
        assert out.returncode == 0, out.stderr
        # Release hands the agent back to the breaker: no jump to autonomous, but probation
        # one level up once the (test policy's 3 s) cool-down has passed.
        time.sleep(0.5)
        assert guard.decide("crm.get_contact", "read").mode == "halted"
        assert guard.wait_for_mode("read_only", timeout_s=15)
    finally:
        guard.close()


def test_agent_cannot_lift_its_own_downgrade(plane: Plane) -> None:
    agent = f"rogue-{uuid.uuid4().hex[:6]}"
    guard = plane.guard(agent)
    try:
        assert plane.cli("kill", agent, "--reason", "suspicious").returncode == 0
        assert guard.wait_for_mode("halted", timeout_s=5)
        codec = command_codec()
        release = new_command("release", reason="I am fine", operator="rogue", agent_id=agent)
        forged = sign_command(release, OPERATOR_KEY[0], "guessed-secret")
        tampered = sign_command(new_command("pin", reason="ok", operator="alice",
                                            agent_id=agent, mode="read_only"), *OPERATOR_KEY)
        tampered = tampered | {"mode": "autonomous"}
        fake_control = {
            "agent_id": agent, "mode": "autonomous", "previous_mode": "halted",
            "scope": "agent", "run_id": None, "reason": "trust me", "detection_ids": [],
            "seq": 10_000, "issued_at": int(time.time() * 1000), "rule": None,
            "expires_at": None, "source": "operator",
        }

        async def attack() -> None:
            p = AIOKafkaProducer(bootstrap_servers=plane.broker.bootstrap)
            await p.start()
            for cmd in (release, forged, tampered):
                await p.send_and_wait(topics.COMMANDS, codec.encode(cmd), key=agent.encode())
            await p.send_and_wait(topics.CONTROLS, control_codec().encode(fake_control),
                                  key=agent.encode())
            await p.stop()

        asyncio.run(attack())
        time.sleep(2)
        assert guard.decide("crm.get_contact", "read").mode == "halted"
        assert guard.decide("crm.get_contact", "read").verdict == "deny"
    finally:
        guard.close()


def test_replayed_command_is_rejected(plane: Plane) -> None:
    agent = f"replay-{uuid.uuid4().hex[:6]}"
    signed = sign_command(new_command("pin", reason="hold", operator="alice", agent_id=agent,
                                      mode="suggest_only", duration_ms=60_000), *OPERATOR_KEY)

    asyncio.run(send_command(plane, signed, times=2))
    guard = plane.guard(agent)
    try:
        assert guard.wait_for_mode("suggest_only", timeout_s=5)
    finally:
        guard.close()
    plane.applied_command = signed


async def send_command(plane: Plane, command: dict[str, Any], times: int = 1) -> None:
    p = AIOKafkaProducer(bootstrap_servers=plane.broker.bootstrap)
    await p.start()
    for _ in range(times):
        await p.send_and_wait(topics.COMMANDS, command_codec().encode(command),
                              key=command["agent_id"].encode())
    await p.stop()


def command_outcomes(plane: Plane) -> dict[tuple[str, str], int]:
    q = subprocess.run(
        [sys.executable, "-m", "tripwire.streams.cli", "sql",
         # FINAL: a record re-read after a restart is audited again, and the copies only
         # collapse at a merge.
         "SELECT outcome, rejection, count() FROM operator_commands FINAL "
         "GROUP BY outcome, rejection ORDER BY outcome, rejection"],
        cwd=ROOT, env=plane.env, capture_output=True, text=True, timeout=60)
    assert q.returncode == 0, q.stderr
    return {(o, r): int(n) for o, r, n in (line.split("\t") for line in q.stdout.splitlines())}


def test_zz_audit_and_alerts_after_the_worker_stops(plane: Plane) -> None:
    # Runs last in this module (name order): stops the worker to read its ClickHouse.
    time.sleep(2)  # let pending alert deliveries and sink flushes finish
    controls = asyncio.run(read_all(plane.broker.bootstrap, topics.CONTROLS, PARTITIONS))
    assert plane.worker.stop() == 0
    published = [control_codec().decode(c.value) for c in controls
                 if dict(c.headers or []).get("tripwire-signature")]
    # Owners hear about downgrades, run stops, kills and recoveries: transitions that change
    # what the agent may do (a release or a passed probation keeps the mode: no alert).
    alerting = {(c["agent_id"], c["seq"]) for c in published
                if c["scope"] == "run" or c["mode"] != c["previous_mode"]}
    received = [(b.get("agent_id"), b.get("seq")) for b in plane.hooks.bodies]
    assert len(received) == len(set(received)), "an alert was delivered twice"
    assert alerting == set(received), "exactly one alert per mode-changing transition"
    assert len(alerting) >= 5
    assert all("text" in b for b in plane.hooks.bodies), "Slack-compatible body"

    rows = command_outcomes(plane)
    assert rows[("applied", "")] == 4  # kill, release, kill, pin
    for rejection in ("unsigned", "bad_signature", "replayed"):
        assert any(r == rejection for (_, r) in rows), (rejection, rows)
    assert rows[("rejected", "bad_signature")] == 2  # forged + tampered
    assert rows[("rejected", "unsigned")] == 1 and rows[("rejected", "replayed")] == 1


def test_zzz_a_restarted_worker_still_refuses_replays(plane: Plane, tmp_path: Path) -> None:
    # Nonces live in the verifier's memory; a restarted worker reloads those of recently
    # applied commands from the audit table, so a captured command stays single-use.
    assert plane.applied_command is not None
    worker = WorkerProcess(plane.env, tmp_path / "worker.log").start().wait_ready(60)
    try:
        assert "recently applied operator command(s) remembered" in worker.log()
        asyncio.run(send_command(plane, plane.applied_command))
        # Judged and its audit row stored: the intake commits a command only after that (a
        # fixed 3 s sleep before, which a loaded machine could outlast).
        asyncio.run(wait_caught_up(plane.broker.bootstrap, "tripwire-commands", topics.COMMANDS,
                                   PARTITIONS, worker, limit_s=60))
    finally:
        assert worker.stop() == 0
    rows = command_outcomes(plane)
    assert rows[("rejected", "replayed")] == 2
    assert rows[("applied", "")] == 4
