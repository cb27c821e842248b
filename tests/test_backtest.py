"""The backtest's replay and the monitor's variants (shadow rules) against brute force.

References: a candidate judged as a *variant* of the monitor (sharing its detectors when only
the breaker differs) must decide exactly what a monitor running the candidate alone decides;
a shadow element must change nothing the enforced monitor publishes; a monitor with variants
must resume from its state exactly.
"""

from __future__ import annotations

import itertools
import uuid

from hypothesis import given, settings
from hypothesis import strategies as st

from tripwire.detectors.agent_monitor import AgentMonitor
from tripwire.detectors.backtest import Backtest, replay_one
from tripwire.detectors.policy import Policy
from tripwire.detectors.shadow import shadow_records, split_shadow
from tripwire.simulator.fleet import fleet_events

START = 1_767_225_600_000
BREAKER_CHANGE = {"breaker": {"cooldown_ms": 120_000, "probation_ms": 60_000, "rules": [
    {"name": "runaway_run", "scope": "run", "target": "stop_run"},
    {"name": "denials_hard", "detector": "denial_rate", "target": "read_only"},
    {"name": "harmful", "severity": "S1", "target": "read_only"},
    {"name": "rest", "severity": "*", "target": "approve_to_act"}]}}
DETECTOR_CHANGE = {"denial_rate": {"min_decisions": 4, "bands": [
    {"at": 0.2, "severity": "S3"}, {"at": 0.6, "severity": "S1"}]}}
FAST = {"breaker": {"cooldown_ms": 60_000, "probation_ms": 30_000, "max_cooldown_ms": 600_000}}


def decisions(draw_outcomes: list[tuple[int, bool, int]]) -> list[dict]:
    """Policy decisions (gap ms, denied, tool) of one agent, in one run per 20 steps."""
    ts, out = START, []
    for i, (gap, denied, tool) in enumerate(draw_outcomes):
        ts += gap
        out.append({
            "event_id": str(uuid.UUID(int=i + 1)), "ts": ts, "agent_id": "a", "run_id":
            f"r{i // 20}", "step": i % 20, "kind": "policy_decision", "tool": f"t{tool}",
            "policy_outcome": "denied" if denied else "allowed", "attributes": {}})
    return out


streams = st.lists(st.tuples(st.integers(0, 90_000), st.booleans(), st.integers(0, 2)),
                   min_size=1, max_size=300)


def keyed(outcome) -> list[tuple]:
    return [(t.seq, t.ts, t.action, t.prev_mode, t.new_mode, t.rule, t.run_id)
            for t in outcome.transitions]


@settings(max_examples=60, deadline=None)
@given(streams, st.sampled_from([BREAKER_CHANGE, DETECTOR_CHANGE]))
def test_a_variant_decides_what_the_candidate_alone_decides(outcomes, change) -> None:
    events = decisions(outcomes)
    current = Policy.model_validate({"defaults": FAST})
    candidate = Policy.model_validate({"defaults": {**FAST, **change} if "breaker" not in change
                                       else {**change}})
    end = events[-1]["ts"] + 3_600_000
    bt = Backtest(current, candidate, to_ms=end, keep_transitions=10_000)
    for i in range(0, len(events), 37):  # chunks, as the block reader hands them over
        bt.feed("a", None, events[i:i + 37])
    [both] = bt.finish().agents
    alone = Backtest(candidate, candidate, to_ms=end, keep_transitions=10_000)
    alone.feed("a", None, events)
    [reference] = alone.finish().agents
    assert keyed(both.candidate) == keyed(reference.current)
    assert both.candidate.below_autonomous_ms == reference.current.below_autonomous_ms
    current_alone = replay_one(current, "a", events, to_ms=end)
    assert keyed(both.current)[:50] == keyed(current_alone)


@settings(max_examples=40, deadline=None)
@given(streams)
def test_shadow_elements_change_nothing_enforced_and_record_the_difference(outcomes) -> None:
    events = decisions(outcomes)
    plain = Policy.model_validate({"defaults": FAST}).defaults
    shadowed = Policy.model_validate({"defaults": {**FAST, "denial_rate": {"min_decisions": 4,
        "bands": [{"at": 0.1, "severity": "S3", "shadow": True}, {"at": 0.3, "severity": "S3"},
                  {"at": 0.5, "severity": "S2"}, {"at": 0.8, "severity": "S1"}]},
        "breaker": {**FAST["breaker"], "rules": [
            {"name": "denials_halt", "detector": "denial_rate", "target": "halted",
             "shadow": True}, *[r.model_dump() for r in plain.breaker.rules]]}}}).defaults
    enforced, variants = split_shadow(shadowed)
    assert set(variants) == {"denial_rate.bands[0.1]", "denials_halt"}
    with_shadow = AgentMonitor("a", shadowed)
    without = AgentMonitor("a", enforced)
    variant_alone = {name: AgentMonitor("a", policy) for name, policy in variants.items()}
    recorded, expected = [], []
    for i in range(0, len(events), 25):
        chunk = events[i:i + 25]
        dets, moved = with_shadow.feed_many(chunk)
        ref_dets, ref_moved = without.feed_many(chunk)
        assert (dets, moved) == (ref_dets, ref_moved)  # shadow changes no control
        recorded += shadow_records(with_shadow.take_variant_output(), dets, moved)
        for name, monitor in variant_alone.items():
            v_dets, v_moved = monitor.feed_many(chunk)
            expected += shadow_records([(name, v_dets if name.startswith("denial_rate") else [],
                                         v_moved)], dets, moved)
    key = [(r.shadow_rule, r.detection, r.transition) for r in recorded]
    assert key == [(r.shadow_rule, r.detection, r.transition) for r in expected]


