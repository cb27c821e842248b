"""Scopes as plain data: matching against a brute-force reference, parameter conditions, the
schema's compatibility both ways, signatures unchanged for records without scope fields, the
worker's scoped records and standing-rule diffs, and the policy's standing section."""

from __future__ import annotations

import json
from fnmatch import fnmatchcase
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tripwire.detectors.policy import Policy
from tripwire.schemas.codec import CONTROL_SCHEMA, DecodeError, FramedCodec, control_codec
from tripwire.schemas.command_signing import (
    SHARED_AGENT,
    ControlVerifier,
    canonical_control_bytes,
    derive_agent_key,
    sign_control,
)
from tripwire.schemas.modes import LADDER, Mode
from tripwire.sdk.control_follower import ControlState, key_partition
from tripwire.sdk.operator import command_key, command_scope, new_command
from tripwire.sdk.scopes import (
    SELECTORS,
    CallContext,
    ParamCondition,
    Scope,
    ScopedControl,
    lowest_ceiling,
)
from tripwire.streams.scope_controls import ScopeControlWriter

NEW_FIELDS = ("agent_version", "environment", "workflow", "tool", "action_class", "condition",
              "command_id")


# --- matching against a reference --------------------------------------------------------------

values = {
    "agent_id": st.sampled_from(["a1", "a2"]),
    "agent_version": st.sampled_from(["1.0", "2.0"]),
    "environment": st.sampled_from(["dev", "prod"]),
    "workflow": st.sampled_from(["refunds", "billing"]),
    "tool": st.sampled_from(["pay.refund", "pay.payout", "crm.update", "pay.*", "crm.?pdate"]),
    "action_class": st.sampled_from(["read", "write", "money"]),
}
scopes = st.builds(Scope, **{k: st.none() | v for k, v in values.items()})
calls = st.builds(
    CallContext,
    agent_id=values["agent_id"],
    tool=st.sampled_from(["pay.refund", "pay.payout", "crm.update"]),
    action_class=values["action_class"],
    agent_version=st.none() | values["agent_version"],
    environment=st.none() | values["environment"],
    workflow=st.none() | values["workflow"],
)
controls = st.lists(
    st.tuples(scopes, st.sampled_from(list(LADDER)), st.integers(0, 5), st.booleans()),
    max_size=8,
)


def reference_matches(scope: Scope, call: CallContext) -> bool:
    for name in SELECTORS:
        want = getattr(scope, name)
        if want is None:
            continue
        got = getattr(call, name)
        if name == "tool":
            if got is None or not fnmatchcase(got, want):
                return False
        elif want != got:
            return False
    return True


@settings(max_examples=300, deadline=None)
@given(controls, calls)
def test_lowest_ceiling_is_the_minimum_over_matching_controls(specs, call) -> None:
    now = 1_000
    built = [
        ScopedControl(key=f"k{i}", scope=scope, mode=mode, seq=i, issued_at=i, reason="",
                      rule=None, source="operator", expires_at=(now - 1) if expired else None)
        for i, (scope, mode, _, expired) in enumerate(specs)
    ]
    expected = [c.mode for c in built
                if c.mode != Mode.AUTONOMOUS and c.expires_at is None
                and reference_matches(c.scope, call)]
    got = lowest_ceiling(built, call, now)
    if not expected:
        assert got is None
    else:
        assert got is not None
        assert got.mode == min(expected, key=lambda m: m.rank)
        assert reference_matches(got.control.scope, call)


@settings(max_examples=300, deadline=None)
@given(scopes, values["agent_id"], st.none() | values["agent_version"],
       st.none() | values["environment"], st.none() | values["workflow"])
def test_covers_guard_against_every_completion_of_what_the_guard_did_not_say(
        scope, agent, version, environment, workflow) -> None:
    # Covered = some call of that agent matches the scope once tool and action class are
    # left out (any agent may call any tool); an unknown field is tried with every value.
    agent_scope = Scope(**{**scope.selectors(), "tool": None, "action_class": None})
    known = {"agent_version": version, "environment": environment, "workflow": workflow}
    every = {"agent_version": ["1.0", "2.0"], "environment": ["dev", "prod"],
             "workflow": ["refunds", "billing"]}  # what ``values`` draws from
    choices = {name: [value] if value is not None else [*every[name], "other"]
               for name, value in known.items()}
    outcomes = {
        reference_matches(agent_scope, CallContext(agent_id=agent, agent_version=v,
                                                   environment=e, workflow=w))
        for v in choices["agent_version"] for e in choices["environment"]
        for w in choices["workflow"]}
    expected = outcomes.pop() if len(outcomes) == 1 else None
    assert scope.covers_guard(agent, known) == expected


