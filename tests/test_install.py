"""Tripwire installs and runs the way its users install and run it.

Both wheels are built from this checkout and installed, with no extras, each into its own
clean virtualenv (pip's cache keeps this to a couple of minutes): the server (`tripwire`, at the
versions constraints.txt pins) and the SDK alone (`tripwire-sdk`). Then, from fresh empty
directories: `tripwire --help`; `tripwire init` and `tripwire worker` against an embedded broker
and a chdb:// URL, storing events a raw Kafka client wrote as the README's JSON contract says;
and, in the SDK-only virtualenv, an agent that emits through the emitter and is refused by its
guard once an operator's `tripwire kill` has been applied.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from tripwire.bench.worker_process import committed, highwaters
from tripwire.streams.broker import EmbeddedBroker, free_port

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent
GENERIC = {"sdk", "schemas", "streams", "bench", "dashboards", "simulator", "detectors", "sinks"}
SERVER_ONLY = {"faust", "clickhouse_connect", "chdb", "plotly"}
PARTITIONS = 2
OPERATOR_KEY = ("ops-install", "operator-secret-install")
CONTROL_KEY = ("ctl-install", "control-master-install")
# pip byte-compiles every module it installs; for the server's ~900 MB of dependencies
# (plotly's thousands of modules among them) that was 18 of a clean install's 46 s. It decides
# nothing here: pip only warns about a file that does not compile, and the modules a test runs
# are compiled when they are imported.
NO_COMPILE = ("--no-compile",)


@dataclass(frozen=True)
class Venvs:
    server: Path
    sdk: Path

    def site_packages(self, venv: Path) -> Path:
        return next((venv / "lib").glob("python3*/site-packages"))


def _run(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(cmd, capture_output=True, text=True, **kwargs)  # type: ignore[call-overload]
    assert done.returncode == 0, f"{cmd} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def _copy_checkout(dest: Path) -> None:
    """The checkout's sources without build artefacts: setuptools packs whatever an earlier
    build left in build/lib, which would hide a file the sources no longer have."""
    artefacts = shutil.ignore_patterns(".git", ".venv", "build", "*.egg-info", "__pycache__",
                                       ".*_cache", ".hypothesis", "compiled")

    def ignore(folder: str, names: list[str]) -> set[str]:
        # ./data is a `tripwire run`'s state; detectors/data is package data.
        top = {"data"} & set(names) if Path(folder) == ROOT else set()
        return set(artefacts(folder, names)) | top

    shutil.copytree(ROOT, dest, ignore=ignore)


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("TRIPWIRE_", "PYTHON", "VIRTUAL_ENV"))}
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def venvs(tmp_path_factory: pytest.TempPathFactory) -> Venvs:
    base = tmp_path_factory.mktemp("install")
    wheels = base / "wheels"
    src = base / "src"
    _copy_checkout(src)
    server, sdk = base / "server-venv", base / "sdk-venv"
    # The two clean virtualenvs are made while the wheels build (3-4 s each, one after the
    # other before).
    making = [subprocess.Popen([sys.executable, "-m", "venv", str(venv)], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True) for venv in (server, sdk)]
    # The release path (and the Dockerfile's): the SDK wheel, then the server's pinning it.
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), "./sdk"],
         cwd=src, env=_clean_env(), timeout=600)
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), "."],
         cwd=src, env=_clean_env(TRIPWIRE_SDK_BY_VERSION="1"), timeout=600)
    for proc in making:
        out, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, f"venv failed:\n{out[-3000:]}"
    installs = []
    for venv, dist in ((server, "tripwire"), (sdk, "tripwire-sdk")):
        installs.append(subprocess.Popen(
            [str(venv / "bin" / "pip"), "install", "-q", *NO_COMPILE,
             "-c", str(ROOT / "constraints.txt"), "--find-links", str(wheels), dist],
            cwd=base, env=_clean_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True))
    for proc in installs:
        out, _ = proc.communicate(timeout=1200)
        assert proc.returncode == 0, f"pip install failed:\n{out[-3000:]}"
    return Venvs(server, sdk)


def test_help_from_an_empty_dir(venvs: Venvs, tmp_path: Path) -> None:
    done = _run([str(venvs.server / "bin" / "tripwire"), "--help"], cwd=tmp_path,
                env=_clean_env(), timeout=120)
    assert "TRIPWIRE_KAFKA_BOOTSTRAP" in done.stdout and "worker" in done.stdout


def test_the_wheel_runs_compiled_detectors(venvs: Venvs, tmp_path: Path) -> None:
    """The release wheel compiles the hot detector modules (setup.py, compile_detectors.py)
    and the installed package loads them: the build is of the sources installed beside it."""
    done = _run([str(venvs.server / "bin" / "python"), "-c",
                 "import tripwire.detectors as d, tripwire.detectors.loops as l; "
                 "print(d.RUNNING); print(l.__file__)"], cwd=tmp_path, env=_clean_env(),
                timeout=120)
    running, loops = done.stdout.splitlines()
    assert running.startswith("compiled (windows, evidence, runs, loops"), running
    assert "/tripwire/detectors/compiled/loops.cpython-" in loops, loops


def test_the_wheel_reads_avro_with_its_compiled_twins(venvs: Venvs, tmp_path: Path) -> None:
    """The release wheel compiles the contract's hot Avro readers too, and the installed SDK's
    decoder takes them: they were generated from the schemas and generator it holds."""
    done = _run([str(venvs.server / "bin" / "python"), "-c",
                 "from tripwire.streams import compiled_readers as c; "
                 "from tripwire.schemas.step_columns import StepColumnDecoder as D; "
                 "print(c.RUNNING); print(D()._read.__module__)"], cwd=tmp_path,
                env=_clean_env(), timeout=120)
    running, module = done.stdout.splitlines()
    assert running.startswith("compiled twins installed (avro_step_batch"), running
    assert module == "avro_step_columns"


def test_no_generic_top_level_packages(venvs: Venvs) -> None:
    for venv in (venvs.server, venvs.sdk):
        top = {p.name for p in venvs.site_packages(venv).iterdir()}
        assert not top & GENERIC, f"{venv.name} installs {sorted(top & GENERIC)}"
        assert "tripwire" in top


def test_sdk_alone_loads_no_server_dependency(venvs: Venvs, tmp_path: Path) -> None:
    code = ("import json, sys\n"
            "import tripwire.sdk, tripwire.sdk.guard, tripwire.sdk.operator\n"
            "import tripwire.schemas.codec\n"
            "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))\n")
    done = _run([str(venvs.sdk / "bin" / "python"), "-c", code], cwd=tmp_path, env=_clean_env(),
                timeout=120)
    loaded = set(json.loads(done.stdout))
    assert not loaded & SERVER_ONLY, sorted(loaded & SERVER_ONLY)
    missing = subprocess.run([str(venvs.sdk / "bin" / "python"), "-c", "import tripwire.streams"],
                             cwd=tmp_path, env=_clean_env(), capture_output=True, text=True)
    assert missing.returncode != 0, "the SDK virtualenv should not hold the server"


AGENT = """
import json, sys, time
from tripwire.schemas.command_signing import derive_agent_key
from tripwire.sdk import AgentSession, Emitter
from tripwire.sdk.guard import Guard, RunHalted, ToolRefused

