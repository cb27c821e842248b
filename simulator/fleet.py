"""A simulated fleet of agents: reproducible event streams, and a paced producer to Kafka.

``fleet_events`` is pure (no I/O): the same arguments always yield the same events in the
same order, so tests and the benchmark can use it without a broker. ``simulate`` paces that
stream at a total event rate and ships it through the SDK's :class:`~sdk.emitter.AsyncEmitter`.
"""

from __future__ import annotations

import asyncio
import heapq
import random
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from tripwire.schemas.service_errors import KafkaUnreachable
from tripwire.schemas.topics import STEPS
from tripwire.sdk.emitter import AsyncEmitter
from tripwire.simulator.scenarios import (
    BEHAVIOURS,
    SCENARIO_WORKFLOWS,
    SCENARIOS,
    WORKFLOWS,
    Actor,
    AgentProfile,
)

__all__ = [
    "DEFAULT_START_MS",
    "SimulationReport",
    "agent_profiles",
    "fleet_events",
    "scenario_agent_id",
    "scenario_of",
    "simulate",
    "simulate_sync",
]

# 2026-01-01T00:00:00Z: the default simulated start, fixed so a seed alone pins the output.
DEFAULT_START_MS = 1_767_225_600_000

_VERSIONS = ("1.4.2", "1.5.0", "2.0.1", "2.1.0")


def scenario_agent_id(scenario: str, n: int) -> str:
    """``denial_storm``, 1 → ``agent-denial-storm-1``."""
    return f"agent-{scenario.replace('_', '-')}-{n}"


def scenario_of(agent_id: str) -> str | None:
    """The scenario a simulated agent id was created for; None for healthy agents."""
    for scenario in SCENARIOS:
        prefix = f"agent-{scenario.replace('_', '-')}-"
        if agent_id.startswith(prefix) and agent_id[len(prefix):].isdigit():
            return scenario
    return None


def _check_scenarios(scenarios: Sequence[str]) -> list[str]:
    unknown = [s for s in scenarios if s not in SCENARIOS]
    if unknown:
        raise ValueError(f"unknown scenarios {unknown}; known: {list(SCENARIOS)}")
    # Order-insensitive so ["a", "b"] and ["b", "a"] describe (and generate) the same fleet.
    return sorted(set(scenarios))


def agent_profiles(
    seed: int, agents: int, scenarios: Sequence[str] = (), agents_per_scenario: int = 1
) -> list[AgentProfile]:
    """``agents`` healthy agents (``agent-000``...) plus ``agents_per_scenario`` dedicated
    agents per scenario (``agent-<scenario>-1``...)."""
    if agents < 0 or agents_per_scenario < 1:
        raise ValueError("agents must be >= 0 and agents_per_scenario >= 1")
    rng = random.Random(f"tripwire-sim:{seed}:fleet")
    names = sorted(WORKFLOWS)
    width = max(3, len(str(max(agents - 1, 0))))
    profiles = []
    for i in range(agents):
        wf = WORKFLOWS[names[i % len(names)]]
        env = rng.choices(("prod", "test", "dev"), (0.85, 0.10, 0.05))[0]
        profiles.append(AgentProfile(f"agent-{i:0{width}d}", wf.name, wf.owner, env,
                                     rng.choice(_VERSIONS), None))
    for scenario in _check_scenarios(scenarios):
        for n in range(1, agents_per_scenario + 1):
            choices = SCENARIO_WORKFLOWS[scenario]
            wf = WORKFLOWS[choices[(n - 1) % len(choices)]]
            profiles.append(AgentProfile(scenario_agent_id(scenario, n), wf.name, wf.owner,
                                         "prod", rng.choice(_VERSIONS), scenario))
    return profiles


def _agent_stream(
    index: int, profile: AgentProfile, seed: int, start_ms: int
) -> Iterator[tuple[int, int, int, dict[str, Any]]]:
    # One RNG per agent, keyed by its id, so adding an agent or a scenario does not change
    # what the others do.
    rng = random.Random(f"tripwire-sim:{seed}:{profile.agent_id}")
    # Staggered starts, so the fleet does not begin in lockstep.
    actor = Actor(profile, rng, start_ms + rng.randint(0, 30_000))
    behaviour = BEHAVIOURS[profile.scenario or "healthy"]
    for n, event in enumerate(behaviour(actor)):
        yield event["ts"], index, n, event


def fleet_events(
    seed: int = 0,
    agents: int = 20,
    scenarios: Sequence[str] = (),
    start_ms: int = DEFAULT_START_MS,
    *,
    agents_per_scenario: int = 1,
) -> Iterator[dict[str, Any]]:
    """The fleet's endless event stream in event-time order (ties broken by agent, then
    step). Deterministic: event ids, run ids and every choice come from RNGs seeded by
    ``seed``; ``ts`` comes from a simulated clock starting at ``start_ms``."""
    profiles = agent_profiles(seed, agents, scenarios, agents_per_scenario)
    streams = [_agent_stream(i, p, seed, start_ms) for i, p in enumerate(profiles)]
    for _, _, _, event in heapq.merge(*streams):
        yield event