def test_scope_keys_and_kinds() -> None:
    assert Scope().key() == "fleet" and Scope().kind == "fleet" and Scope().shared
    s = Scope(workflow="refunds", action_class="money")
    assert s.key() == "workflow=refunds;action_class=money"
    assert s.kind == "workflow+action_class" and s.kafka_key() == s.key()
    a = Scope(agent_id="a1", tool="pay.*")
    assert a.kafka_key() == "a1\x1fagent=a1;tool=pay.*" and not a.shared
    assert Scope.from_record({"agent_id": SHARED_AGENT, "workflow": "w"}) == Scope(workflow="w")
    with pytest.raises(ValueError):
        Scope(agent_id="*")
    with pytest.raises(ValueError):
        Scope(tool="")


@pytest.mark.parametrize(("condition", "params", "holds"), [
    (ParamCondition("amount", above=500), {"amount": 501}, True),
    (ParamCondition("amount", above=500), {"amount": 500}, False),
    (ParamCondition("amount", above=500), {"amount": "lots"}, True),
    (ParamCondition("amount", above=500), {}, True),
    (ParamCondition("amount", above=500), None, True),
    (ParamCondition("to", outside_domains=("example.com",)), {"to": "a@example.com"}, False),
    (ParamCondition("to", outside_domains=("example.com",)), {"to": "a@mail.example.com"}, False),
    (ParamCondition("to", outside_domains=("example.com",)), {"to": "a@evil-example.com"}, True),
    (ParamCondition("to", outside_domains=("example.com",)), {"to": "https://x.io/p"}, True),
    (ParamCondition("path", outside_prefixes=("/srv/app/",)), {"path": "/srv/app/a"}, False),
    (ParamCondition("path", outside_prefixes=("/srv/app/",)), {"path": "/srv/app/../etc"}, True),
    (ParamCondition("path", outside_prefixes=("/srv/app/",)), {"path": "/etc/passwd"}, True),
])
def test_parameter_conditions_fail_closed(condition, params, holds) -> None:
    assert condition.holds(params) is holds
    assert ParamCondition.from_json(condition.to_json()) == condition


def test_a_condition_needs_exactly_one_test() -> None:
    with pytest.raises(ValueError):
        ParamCondition("amount")
    with pytest.raises(ValueError):
        ParamCondition("amount", above=1, outside_prefixes=("/",))


# --- the schema, both ways ---------------------------------------------------------------------


def old_control_schema() -> dict[str, Any]:
    """control.avsc as it was before scopes: no selector fields, no 'scoped' symbol."""
    schema = json.loads(CONTROL_SCHEMA.read_text())
    schema["fields"] = [f for f in schema["fields"] if f["name"] not in NEW_FIELDS]
    for f in schema["fields"]:
        if f["name"] == "scope":
            f["type"]["symbols"] = ["agent", "run"]
    return schema


def agent_control(**extra: Any) -> dict[str, Any]:
    return {"agent_id": "a1", "mode": "read_only", "previous_mode": "autonomous",
            "scope": "agent", "run_id": None, "reason": "r", "detection_ids": [], "seq": 3,
            "issued_at": 1_750_000_000_000, "rule": "x", "expires_at": None,
            "source": "breaker", **extra}


def test_old_reader_decodes_new_agent_and_run_records() -> None:
    old = FramedCodec(old_control_schema())
    old.register_writer(CONTROL_SCHEMA)
    new = control_codec()
    record = agent_control(command_id="c-1")
    decoded = old.decode(new.encode(record))
    assert decoded == {k: v for k, v in record.items() if k not in NEW_FIELDS}
    run = agent_control(scope="run", run_id="r-1", mode="halted")
    assert old.decode(new.encode(run))["run_id"] == "r-1"


def test_old_reader_refuses_a_scoped_record_cleanly() -> None:
    # Never delivered to it (own keys / shared topic), and if it were: a DecodeError the
    # follower counts as malformed, not a crash and not an agent-wide mode.
    old = FramedCodec(old_control_schema())
    old.register_writer(CONTROL_SCHEMA)
    scoped = agent_control(scope="scoped", tool="pay.*")
    with pytest.raises(DecodeError):
        old.decode(control_codec().encode(scoped))


def test_new_reader_decodes_old_records_with_defaults() -> None:
    old = FramedCodec(old_control_schema())
    new = control_codec()
    new.register_writer(old_control_schema())
    decoded = new.decode(old.encode(agent_control()))
    assert all(decoded[name] is None for name in NEW_FIELDS)
    assert ControlState("a1").apply(decoded)