bootstrap, agent_id, key_id, master = sys.argv[1:5]
emitter = Emitter(bootstrap, idempotence=False)
guard = Guard(bootstrap, agent_id, control_keys={key_id: derive_agent_key(master, agent_id)})
assert guard.start(timeout_s=60), "guard did not reach the control plane"
session = AgentSession(emitter, agent_id, workflow="install-test", environment="dev")

@guard.guarded("crm.update_contact", "write")
def update_contact(contact_id):
    return f"{contact_id} updated"

with session.run() as run, guard.bind(run):
    print("before:", update_contact("C-1"), flush=True)
assert emitter.flush(60), "the emitter could not deliver"
print("READY", flush=True)
deadline = time.monotonic() + 120
while time.monotonic() < deadline:
    try:
        with session.run() as run, guard.bind(run):
            update_contact("C-2")
    except (ToolRefused, RunHalted) as refused:
        print("REFUSED", refused.decision.mode, flush=True)
        break
    time.sleep(0.2)
else:
    sys.exit("never refused")
emitter.flush(30)
guard.close()
emitter.close()
print("MODULES", json.dumps(sorted({m.split('.')[0] for m in sys.modules})), flush=True)
"""


async def _produce_json(bootstrap: str, agent_id: str, n: int) -> list[str]:
    """What any producer does, per the README's contract: JSON with its content-type."""
    run_id, ids = str(uuid.uuid4()), []
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=False)
    await producer.start()
    try:
        for step in range(n):
            kind = "run_start" if step == 0 else "run_end" if step == n - 1 else "tool_call"
            event = {"event_id": str(uuid.uuid4()), "ts": int(time.time() * 1000),
                     "agent_id": agent_id, "run_id": run_id, "step": step, "kind": kind}
            if kind == "tool_call":
                event |= {"tool": "kb.search", "action_class": "read", "status": "ok"}
            if kind == "run_end":
                event["outcome"] = "success"
            ids.append(event["event_id"])
            await producer.send_and_wait("agent-steps", json.dumps(event).encode(),
                                         key=agent_id.encode(),
                                         headers=[("content-type", b"application/json")])
    finally:
        await producer.stop()
    return ids


