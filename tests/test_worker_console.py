"""The worker's console shows Tripwire's own lines; Faust's service chatter goes to its log file.

A short `tripwire worker` run from an empty directory, as text and as JSON lines.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tripwire.streams.broker import EmbeddedBroker, free_port

pytestmark = pytest.mark.integration

CLI = [sys.executable, "-m", "tripwire.streams.cli"]
# Faust's and mode's service chatter, as it printed on the console before.
CHATTER = ("Starting...", "[^Worker]", "Subscribed to topic", "Recovery")


def _run_worker(tmp_path: Path, log_format: str, then: list[str] | None = None) -> str:
    with EmbeddedBroker(free_port(), log_path=tmp_path / "broker.log") as broker:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TRIPWIRE_")}
        env.update(TRIPWIRE_KAFKA_BOOTSTRAP=broker.bootstrap, TRIPWIRE_KAFKA_IDEMPOTENCE="false",
                   TRIPWIRE_PARTITIONS="2", TRIPWIRE_KAFKA_REBALANCE_TIMEOUT_S="2",
                   TRIPWIRE_CHANGELOG_END_MARKERS="true", TRIPWIRE_LOG_FORMAT=log_format)
        out = tmp_path / "worker.out"
        with open(out, "wb") as sink:
            worker = subprocess.Popen([*CLI, "worker", "--insecure-dev-keys"], cwd=tmp_path,
                                      env=env, stdout=sink, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 180
            while "Worker ready" not in out.read_text():
                assert worker.poll() is None, out.read_text()
                assert time.monotonic() < deadline, out.read_text()
                time.sleep(0.2)
            if then:
                subprocess.run([*CLI, *then], cwd=tmp_path, env=env, check=True, timeout=120,
                               capture_output=True)
                deadline = time.monotonic() + 120
                # The kill applied, and one periodic status line (every 10 s) printed.
                while not ("halted" in out.read_text() and "status: " in out.read_text()):
                    assert time.monotonic() < deadline, out.read_text()
                    time.sleep(0.2)
        finally:
            worker.terminate()
            worker.wait(60)
        assert worker.returncode == 0, out.read_text()
        return out.read_text()


def test_text_console_is_tripwire_lines_only(tmp_path: Path) -> None:
    console = _run_worker(tmp_path, "text", ["kill", "agent-7", "--reason", "console test"])
    lines = console.splitlines()
    assert lines and all(line.startswith("tripwire: ") for line in lines), console
    for wanted in ("development keys made in", "data dir", "kafka bootstrap", "clickhouse",
                   "keys              operator dev-operator", "Worker ready",
                   "kill agent-7: autonomous -> halted", "status: records=",
                   "worker stopped: records="):
        assert wanted in console, f"{wanted!r} missing:\n{console}"
    assert not any(c in console for c in CHATTER), console
    faust_log = (tmp_path / "data" / "worker.log").read_text()
    assert "Starting..." in faust_log and "kill agent-7" in faust_log


def test_json_console_for_log_shippers(tmp_path: Path) -> None:
    console = _run_worker(tmp_path, "json")
    records = [json.loads(line) for line in console.splitlines()]
    assert records and all({"ts", "level", "logger", "message"} <= set(r) for r in records)
    messages = " | ".join(r["message"] for r in records)
    assert "Worker ready" in messages and "kafka bootstrap" in messages, messages
    assert not any(c in messages for c in CHATTER), messages
