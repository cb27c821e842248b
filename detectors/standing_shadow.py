"""Shadow standing rules: what a standing rule marked ``shadow: true`` would have decided.

A shadow standing rule is never published (``StandingPolicy.controls`` leaves it out), so no
guard enforces it and no control changes. Guards decide before a call, on the agent's side;
the worker cannot stand in for them, but it sees every ``tool_call`` step on the stream,
which is a call the guard let run under the controls in force. Each such step that the
rule's scope covers, and that the rule's ceiling would not have let through on its own (a
side effect under ``approve`` -> approve_to_act, under ``deny`` -> read_only; reads run under
both), is a call the rule would have sent to a human or refused. That would-be decision is
recorded as a shadow detection: ``shadow_detections`` with ``shadow_rule`` = the rule's name,
detector ``standing``, metric ``would_approve`` / ``would_deny``, the step as evidence, so
the safety dashboard can put it beside the enforced standing rules' decisions.

Parameter conditions (``when``) cannot be checked here: the stream carries a hash of the
parameters, not the parameters. Like the guard with unknown parameters, the condition is
taken to hold (fail closed: the count is an upper bound), and the message says so.

Pure: steps in, detections out; the worker (``streams/step_processor.py``) calls
:meth:`StandingShadow.judge` with each agent's new events.
"""

from __future__ import annotations

from collections.abc import Iterable

from tripwire.detectors.detection import Detection
from tripwire.detectors.shadow import ShadowRecord
from tripwire.detectors.standing_rules import StandingControl, StandingPolicy
from tripwire.detectors.stream_detector import Event
from tripwire.schemas.modes import Mode
from tripwire.sdk.decisions import verdict_for
from tripwire.sdk.scopes import CallContext

DETECTOR = "standing"
METRICS = {"needs_approval": "would_approve", "deny": "would_deny"}
"""The guard's verdict under the rule's ceiling -> the metric recorded."""


class StandingShadow:
    """The shadow standing rules of one policy, compiled once."""

    __slots__ = ("controls",)

    def __init__(self, standing: StandingPolicy) -> None:
        self.controls: tuple[StandingControl, ...] = tuple(standing.shadow_controls())

    def __bool__(self) -> bool:
        return bool(self.controls)

    def judge(self, agent_id: str, events: Iterable[Event]) -> list[ShadowRecord]:
        """Would-be decisions of every shadow standing rule on ``events`` (one agent's)."""
        controls = self.controls
        if not controls:
            return []
        out: list[ShadowRecord] = []
        for event in events:
            if event["kind"] != "tool_call":
                continue
            call = CallContext(
                agent_id=agent_id, tool=event.get("tool"),
                action_class=event.get("action_class"),
                agent_version=event.get("agent_version"),
                environment=event.get("environment"), workflow=event.get("workflow"))
            for control in controls:
                if not control.scope.matches(call):
                    continue
                verdict = _verdict(control.mode, call.action_class)
                if verdict == "allow":
                    continue
                out.append(ShadowRecord(control.name, detection=_detection(
                    agent_id, control, verdict, event)))
        return out


def _verdict(ceiling: Mode, action_class: str | None) -> str:
    try:
        return verdict_for(ceiling, action_class or "")
    except ValueError:
        # No or an unknown action class: the guard would not have run the call as a read.
        return "needs_approval" if ceiling == Mode.APPROVE_TO_ACT else "deny"


def _detection(agent_id: str, control: StandingControl, verdict: str, event: Event
               ) -> Detection:
    run_id = event.get("run_id") or None
    tool = event.get("tool")
    what = "needed a human" if verdict == "needs_approval" else "been refused"
    unchecked = (f"; its condition ({control.condition.describe()}) is not on the stream and "
                 "was taken to hold" if control.condition is not None else "")
    return Detection.build(
        detector=DETECTOR,
        agent_id=agent_id,
        metric=METRICS.get(verdict, "would_deny"),
        value=1.0,
        threshold=1.0,
        window_ms=None,
        severity="S3" if verdict == "needs_approval" else "S2",
        evidence_event_ids=(str(event["event_id"]),),
        ts=int(event["ts"]),
        message=f"shadow standing rule {control.name}: this {tool} call "
        f"({event.get('action_class')}) would have {what}{unchecked}",
        scope="run" if run_id else "agent",
        run_id=run_id,
        tool=tool,
    )