async def _wait_committed(bootstrap: str, worker: subprocess.Popen,
                          log_tail: Callable[[], str]) -> None:
    hw = await highwaters(bootstrap, "agent-steps", PARTITIONS)
    deadline = time.monotonic() + 180
    while True:
        got = await committed(bootstrap, "tripwire", "agent-steps", PARTITIONS)
        if all(got[p] >= hw[p] for p in hw):
            return
        assert worker.poll() is None, f"worker died:\n{log_tail()}"
        assert time.monotonic() < deadline, f"not committed {got} < {hw}\n{log_tail()}"
        await asyncio.sleep(0.5)


def test_worker_from_an_empty_dir_and_an_sdk_only_agent(venvs: Venvs, tmp_path: Path) -> None:
    tripwire = str(venvs.server / "bin" / "tripwire")
    with EmbeddedBroker(free_port(), log_path=tmp_path / "broker.log") as broker:
        env = _clean_env(
            TRIPWIRE_KAFKA_BOOTSTRAP=broker.bootstrap, TRIPWIRE_KAFKA_IDEMPOTENCE="false",
            TRIPWIRE_CLICKHOUSE_URL=f"chdb://{tmp_path / 'clickhouse'}",
            TRIPWIRE_PARTITIONS=str(PARTITIONS), TRIPWIRE_CHANGELOG_END_MARKERS="true",
            TRIPWIRE_KAFKA_SESSION_TIMEOUT_S="6", TRIPWIRE_KAFKA_REBALANCE_TIMEOUT_S="2",
            TRIPWIRE_SINK_FLUSH_SECONDS="0.3",
            TRIPWIRE_OPERATOR_KEYS=json.dumps({OPERATOR_KEY[0]: OPERATOR_KEY[1]}),
            TRIPWIRE_CONTROL_KEY_ID=CONTROL_KEY[0],
            TRIPWIRE_CONTROL_KEYS=json.dumps({CONTROL_KEY[0]: CONTROL_KEY[1]}))
        # A fresh empty directory, no data dir in it: the worker makes ./data itself.
        workdir = tmp_path / "empty"
        workdir.mkdir()
        init = _run([tripwire, "init"], cwd=workdir, env=env, timeout=300)
        assert "topics ready" in init.stdout
        log = tmp_path / "worker.out"
        with open(log, "wb") as out:
            worker = subprocess.Popen([tripwire, "worker"], cwd=workdir, env=env, stdout=out,
                                      stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 180
            while "Worker ready" not in log.read_text():
                assert worker.poll() is None, f"worker died:\n{log.read_text()[-3000:]}"
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.2)
            assert (workdir / "data" / "worker.log").is_file()
            ids = asyncio.run(_produce_json(broker.bootstrap, "raw-client-agent", 5))

            agent_id = "sdk-only-agent"
            agent = subprocess.Popen(
                [str(venvs.sdk / "bin" / "python"), "-c", AGENT, broker.bootstrap, agent_id,
                 *CONTROL_KEY],
                cwd=workdir, env=_clean_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                text=True)
            assert agent.stdout is not None
            lines = []
            for line in agent.stdout:
                lines.append(line)
                if line.strip() == "READY":
                    break
            assert lines and lines[-1].strip() == "READY", "".join(lines)
            # The operator's way: the server's CLI, signing with the operator key.
            kill = _run([tripwire, "kill", agent_id, "--reason", "install test"], cwd=workdir,
                        env=env | {"TRIPWIRE_OPERATOR_KEY_ID": OPERATOR_KEY[0],
                                   "TRIPWIRE_OPERATOR_KEY": OPERATOR_KEY[1]}, timeout=120)
            assert "signed with key ops-install" in kill.stdout
            rest, _ = agent.communicate(timeout=180)
            output = "".join(lines) + rest
            assert agent.returncode == 0, output
            assert "before: C-1 updated" in output and "REFUSED halted" in output, output
            modules = set(json.loads(output.split("MODULES", 1)[1]))
            assert not modules & SERVER_ONLY, sorted(modules & SERVER_ONLY)

            asyncio.run(_wait_committed(broker.bootstrap, worker,
                                        lambda: log.read_text()[-3000:]))
        finally:
            worker.terminate()
            worker.wait(60)
        assert worker.returncode == 0, log.read_text()[-3000:]
        # ClickHouse, read after the worker let go of the chDB dir.
        stored = _run([tripwire, "sql",
                       "SELECT agent_id, count() FROM steps GROUP BY agent_id ORDER BY agent_id"],
                      cwd=workdir, env=env, timeout=120).stdout
        counts = dict(line.split("\t") for line in stored.splitlines())
        assert counts.get("raw-client-agent") == str(len(ids)), stored
        assert int(counts.get(agent_id, 0)) >= 2, stored  # run_start, tool calls, run_end
        audit = _run([tripwire, "sql", "SELECT action, outcome FROM operator_commands"],
                     cwd=workdir, env=env, timeout=120).stdout
        assert "kill" in audit, audit


