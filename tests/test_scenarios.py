"""Each simulated misbehaviour trips the breaker on the real stack, healthy agents are left
alone, and a worker SIGKILLed mid-scenario resumes with the same windows and modes.

The reference is the pure detector layer fed the same events in order (detectors/ has no I/O,
so it can run in the test); the worker must publish what the reference decides, across a
crash.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import defaultdict
from pathlib import Path

import pytest

from chdb_fixtures import tabsep_reader
from tripwire.bench.worker_process import WorkerProcess, read_all, wait_caught_up, worker_env
from tripwire.detectors.agent_monitor import AgentMonitor
from tripwire.detectors.injection import scan_text
from tripwire.detectors.policy import load_policy
from tripwire.schemas import topics
from tripwire.schemas.codec import control_codec
from tripwire.schemas.topics import ensure_topics, tripwire_topics
from tripwire.sdk.emitter import AsyncEmitter
from tripwire.simulator.fleet import fleet_events, scenario_of
from tripwire.simulator.scenarios import SCENARIOS
from tripwire.streams.broker import EmbeddedBroker, free_port

pytestmark = pytest.mark.integration
PARTITIONS = 4
EVENTS = 12_000
# Recoveries need wall-clock cool-downs; a day-long one keeps the modes under test still, so
# the worker (with timers) and the reference (without) must agree exactly.
POLICY = """
defaults:
  breaker:
    cooldown_ms: 86400000
    max_cooldown_ms: 86400000
"""
EXPECTED = {  # scenario -> the controls it may cause (at least one of them)
    # Denials concentrated in a tool restrict that tool first (narrow containment, scoped).
    "denial_storm": ("agent", "scoped"),
    "injection": ("agent",),
    "runaway_loop": ("run",),
    "overspend": ("run",),
    "never_ending_run": ("run",),
}


async def emit(bootstrap: str, events: list[dict]) -> None:
    async with AsyncEmitter(bootstrap, idempotence=False, linger_ms=5) as em:
        for ev in events:
            assert await em.emit_wait(ev, timeout_s=5)
        assert await em.flush(30)


def reference(events: list[dict], policy_path: Path) -> dict[str, list[tuple]]:
    policy = load_policy(policy_path)
    monitors: dict[str, AgentMonitor] = {}
    out: dict[str, list[tuple]] = defaultdict(list)
    for ev in events:
        agent = ev["agent_id"]
        m = monitors.get(agent)
        if m is None:
            m = monitors[agent] = AgentMonitor(agent, policy.for_agent(agent, ev["workflow"]),
                                               scan_text)
        for t in m.feed_many([ev])[1]:
            c = t.to_control()
            out[agent].append((c["seq"], c["mode"], c["scope"], c["run_id"]))
    return out


def test_scenarios_trip_healthy_agents_stay_and_state_survives_sigkill(tmp_path):
    (tmp_path / "policy.yaml").write_text(POLICY)
    start = (int(time.time()) - 6 * 3600) * 1000
    events = list(itertools.islice(
        fleet_events(seed=21, agents=10, scenarios=SCENARIOS, start_ms=start), EVENTS))
    expected = reference(events, tmp_path / "policy.yaml")
    healthy = {e["agent_id"] for e in events if scenario_of(e["agent_id"]) is None}
    assert len(healthy) == 10 and not healthy & set(expected), "reference: healthy untouched"

    with EmbeddedBroker(free_port(), log_path=tmp_path / "tansu.log") as broker:
        bootstrap = broker.bootstrap
        asyncio.run(ensure_topics(bootstrap, tripwire_topics(PARTITIONS)))
        env = worker_env(bootstrap, tmp_path / "data", PARTITIONS,
                         TRIPWIRE_POLICY_FILE=str(tmp_path / "policy.yaml"))
        worker = WorkerProcess(env, tmp_path / "worker.log").start()
        try:
            half = len(events) // 2
            asyncio.run(emit(bootstrap, events[:half]))
            asyncio.run(wait_caught_up(bootstrap, "tripwire", topics.STEPS, PARTITIONS, worker))
            # Crash with windows half-filled and modes already lowered; the restarted worker
            # must restore both from the changelog, not start from scratch.
            worker.kill()
            asyncio.run(emit(bootstrap, events[half:]))
            worker.start()
            asyncio.run(wait_caught_up(bootstrap, "tripwire", topics.STEPS, PARTITIONS, worker))
            time.sleep(1.5)  # a last sink flush for the breaker tables
        finally:
            assert worker.stop() == 0
        controls = [control_codec().decode(r.value)
                    for r in asyncio.run(read_all(bootstrap, topics.CONTROLS, PARTITIONS))]

    published: dict[str, list[tuple]] = defaultdict(list)
    for c in controls:
        published[c["agent_id"]].append((c["seq"], c["mode"], c["scope"], c["run_id"]))

    assert not healthy & set(published), "a healthy agent was downgraded"
    for scenario, scope in EXPECTED.items():
        agent = next(a for a in expected if scenario_of(a) == scenario)
        assert any(s in scope for _, _, s, _ in published[agent]), (scenario, published[agent])
    for agent, want in expected.items():
        # Same decisions, each published once, across the SIGKILL: no trip forgotten, none
        # doubled, no agent silently back to autonomous.
        assert sorted(set(published[agent])) == want, agent
    assert "Worker ready" in worker.log() and worker.log().count("Worker ready") == 2

    # Both reads in this process on one client (the worker has exited): a `tripwire sql`
    # process each paid a chDB start-up (1.2-2 s).
    with tabsep_reader(env["TRIPWIRE_CLICKHOUSE_URL"]) as sql:
        stored = {a: (int(n), int(u)) for a, n, u in sql(
            "SELECT agent_id, count(), uniqExact(seq) FROM mode_changes FINAL GROUP BY agent_id")}
        assert stored == {a: (len(w), len(w)) for a, w in expected.items()}
        detected = {row[0] for row in sql("SELECT DISTINCT agent_id FROM detections")}
    assert detected >= set(expected)
