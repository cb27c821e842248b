"""The compiled detector modules (``compile_detectors.py``) decide exactly what the pure-Python
ones decide, and a process never runs a build that is not of the sources beside it.

The rest of the suite runs whatever this checkout loads: the compiled build scripts/setup.sh
made (what every wheel ships), or the pure-Python modules where there is none. Here the two are
held together: a replay of simulated fleet traffic with every scenario, under a shadowed policy
(variants), through a saved and restored monitor state, and two backtests, gives byte-identical
detections, transitions, states and reports with the build and with ``TRIPWIRE_PURE_DETECTORS``.
Building needs Cython (the ``test`` extra) and a C compiler; without them that test is
skipped, saying so.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

import tripwire.detectors as detectors
from tripwire.detectors import PURE_ENV, build_status

ROOT = Path(__file__).resolve().parent.parent
SOURCES = Path(detectors.__file__).resolve().parent
SUFFIX = sysconfig.get_config_var("EXT_SUFFIX")

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
shadowed = Policy.model_validate({"defaults": {
    "denial_rate": {"min_decisions": 4, "bands": [
        {"at": 0.1, "severity": "S3", "shadow": True}, {"at": 0.3, "severity": "S3"},
        {"at": 0.5, "severity": "S2"}, {"at": 0.8, "severity": "S1"}]},
    "breaker": {**fast["breaker"], "rules": [
        {"name": "denials_halt", "detector": "denial_rate", "target": "halted", "shadow": True},
        {"name": "runaway_run", "scope": "run", "target": "stop_run"},
        {"name": "rest", "severity": "*", "target": "approve_to_act"}]}}})
out = {"running": detectors.RUNNING, "loops_file": loops.__file__, "monitors": {},
       "reports": {}}
for label, policy in (("current", current), ("shadowed", shadowed)):
    for agent, mine in sorted(by_agent.items()):
        resolved = policy.for_agent(agent, None)
        monitor = AgentMonitor(agent, resolved, scan_text)
        found, moved = [], []
        half = len(mine) // 2
        for i in range(0, len(mine), 37):
            if i >= half and i - 37 < half:  # the stream's save and restore, halfway
                monitor = AgentMonitor.from_state(
                    json.loads(json.dumps(monitor.to_state())), resolved, scan_text)
            d, t = monitor.feed_many(mine[i:i + 37])
            found += [repr(x) for x in d]
            moved += [repr(x) for x in t]
        d, t = monitor.advance(mine[-1]["ts"] + 7_200_000)
        out["monitors"][f"{label}/{agent}"] = {
            "detections": found + [repr(x) for x in d],
            "transitions": moved + [repr(x) for x in t],
            "variants": repr(monitor.take_variant_output()),
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


def _python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k != PURE_ENV}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**clean, **env}, cwd=ROOT, timeout=600)


def _fake_build(directory: Path, digests: dict[str, str], suffix: str = SUFFIX) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name in digests:
        (directory / f"{name}{suffix}").write_bytes(b"not an extension module")
    (directory / "manifest.json").write_text(json.dumps({"ext_suffix": suffix,
                                                         "sources": digests}))


def _digest(name: str) -> str:
    return hashlib.sha256((SOURCES / f"{name}.py").read_bytes()).hexdigest()


def test_a_build_is_loaded_only_if_made_from_exactly_the_sources_beside_it(
        tmp_path: Path) -> None:
    assert build_status(tmp_path / "nowhere", SOURCES) == ((), "no compiled build")

    good = tmp_path / "good"
    _fake_build(good, {"loops": _digest("loops"), "runs": _digest("runs")})
    assert build_status(good, SOURCES) == (("loops", "runs"), "")

    # One module's source changed since the build: the whole build is refused, naming it.
    stale = tmp_path / "stale"
    _fake_build(stale, {"loops": _digest("loops"), "runs": "0" * 64})
    assert build_status(stale, SOURCES) == (
        (), "the compiled build is of other sources (runs)")

    # A module the manifest names is missing.
    (good / f"runs{SUFFIX}").unlink()
    assert build_status(good, SOURCES) == ((), "the compiled build is of other sources (runs)")

    # Built for another interpreter.
    other = tmp_path / "other"
    _fake_build(other, {"loops": _digest("loops")}, suffix=".cpython-312-x86_64-linux-gnu.so")
    assert build_status(other, SOURCES)[1].startswith("built for .cpython-312")

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "manifest.json").write_text("{not json")
    assert build_status(broken, SOURCES)[1].startswith("no usable compiled build")


def test_the_pure_python_modules_run_when_asked() -> None:
    done = _python("import tripwire.detectors as d, tripwire.detectors.loops as l; "
                   "print(d.COMPILED, l.__file__); print(d.RUNNING)", **{PURE_ENV: "1"})
    assert done.returncode == 0, done.stderr
    first, running = done.stdout.splitlines()
    assert first.startswith("() ") and first.endswith("loops.py")
    assert running == f"pure Python ({PURE_ENV} is set)"


@pytest.mark.integration
def test_the_compiled_detectors_decide_exactly_what_the_pure_python_ones_do(
        current_build: Path) -> None:
    fast, pure = _python(REPLAY), _python(REPLAY, **{PURE_ENV: "1"})
    assert fast.returncode == 0, fast.stderr[-3000:]
    assert pure.returncode == 0, pure.stderr[-3000:]
    a, b = json.loads(fast.stdout), json.loads(pure.stdout)
    assert a["running"].startswith("compiled (") and a["loops_file"].endswith(SUFFIX)
    assert b["running"].startswith("pure Python") and b["loops_file"].endswith("loops.py")
    monitors = a["monitors"].values()
    assert any(m["transitions"] for m in monitors), "the traffic should trip the breaker"
    assert any(m["variants"] != "[]" for m in monitors), "the shadow rules should act"
    assert a["monitors"] == b["monitors"]
    assert a["reports"] == b["reports"]
