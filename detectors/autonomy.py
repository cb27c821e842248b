"""Earned autonomy: an agent's record with humans, and the rung of the ladder it has earned.

The record, over a rolling window (``autonomy.window_ms`` in ``buckets``), counted since the
agent last changed rung (each rung is earned afresh):

* agreement: approval requests approved and proposals accepted, over all decided ones
  (``approval_decision`` steps; an *expired* request is nobody's judgement and not counted);
* policy-denial rate: denied / decided ``policy_decision`` steps of the agent's own policy
  engine (the guard's refusals follow from a mode Tripwire set, not from the agent);
* trips: downgrades by the breaker.

:func:`next_level` is the whole rule, one rung at a time:

* above the ceiling (the policy changed): down to the ceiling;
* below the floor (read_only, halted): nothing, that is the breaker's and the operators' to lift;
* at least ``demote_min_decisions`` and agreement below ``demote_agreement``: one rung down,
  not below ``floor``;
* at least ``promote_min_decisions``, agreement at least ``promote_agreement``, denial rate
  at most ``promote_max_denial_rate`` and at most ``promote_max_trips`` trips: one rung up,
  not above the ceiling;
* otherwise stay.

Plain data in, plain data out; :class:`AutonomyTracker` is one agent's state, fed by
``AgentMonitor`` and checkpointed with it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from tripwire.detectors.autonomy_policy import AutonomyPolicy
from tripwire.schemas.modes import LADDER, Mode

GUARD = "tripwire-guard"  # sdk.decisions.DECIDED_BY: the guard's own refusals
EXPIRED = "expired"  # sdk.approvals.EXPIRED
EXPIRY_APPROVER = "tripwire-expiry"

StepAction = Literal["start", "promote", "demote", "cap"]

# Bucket layout: [bucket key, agreed, disagreed, policy decided, policy denied, trips]
_AGREED, _DISAGREED, _DECIDED, _DENIED, _TRIPS = 1, 2, 3, 4, 5


@dataclass(frozen=True, slots=True)
class Record:
    agreed: int = 0
    disagreed: int = 0
    policy_decided: int = 0
    policy_denied: int = 0
    trips: int = 0

    @property
    def decisions(self) -> int:
        return self.agreed + self.disagreed

    @property
    def agreement(self) -> float | None:
        return self.agreed / self.decisions if self.decisions else None

    @property
    def denial_rate(self) -> float:
        return self.policy_denied / self.policy_decided if self.policy_decided else 0.0

    def describe(self, window_ms: int) -> str:
        agreement = "n/a" if self.agreement is None else f"{100 * self.agreement:.1f} %"
        return (f"{self.agreed} of {self.decisions} human decisions agreed ({agreement}) over "
                f"{_span(window_ms)}, policy-denial rate {100 * self.denial_rate:.1f} % of "
                f"{self.policy_decided}, {self.trips} trip(s)")


@dataclass(frozen=True, slots=True)
class Step:
    """A change of rung, with the numbers behind it."""

    action: StepAction
    level: Mode
    previous: Mode
    record: Record
    reason: str

    @property
    def rule(self) -> str:
        return f"autonomy.{self.action}"


def _span(ms: int) -> str:
    if ms % 86_400_000 == 0:
        return f"{ms // 86_400_000} d"
    if ms % 3_600_000 == 0:
        return f"{ms // 3_600_000} h"
    return f"{ms / 1000:g} s"


def one_down(mode: Mode) -> Mode:
    return LADDER[max(mode.rank - 1, 0)]


def next_level(level: Mode, record: Record, policy: AutonomyPolicy,
               ceiling: Mode) -> tuple[Mode, StepAction | None]:
    """The rung ``record`` earns from ``level`` (see the module docstring)."""
    if level.rank > ceiling.rank:
        return ceiling, "cap"
    if level.rank < policy.floor.rank:
        return level, None  # read_only, halted: the breaker's and the operators' to lift
    agreement = record.agreement
    if (agreement is not None and record.decisions >= policy.demote_min_decisions
            and agreement < policy.demote_agreement and level.rank > policy.floor.rank):
        return one_down(level), "demote"
    if (agreement is not None and record.decisions >= policy.promote_min_decisions
            and agreement >= policy.promote_agreement
            and record.denial_rate <= policy.promote_max_denial_rate
            and record.trips <= policy.promote_max_trips and level.rank < ceiling.rank):
        return level.one_level_up(), "promote"
    return level, None


class AutonomyTracker:
    """One agent's record and earned rung. ``level`` is None until the first event."""

    __slots__ = ("policy", "level", "ceiling", "version", "buckets")

    def __init__(self, policy: AutonomyPolicy) -> None:
        self.policy = policy
        self.level: Mode | None = None
        self.ceiling: Mode = policy.ceiling
        self.version: str | None = None
        self.buckets: list[list[int]] = []

    @property
    def bucket_ms(self) -> int:
        return self.policy.window_ms // self.policy.buckets

    # -- identity --------------------------------------------------------------------------

    def begin(self, version: str | None) -> Step | None:
        """Called with each event's agent_version: the start (first event, or a version with
        its own policy seen for the first time). Returns a Step when the mode must change."""
        if self.level is not None and (version == self.version
                                       or version not in self.policy.versions):
            self.version = version
            return None
        previous = self.level
        self.version = version
        start, self.ceiling = self.policy.for_version(version)
        self.level = start
        self.buckets = []
        if previous is None and start == Mode.AUTONOMOUS:
            return None  # a new agent is autonomous already: nothing to publish
        why = (f"agent version {version} starts at {start}" if previous is not None
               else f"new agent starts at {start}")
        return Step("start", start, previous or Mode.AUTONOMOUS, Record(),
                    f"{why} (ceiling {self.ceiling}); next: {self.needs(0)}")

    # -- counting --------------------------------------------------------------------------

    def observe(self, event: Mapping[str, Any]) -> None:
        if not self.policy.earn:
            return  # no record is kept for agents that do not earn: state stays empty
        kind = event["kind"]
        attributes = event.get("attributes") or {}
        if kind == "approval_decision":
            if (attributes.get("decline_reason") == EXPIRED
                    or event.get("approver") == EXPIRY_APPROVER):
                return
            self._count(event["ts"], _AGREED if event.get("approved") else _DISAGREED)
        elif kind == "policy_decision" and attributes.get("decided_by") != GUARD:
            outcome = event.get("policy_outcome")
            if outcome in ("allowed", "denied"):
                bucket = self._count(event["ts"], _DECIDED)
                if bucket is not None and outcome == "denied":
                    bucket[_DENIED] += 1

    def note_trip(self, ts: int) -> None:
        if self.policy.earn:
            self._count(ts, _TRIPS)

    def _count(self, ts: int, field: int) -> list[int] | None:
        key = ts // self.bucket_ms
        buckets = self.buckets
        if buckets and key < buckets[-1][0]:
            for bucket in reversed(buckets):
                if bucket[0] == key:
                    bucket[field] += 1
                    return bucket
                if bucket[0] < key:
                    break
            if key <= buckets[-1][0] - self.policy.buckets:
                return None  # older than the window: counts for nothing any more
            bucket = [key, 0, 0, 0, 0, 0]
            buckets.append(bucket)
            buckets.sort(key=lambda b: b[0])
        elif not buckets or key > buckets[-1][0]:
            bucket = [key, 0, 0, 0, 0, 0]
            buckets.append(bucket)
            horizon = key - self.policy.buckets
            while buckets and buckets[0][0] <= horizon:
                buckets.pop(0)
        else:
            bucket = buckets[-1]
        bucket[field] += 1
        return bucket

    def record(self, now_ms: int) -> Record:
        horizon = now_ms // self.bucket_ms - self.policy.buckets
        sums = [0, 0, 0, 0, 0, 0]
        for bucket in self.buckets:
            if bucket[0] > horizon:
                for i in range(1, 6):
                    sums[i] += bucket[i]
        return Record(sums[_AGREED], sums[_DISAGREED], sums[_DECIDED], sums[_DENIED],
                      sums[_TRIPS])

    # -- judging ---------------------------------------------------------------------------

    def judge(self, now_ms: int) -> Step | None:
        """A promotion, demotion or cap the record calls for now; the record starts afresh
        at the new rung."""
        if self.level is None:
            return None
        if not self.policy.earn and self.level.rank <= self.ceiling.rank:
            return None  # the common case: cheap, it runs on every decision event
        record = self.record(now_ms)
        level, action = next_level(self.level, record, self.policy, self.ceiling)
        if action is None or level == self.level:
            return None
        previous, self.level = self.level, level
        self.buckets = []
        verb = {"promote": "earned", "demote": "dropped to", "cap": "capped at"}[action]
        reason = f"{verb} {level}: {record.describe(self.policy.window_ms)}"
        if action == "promote":
            reason += (f" (needs >= {100 * self.policy.promote_agreement:g} % of >= "
                       f"{self.policy.promote_min_decisions})")
        elif action == "demote":
            reason += f" (below {100 * self.policy.demote_agreement:g} %)"
        reason += f"; next: {self.needs(now_ms)}"
        return Step(action, level, previous, record, reason)

    def needs(self, now_ms: int) -> str:
        """What the next rung still needs, for people."""
        if self.level is None:
            return "no events yet"
        if self.level.rank >= self.ceiling.rank:
            return f"at its ceiling {self.ceiling}"
        record, p = self.record(now_ms), self.policy
        missing = max(0, p.promote_min_decisions - record.decisions)
        return (f"{self.level.one_level_up()} after {missing} more decision(s) at >= "
                f"{100 * p.promote_agreement:g} % agreement, no trip")

    # -- state -----------------------------------------------------------------------------

    @property
    def at_rest(self) -> bool:
        """Autonomous with no ceiling and no record: what a fresh tracker becomes on its first
        event when the policy starts agents autonomous, so its state need not be stored (100k
        agents would carry it in the changelog for nothing)."""
        policy = self.policy
        return (not self.buckets and self.ceiling == Mode.AUTONOMOUS
                and self.level in (None, Mode.AUTONOMOUS) and not policy.versions
                and policy.start_mode == Mode.AUTONOMOUS and policy.ceiling == Mode.AUTONOMOUS)

    def to_state(self) -> list[Any]:
        # "" for None: the changelog state is lists, ints, floats and strings only.
        return ["" if self.level is None else str(self.level), str(self.ceiling),
                "" if self.version is None else self.version,
                [v for bucket in self.buckets for v in bucket]]

    @classmethod
    def from_state(cls, state: list[Any], policy: AutonomyPolicy) -> AutonomyTracker:
        tracker = cls(policy)
        tracker.level = Mode(state[0]) if state[0] else None
        tracker.ceiling = Mode(state[1])
        tracker.version = state[2] or None
        flat = state[3]
        tracker.buckets = [list(map(int, flat[i:i + 6])) for i in range(0, len(flat), 6)]
        return tracker
