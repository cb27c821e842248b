"""The backtest's reader hands the monitor events that hold only the keys their stored row has
a value for, and only the keys the policies read (``sinks/step_history.py``,
``detectors.backtest.event_keys``). The monitor must decide exactly what it decides on the
full events the stream decodes (every contract field, None where absent): same detections,
transitions, variant output and state, over any batch split.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_agent_monitor import agent_history, fake_scanner
from test_feed_many_reference import POLICIES, run

from tripwire.detectors.agent_monitor import INBOX
from tripwire.detectors.autonomy import EXPIRED, EXPIRY_APPROVER, GUARD
from tripwire.detectors.backtest import event_keys
from tripwire.detectors.policy import Policy

ALWAYS = ("event_id", "ts", "run_id", "step", "kind")


def sparse(event: dict[str, Any], keys: frozenset[str]) -> dict[str, Any]:
    """What the reader makes of an event: the keys asked for that have a value."""
    return {k: v for k, v in event.items()
            if k in ALWAYS or (k in keys and v is not None and v is not False and v != {})}


@st.composite
def richer_history(draw: st.DrawFn) -> list[tuple[str, Any]]:
    """agent_history plus what it leaves out: versions, approval decisions (approved, the
    inbox's, expired ones), the guard's own policy decisions, action classes."""
    ops = draw(agent_history())
    out = []
    version = None
    for op, arg in ops:
        if op == "event":
            arg = dict(arg)
            if draw(st.integers(0, 15)) == 0:
                version = draw(st.sampled_from([None, "1.0", "2.0"]))
            arg["agent_version"] = version
            arg["action_class"] = draw(st.sampled_from([None, "read", "write"]))
            if draw(st.integers(0, 5)) == 0:
                arg["kind"] = "approval_decision"
                arg["approver"] = draw(st.sampled_from(["alice", EXPIRY_APPROVER]))
                arg["approved"] = draw(st.booleans())
                arg["attributes"] = draw(st.sampled_from([
                    {}, {"decided_by": INBOX}, {"decline_reason": EXPIRED}]))
            elif arg["kind"] == "policy_decision" and draw(st.integers(0, 4)) == 0:
                arg["attributes"] = {"decided_by": GUARD}
        out.append((op, arg))
    return out


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(richer_history(), st.sampled_from(sorted(POLICIES)), st.data())
def test_sparse_events_decide_what_full_events_decide(
    ops: list, policy: str, data: st.DataObject
) -> None:
    cuts = set(data.draw(st.lists(st.integers(0, max(len(ops) - 1, 0)), max_size=12)))
    resolved = POLICIES[policy]
    keys = event_keys(Policy(defaults=resolved), scanner=fake_scanner)
    thin = [(op, sparse(arg, keys) if op == "event" else arg) for op, arg in ops]
    assert run(thin, cuts, True, resolved) == run(ops, cuts, True, resolved)


def test_event_keys_follow_the_policies() -> None:
    plain = Policy()
    assert "content" not in event_keys(plain)
    assert "content" in event_keys(plain, scanner=fake_scanner)
    assert not {"action_class", "approver", "approved"} & event_keys(plain)
    earning = Policy.model_validate({"agents": {"a": {"autonomy": {"earn": True}}}})
    assert {"approver", "approved"} <= event_keys(plain, earning)
    capped = Policy.model_validate({"workflows": {"w": {"breaker": {"containment": {
        "rate_caps": [{"name": "c", "tool": "x", "per_minute": 3, "target": "read_only"}]}}}}})
    assert "action_class" in event_keys(capped)
