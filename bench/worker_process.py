"""Drives a real `tripwire worker` process against a given broker and chDB directory
(used by the integration tests and the benchmark)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from aiokafka import AIOKafkaConsumer, TopicPartition

ROOT = Path(__file__).resolve().parent.parent


def worker_env(bootstrap: str, data_dir: Path, partitions: int = 8, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIPWIRE_")}
    env.update(
        TRIPWIRE_KAFKA_BOOTSTRAP=bootstrap,
        TRIPWIRE_KAFKA_IDEMPOTENCE="false",
        TRIPWIRE_DATA_DIR=str(data_dir),
        TRIPWIRE_CLICKHOUSE_URL=f"chdb://{data_dir / 'clickhouse'}",
        TRIPWIRE_PARTITIONS=str(partitions),
        TRIPWIRE_KAFKA_SESSION_TIMEOUT_S="6",
        TRIPWIRE_KAFKA_REBALANCE_TIMEOUT_S="2",
        TRIPWIRE_SINK_FLUSH_SECONDS="0.3",
        TRIPWIRE_CHANGELOG_END_MARKERS="true",
        # Tests and the bench run without a key set-up: the worker's development keys (the
        # caller's TRIPWIRE_OPERATOR_KEYS / _CONTROL_KEY_ID in ``extra`` take precedence).
        TRIPWIRE_INSECURE_DEV_KEYS="true",
    )
    env.update(extra)
    return env


def signed_worker_env(bootstrap: str, data_dir: Path, partitions: int,
                      operator_key: tuple[str, str], control_key: tuple[str, str],
                      **extra: str) -> dict[str, str]:
    """:func:`worker_env` for a worker that accepts commands signed with ``operator_key``
    (id, secret) and signs controls with ``control_key`` (id, master secret)."""
    return worker_env(
        bootstrap, data_dir, partitions,
        TRIPWIRE_OPERATOR_KEYS=json.dumps({operator_key[0]: operator_key[1]}),
        TRIPWIRE_CONTROL_KEY_ID=control_key[0],
        TRIPWIRE_CONTROL_KEYS=json.dumps({control_key[0]: control_key[1]}),
        **extra,
    )


def operator_cli_env(env: dict[str, str], operator_key: tuple[str, str],
                     operator: str = "alice") -> dict[str, str]:
    """``env`` plus what the ``tripwire`` CLI needs to sign commands as ``operator``."""
    return env | {"TRIPWIRE_OPERATOR": operator, "TRIPWIRE_OPERATOR_KEY_ID": operator_key[0],
                  "TRIPWIRE_OPERATOR_KEY": operator_key[1]}


class WorkerProcess:
    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.env = env
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child for its lifetime
        self.proc = subprocess.Popen([sys.executable, "-m", "tripwire.streams.cli", "worker"],
                                     cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        return self

    def wait_ready(self, timeout_s: float = 120) -> WorkerProcess:
        """Wait for the worker's "Worker ready" line; if it dies or is late, stop it and raise
        RuntimeError with its log tail."""
        deadline = time.monotonic() + timeout_s
        while "Worker ready" not in self.log():
            if not self.alive() or time.monotonic() > deadline:
                self.stop(10)
                raise RuntimeError("worker did not start:\n" + self.log()[-3000:])
            time.sleep(0.05)
        return self

    def check_progress(self, deadline: float, waiting_for: str) -> None:
        """Raise, with the log tail, if the worker died or ``deadline`` (monotonic) passed
        while the caller was still waiting for ``waiting_for``."""
        if not self.alive():
            raise AssertionError(f"worker died; log tail:\n{self.log()[-4000:]}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{waiting_for}\n{self.log()[-4000:]}")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self, timeout: float = 30) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(f"worker ignored SIGTERM; log: {self.log()[-3000:]}") from None
        return self.proc.returncode

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


async def highwaters(bootstrap: str, topic: str, partitions: int) -> dict[int, int]:
    """High watermarks as Fetch reports them (tansu's ListOffsets answers the last batch's base
    offset + 1, not the high watermark, so end_offsets() undercounts batched topics)."""
    c = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await c.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        c.assign(tps)
        await c.seek_to_beginning(*tps)
        deadline = time.monotonic() + 10
        while any(c.highwater(tp) is None for tp in tps):
            await c.getmany(timeout_ms=200, max_records=1)
            if time.monotonic() > deadline:
                raise TimeoutError("no fetch response for some partitions")
        return {tp.partition: c.highwater(tp) or 0 for tp in tps}
    finally:
        await c.stop()


async def committed(bootstrap: str, group: str, topic: str, partitions: int) -> dict[int, int]:
    c = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await c.start()
    try:
        return await committed_on(c, topic, partitions)
    finally:
        await c.stop()


async def committed_on(consumer: AIOKafkaConsumer, topic: str, partitions: int) -> dict[int, int]:
    """The group's committed offset of each partition (0 if none), asked on an open client."""
    return {p: (await consumer.committed(TopicPartition(topic, p))) or 0
            for p in range(partitions)}


async def wait_caught_up(bootstrap: str, group: str, topic: str, partitions: int,
                         worker: WorkerProcess, limit_s: float = 180) -> None:
    hw = await highwaters(bootstrap, topic, partitions)
    deadline = time.monotonic() + limit_s
    # One client asking every 0.1 s (an offset fetch each): a new client every 0.5 s, as
    # before, cost a start-up per look and found the commit 0.25 s late on average.
    c = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await c.start()
    try:
        while True:
            got = await committed_on(c, topic, partitions)
            if all(got[p] >= hw[p] for p in hw):
                return
            worker.check_progress(deadline, f"committed {got} never reached {hw}")
            await asyncio.sleep(0.1)
    finally:
        await c.stop()


async def read_all(bootstrap: str, topic: str, partitions: int) -> list:
    hw = await highwaters(bootstrap, topic, partitions)
    c = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await c.start()
    out = []
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        c.assign(tps)
        await c.seek_to_beginning(*tps)
        while sum(hw.values()) > len(out):
            batch = await c.getmany(timeout_ms=500)
            for msgs in batch.values():
                out.extend(msgs)
        return out
    finally:
        await c.stop()
