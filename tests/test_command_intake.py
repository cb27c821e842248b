"""Operator commands never wait behind the step stream (streams/command_intake.py), on a real
broker, a real worker and its real chDB.

The worker's ClickHouse writer process is stopped (SIGSTOP) while agents keep emitting, so
nothing the stream handles can be stored or committed and the sink's in-flight batches fill
up: the stream is jammed behind its sink. `tripwire kill --all` must still reach a guard and
be acknowledged. Once the writer runs again the commands are audited and their offsets
committed under ``<app_id>-commands``; a restarted worker does not apply them again. A
command the Faust group had already consumed before the upgrade is not read again either.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from tripwire.bench.worker_process import (
    WorkerProcess,
    committed,
    highwaters,
    operator_cli_env,
    read_all,
    signed_worker_env,
)
from tripwire.schemas import topics
from tripwire.schemas.codec import control_codec
from tripwire.schemas.command_signing import SHARED_AGENT, derive_agent_key
from tripwire.schemas.topics import ensure_topics, tripwire_topics
from tripwire.sdk import AgentSession, Emitter
from tripwire.sdk.guard import Guard
from tripwire.streams.broker import EmbeddedBroker, free_port

pytestmark = pytest.mark.integration
PARTITIONS = 4
OPERATOR_KEY = ("ops-2026", "operator-secret-for-tests")
CONTROL_KEY = ("ctl-2026", "control-master-for-tests")
LEGACY_BYTES = b"consumed by the Faust group before the upgrade"


def writer_pid(worker: WorkerProcess) -> int:
    """The worker's ClickHouse writer: its multiprocessing (spawn) child."""
    assert worker.proc is not None
    out = subprocess.run(["ps", "-ww", "--ppid", str(worker.proc.pid), "-o", "pid=,args="],
                         capture_output=True, text=True, check=True).stdout
    pids = [int(line.split()[0]) for line in out.splitlines() if "spawn_main" in line]
    assert len(pids) == 1, out
    return pids[0]


