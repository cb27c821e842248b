"""The optional compiled detectors (``python -m tripwire.bench.compile_detectors``) decide
exactly what the pure-Python ones decide, and a process never runs a build that is not of the
sources beside it.

The pure-Python modules are what every install runs and what every other test file checks.
Here, a build made from this checkout is held to them: the detectors' and the monitor's
property tests (brute-force references, ``feed_many`` against its per-event reference, sparse
events, the backtest's variants) run again in a process that loads the build, and a replay of
simulated fleet traffic with every scenario, under the default policy and under a breaker and a
detector change, gives byte-identical detections, transitions, monitor states and backtest
reports in both. Building needs Cython (the ``test`` extra) and a C compiler; without them the
build is skipped, saying so, and the pure-Python detectors are all there is to test.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from tripwire.bench.compile_detectors import build
from tripwire.detectors import COMPILED_ENV, COMPILED_MODULES

ROOT = Path(__file__).resolve().parent.parent

# Run in a fresh process with and without the build: prints one JSON document of everything
# the replay decided and every monitor's final state.
REPLAY = r"""
import itertools, json, sys
import tripwire.detectors as detectors
from tripwire.detectors import loops
from tripwire.detectors.agent_monitor import AgentMonitor
from tripwire.detectors.backtest import Backtest
from tripwire.detectors.injection import scan_text
from tripwire.detectors.policy import Policy
from tripwire.simulator.fleet import fleet_events

events = list(itertools.islice(fleet_events(
    seed=5, agents=4, scenarios=["denial_storm", "runaway_loop", "overspend", "injection",
                                 "never_ending_run"], start_ms=1_767_225_600_000), 15_000))
by_agent = {}
for e in events:
    by_agent.setdefault(e["agent_id"], []).append(e)
fast = {"breaker": {"cooldown_ms": 60_000, "probation_ms": 30_000}}
current = Policy.model_validate({"defaults": fast})
out = {"compiled": detectors.COMPILED is not None, "loops_file": loops.__file__,
       "monitors": {}, "reports": {}}
for agent, mine in sorted(by_agent.items()):
    monitor = AgentMonitor(agent, current.for_agent(agent, None), scan_text)
    found, moved = [], []
    for i in range(0, len(mine), 37):
        d, t = monitor.feed_many(mine[i:i + 37])
        found += [repr(x) for x in d]
        moved += [repr(x) for x in t]
    d, t = monitor.advance(mine[-1]["ts"] + 7_200_000)
    out["monitors"][agent] = {"detections": found + [repr(x) for x in d],
                              "transitions": moved + [repr(x) for x in t],
                              "state": monitor.to_state()}
for label, change in {
        "breaker": {"breaker": {**fast["breaker"], "cooldown_ms": 600_000}},
        "detectors": {"denial_rate": {"min_decisions": 4, "bands": [
            {"at": 0.2, "severity": "S3"}, {"at": 0.6, "severity": "S1"}]}}}.items():
    candidate = Policy.model_validate({"defaults": {**fast, **change}})
    bt = Backtest(current, candidate, scanner=scan_text, to_ms=events[-1]["ts"] + 7_200_000,
                  keep_transitions=10**6)
    for agent, mine in sorted(by_agent.items()):
        for i in range(0, len(mine), 53):
            bt.feed(agent, None, mine[i:i + 53])
    out["reports"][label] = bt.finish().to_json()
json.dump(out, sys.stdout, sort_keys=True, default=repr)
"""

PROPERTY_TESTS = ["tests/test_windows.py", "tests/test_evidence.py", "tests/test_runs.py",
                  "tests/test_loops.py", "tests/test_spend.py", "tests/test_denial_rate.py",
                  "tests/test_agent_monitor.py", "tests/test_feed_many_reference.py",
                  "tests/test_sparse_events.py", "tests/test_backtest.py"]


def _env(compiled: Path | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != COMPILED_ENV}
    if compiled is not None:
        env[COMPILED_ENV] = str(compiled)
    return env


def _loads(code: str, compiled: Path | None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=_env(compiled), cwd=ROOT)


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    try:
        import Cython  # noqa: F401
    except ImportError:
        pytest.skip("Cython is not installed: only the pure-Python detectors exist here")
    compiler = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(compiler) is None:
        pytest.skip(f"no C compiler ({compiler}): only the pure-Python detectors exist here")
    return build(tmp_path_factory.mktemp("compiled") / "detectors")


def test_a_missing_or_stale_build_is_not_loaded(tmp_path: Path) -> None:
    probe = ("import tripwire.detectors as d, tripwire.detectors.loops as l; "
             "print(d.COMPILED, l.__file__)")
    done = _loads(probe, tmp_path / "nowhere")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[0] == "None" and done.stdout.strip().endswith("loops.py")
    assert "no usable build there" in done.stderr and "pure-Python" in done.stderr

    # A build of other sources (here: a manifest whose digests are not these files') is
    # refused even though its modules are there, naming the modules that changed.
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    for name in COMPILED_MODULES:
        (tmp_path / f"{name}{suffix}").write_bytes(b"not an extension module")
    (tmp_path / "manifest.json").write_text(json.dumps({
        "ext_suffix": suffix, "sources": {name: "0" * 64 for name in COMPILED_MODULES}}))
    done = _loads(probe, tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[0] == "None" and done.stdout.strip().endswith("loops.py")
    assert "built from other sources: windows, evidence" in done.stderr


@pytest.mark.integration
def test_the_compiled_detectors_decide_exactly_what_the_pure_python_ones_do(
        compiled: Path) -> None:
    pure, fast = _loads(REPLAY, None), _loads(REPLAY, compiled)
    assert pure.returncode == 0, pure.stderr[-3000:]
    assert fast.returncode == 0, fast.stderr[-3000:]
    a, b = json.loads(pure.stdout), json.loads(fast.stdout)
    assert not a["compiled"] and a["loops_file"].endswith("loops.py")
    assert b["compiled"] and b["loops_file"].endswith(sysconfig.get_config_var("EXT_SUFFIX"))
    assert any(m["transitions"] for m in a["monitors"].values()), "the traffic should trip"
    assert a["monitors"] == b["monitors"]
    assert a["reports"] == b["reports"]


@pytest.mark.integration
def test_the_property_tests_pass_against_the_compiled_detectors(compiled: Path) -> None:
    check = _loads("import tripwire.detectors as d; assert d.COMPILED, 'not loaded'", compiled)
    assert check.returncode == 0, check.stderr
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *PROPERTY_TESTS],
        capture_output=True, text=True, env=_env(compiled), cwd=ROOT)
    assert done.returncode == 0, (done.stdout + done.stderr)[-5000:]
