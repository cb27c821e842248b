"""A worker told to stop exits, with one line a problem, even when its broker is gone.

Before: with the broker gone, a SIGTERM'd `tripwire worker` was still running after 60 s and
then exited 1 with a traceback, having printed three aiokafka errors per reconnect attempt
(~120 lines a second). Now its stop is bounded by TRIPWIRE_STOP_TIMEOUT_S (exit status 3),
each kind of library error prints once a minute, and a library thread's failure is one line.
"""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tripwire.bench.worker_process import WorkerProcess, worker_env
from tripwire.streams.broker import EmbeddedBroker, free_port
from tripwire.streams.console import RepeatLimiter
from tripwire.streams.shutdown_deadline import EXIT_ABANDONED, ShutdownDeadline

WINDOW = 60.0


def _reference(stream: list[tuple[float, str]], window: float) -> list[int | None]:
    """Brute force: a record is shown when no record of its kind was shown in the window
    before it; a shown record reports every record of its kind since the previous shown one."""
    out: list[int | None] = []
    shown: list[tuple[float, str]] = []
    for i, (t, kind) in enumerate(stream):
        before = [s for s in shown if s[1] == kind]
        if before and t - before[-1][0] < window:
            out.append(None)
            continue
        if before:
            last = max(j for j in range(i) if stream[j][1] == kind and out[j] is not None)
            out.append(sum(1 for j in range(last + 1, i) if stream[j][1] == kind))
        else:
            out.append(0)
        shown.append((t, kind))
    return out


@given(st.lists(st.tuples(st.floats(0, 30, allow_nan=False), st.sampled_from("abc")),
                max_size=60))
def test_repeat_limiter_matches_reference(steps: list[tuple[float, str]]) -> None:
    # Times only move forward: the limiter reads a monotonic clock.
    t, stream = 0.0, []
    for dt, kind in steps:
        t += dt
        stream.append((t, kind))
    limiter = RepeatLimiter(WINDOW)
    got = [limiter.admit(("logger", kind), at) for at, kind in stream]
    assert got == _reference(stream, WINDOW)


def test_deadline_runs_cleanups_last_first_then_exits() -> None:
    calls: list[object] = []
    deadline = ShutdownDeadline(0.01, "test", exit_process=calls.append)
    deadline.on_abandon(lambda: calls.append("first added"))
    deadline.on_abandon(lambda: 1 / 0)  # a failing cleanup does not stop the others
    deadline.on_abandon(lambda: calls.append("last added"))
    deadline._abandon()
    assert calls == ["last added", "first added", EXIT_ABANDONED]


def test_disarmed_deadline_never_fires() -> None:
    calls: list[object] = []
    deadline = ShutdownDeadline(0.05, "test", exit_process=calls.append)
    deadline.arm()
    deadline.disarm()
    deadline.arm()  # a second stop request after a disarm changes nothing
    time.sleep(0.3)
    assert calls == []


@pytest.mark.integration
def test_sigterm_with_broker_gone(tmp_path: Path) -> None:
    broker = EmbeddedBroker(free_port(), log_path=tmp_path / "broker.log").start()
    worker = WorkerProcess(
        worker_env(broker.bootstrap, tmp_path / "data", 4, TRIPWIRE_STOP_TIMEOUT_S="5"),
        tmp_path / "worker.out")
    try:
        worker.start().wait_ready()
    except BaseException:
        broker.stop()
        raise
    broker.stop()
    assert worker.proc is not None
    # Long enough for the consumers to find the broker gone and log it, several times over.
    try:
        worker.proc.wait(8)
    except subprocess.TimeoutExpired:
        pass
    worker.proc.send_signal(signal.SIGTERM)
    try:
        code = worker.proc.wait(120)
    except subprocess.TimeoutExpired:
        worker.proc.kill()
        raise AssertionError("worker ignored SIGTERM:\n" + worker.log()[-3000:]) from None
    console = worker.log()
    assert code == EXIT_ABANDONED, console
    lines = console.splitlines()
    assert all(line.startswith("tripwire: ") for line in lines), console
    assert "stop did not finish in 5 s" in console, console
    # Each kind of library error once (a minute): not one line per reconnect attempt.
    library = [line for line in lines if line.startswith("tripwire: ERROR aiokafka")]
    assert library and len(library) == len(set(library)), console