def test_plain_pip_install_from_the_checkout(tmp_path: Path) -> None:
    """`pip install .` with no variable: setup.py takes the SDK from this checkout's sdk/."""
    venv, src = tmp_path / "venv", tmp_path / "src"
    _copy_checkout(src)
    _run([sys.executable, "-m", "venv", str(venv)], timeout=300)
    # Without the compiled detectors (TRIPWIRE_BUILD_PURE=1: what a machine without a C
    # compiler builds; the release wheel above has them): the pure-Python modules run.
    _run([str(venv / "bin" / "pip"), "install", "-q", *NO_COMPILE,
          "-c", str(src / "constraints.txt"), str(src)], cwd=tmp_path,
         env=_clean_env(TRIPWIRE_BUILD_PURE="1"), timeout=1200)
    done = _run([str(venv / "bin" / "tripwire"), "--help"], cwd=tmp_path, env=_clean_env(),
                timeout=120)
    assert "usage: tripwire" in done.stdout
    running = _run([str(venv / "bin" / "python"), "-c",
                    "import tripwire.detectors as d; print(d.RUNNING)"], cwd=tmp_path,
                   env=_clean_env(), timeout=120)
    assert running.stdout.strip() == "pure Python (no compiled build)"
    sdk = _run([str(venv / "bin" / "pip"), "show", "tripwire-sdk"], env=_clean_env(), timeout=60)
    assert "Version: 0.1.0" in sdk.stdout
