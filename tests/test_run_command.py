"""`tripwire run --demo --duration` brings the whole embedded stack up and down by itself."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tripwire.bench.worker_process import ROOT
from tripwire.streams.broker import free_port

pytestmark = pytest.mark.integration


def test_run_demo_brings_up_the_stack_and_lands_fleet_traffic(tmp_path):
    data = tmp_path / "data"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIPWIRE_")}
    env["TRIPWIRE_KAFKA_REBALANCE_TIMEOUT_S"] = "2"
    run = subprocess.run(
        [sys.executable, "-m", "tripwire.streams.cli", "run", "--demo", "--duration", "15",
         "--data-dir", str(data), "--broker-port", str(port), "--dashboard-port", "0"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert f"kafka bootstrap   127.0.0.1:{port} (embedded broker)" in run.stdout
    assert f"chdb://{data.resolve() / 'clickhouse'}" in run.stdout
    assert "demo fleet        started" in run.stdout
    assert "dashboards        http://127.0.0.1:" in run.stdout

    q = subprocess.run(
        [sys.executable, "-m", "tripwire.streams.cli", "sql", "--data-dir", str(data),
         "SELECT countIf(agent_id LIKE 'agent-denial-storm%'), countIf(kind = 'run_start'),"
         " count() FROM steps"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )
    assert q.returncode == 0, q.stderr
    storm, run_starts, total = map(int, q.stdout.split())
    assert total > 500 and storm > 0 and run_starts > 0
    # The embedded broker went down with the run: the port is free again.
    import socket

    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0
