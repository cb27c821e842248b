"""Release gates: the statistics against brute force, and gates on simulated fleets in chDB.

A candidate version whose simulated fleet has a denial storm fails; a candidate that behaves
like the baseline (another sample of the same healthy fleet) passes; a canary too small to
judge is not judged.
"""

from __future__ import annotations

import math
import subprocess
import sys
import time
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from chdb_fixtures import client_on
from tripwire.dashboards.gate_command import version_records
from tripwire.detectors.policy import Policy
from tripwire.detectors.release_gate import (
    ReleaseGatePolicy,
    VersionRecord,
    compare,
    newcombe,
    rate_ratio,
    wilson,
    z_value,
)
from tripwire.simulator.fleet import fleet_events
from tripwire.sinks.step_sink import StepSink

Z95 = z_value(0.95)


def score_test_accepts(k: int, n: int, p: float, z: float) -> bool:
    """The Wilson interval is the set of p the score test does not reject."""
    if p in (0.0, 1.0):
        return k == n * p
    return abs(k / n - p) <= z * math.sqrt(p * (1 - p) / n) + 1e-12


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 400).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n))))
def test_wilson_is_the_score_test_inverted(kn: tuple[int, int]) -> None:
    k, n = kn
    low, high = wilson(k, n, Z95)
    grid = [i / 2000 for i in range(2001)]
    accepted = [p for p in grid if score_test_accepts(k, n, p, Z95)]
    assert accepted, (k, n)
    assert low <= min(accepted) + 1 / 2000 and high >= max(accepted) - 1 / 2000
    assert min(accepted) - 1 / 1000 <= low and high <= max(accepted) + 1 / 1000


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 300), st.integers(1, 300), st.data())
def test_newcombe_contains_the_estimate_and_mirrors(n_a: int, n_b: int, data) -> None:
    a = data.draw(st.integers(0, n_a))
    b = data.draw(st.integers(0, n_b))
    d, low, high = newcombe(a, n_a, b, n_b, Z95)
    assert -1 <= low <= d <= high <= 1
    d2, low2, high2 = newcombe(b, n_b, a, n_a, Z95)
    assert math.isclose(d, -d2, abs_tol=1e-12)
    assert math.isclose(low, -high2, abs_tol=1e-12) and math.isclose(high, -low2, abs_tol=1e-12)


@given(st.integers(0, 500), st.integers(1, 1000), st.integers(0, 500), st.integers(1, 1000))
def test_rate_ratio_interval_brackets_the_ratio(k_a, n_a, k_b, n_b) -> None:
    ratio, low, high = rate_ratio(k_a, n_a, k_b, n_b, Z95)
    assert 0 < low <= ratio <= high


def record(version: str, decisions: int, denied: int, runs: int, success: float) -> VersionRecord:
    rec = VersionRecord(version, decisions=decisions, denied=denied)
    rec.run_success = [1.0 if i < runs * success else 0.0 for i in range(runs)]
    rec.run_cost = [0.02] * runs
    rec.run_steps = [12.0] * runs
    return rec


def test_a_small_canary_is_not_judged_on_noise() -> None:
    policy = ReleaseGatePolicy()
    tiny = compare(record("1", 1000, 20, 100, 0.95), record("2", 12, 6, 3, 0.3), policy)
    assert tiny.verdict == "insufficient"
    big = compare(record("1", 1000, 20, 100, 0.95), record("2", 1000, 300, 100, 0.95), policy)
    assert big.verdict == "fail"
    assert next(c for c in big.comparisons if c.metric == "policy-denial rate").verdict == "fail"


# --- simulated fleets in chDB ------------------------------------------------------------


def fleet(seed: int, version: str, start: int, end: int, storm: bool = False) -> list[dict]:
    events = []
    for e in fleet_events(seed, agents=8, scenarios=["denial_storm"] if storm else [],
                          start_ms=start, agents_per_scenario=4):
        if e["ts"] >= end:
            break
        events.append(e | {"agent_version": version})
    return events


def test_gate_fails_a_denial_storm_and_passes_an_equal_version(ch_migrated, ch_dsn,
                                                                tmp_path: Path) -> None:
    end = int(time.time() * 1000) - 60_000
    start = end - 3 * 3600_000
    sink = StepSink(ch_migrated, check_stored=False)
    events = (fleet(1, "2.4.0", start, end) + fleet(2, "2.5.0", start, end)
              + fleet(3, "2.6.0", start, end, storm=True))
    for i in range(0, len(events), 5000):
        sink.insert(events[i:i + 5000])
    policy = Policy().release_gate

    def gate(candidate: str) -> str:
        recs = version_records(ch_migrated, start, end + 1, None, "data-cleanup",
                               ("2.4.0", candidate))
        return compare(recs["2.4.0"], recs[candidate], policy).verdict

    assert gate("2.5.0") == "pass"
    assert gate("2.6.0") == "fail"

    # The command, from an empty directory, as a release pipeline runs it.
    def cli(candidate: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "tripwire.streams.cli", "gate", "--workflow",
             "data-cleanup", "--candidate", candidate, "--baseline", "2.4.0", "--from",
             str(start), "--to", str(end + 1), "--clickhouse-url", ch_dsn],
            cwd=tmp_path, capture_output=True, text=True, timeout=300)

    ch_migrated.close()  # chDB: one process per data dir
    storm = cli("2.6.0")
    assert storm.returncode == 1, storm.stderr
    assert "policy-denial rate" in storm.stdout and "FAIL" in storm.stdout
    equal = cli("2.5.0")
    assert equal.returncode == 0, equal.stdout + equal.stderr
    missing = cli("9.9.9")
    assert missing.returncode == 3, missing.stdout
    with client_on(ch_dsn) as c:  # nothing was written by the gate
        assert c.query("SELECT count() FROM steps").result_rows[0][0] == len(events)


def test_thresholds_come_from_the_policy_file(tmp_path: Path) -> None:
    from tripwire.detectors.policy import load_policy

    path = tmp_path / "p.yaml"
    path.write_text("release_gate:\n  max_denial_rate_increase: 0.1\n  min_runs: 5\n")
    gate = load_policy(path).release_gate
    assert (gate.max_denial_rate_increase, gate.min_runs) == (0.1, 5)
    path.write_text("release_gate:\n  max_denial_rate_increas: 0.1\n")
    try:
        load_policy(path)
    except ValueError as exc:
        assert "max_denial_rate_increas" in str(exc)
    else:
        raise AssertionError("a misspelt threshold must be refused")


def test_the_policy_example_lists_the_default_thresholds() -> None:
    from tripwire.detectors.policy import load_policy

    example = Path(__file__).resolve().parent.parent / "detectors" / "policy.example.yaml"
    assert load_policy(example).release_gate == ReleaseGatePolicy()