def test_signatures_of_records_without_scope_fields_are_unchanged() -> None:
    record = agent_control()
    with_nulls = record | dict.fromkeys(NEW_FIELDS)
    assert canonical_control_bytes(record, "k") == canonical_control_bytes(with_nulls, "k")
    headers = sign_control(with_nulls, "k", "master")
    verifier = ControlVerifier("a1", {"k": derive_agent_key("master", "a1")})
    assert verifier.verify(record, headers) is None  # an old guard's view of the record
    tampered = with_nulls | {"tool": "pay.*"}
    assert verifier.verify(tampered, headers) == "bad_signature"


# --- operator commands and the worker's records -----------------------------------------------


def test_command_scopes_and_keys() -> None:
    kill = new_command("kill", reason="r", operator="o", agent_id="a1")
    assert command_scope(kill) is None and command_key(kill) == "a1"
    wf = new_command("kill", reason="r", operator="o", scope=Scope(workflow="w"))
    assert command_scope(wf) == Scope(workflow="w") and command_key(wf) == "workflow=w"
    at = new_command("restrict", reason="r", operator="o", mode="read_only",
                     scope=Scope(agent_id="a1", tool="t"))
    assert command_key(at) == "a1" and command_scope(at) == Scope(agent_id="a1", tool="t")
    assert command_key(new_command("kill_all", reason="r", operator="o")) == "*"
    with pytest.raises(ValueError):
        new_command("kill", reason="r", operator="o")
    with pytest.raises(ValueError):
        new_command("kill_all", reason="r", operator="o", scope=Scope(workflow="w"))


def test_writer_places_records_and_raises_seq() -> None:
    writer = ScopeControlWriter(partitions=4)
    kill_all = new_command("kill_all", reason="r", operator="o")
    assert writer.for_command(kill_all, 1, 1000) == []
    (fleet,) = writer.for_command(kill_all, 0, 1000)
    assert fleet.topic == "agent-controls-shared" and fleet.key == "fleet"
    assert fleet.control["mode"] == "halted" and fleet.control["command_id"]
    (again,) = writer.for_command(new_command("release_all", reason="r", operator="o"), 0, 1000)
    assert again.control["seq"] == 1001 and again.control["mode"] == "autonomous"
    cmd = new_command("pin", reason="r", operator="o", mode="read_only", duration_ms=5000,
                      scope=Scope(agent_id="a1", tool="t"), now_ms=2000)
    (rec,) = writer.for_command(cmd, 3, 2000)
    assert rec.topic == "agent-controls" and rec.partition == key_partition(b"a1", 4)
    assert rec.key == "a1\x1fagent=a1;tool=t" and rec.control["expires_at"] == 7000
    assert control_codec().decode(control_codec().encode(rec.control))["tool"] == "t"


def test_standing_rules_diff_against_the_topic() -> None:
    policy = Policy.model_validate({"standing": {
        "rules": [{"name": "drops", "tool": "wh.drop_*", "effect": "deny"}],
        "reversibility": {"pay.*": "irreversible", "crm.*": "reversible"}}})
    writer = ScopeControlWriter(4)
    first = writer.standing(policy.standing.controls(), {}, 1000)
    assert sorted(r.key for r in first) == ["policy:drops", "policy:irreversible:pay.*"]
    published = {r.key: r.control for r in first}
    assert writer.standing(policy.standing.controls(), published, 2000) == []
    fewer = Policy.model_validate({"standing": {"rules": [], "reversibility": {}}})
    lifted = writer.standing(fewer.standing.controls(), published, 3000)
    assert {r.key: r.control["mode"] for r in lifted} == {
        "policy:drops": "autonomous", "policy:irreversible:pay.*": "autonomous"}
    assert all(r.control["seq"] > published[r.key]["seq"] for r in lifted)


def test_standing_policy_validation_names_the_problem() -> None:
    with pytest.raises(ValueError, match="at least one of"):
        Policy.model_validate({"standing": {"rules": [{"name": "all", "effect": "deny"}]}})
    with pytest.raises(ValueError, match="unique"):
        Policy.model_validate({"standing": {"rules": [
            {"name": "x", "tool": "a", "effect": "deny"},
            {"name": "x", "tool": "b", "effect": "deny"}]}})
    with pytest.raises(ValueError, match="exactly one"):
        Policy.model_validate({"standing": {"rules": [
            {"name": "x", "tool": "a", "effect": "approve", "when": {"param": "amount"}}]}})
    default = Policy().standing
    assert [c.name for c in default.controls()] == ["prod-destructive-needs-human"]
    assert default.reversibility_of("x", "destructive") == "irreversible"
    assert default.reversibility_of("x", "read") == "reversible"