async def seed_legacy_commands(bootstrap: str) -> None:
    """One record per command partition that the Faust group (``tripwire``) already read."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for p in range(PARTITIONS):
            await producer.send_and_wait(topics.COMMANDS, LEGACY_BYTES, key=b"*", partition=p)
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id="tripwire",
                                enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(topics.COMMANDS, p) for p in range(PARTITIONS)]
        consumer.assign(tps)
        await consumer.commit(dict.fromkeys(tps, 1))
    finally:
        await consumer.stop()


class Load:
    """Steps from ``agent`` until stopped, in small records (many fetches, many sink rows)."""

    def __init__(self, bootstrap: str, agent: str) -> None:
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(bootstrap, agent), daemon=True)
        self._thread.start()

    def _run(self, bootstrap: str, agent: str) -> None:
        with Emitter(bootstrap, idempotence=False, linger_ms=5) as em:
            session = AgentSession(em, agent, workflow="jam", environment="test")
            while not self._stop.is_set():
                with session.run() as run:  # short runs: no runaway-run detection
                    for _ in range(20):
                        run.tool_call("crm.get", "read", {"n": self.sent})
                        self.sent += 1
                time.sleep(0.02)
            em.flush(10)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[EmbeddedBroker, dict]]:
    tmp = tmp_path_factory.mktemp("intake")
    with EmbeddedBroker(free_port(), log_path=tmp / "tansu.log") as broker:
        asyncio.run(ensure_topics(broker.bootstrap, tripwire_topics(PARTITIONS)))
        asyncio.run(seed_legacy_commands(broker.bootstrap))
        # Small sink batches: eight in flight (the sink's limit) fill within a second of load.
        env = signed_worker_env(broker.bootstrap, tmp / "data", PARTITIONS, OPERATOR_KEY,
                                CONTROL_KEY, TRIPWIRE_SINK_BATCH_ROWS="20")
        yield broker, {"env": env, "tmp": tmp}


def test_kill_reaches_guards_while_the_stream_is_jammed_behind_its_sink(stack) -> None:
    broker, ctx = stack
    env, tmp = ctx["env"], ctx["tmp"]
    bootstrap = broker.bootstrap
    worker = WorkerProcess(env, tmp / "worker.log").start().wait_ready(90)
    agent = "jammed-agent"
    guard = Guard(bootstrap, agent, staleness_s=60, fetch_max_wait_ms=50,
                  control_keys={CONTROL_KEY[0]: derive_agent_key(CONTROL_KEY[1], agent)},
                  shared_control_keys={CONTROL_KEY[0]: derive_agent_key(CONTROL_KEY[1],
                                                                        SHARED_AGENT)})
    load: Load | None = None
    stopped = False
    try:
        writer = writer_pid(worker)
        assert guard.start(timeout_s=30)
        assert guard.decide("crm.update", "write").verdict == "allow"
        os.kill(writer, signal.SIGSTOP)
        stopped = True
        load = Load(bootstrap, agent)
        deadline = time.monotonic() + 60
        while load.sent < 2_000:  # 100x the rows eight in-flight sink batches hold
            worker.check_progress(deadline, "load did not start")
            time.sleep(0.1)
        steps_end = asyncio.run(highwaters(bootstrap, topics.STEPS, PARTITIONS))
        cli = subprocess.run(
            [sys.executable, "-m", "tripwire.streams.cli", "kill", "--all", "--reason",
             "jammed stream", "--wait", "30"],
            cwd=tmp, env=operator_cli_env(env, OPERATOR_KEY), capture_output=True, text=True,
            timeout=120)
        assert cli.returncode == 0, cli.stderr
        assert "obeyed by 1 of 1 guards" in cli.stdout, cli.stdout
        assert guard.decide("crm.update", "write").verdict == "deny"
        assert any(c.key == "fleet" and c.mode == "halted" for c in guard.state.scoped())
        # The stream could store (so commit) none of what the load sent while the kill went out.
        steps_committed = asyncio.run(committed(bootstrap, "tripwire", topics.STEPS, PARTITIONS))
        assert sum(steps_committed.values()) < sum(steps_end.values()), (steps_committed,
                                                                          steps_end)
        load.stop()
        os.kill(writer, signal.SIGCONT)
        stopped = False

        # Audited, then committed under the intake's own group.
        commands_end = asyncio.run(highwaters(bootstrap, topics.COMMANDS, PARTITIONS))
        deadline = time.monotonic() + 90
        while True:
            got = asyncio.run(committed(bootstrap, "tripwire-commands", topics.COMMANDS,
                                        PARTITIONS))
            if all(got[p] >= commands_end[p] for p in got):
                break
            worker.check_progress(deadline, f"commands committed {got}, end {commands_end}")
            time.sleep(0.3)
        assert worker.stop() == 0
        # A restarted worker reads on from the committed offsets: the kill is not re-applied
        # (a re-applied fleet kill would write the ceiling again).
        worker = WorkerProcess(env, tmp / "worker-restarted.log").start().wait_ready(90)
        time.sleep(3)
        assert worker.stop() == 0
    finally:
        if stopped:
            os.kill(writer, signal.SIGCONT)
        if load is not None:
            load.stop()
        guard.close()
        worker.stop()

    codec = control_codec()
    shared = [codec.decode(r.value) for r in asyncio.run(
        read_all(bootstrap, topics.CONTROLS_SHARED, 1)) if r.value]
    fleet = [c for c in shared if c["rule"] == "operator.kill_all"]
    assert len(fleet) == 1, fleet
    rows = subprocess.run(
        [sys.executable, "-m", "tripwire.streams.cli", "sql",
         "SELECT action, outcome, count() FROM operator_commands FINAL GROUP BY action, outcome"],
        cwd=tmp, env=env, capture_output=True, text=True, timeout=60)
    assert rows.returncode == 0, rows.stderr
    # One audit row per partition's copy of the kill; the records the Faust group had read
    # before the upgrade were not read (they would be audited as undecodable).
    assert rows.stdout.split("\n")[0].split("\t") == ["kill_all", "applied", str(PARTITIONS)], \
        rows.stdout
    assert len(rows.stdout.strip().splitlines()) == 1, rows.stdout
