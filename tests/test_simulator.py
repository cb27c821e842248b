"""The fleet simulator: determinism, scenario signatures, and pacing against the real broker."""

from __future__ import annotations

import base64
import itertools
import re
import time
from collections import Counter, defaultdict
from typing import Any

import pytest

from tripwire.bench.worker_process import read_all
from tripwire.schemas.codec import StepBatchCodec
from tripwire.schemas.validation import check_batch_key, check_event
from tripwire.simulator import (
    SCENARIOS,
    agent_profiles,
    fleet_events,
    scenario_agent_id,
    scenario_of,
    simulate,
    simulate_sync,
)
from tripwire.streams.broker import EmbeddedBroker

PARTITIONS = 4
START_MS = 1_767_225_600_000


def take(n: int, **kwargs: Any) -> list[dict[str, Any]]:
    return list(itertools.islice(fleet_events(**kwargs), n))


@pytest.fixture(scope="module")
def fleet() -> list[dict[str, Any]]:
    # Enough simulated hours that even the slowest scenario agents complete several runs.
    return take(60_000, seed=11, agents=10, scenarios=SCENARIOS, start_ms=START_MS)


def by_agent(events: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for e in events:
        out[e["agent_id"]].append(e)
    return out


def runs_of(events: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for e in events:
        out[e["run_id"]].append(e)
    return out


def denial_ratio(events: list[dict[str, Any]]) -> float:
    decisions = [e for e in events if e["kind"] == "policy_decision"]
    return sum(e["policy_outcome"] == "denied" for e in decisions) / max(1, len(decisions))


# -- pure generator ------------------------------------------------------------------------


def test_same_seed_same_sequence_other_seed_differs():
    kwargs = {"agents": 8, "scenarios": SCENARIOS, "start_ms": START_MS}
    a = take(3000, seed=1, **kwargs)
    assert a == take(3000, seed=1, **kwargs)
    b = take(3000, seed=2, **kwargs)
    assert [e["event_id"] for e in a] != [e["event_id"] for e in b]
    assert {e["event_id"] for e in a}.isdisjoint(e["event_id"] for e in b)
    # Scenario order is not part of the identity of a fleet.
    assert a == take(3000, seed=1, agents=8, scenarios=SCENARIOS[::-1], start_ms=START_MS)


def test_stream_is_valid_and_time_ordered(fleet):
    assert len({e["event_id"] for e in fleet}) == len(fleet)
    assert all(x["ts"] <= y["ts"] for x, y in itertools.pairwise(fleet))
    assert fleet[0]["ts"] >= START_MS
    for e in fleet[:5000]:
        assert check_event(e, now_ms=START_MS + 10**10) is None, e
    codec = StepBatchCodec()
    for agent, events in by_agent(fleet[:3000]).items():
        assert codec.decode(codec.encode(events)) == events
        assert check_batch_key(events, agent.encode()) is None


def test_agent_ids_name_their_scenario():
    profiles = agent_profiles(seed=0, agents=12, scenarios=SCENARIOS, agents_per_scenario=2)
    healthy = [p for p in profiles if p.scenario is None]
    assert [p.agent_id for p in healthy] == [f"agent-{i:03d}" for i in range(12)]
    assert {p.workflow for p in healthy} == {"crm-sync", "support-triage", "invoice-processing",
                                             "outbound-email", "data-cleanup"}
    assert scenario_agent_id("denial_storm", 1) == "agent-denial-storm-1"
    for p in profiles:
        assert scenario_of(p.agent_id) == p.scenario
    assert Counter(p.scenario for p in profiles if p.scenario) == dict.fromkeys(SCENARIOS, 2)
    with pytest.raises(ValueError, match="unknown scenarios"):
        agent_profiles(seed=0, agents=1, scenarios=["teleport"])


def test_adding_scenarios_does_not_change_healthy_agents():
    plain = take(2000, seed=5, agents=4, scenarios=(), start_ms=START_MS)
    mixed = take(6000, seed=5, agents=4, scenarios=SCENARIOS, start_ms=START_MS)
    healthy_mixed = [e for e in mixed if scenario_of(e["agent_id"]) is None]
    assert healthy_mixed[:1000] == plain[:1000]


def test_healthy_agents_look_healthy(fleet):
    healthy = [e for e in fleet if scenario_of(e["agent_id"]) is None]
    assert len(by_agent(healthy)) == 10
    assert denial_ratio(healthy) < 0.05
    kinds = Counter(e["kind"] for e in healthy)
    assert kinds["approval_request"] > 0 and kinds["approval_decision"] > 0
    classes = Counter(e["action_class"] for e in healthy if e["kind"] == "tool_call")
    assert set(classes) == {"read", "write", "external", "money", "destructive"}
    assert classes["read"] > sum(classes.values()) / 2
    outcomes: Counter[str] = Counter()
    for events in by_agent(healthy).values():
        runs = list(runs_of(events).values())
        for run in runs[:-1]:  # the last run may be cut off by the sample's end
            assert run[0]["kind"] == "run_start" and run[-1]["kind"] == "run_end"
            assert len(run) <= 50
            outcomes[run[-1]["outcome"]] += 1
    assert outcomes["success"] > 0.8 * sum(outcomes.values())
    costs = [e["cost_usd"] for e in healthy if e["kind"] == "model_call"]
    assert max(costs) < 0.5
    waits = [e["wait_ms"] for e in healthy if e["kind"] == "approval_decision"]
    assert min(waits) >= 2_000 and max(waits) <= 47 * 60_000


def _scenario_events(fleet, scenario: str) -> list[dict[str, Any]]:
    events = [e for e in fleet if scenario_of(e["agent_id"]) == scenario]
    assert events, scenario
    return events


def test_denial_storm_signature(fleet):
    assert denial_ratio(_scenario_events(fleet, "denial_storm")) > 0.5


def test_runaway_loop_signature(fleet):
    runs = runs_of(_scenario_events(fleet, "runaway_loop"))
    repeats = max(
        Counter(e["params_hash"] for e in run if e["kind"] == "tool_call").most_common(1)[0][1]
        for run in runs.values()
    )
    assert repeats >= 5
    assert max(len(run) for run in runs.values()) > 100
    assert max(run[-1]["ts"] - run[0]["ts"] for run in runs.values()) > 10 * 60_000


def test_overspend_signature(fleet):
    events = _scenario_events(fleet, "overspend")
    calls = [e for e in events if e["kind"] == "model_call"]
    assert min(e["input_tokens"] for e in calls) >= 100_000
    per_run = Counter()
    for e in calls:
        per_run[e["run_id"]] += e["cost_usd"]
    assert max(per_run.values()) > 5.0


def test_injection_signature(fleet):
    events = _scenario_events(fleet, "injection")
    reads = [e for e in events
             if e["kind"] == "tool_call" and e["source_trust"] == "external" and e["content"]]
    texts = [e["content"] for e in reads]
    assert any("Ignore all previous instructions" in t for t in texts)
    # Hidden and encoded variants are present too, and do not contain the plain phrase.
    assert any("\u200b" in t for t in texts)
    assert any("<!--" in t and "attacker@evil.example" in t for t in texts)
    encoded = [m for t in texts for m in re.findall(r"Reference: ([A-Za-z0-9+/=]{40,})", t)]
    assert encoded and "Ignore all previous instructions" in base64.b64decode(encoded[0]).decode()
    attempts = [e for e in events if e["kind"] == "policy_decision" and e["tool"] == "email.send"]
    assert attempts


def test_never_ending_run_signature(fleet):
    events = _scenario_events(fleet, "never_ending_run")
    kinds = Counter(e["kind"] for e in events)
    assert kinds["run_start"] >= 2 and kinds["run_end"] == 0


# -- against the broker --------------------------------------------------------------------


async def read_topic(bootstrap: str, topic: str) -> list[tuple[bytes, list[dict[str, Any]]]]:
    """Every record of ``topic`` as (key, decoded events), by manual assignment (no group)."""
    codec = StepBatchCodec()
    return [(m.key, codec.decode(m.value)) for m in await read_all(bootstrap, topic, PARTITIONS)]


@pytest.fixture
def steps_topic(make_topics) -> str:
    return make_topics(("steps", PARTITIONS))["steps"]


@pytest.mark.integration
async def test_simulate_sends_the_seeded_stream(broker: EmbeddedBroker, steps_topic: str):
    report = await simulate(broker.bootstrap, steps_topic, agents=6, seed=3, rate=None,
                            max_events=1500, clock=START_MS, idempotence=False)
    assert (report.events, report.sent, report.dropped, report.errors) == (1500, 1500, 0, 0)
    assert report.records < 1500
    assert sum(report.per_agent.values()) == sum(report.per_kind.values()) == 1500
    assert set(report.per_scenario) <= {"healthy", *SCENARIOS}
    assert report.per_scenario["healthy"] > 0

    records = await read_topic(broker.bootstrap, steps_topic)
    assert len(records) == report.records
    assert all(check_batch_key(evs, key) is None for key, evs in records)
    got = sorted((e for _, evs in records for e in evs), key=lambda e: e["event_id"])
    expected = take(1500, seed=3, agents=6, scenarios=SCENARIOS, start_ms=START_MS)
    assert got == sorted(expected, key=lambda e: e["event_id"])


@pytest.mark.integration
def test_simulate_respects_rate_and_duration(broker: EmbeddedBroker, steps_topic: str):
    rate, duration = 400.0, 1.5
    before = time.time_ns() // 1_000_000
    report = simulate_sync(broker.bootstrap, steps_topic, agents=10, seed=9, rate=rate,
                           duration_s=duration, idempotence=False)
    after = time.time_ns() // 1_000_000
    # Pacing schedules event i at i/rate s, so the cap is exact; the floor and the elapsed
    # bound are loose on purpose so a loaded machine cannot make this flaky.
    assert report.events <= rate * duration + 1
    assert report.events >= 0.3 * rate * duration
    assert report.elapsed_s < duration + 10
    assert report.sent == report.events and report.dropped == 0
    # clock="wall" stamps events with the real send time.
    assert before <= report.first_ts <= report.last_ts <= after


@pytest.mark.integration
async def test_simulate_max_events_wins_over_duration(broker: EmbeddedBroker, steps_topic: str):
    report = await simulate(broker.bootstrap, steps_topic, agents=3, seed=1, rate=None,
                            duration_s=30, max_events=50, scenarios=["injection"],
                            idempotence=False)
    assert report.events == 50 and report.elapsed_s < 30
    assert set(report.per_scenario) <= {"healthy", "injection"}
