"""Fleet kill benchmark: from `tripwire kill --all` to every guard refusing.

    python -m tripwire.bench.fleet_kill --guards 100

Starts an embedded broker and a real `tripwire worker`, then ``--guards`` guard processes
(one Guard each, following agent-controls + agent-controls-shared, as deployed agents would),
and a steady load of step events from those agents. Then it runs the real CLI
`tripwire kill --all` (which waits for acknowledgements) and prints:

* per guard, the time from the command's ``issued_at`` to the first refused write decision,
  measured inside the guard process (it checks every ``--check-ms``); p50, p99, max;
* the CLI's own report line ("obeyed by N of M guards ...") and whether N equals the number of
  guards that refused.

Clocks: ``issued_at`` (the CLI process) and refusal times (guard processes) are wall clocks of
the same machine. The 2-core machine is shared: the figures include waiting for a core.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from tripwire.bench.worker_process import ROOT, WorkerProcess, read_all, worker_env
from tripwire.schemas import topics
from tripwire.schemas.codec import command_codec, control_ack_codec, control_codec
from tripwire.schemas.topics import ensure_topics, tripwire_topics
from tripwire.streams.broker import EmbeddedBroker, free_port

PARTITIONS = 4
OPERATOR_KEY = ("bench-ops", "bench-operator-secret")
CONTROL_KEY = ("bench-ctl", "bench-control-master")
TARGET_P99_MS = 1000.0

GUARD_CODE = r"""
import sys, threading, time
from tripwire.schemas.command_signing import SHARED_AGENT, derive_agent_key
from tripwire.sdk.guard import Guard
bootstrap, agent, key_id, master, check_ms, fetch_ms = sys.argv[1:7]
g = Guard(bootstrap, agent, staleness_s=30, fetch_max_wait_ms=int(fetch_ms),
          control_keys={key_id: derive_agent_key(master, agent)},
          shared_control_keys={key_id: derive_agent_key(master, SHARED_AGENT)},
          instance_id=f"bench-{agent}")
# Decide again as soon as a control is applied (and every check_ms anyway): a decision loop
# spinning every few ms in 100 processes would be the harness's own load, not the guard's.
applied = threading.Event()
acknowledge = g.follower.on_applied
def on_applied(control, key):
    acknowledge(control, key)
    applied.set()
g.follower.on_applied = on_applied
ok = g.start(timeout_s=120)
print(f"ready {int(ok)}", flush=True)
pause = int(check_ms) / 1000
while g.decide("crm.update", "write").verdict == "allow":
    applied.wait(pause)
    applied.clear()
