"""Keys that work out of the box on the embedded stack and never by accident in production.

`tripwire run` makes development keys in its data dir and says where; `tripwire kill` from the
same place finds them (and the stack's broker) with nothing set. A worker against external
services without keys refuses to start (tests/test_cli_errors.py, case worker/no-keys).
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tripwire.sdk.local_stack import (
    DEV_KEYS_FILE,
    STACK_FILE,
    load_dev_keys,
    provision_dev_keys,
    read_stack,
    remove_stack,
    write_stack,
)
from tripwire.streams.broker import free_port

CLI = [sys.executable, "-m", "tripwire.streams.cli"]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIPWIRE_")}
    env["TRIPWIRE_KAFKA_REBALANCE_TIMEOUT_S"] = "2"
    return env


def test_dev_keys_are_made_once_private_and_kept(tmp_path: Path) -> None:
    keys, made = provision_dev_keys(tmp_path / "data")
    again, made_again = provision_dev_keys(tmp_path / "data")
    assert made and not made_again and again == keys
    assert stat.S_IMODE((tmp_path / "data" / DEV_KEYS_FILE).stat().st_mode) == 0o600
    assert keys.operator_key != keys.control_key and len(keys.operator_key) == 64
    assert load_dev_keys(tmp_path / "elsewhere") is None


def test_a_stack_descriptor_of_a_dead_process_is_ignored(tmp_path: Path) -> None:
    write_stack(tmp_path, bootstrap="127.0.0.1:1")
    assert read_stack(tmp_path) == {"bootstrap": "127.0.0.1:1", "pid": os.getpid()}
    (tmp_path / STACK_FILE).write_text('{"bootstrap": "127.0.0.1:1", "pid": 999999999}')
    assert read_stack(tmp_path) is None
    remove_stack(tmp_path)  # not ours: left alone
    assert (tmp_path / STACK_FILE).exists()


@pytest.mark.integration
def test_kill_works_against_tripwire_run_with_no_setup(tmp_path: Path) -> None:
    port = free_port()
    out = tmp_path / "run.out"
    with open(out, "wb") as sink:
        run = subprocess.Popen(
            [*CLI, "run", "--broker-port", str(port), "--dashboard-port", "0"],
            cwd=tmp_path, env=_env(), stdout=sink, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 180
        while "Worker ready" not in out.read_text():
            assert run.poll() is None, out.read_text()
            assert time.monotonic() < deadline, out.read_text()
            time.sleep(0.2)
        keys_file = (tmp_path / "data" / DEV_KEYS_FILE).resolve()
        assert f"development keys made in {keys_file}" in out.read_text()
        assert (tmp_path / "data" / STACK_FILE).exists()

        # Nothing set: the operator's shell next to the stack, as after `bash scripts/demo.sh`.
        kill = subprocess.run([*CLI, "kill", "agent-001", "--reason", "trying the switch"],
                              cwd=tmp_path, env=_env(), capture_output=True, text=True,
                              timeout=120)
        assert kill.returncode == 0, kill.stderr
        assert f"signed with key dev-operator (from {keys_file})" in kill.stdout
        assert f"on 127.0.0.1:{port}" in kill.stdout

        # The worker applied it (the signature verified) and its control verifies too: status
        # checks controls with the dev control key and would count a forged one.
        deadline = time.monotonic() + 60
        while True:
            status = subprocess.run([*CLI, "status", "agent-001"], cwd=tmp_path, env=_env(),
                                    capture_output=True, text=True, timeout=120)
            assert status.returncode == 0, status.stderr
            if "mode     halted" in status.stdout:
                break
            assert time.monotonic() < deadline, status.stdout + out.read_text()
            time.sleep(0.5)
        assert "unauthenticated" not in status.stdout
        assert "trying the switch" in status.stdout

        # The stack holds its embedded ClickHouse; the readers reach it over HTTP meanwhile.
        sql = subprocess.run(
            [*CLI, "sql",
             "SELECT count() FROM operator_commands WHERE reason = 'trying the switch'"],
            cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=120)
        assert sql.returncode == 0, sql.stderr
        assert int(sql.stdout) >= 1
        evidence = subprocess.run([*CLI, "evidence", "--scope", "fleet", "--since", "10m"],
                                  cwd=tmp_path, env=_env(), capture_output=True, text=True,
                                  timeout=120)
        assert evidence.returncode == 0, evidence.stderr
        assert "# Incident evidence: scope `fleet`" in evidence.stdout
    finally:
        run.send_signal(signal.SIGTERM)
        run.wait(60)
    assert run.returncode == 0, out.read_text()[-3000:]
    assert not (tmp_path / "data" / STACK_FILE).exists(), "the stack left its descriptor behind"
    assert "kill agent-001: autonomous -> halted" in out.read_text()