def test_the_same_trip_across_a_workflows_agents_restricts_the_workflow() -> None:
    from tripwire.detectors.containment import ContainmentPolicy
    from tripwire.detectors.fleet_containment import WorkflowContainment

    policy = ContainmentPolicy(workflow_trip_agents=3, workflow_window_ms=60_000)
    wc = WorkflowContainment()
    t0 = 1_000_000
    assert wc.observe("refunds", "a1", "harmful", Mode.READ_ONLY, t0, policy, 5000) is None
    assert wc.observe("refunds", "a2", "other", Mode.READ_ONLY, t0, policy, 5000) is None
    assert wc.observe("billing", "b1", "harmful", Mode.READ_ONLY, t0, policy, 5000) is None
    # a1 again: still one agent; a3 after the window of a1's trip: a1 no longer counts.
    assert wc.observe("refunds", "a1", "harmful", Mode.READ_ONLY, t0 + 1, policy, 5000) is None
    assert wc.observe("refunds", "a2", "harmful", Mode.SUGGEST_ONLY, t0 + 2, policy,
                      5000) is None
    trip = wc.observe("refunds", "a3", "harmful", Mode.SUGGEST_ONLY, t0 + 3, policy, 5000)
    assert trip is not None and trip.agents == ("a1", "a2", "a3")
    assert trip.mode == Mode.READ_ONLY and trip.until == t0 + 5003
    assert "3 agents of workflow refunds" in trip.reason
    # Already restricted: no second record until it lapses.
    assert wc.observe("refunds", "a4", "harmful", Mode.READ_ONLY, t0 + 4, policy, 5000) is None
    record = ScopeControlWriter(4).workflow_trip(trip)
    assert record.key == "breaker:workflow=refunds" and record.topic == "agent-controls-shared"
    assert record.control["expires_at"] == trip.until and record.control["workflow"] == "refunds"


# --- guards' acknowledgements carry the guard's identity ------------------------------------


def test_acks_of_guards_from_before_identity_fields_still_decode_and_verify() -> None:
    from tripwire.schemas.codec import ACK_IDENTITY_FIELDS, CONTROL_ACK_SCHEMA, control_ack_codec
    from tripwire.schemas.command_signing import sign_ack, verify_ack

    schema = json.loads(CONTROL_ACK_SCHEMA.read_text())
    schema["fields"] = [f for f in schema["fields"] if f["name"] not in ACK_IDENTITY_FIELDS]
    old = FramedCodec(schema)
    ack = {"kind": "hello", "guard_instance": "g1", "agent_id": "a1", "applied_at": 5}
    headers = sign_ack(ack, "k", derive_agent_key("master", "a1"))  # as an old guard signs
    decoded = control_ack_codec().decode(old.encode(ack))
    assert all(decoded[n] is None for n in ACK_IDENTITY_FIELDS)
    assert verify_ack(decoded, headers, {"k": "master"}) is None
    new = {**ack, "workflow": "billing"}
    signed = sign_ack(new, "k", derive_agent_key("master", "a1"))
    assert control_ack_codec().decode(control_ack_codec().encode(new))["workflow"] == "billing"
    assert verify_ack(new, signed, {"k": "master"}) is None
    assert verify_ack({**new, "workflow": "other"}, signed, {"k": "master"}) == "bad_signature"


def test_ack_report_counts_the_guards_the_scope_covers() -> None:
    from tripwire.sdk.ack_report import AckReport, format_ack_report

    report = AckReport("c1", 1_000, Scope(workflow="billing"))
    ids = {"g-in": ("a1", "billing"), "g-in-silent": ("a2", "billing"),
           "g-out": ("a3", "support"), "g-unknown": ("a4", None)}
    for instance, (agent, workflow) in ids.items():
        report.heard[instance] = (agent, {"agent_version": None, "workflow": workflow,
                                          "environment": None})
    report.applied.update({"g-in": 40, "g-out": 10})
    assert report.guards == {"g-in": "a1", "g-in-silent": "a2"}
    assert report.obeyed == {"g-in": 40} and report.silent == ["g-in-silent"]
    assert report.unknown == {"g-unknown": "a4"}
    line = format_ack_report(report)
    assert line.startswith("obeyed by 1 of 2 guards of workflow=billing heard from recently; "
                           "slowest applied 40 ms after issue; silent: g-in-silent (a2)")
    assert "1 more heard from did not say their workflow (not counted)" in line
    fleet = AckReport("c1", 1_000, None, heard=report.heard, applied=report.applied)
    assert len(fleet.guards) == 4 and len(fleet.obeyed) == 2
