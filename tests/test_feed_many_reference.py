"""``AgentMonitor.feed_many`` against a brute-force reference of itself.

``feed_many`` inlines ``feed``, ``_begin`` and ``_judge_event`` for events that find nothing,
keeps the breaker's wake time and last version in locals, and steps breaker-only variants
only on events that can move them (detections, caps, version changes, decisions when one
earns). The reference below does none of that: one ``feed`` and one ``_judge_event`` per
event, and every variant stepped at every event. Both must give the same detections,
transitions, variant output and state, however the events are split into batches (the
worker's batches and the backtest's deadline-bounded chunks differ).
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_agent_monitor import SENSITIVE, agent_history, fake_scanner

from tripwire.detectors.agent_monitor import AgentMonitor, _begin, _earned, _judge_event
from tripwire.detectors.policy import ResolvedPolicy

_BASE = SENSITIVE.model_dump()


def _policy(**sections: Any) -> ResolvedPolicy:
    data = {k: dict(v) if isinstance(v, dict) else v for k, v in _BASE.items()}
    for name, values in sections.items():
        data[name] = {**data[name], **values}
    return ResolvedPolicy.model_validate(data)


POLICIES = {
    "plain": SENSITIVE,
    # Shadow elements: a stricter denial band (own detectors) and a breaker rule (breaker only).
    "shadow": _policy(
        denial_rate={"bands": [
            {"at": 0.1, "severity": "S3", "shadow": True}, {"at": 0.3, "severity": "S3"},
            {"at": 0.5, "severity": "S2"}, {"at": 0.8, "severity": "S1"}]},
        breaker={"rules": [
            {"name": "spend_halts", "detector": "spend", "target": "read_only",
             "shadow": True},
            *[r for r in _BASE["breaker"]["rules"]]]}),
    # Earned autonomy: decisions move the enforced tracker and each variant's.
    "earned": _policy(
        autonomy={"earn": True, "start_mode": "approve_to_act", "promote_min_decisions": 3},
        breaker={"rules": [
            {"name": "spend_halts", "detector": "spend", "target": "read_only",
             "shadow": True},
            *[r for r in _BASE["breaker"]["rules"]]]}),
}


def reference_feed_many(monitor: AgentMonitor, events: list[dict]) -> tuple[list, list]:
    detections: list = []
    transitions: list = []
    for v in monitor.variants:
        if v.monitor is not None:
            found_v, moved_v = reference_feed_many(v.monitor, events)
            v.detections += found_v
            v.transitions += moved_v
    breaker, autonomy, clock, rates = (monitor.breaker, monitor.autonomy, monitor.clock,
                                       monitor.rates)
    for event in events:
        version = event.get("agent_version")
        _begin(breaker, autonomy, event, version, transitions)
        maintenance = monitor.next_maintenance
        found = monitor.feed(event)
        caps = rates.observe(event) if rates.caps else []
        detections += found
        _judge_event(breaker, autonomy, event, found, version, clock.watermark, caps,
                     transitions, True)
        if monitor._shared:
            monitor._step_variants(event, found, version, caps,
                                   maintenance != monitor.next_maintenance)
    if (not autonomy.policy.earn and autonomy.level is not None
            and autonomy.level.rank > autonomy.ceiling.rank):
        _earned(breaker, autonomy.judge(clock.watermark), clock.watermark, transitions)
    for v in monitor._shared:
        wake = v.breaker.wake_at
        if wake is not None and clock.watermark >= wake:
            v.transitions += v.breaker.tick(clock.watermark)
    return detections, transitions


def run(ops: list, cuts: set[int], fast: bool, policy: ResolvedPolicy) -> tuple[list, dict]:
    monitor = AgentMonitor("agent-1", policy, fake_scanner)
    feed = monitor.feed_many if fast else (lambda evs: reference_feed_many(monitor, evs))
    out: list = []
    batch: list[dict] = []

    def flush() -> None:
        if batch:
            found, moved = feed(list(batch))
            out.append(("batch", found, moved, monitor.take_variant_output()))
            batch.clear()

    for i, (op, arg) in enumerate(ops):
        if op == "event":
            batch.append(arg)
            if i in cuts:
                flush()
            continue
        flush()
        if op == "advance":
            out.append(("advance", *monitor.advance(arg), monitor.take_variant_output()))
        else:
            out.append(("command", monitor.on_command(arg, arg["issued_at"]),
                        monitor.take_variant_output()))
    flush()
    return out, monitor.to_state()


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(agent_history(), st.sampled_from(sorted(POLICIES)), st.data())
def test_feed_many_decides_what_the_per_event_reference_decides(
    ops: list, policy: str, data: st.DataObject
) -> None:
    cuts = set(data.draw(st.lists(st.integers(0, max(len(ops) - 1, 0)), max_size=12)))
    fast = run(ops, cuts, True, POLICIES[policy])
    reference = run(ops, cuts, False, POLICIES[policy])
    assert fast == reference


def test_the_reference_cases_exercise_variants_and_earned_autonomy() -> None:
    shadow = AgentMonitor("a", POLICIES["shadow"], fake_scanner)
    assert shadow._shared and shadow._every_event  # an own-detector variant
    # ... stepped on policy decisions only (and on what moves any variant, and sweeps).
    assert shadow._own_kinds == frozenset({"policy_decision"})
    earned = AgentMonitor("a", POLICIES["earned"], fake_scanner)
    assert earned._shared and not earned._every_event and earned._variants_earn