@dataclass
class SimulationReport:
    events: int = 0
    """Events generated and offered to the emitter."""
    sent: int = 0
    dropped: int = 0
    errors: int = 0
    records: int = 0
    """Kafka records acknowledged (each carries one agent's batch)."""
    elapsed_s: float = 0.0
    first_ts: int | None = None
    last_ts: int | None = None
    per_agent: Counter[str] = field(default_factory=Counter)
    per_scenario: Counter[str] = field(default_factory=Counter)
    """Events by scenario; healthy agents count under ``"healthy"``."""
    per_kind: Counter[str] = field(default_factory=Counter)

    @property
    def events_per_s(self) -> float:
        return self.events / self.elapsed_s if self.elapsed_s > 0 else 0.0


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


async def simulate(
    bootstrap: str,
    topic: str = STEPS,
    *,
    agents: int = 20,
    duration_s: float | None = None,
    rate: float | None = 200.0,
    seed: int = 0,
    scenarios: Sequence[str] = SCENARIOS,
    idempotence: bool = True,
    max_events: int | None = None,
    clock: Literal["wall"] | int = "wall",
    agents_per_scenario: int = 1,
    emitter_options: Mapping[str, Any] | None = None,
    connect_timeout_s: float | None = None,
) -> SimulationReport:
    """Produce the fleet's traffic to ``topic`` until ``duration_s`` (wall seconds) or
    ``max_events`` is reached, whichever comes first (neither: until cancelled).

    ``rate`` caps the total events per second (None: as fast as the emitter takes them).
    ``clock="wall"`` stamps each event with the real time it is sent, so dashboards and
    event-time windows see live traffic; an int is a fixed simulated start (epoch ms) and the
    events keep their simulated timestamps, reproducible under ``seed``.
    ``connect_timeout_s``: fail with :class:`KafkaUnreachable` if the broker cannot be reached
    in that time (None: the emitter keeps retrying while events buffer).
    """
    if rate is not None and rate <= 0:
        raise ValueError("rate must be > 0 or None")
    wall = clock == "wall"
    if not wall and not isinstance(clock, int):
        raise ValueError('clock must be "wall" or a start time in epoch ms')
    start_ms = _now_ms() if wall else int(clock)
    scenarios = _check_scenarios(scenarios)
    report = SimulationReport()
    loop = asyncio.get_running_loop()
    options = {"report_interval_s": 10.0, **(emitter_options or {})}
    emitter = AsyncEmitter(bootstrap, topic, idempotence=idempotence, **options)
    await emitter.start()
    if connect_timeout_s is not None and not await emitter.wait_connected(connect_timeout_s):
        await emitter.close(timeout_s=1.0)
        raise KafkaUnreachable(bootstrap, f"no connection within {connect_timeout_s:g} s")
    t0 = loop.time()
    try:
        for i, event in enumerate(
            fleet_events(seed, agents, scenarios, start_ms, agents_per_scenario=agents_per_scenario)
        ):
            if max_events is not None and i >= max_events:
                break
            elapsed = loop.time() - t0
            if rate is not None:
                due = i / rate
                if duration_s is not None and due >= duration_s:
                    break
                # Sleep only when noticeably ahead: sub-ms sleeps cost more than they pace.
                if due - elapsed > 0.002:
                    await asyncio.sleep(due - elapsed)
            elif i % 512 == 0:
                await asyncio.sleep(0)  # let the sender run between bursts
            if duration_s is not None and loop.time() - t0 >= duration_s:
                break
            if wall:
                event["ts"] = _now_ms()
            # A simulator should be slowed by a slow broker rather than lose traffic.
            await emitter.emit_wait(event, timeout_s=5.0)
            report.events += 1
            report.per_agent[event["agent_id"]] += 1
            report.per_scenario[scenario_of(event["agent_id"]) or "healthy"] += 1
            report.per_kind[event["kind"]] += 1
            if report.first_ts is None:
                report.first_ts = event["ts"]
            report.last_ts = event["ts"]
    finally:
        report.elapsed_s = loop.time() - t0
        await emitter.close()
        stats = emitter.stats()
        report.sent, report.dropped = stats.sent, stats.dropped
        report.errors, report.records = stats.errors, stats.records
    return report


def simulate_sync(bootstrap: str, topic: str = STEPS, **kwargs: Any) -> SimulationReport:
    """:func:`simulate` for callers without an event loop."""
    return asyncio.run(simulate(bootstrap, topic, **kwargs))
