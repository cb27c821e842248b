"""Standing rules marked shadow: left out of what is published, judged on tool-call steps."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tripwire.detectors.policy import Policy
from tripwire.detectors.standing_rules import StandingPolicy
from tripwire.detectors.standing_shadow import StandingShadow
from tripwire.streams.scope_controls import ScopeControlWriter

POLICY = {
    "standing": {
        "rules": [
            {"name": "prod-destructive-needs-human", "action_class": "destructive",
             "environment": "prod", "effect": "approve"},
            {"name": "no-drops", "tool": "warehouse.drop_*", "effect": "deny", "shadow": True},
            {"name": "big-refunds", "tool": "payments.refund", "effect": "approve",
             "when": {"param": "amount", "above": 500}, "shadow": True},
        ]
    }
}


def step(i: int, tool: str, action_class: str, kind: str = "tool_call",
         environment: str = "prod") -> dict:
    return {"event_id": f"00000000-0000-4000-8000-{i:012d}", "ts": 1_000 + i, "kind": kind,
            "run_id": "r1", "tool": tool, "action_class": action_class,
            "environment": environment, "workflow": "ops", "agent_version": "1.0"}


def test_a_shadow_standing_rule_is_not_published_and_promoting_is_one_edit() -> None:
    policy = Policy.model_validate(POLICY)
    assert [c.name for c in policy.standing.controls()] == ["prod-destructive-needs-human"]
    assert [c.name for c in policy.standing.shadow_controls()] == ["no-drops", "big-refunds"]
    promoted = {"standing": {"rules": [
        {k: v for k, v in r.items() if k != "shadow"} for r in POLICY["standing"]["rules"]]}}
    names = [c.name for c in Policy.model_validate(promoted).standing.controls()]
    assert names == ["prod-destructive-needs-human", "no-drops", "big-refunds"]


def test_would_be_decisions_of_shadow_standing_rules() -> None:
    shadow = StandingShadow(Policy.model_validate(POLICY).standing)
    events = [
        step(1, "warehouse.drop_table", "destructive"),  # no-drops: would deny
        step(2, "warehouse.drop_table", "read"),  # a read runs under read_only: nothing
        step(3, "warehouse.drop_table", "destructive", kind="policy_decision"),  # not a call
        step(4, "payments.refund", "money"),  # big-refunds: condition unknown, taken to hold
        step(5, "crm.update", "write"),  # no shadow rule covers it
        step(6, "warehouse.drop_table", "destructive", environment="test"),  # any env
    ]
    records = shadow.judge("a1", events)
    got = [(r.shadow_rule, r.detection.metric, r.detection.evidence_event_ids[0][-1])
           for r in records]
    assert got == [("no-drops", "would_deny", "1"), ("big-refunds", "would_approve", "4"),
                   ("no-drops", "would_deny", "6")]
    assert all(r.transition is None and r.detection.detector == "standing" for r in records)
    assert "not on the stream" in records[1].detection.message
    assert records[0].detection.run_id == "r1" and records[0].detection.tool == (
        "warehouse.drop_table")
    # Deterministic ids: re-processing after a crash collapses in the ReplacingMergeTree.
    again = shadow.judge("a1", events)
    assert [r.detection.detection_id for r in again] == [
        r.detection.detection_id for r in records]


def test_nothing_to_judge_without_shadow_standing_rules() -> None:
    shadow = StandingShadow(StandingPolicy())
    assert not shadow
    assert shadow.judge("a1", [step(1, "warehouse.drop_table", "destructive")]) == []


ACTION_CLASSES = ("read", "write", "external", "money", "destructive")


@given(st.lists(st.tuples(st.sampled_from(("warehouse.drop_x", "payments.refund", "crm.a")),
                          st.sampled_from(ACTION_CLASSES),
                          st.sampled_from(("tool_call", "model_call"))), max_size=30))
def test_every_covered_side_effect_call_and_nothing_else(calls: list) -> None:
    shadow = StandingShadow(Policy.model_validate(POLICY).standing)
    events = [step(i, tool, cls, kind) for i, (tool, cls, kind) in enumerate(calls)]
    records = shadow.judge("a1", events)
    # Brute force: the rules by hand.
    expected = []
    for i, (tool, cls, kind) in enumerate(calls):
        if kind != "tool_call" or cls == "read":
            continue
        if tool.startswith("warehouse.drop_"):
            expected.append(("no-drops", i))
        if tool == "payments.refund":
            expected.append(("big-refunds", i))
    assert [(r.shadow_rule, int(r.detection.evidence_event_ids[0][-12:])) for r in records] \
        == expected


def test_shadow_flag_is_validated_like_any_field() -> None:
    with pytest.raises(ValueError, match="shadow"):
        Policy.model_validate({"standing": {"rules": [
            {"name": "x", "tool": "t", "effect": "deny", "shadow": "sometimes"}]}})


def test_marking_a_published_rule_shadow_lifts_it_and_promoting_publishes_it() -> None:
    """What the worker's policy reload does with the topic (``publish_standing``)."""
    rule = {"name": "no-drops", "tool": "warehouse.drop_*", "effect": "deny"}
    enforced = Policy.model_validate({"standing": {"rules": [rule]}})
    shadowed = Policy.model_validate({"standing": {"rules": [{**rule, "shadow": True}]}})
    writer = ScopeControlWriter(4)
    (first,) = writer.standing(enforced.standing.controls(), {}, 1000)
    assert first.key == "policy:no-drops" and first.control["mode"] == "read_only"
    (lifted,) = writer.standing(shadowed.standing.controls(), {first.key: first.control}, 2000)
    assert lifted.key == "policy:no-drops" and lifted.control["mode"] == "autonomous"
    (again,) = writer.standing(enforced.standing.controls(), {first.key: lifted.control}, 3000)
    assert again.control["mode"] == "read_only" and again.control["seq"] > lifted.control["seq"]
