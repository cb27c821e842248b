"""Shadow variants beside narrow containment, rate caps and earned autonomy.

Reference (brute force): a monitor running one variant's policy alone. A shadow element must
change nothing the enforced monitor decides, and what the monitor records for it must be
exactly what that variant alone does differently, on traffic that restricts tools, trips
rate caps, switches agent versions and earns or loses autonomy; a monitor with variants
must resume from its stored record (MessagePack, as the changelog holds it) exactly.
"""

from __future__ import annotations

import uuid

from hypothesis import given, settings
from hypothesis import strategies as st

from tripwire.detectors.agent_monitor import AgentMonitor
from tripwire.detectors.monitor_state import STATE_VERSION, StoredAgent, decode, encode
from tripwire.detectors.policy import Policy
from tripwire.detectors.shadow import shadow_records, split_shadow

START = 1_767_225_600_000
FAST = {"cooldown_ms": 60_000, "probation_ms": 30_000, "max_cooldown_ms": 600_000}
SHADOWED = {"defaults": {
    "denial_rate": {"min_decisions": 4, "bands": [
        {"at": 0.1, "severity": "S3", "shadow": True}, {"at": 0.3, "severity": "S3"},
        {"at": 0.5, "severity": "S2"}, {"at": 0.8, "severity": "S1"}]},
    "breaker": {**FAST,
                "containment": {"rate_caps": [{"name": "pay", "action_class": "money",
                                               "per_minute": 3, "target": "read_only"}]},
                "rules": [{"name": "denials_halt", "detector": "denial_rate",
                           "target": "halted", "shadow": True},
                          {"name": "runaway_run", "scope": "run", "target": "stop_run"},
                          {"name": "harmful", "severity": "S1", "target": "read_only"},
                          {"name": "rest", "severity": "*", "target": "approve_to_act"}]},
    "autonomy": {"start_mode": "approve_to_act", "earn": True, "promote_min_decisions": 4,
                 "promote_max_denial_rate": 0.5, "promote_max_trips": 1,
                 "demote_min_decisions": 4, "window_ms": 600_000, "buckets": 10,
                 "versions": {"2": {"start_mode": "suggest_only"}}},
}}

# (gap ms, kind, denied/approved, tool, version)
step = st.tuples(st.one_of(st.integers(0, 4_000), st.integers(0, 40_000)),
                 st.sampled_from(["policy_decision", "tool_call", "approval_decision"]),
                 st.booleans(), st.integers(0, 2), st.sampled_from(["1", "1", "2"]))
traffic = st.lists(step, min_size=1, max_size=250)


def events(draw: list[tuple[int, str, bool, int, str]]) -> list[dict]:
    ts, out = START, []
    for i, (gap, kind, flag, tool, version) in enumerate(draw):
        ts += gap
        event = {"event_id": str(uuid.UUID(int=i + 1)), "ts": ts, "agent_id": "a",
                 "agent_version": version, "run_id": f"r{i // 20}", "step": i % 20,
                 "kind": kind, "tool": f"t{tool}", "attributes": {}}
        if kind == "policy_decision":
            event["policy_outcome"] = "denied" if flag else "allowed"
        elif kind == "tool_call":
            event["action_class"] = "money" if tool == 0 else "read"
        else:
            event["approved"] = flag
            event["approver"] = "alice"
        out.append(event)
    return out


def policies():
    shadowed = Policy.model_validate(SHADOWED).defaults
    enforced, variants = split_shadow(shadowed)
    assert set(variants) == {"denial_rate.bands[0.1]", "denials_halt"}
    return shadowed, enforced, variants


@settings(max_examples=60, deadline=None)
@given(traffic)
def test_shadow_variants_follow_containment_caps_and_autonomy_like_the_variant_alone(
        draw) -> None:
    shadowed, enforced, variants = policies()
    stream = events(draw)
    with_shadow = AgentMonitor("a", shadowed)
    without = AgentMonitor("a", enforced)
    alone = {name: AgentMonitor("a", policy) for name, policy in variants.items()}
    recorded, expected = [], []
    for i in range(0, len(stream), 23):
        chunk = stream[i:i + 23]
        dets, moved = with_shadow.feed_many(chunk)
        assert (dets, moved) == without.feed_many(chunk)  # shadow changes no control
        recorded += shadow_records(with_shadow.take_variant_output(), dets, moved)
        for name, monitor in alone.items():
            v_dets, v_moved = monitor.feed_many(chunk)
            expected += shadow_records([(name, v_dets if name.startswith("denial_rate") else [],
                                         v_moved)], dets, moved)
        # The worker's timer between batches.
        now = chunk[-1]["ts"] + 15_000
        t_dets, t_moved = with_shadow.advance(now)
        assert (t_dets, t_moved) == without.advance(now)
        recorded += shadow_records(with_shadow.take_variant_output(), t_dets, t_moved)
        for name, monitor in alone.items():
            v_dets, v_moved = monitor.advance(now)
            expected += shadow_records([(name, v_dets if name.startswith("denial_rate") else [],
                                         v_moved)], t_dets, t_moved)
    key = [(r.shadow_rule, r.detection, r.transition) for r in recorded]
    assert key == [(r.shadow_rule, r.detection, r.transition) for r in expected]


@settings(max_examples=40, deadline=None)
@given(traffic, st.integers(0, 250))
def test_a_monitor_with_variants_resumes_from_its_stored_record(draw, cut) -> None:
    shadowed, _, _ = policies()
    stream = events(draw)
    cut = min(cut, len(stream))
    whole, first = AgentMonitor("a", shadowed), AgentMonitor("a", shadowed)
    out_whole = whole.feed_many(stream)[1]
    out_whole += [t for _, _, ts in whole.take_variant_output() for t in ts]
    out_split = first.feed_many(stream[:cut])[1]
    out_split += [t for _, _, ts in first.take_variant_output() for t in ts]
    stored = decode(encode(StoredAgent(version=STATE_VERSION, partition=0, offsets={},
                                       wall_ms=0, watermark=0, monitor=first.to_record())))
    resumed = AgentMonitor.from_record(stored.monitor, shadowed)
    assert resumed.to_record() == first.to_record()
    assert AgentMonitor.from_state(first.to_state(), shadowed).to_record() == first.to_record()
    # Rate-cap counts are not state (a restarted worker forgets the last minute), so the
    # cut may only fall where no cap window is open.
    recent = [e for e in stream[:cut] if e["kind"] == "tool_call" and e["tool"] == "t0"
              and cut < len(stream) and e["ts"] > stream[cut]["ts"] - 60_000]
    if recent:
        return
    out_split += resumed.feed_many(stream[cut:])[1]
    out_split += [t for _, _, ts in resumed.take_variant_output() for t in ts]
    assert sorted(out_split, key=repr) == sorted(out_whole, key=repr)