print(f"refused {time.time_ns() // 1_000_000}", flush=True)
sys.stdin.read()  # stay up (and acknowledging) until the benchmark closes our stdin
g.close()
"""


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


class GuardProcess:
    def __init__(self, bootstrap: str, agent: str, check_ms: int, fetch_ms: int,
                 env: dict[str, str]) -> None:
        self.agent = agent
        self.ready: bool | None = None
        self.refused_ms: int | None = None
        self.proc = subprocess.Popen(
            [sys.executable, "-c", GUARD_CODE, bootstrap, agent, CONTROL_KEY[0], CONTROL_KEY[1],
             str(check_ms), str(fetch_ms)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
            env=env)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            word, _, value = line.strip().partition(" ")
            if word == "ready":
                self.ready = value == "1"
            elif word == "refused":
                self.refused_ms = int(value)

    def close_stdin(self) -> None:
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
        except OSError:
            pass

    def stop(self) -> None:
        self.close_stdin()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


def steady_load(bootstrap: str, agents: list[str], rate: float, stop: threading.Event) -> int:
    """Emit ``rate`` read steps a second round-robin over ``agents`` until ``stop``."""
    from tripwire.sdk import AgentSession, Emitter

    sent = 0
    with Emitter(bootstrap, idempotence=False, linger_ms=10) as em:
        runs = []
        for agent in agents:
            run = AgentSession(em, agent, workflow="bench", environment="test").start_run()
            runs.append(run)
        started = time.monotonic()
        while not stop.is_set():
            due = int((time.monotonic() - started) * rate)
            while sent < due:
                runs[sent % len(runs)].tool_call("crm.get", "read", {"n": sent})
                sent += 1
            time.sleep(0.01)
        em.flush(10)
    return sent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--guards", type=int, default=100)
    parser.add_argument("--check-ms", type=int, default=1000,
                        help="each guard process decides a write call after every control it "
                        "applies and at least this often")
    parser.add_argument("--fetch-wait-ms", type=int, default=50,
                        help="the guards' fetch_max_wait_ms (the SDK default is 50)")
    parser.add_argument("--load", type=float, default=200.0, help="steps/s of steady load")
    parser.add_argument("--start-batch", type=int, default=10,
                        help="guard processes started at once (start-up is CPU-heavy)")
    args = parser.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="tripwire-fleet-kill-"))
    with EmbeddedBroker(free_port(), log_path=tmp / "tansu.log") as broker:
        bootstrap = broker.bootstrap
        asyncio.run(ensure_topics(bootstrap, tripwire_topics(PARTITIONS)))
        env = worker_env(
            bootstrap, tmp / "data", PARTITIONS,
            TRIPWIRE_OPERATOR_KEYS=json.dumps({OPERATOR_KEY[0]: OPERATOR_KEY[1]}),
            TRIPWIRE_CONTROL_KEY_ID=CONTROL_KEY[0],
            TRIPWIRE_CONTROL_KEYS=json.dumps({CONTROL_KEY[0]: CONTROL_KEY[1]}),
        )
        worker = WorkerProcess(env, tmp / "worker.log").start().wait_ready(120)
        guards: list[GuardProcess] = []
        stop = threading.Event()
        try:
            agents = [f"bench-agent-{i:03d}" for i in range(args.guards)]
            t0 = time.monotonic()
            for i in range(0, len(agents), args.start_batch):
                batch = [GuardProcess(bootstrap, a, args.check_ms, args.fetch_wait_ms, env)
                         for a in agents[i:i + args.start_batch]]
                guards += batch
                while any(g.ready is None and g.proc.poll() is None for g in batch):
                    time.sleep(0.05)
            ready = sum(1 for g in guards if g.ready)
            print(f"guards: {ready} of {len(guards)} ready in {time.monotonic() - t0:.1f} s "
                  f"(separate processes)", flush=True)
            # Steady load from the same agents while the kill travels.
            loaded: list[int] = []
            load = threading.Thread(
                target=lambda: loaded.append(steady_load(bootstrap, agents, args.load, stop)),
                daemon=True)
            load.start()
            time.sleep(5)
            cli_env = env | {"TRIPWIRE_OPERATOR": "bench", "TRIPWIRE_OPERATOR_KEY_ID":
                             OPERATOR_KEY[0], "TRIPWIRE_OPERATOR_KEY": OPERATOR_KEY[1]}
            cli = subprocess.run(
                [sys.executable, "-m", "tripwire.streams.cli", "kill", "--all", "--reason",
                 "fleet kill benchmark", "--wait", "60"],
                cwd=tmp, env=cli_env, capture_output=True, text=True, timeout=600)
            print(cli.stdout.strip())
            if cli.returncode != 0:
                print(cli.stderr, file=sys.stderr)
                return 1
            command_id = re.search(r"command ([0-9a-f-]{36})", cli.stdout).group(1)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and any(
                    g.ready and g.refused_ms is None for g in guards):
                time.sleep(0.05)
            stop.set()
            load.join(30)
            issued_at, sent_at = _command_times(bootstrap, command_id)
            fleet = _fleet_control_times(bootstrap, command_id)
            applied = _applied_times(bootstrap, command_id)
            latencies = [g.refused_ms - issued_at for g in guards if g.refused_ms is not None]
            _print_path(issued_at, sent_at, fleet, applied,
                        {g.agent: g.refused_ms for g in guards if g.refused_ms is not None})
            missing = [g.agent for g in guards if g.ready and g.refused_ms is None]
            print(f"steady load: {loaded[0] if loaded else '?'} steps at {args.load:g}/s")
            if latencies:
                p50, p99 = percentile(latencies, 0.5), percentile(latencies, 0.99)
                print(f"kill --all -> guard refusing, over {len(latencies)} guards: "
                      f"p50 {p50:.0f} ms, p99 {p99:.0f} ms, max {max(latencies):.0f} ms, "
                      f"mean {statistics.fmean(latencies):.0f} ms "
                      f"(target p99 <= {TARGET_P99_MS:.0f} ms: "
                      f"{'met' if p99 <= TARGET_P99_MS else 'NOT met'}; "
                      f"ratio {p99 / TARGET_P99_MS:.2f})")
            if missing:
                print(f"never refused: {len(missing)}: {', '.join(missing[:10])}")
            obeyed = re.search(r"obeyed by (\d+) of (\d+)", cli.stdout)
            if obeyed:
                n = int(obeyed.group(1))
                print(f"acknowledgements: CLI says {n} obeyed; {len(latencies)} guards refused: "
                      f"{'match' if n == len(latencies) else 'MISMATCH'}")
        finally:
            stop.set()
            for g in guards:  # all at once: each closes its Kafka clients in parallel
                g.close_stdin()
            for g in guards:
                g.stop()
            worker.stop()
    return 0


def _print_path(issued_at: int, sent_at: int, fleet: tuple[int, int] | None,
                applied: dict[str, int], refused: dict[str, int]) -> None:
    """Where the time went, stage by stage (all epoch ms of this machine's clock)."""
    print(f"path: CLI issued -> command record written: {sent_at - issued_at} ms "
          "(the CLI's producer connecting and sending)")
    if fleet is None:
        print("path: the fleet ceiling carrying this command was not found")
        return
    judged_at, written_at = fleet
    print(f"path: command written -> worker judged it: {judged_at - sent_at} ms "
          "(the worker's command consumer fetching it)")
    print(f"path: worker judged -> fleet ceiling written: {written_at - judged_at} ms "
          "(verify, sign, send)")
    stages = {
        "fleet ceiling written -> guard applied it": [a - written_at for a in applied.values()],
        "guard applied -> guard's decision refused": [
            refused[a] - applied[a] for a in refused if a in applied],
    }
    for name, values in stages.items():
        if values:
            print(f"path: {name}: p50 {percentile(values, 0.5):.0f} ms, "
                  f"p99 {percentile(values, 0.99):.0f} ms, max {max(values):.0f} ms "
                  f"({len(values)} guards)")


def _fleet_control_times(bootstrap: str, command_id: str) -> tuple[int, int] | None:
    """(issued_at, record timestamp) of the fleet ceiling the command set."""
    codec = control_codec()
    for record in asyncio.run(read_all(bootstrap, topics.CONTROLS_SHARED, 1)):
        if record.value is None:
            continue
        control = codec.decode(record.value)
        if control.get("command_id") == command_id and record.key == b"fleet":
            return int(control["issued_at"]), int(record.timestamp)
    return None


def _applied_times(bootstrap: str, command_id: str) -> dict[str, int]:
    """Agent -> when its guard applied a control carrying the command (its acknowledgement)."""
    codec = control_ack_codec()
    out: dict[str, int] = {}
    for record in asyncio.run(read_all(bootstrap, topics.CONTROL_ACKS, PARTITIONS)):
        ack = codec.decode(record.value)
        if ack["kind"] == "applied" and ack.get("command_id") == command_id:
            agent = ack["agent_id"]
            out[agent] = min(out.get(agent, ack["applied_at"]), ack["applied_at"])
    return out


def _command_times(bootstrap: str, command_id: str) -> tuple[int, int]:
    """(issued_at, record timestamp) of the command's copy on partition 0, the one that sets
    the fleet ceiling."""
    codec = command_codec()
    records = asyncio.run(read_all(bootstrap, topics.COMMANDS, PARTITIONS))
    for record in records:
        command = codec.decode(record.value)
        if command["command_id"] == command_id and record.partition == 0:
            return int(command["issued_at"]), int(record.timestamp)
    raise LookupError(f"command {command_id} not found on {topics.COMMANDS}")


if __name__ == "__main__":
    os.chdir(ROOT)
    raise SystemExit(main())