def test_a_monitor_with_variants_resumes_from_its_state() -> None:
    events = list(itertools.islice(fleet_events(seed=2, agents=0, scenarios=["denial_storm"],
                                                start_ms=START), 3000))
    policy = Policy.model_validate({"defaults": {"denial_rate": {"bands": [
        {"at": 0.1, "severity": "S3", "shadow": True}, {"at": 0.3, "severity": "S3"},
        {"at": 0.5, "severity": "S2"}, {"at": 0.8, "severity": "S1"}]}, "breaker": {
        "rules": [{"name": "all_halt", "target": "halted", "shadow": True},
                  {"name": "rest", "target": "approve_to_act"}]}}}).defaults
    agent = events[0]["agent_id"]
    whole = AgentMonitor(agent, policy)
    first = AgentMonitor(agent, policy)
    out_whole, out_split = [], []
    half = len(events) // 2
    out_whole += whole.feed_many(events)[1]
    out_whole += [t for _, _, ts in whole.take_variant_output() for t in ts]
    out_split += first.feed_many(events[:half])[1]
    out_split += [t for _, _, ts in first.take_variant_output() for t in ts]
    resumed = AgentMonitor.from_state(first.to_state(), policy)
    out_split += resumed.feed_many(events[half:])[1]
    out_split += [t for _, _, ts in resumed.take_variant_output() for t in ts]
    assert sorted(out_split, key=repr) == sorted(out_whole, key=repr)
    assert {v.name for v in resumed.variants} == {"denial_rate.bands[0.1]", "all_halt"}


def test_every_band_in_shadow_is_refused_naming_the_list() -> None:
    import pytest

    with pytest.raises(ValueError, match="at least one band"):
        Policy.model_validate({"defaults": {"injection": {"bands": [
            {"at": 1, "severity": "S3", "shadow": True}]}}})


SECTION_CHANGES = {
    "loops": {"loops": {"max_steps": 12, "repeat_limit": 3}},
    "spend": {"spend": {"run_budget_usd": 0.05, "hour_budget_usd": 0.5}},
    "injection": {"injection": {"bands": [{"at": 1, "severity": "S2"},
                                          {"at": 2, "severity": "S1"}]}},
    "denials+loops": {**DETECTOR_CHANGE, "loops": {"cycle_min_repeats": 2}},
    "runs (a monitor of its own)": {"runs": {"max_open_runs": 2}},
}


def test_shared_detectors_decide_what_the_candidate_alone_decides_on_fleet_traffic() -> None:
    from tripwire.detectors.injection import scan_text

    events = list(itertools.islice(fleet_events(
        seed=9, agents=3, scenarios=["denial_storm", "runaway_loop", "overspend", "injection",
                                     "never_ending_run"], start_ms=START), 12_000))
    by_agent: dict[str, list[dict]] = {}
    for e in events:
        by_agent.setdefault(e["agent_id"], []).append(e)
    current = Policy.model_validate({"defaults": FAST})
    for label, change in SECTION_CHANGES.items():
        candidate = Policy.model_validate({"defaults": {**FAST, **change}})
        end = events[-1]["ts"] + 7_200_000
        both = Backtest(current, candidate, scanner=scan_text, to_ms=end, keep_transitions=10**6)
        alone = Backtest(candidate, candidate, scanner=scan_text, to_ms=end,
                         keep_transitions=10**6)
        for agent in sorted(by_agent):
            mine = sorted(by_agent[agent], key=lambda e: (e["ts"], e["step"]))
            for i in range(0, len(mine), 53):
                both.feed(agent, mine[0]["workflow"], mine[i:i + 53])
            alone.feed(agent, mine[0]["workflow"], mine)
        pairs = zip(both.finish().agents, alone.finish().agents, strict=True)
        differ = 0
        for b, a in pairs:
            assert keyed(b.candidate) == keyed(a.current), (label, b.agent_id)
            assert b.candidate.detections == a.current.detections, (label, b.agent_id)
            differ += b.differs
        assert differ, f"{label}: the change should matter to some agent"


def test_the_replay_collector_is_restored_afterwards() -> None:
    import gc

    from tripwire.dashboards.change_commands import replay_collector

    before, frozen = gc.isenabled(), gc.get_freeze_count()
    with replay_collector():
        assert not gc.isenabled()
    assert gc.isenabled() == before
    assert gc.get_freeze_count() <= frozen
