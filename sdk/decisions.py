"""What each mode allows, and the values the guard answers with.

=============== ====== =============================================
mode            read   write / external / money / destructive
=============== ====== =============================================
autonomous      allow  allow
approve_to_act  allow  needs_approval (the agent's approval hook decides)
suggest_only    allow  suggest_only (a :class:`Proposal`, nothing runs)
read_only       allow  deny
halted          deny   deny, and the run ends
=============== ====== =============================================
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from tripwire.schemas.modes import Mode
from tripwire.sdk.steps import ENUM_SYMBOLS, canonical_params_json

__all__ = [
    "DECIDED_BY",
    "Approval",
    "ApprovalHook",
    "ApprovalRequest",
    "Decision",
    "GuardStatus",
    "Proposal",
    "ProposalOnly",
    "RunHalted",
    "ToolRefused",
    "Verdict",
    "require_action_class",
    "verdict_for",
]

Verdict = Literal["allow", "needs_approval", "suggest_only", "deny"]

_ACTION_CLASSES = ENUM_SYMBOLS["action_class"]
_SIDE_EFFECT_VERDICT: dict[Mode, Verdict] = {
    Mode.AUTONOMOUS: "allow",
    Mode.APPROVE_TO_ACT: "needs_approval",
    Mode.SUGGEST_ONLY: "suggest_only",
    Mode.READ_ONLY: "deny",
    Mode.HALTED: "deny",
}
_POLICY_OUTCOME: dict[Verdict, str] = {
    "allow": "allowed",
    "deny": "denied",
    "needs_approval": "approval_required",
    # The action goes to a human as a proposal instead of running.
    "suggest_only": "escalated",
}
DECIDED_BY = "tripwire-guard"
"""``attributes.decided_by`` of the guard's events, so detectors can tell them from the
agent's own policy engine (a refusal caused by a downgrade is not new misbehaviour)."""


def verdict_for(mode: Mode | str, action_class: str) -> Verdict:
    """What ``mode`` allows for an action of ``action_class``."""
    mode = Mode(mode)
    require_action_class(action_class)
    if mode == Mode.HALTED:
        return "deny"
    if action_class == "read":
        return "allow"
    return _SIDE_EFFECT_VERDICT[mode]


def require_action_class(action_class: str) -> None:
    if action_class not in _ACTION_CLASSES:
        raise ValueError(f"action_class={action_class!r} is not one of {sorted(_ACTION_CLASSES)}")


@dataclass(frozen=True, slots=True)
class Decision:
    """The guard's answer for one tool call."""

    verdict: Verdict
    mode: Mode
    """The mode the decision was made under (after any safe-mode fallback)."""
    tool: str
    action_class: str
    rule: str
    """``guard.mode.<mode>``, ``guard.run_stopped``, ``guard.run.<mode>``,
    ``guard.scope.<kind>.<mode>``, ``guard.safe_mode.<mode>`` or ``guard.approval.<outcome>``."""
    reason: str
    run_id: str | None = None
    stale: bool = False
    """True while the control plane is not heard from: the safe mode is in force."""
    seq: int | None = None
    """seq of the control the decision rests on; None when none was ever received."""
    control: str | None = None
    """The control that set ``mode``: the agent id (agent scope), ``run=<id>``, or the record
    key of a scoped control (``workflow=refunds``, ``policy:prod-money``, ...); None when no
    control is in force."""

    @property
    def allowed(self) -> bool:
        return self.verdict == "allow"

    @property
    def ends_run(self) -> bool:
        """The run must end: the agent is halted or this run was stopped."""
        return self.verdict == "deny" and self.mode == Mode.HALTED

    @property
    def policy_outcome(self) -> str:
        """The StepEvent ``policy_outcome`` this decision is recorded as."""
        return _POLICY_OUTCOME[self.verdict]


class ToolRefused(Exception):
    """The guard refused a tool call; ``decision`` says why."""

    def __init__(self, decision: Decision) -> None:
        super().__init__(
            f"{decision.tool} ({decision.action_class}) refused in mode {decision.mode}: "
            f"{decision.reason} [{decision.rule}]"
        )
        self.decision = decision


class RunHalted(ToolRefused):
    """Refused because the agent is halted or the run was stopped: end the run, do not retry.

    The guard has already ended the bound run (outcome ``abandoned``) when it raises this."""


class ProposalOnly(ToolRefused):
    """Raised by :meth:`Guard.action` in suggest_only mode; ``proposal`` is what to return
    to the user instead. (The :meth:`Guard.guarded` decorator returns the proposal.)"""

    def __init__(self, decision: Decision, proposal: Proposal) -> None:
        super().__init__(decision)
        self.proposal = proposal


@dataclass(frozen=True, slots=True)
class Proposal:
    """A tool call that suggest_only mode did not run: the agent hands it to a human."""

    tool: str
    action_class: str
    params: Mapping[str, Any] | None
    decision: Decision

    def describe(self) -> str:
        args = canonical_params_json(self.params) if self.params is not None else "(...)"
        return f"Proposed, not executed: {self.tool} {args}. {self.decision.reason}"


@dataclass(frozen=True, slots=True)
class ApprovalRequest:
    agent_id: str
    run_id: str | None
    tool: str
    action_class: str
    params: Mapping[str, Any] | None
    decision: Decision
    run: Any = None
    """The :class:`~sdk.steps.Run` the call belongs to, if any (its session is the context)."""
    step: int | None = None
    """Step number of the ``approval_request`` event emitted for this request."""


@dataclass(frozen=True, slots=True)
class Approval:
    approved: bool
    approver: str
    note: str | None = None
    reason_code: str | None = None
    """For a decline from Tripwire's inbox: wrong_recipient, too_risky, ..., expired."""
    recorded: bool = False
    """Tripwire already recorded this decision (ClickHouse and an approval_decision step),
    so the guard does not emit one of its own."""


ApprovalHook = Callable[[ApprovalRequest], "Approval | bool | Awaitable[Approval | bool]"]
"""The agent's approval flow: asked in approve_to_act mode before a side effect runs. May be
a coroutine function for async tools. A bare bool means an unnamed approver."""


@dataclass(frozen=True, slots=True)
class GuardStatus:
    agent_id: str
    mode: Mode
    """The mode the control plane set (autonomous if it never set one)."""
    effective_mode: Mode
    """What the guard enforces now: ``mode``, or the safe mode if lower and stale."""
    stale: bool
    caught_up: bool
    silent_for_s: float | None
    seq: int | None
    since_ms: int | None
    reason: str
    rule: str | None
    source: str | None
    expires_at: int | None
    stopped_runs: list[str] = field(default_factory=list)
    rejected_controls: dict[str, int] = field(default_factory=dict)
