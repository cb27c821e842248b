"""Everything Tripwire knows about one agent: its detectors and its breaker.

The stream keeps one ``AgentMonitor`` per agent, feeds it that agent's events in partition
order, publishes the detections and transitions, and stores ``to_state()`` in a changelogged
table once per batch; ``from_state`` resumes exactly where ``to_state`` left off.

Event time: one ``EventClock`` per agent. An event more than ``event_time.grace_ms`` behind
the newest one is counted in ``late_events`` and left out of the time windows (denial rate,
injection hits, hour/day spend, spike), whose buckets may already have been judged; the
run-scoped checks (loops, run budgets) still count it, since a run's steps and bill do not
depend on arrival time.

Time-driven work has two entry points: ``tick(now_ms)`` returns detections only (like
``feed``); ``advance(now_ms)`` also lets the breaker act on them and on its own deadlines
(like ``feed_many``). ``now_ms`` should be on the event-time axis, i.e. the wall clock when
live; a replay of old events should advance with event time instead.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from tripwire.detectors.autonomy import AutonomyTracker, Step
from tripwire.detectors.breaker import Breaker, Command, Transition
from tripwire.detectors.denial_rate import DenialRateDetector
from tripwire.detectors.detection import Detection
from tripwire.detectors.loops import LoopDetector
from tripwire.detectors.monitor_state import (
    STATE_VERSION,
    MonitorState,
    StateVersionError,
    monitor_from_plain,
)
from tripwire.detectors.policy import ResolvedPolicy
from tripwire.detectors.prompt_injection_hits import InjectionHitRate, Scanner
from tripwire.detectors.rate_caps import RateCounter
from tripwire.detectors.spend import SpendDetector
from tripwire.detectors.stream_detector import Event
from tripwire.detectors.windows import EventClock
from tripwire.schemas.modes import Mode

MAINTENANCE_EVERY_MS = 300_000
"""Time between sweeps that drop emptied windows (idle tools) and idle runs. A sweep costs
tens of microseconds, so it runs rarely; five minutes is the denial window, the time an idle
tool window takes to empty anyway. Ended runs do not wait for it: they are dropped whenever
a new run starts."""

INBOX = "tripwire-inbox"
"""``attributes.decided_by`` of the decisions the approval inbox publishes: they count for
earned autonomy only. They may arrive after their run ended (a proposal accepted later),
and fed to the loop detector they would reopen that run."""
_TRIPS = frozenset({"downgrade", "escalate", "probation_failed"})
_EARNED_ACTIONS = {"start": "autonomy_start", "promote": "promote", "demote": "demote",
                   "cap": "autonomy_cap"}


class AgentMonitor:
    __slots__ = (
        "agent_id",
        "policy",
        "scanner",
        "clock",
        "loops",
        "denials",
        "spend",
        "injection",
        "breaker",
        "autonomy",
        "next_maintenance",
        "rates",
    )

    def __init__(
        self, agent_id: str, policy: ResolvedPolicy, scanner: Scanner | None = None
    ) -> None:
        self.agent_id = agent_id
        self.policy = policy
        self.scanner = scanner
        clock = self.clock = EventClock(policy.event_time.grace_ms)
        self.loops = LoopDetector(agent_id, policy, clock)
        self.denials = DenialRateDetector(agent_id, policy, clock)
        self.spend = SpendDetector(agent_id, policy, clock)
        self.injection = InjectionHitRate(agent_id, policy, scanner, clock)
        self.breaker = Breaker(agent_id, policy.breaker)
        self.autonomy = AutonomyTracker(policy.autonomy)
        self.next_maintenance = 0
        self.rates = RateCounter(policy.breaker.containment.rate_caps)

    @property
    def mode(self) -> Mode:
        return self.breaker.mode

    @property
    def late_events(self) -> int:
        return self.clock.late_events

    # --- events ---------------------------------------------------------------------------

    def feed(self, event: Event) -> list[Detection]:
        """Detections caused by one event; the breaker is not involved (see ``feed_many``)."""
        out: list[Detection] = []
        kind = event["kind"]
        if kind == "approval_decision":
            self.autonomy.observe(event)
            if (event.get("attributes") or {}).get("decided_by") == INBOX:
                return out
        elif kind == "policy_decision" and self.autonomy.policy.earn:
            self.autonomy.observe(event)
        clock = self.clock
        ts: int = event["ts"]
        # EventClock.admit, inlined: this runs for every event of every agent.
        watermark = clock.watermark
        if ts > watermark:
            clock.watermark = watermark = ts
            on_time = True
        elif ts >= watermark - clock.grace_ms:
            on_time = True
        else:
            clock.late_events += 1
            on_time = False
        self.loops.observe(event, on_time, out)
        # Each detector only sees the kinds it counts: most events concern one of them.
        if (
            event.get("cost_usd") is not None
            or event.get("input_tokens") is not None
            or event.get("output_tokens") is not None
            or kind == "run_end"
        ):
            self.spend.observe(event, on_time, out)
        if on_time:
            if kind == "policy_decision":
                self.denials.observe(event, True, out)
            if event.get("injection_flagged") or (
                self.scanner is not None and event.get("content")
            ):
                self.injection.observe(event, True, out)
        if watermark >= self.next_maintenance:
            self._maintain(watermark, watermark)
        return out

    def feed_many(self, events: Iterable[Event]) -> tuple[list[Detection], list[Transition]]:
        """Feed events in order and let the breaker act; returns (detections, transitions)."""
        detections: list[Detection] = []
        transitions: list[Transition] = []
        breaker = self.breaker
        clock = self.clock
        rates = self.rates
        autonomy = self.autonomy
        # Per-event autonomy work only where the policy asks for it: agent_version matters
        # with per-version starts, judging with earn (measured: ~1.5 us an event otherwise).
        versions, earn = bool(autonomy.policy.versions), autonomy.policy.earn
        for event in events:
            if autonomy.level is None or (versions
                                          and event.get("agent_version") != autonomy.version):
                self._earned(autonomy.begin(event.get("agent_version")), event["ts"],
                             transitions)
            found = self.feed(event)
            version = event.get("agent_version")
            if version is not None and (not breaker.versions
                                        or breaker.versions[-1][0] != version):
                breaker.saw_version(version, clock.watermark)
            if rates.caps:
                for cap, count in rates.observe(event):
                    transitions += breaker.cap(cap.limit_key, cap.target, f"rate_cap.{cap.name}",
                                               f"{count} calls in 60 s, cap {cap.per_minute}",
                                               clock.watermark)
            judge = earn and event["kind"] in ("approval_decision", "policy_decision")
            if found:
                detections += found
                moved = breaker.on_detections(found, clock.watermark, version)
                judge = self._note_trips(moved) or judge
                transitions += moved
            elif breaker.wake_at is not None and clock.watermark >= breaker.wake_at:
                transitions += breaker.tick(clock.watermark)
            if judge:
                now = max(clock.watermark, event["ts"])
                self._earned(autonomy.judge(now), now, transitions)
        if not earn and autonomy.level is not None and autonomy.level.rank > autonomy.ceiling.rank:
            # A lowered ceiling (policy change) applies even where nothing is earned.
            self._earned(autonomy.judge(clock.watermark), clock.watermark, transitions)
        return detections, transitions

    def _note_trips(self, transitions: list[Transition]) -> bool:
        tripped = False
        for t in transitions:
            if t.action in _TRIPS:
                self.autonomy.note_trip(t.ts)
                tripped = True
        return tripped

    def _earned(self, step: Step | None, now_ms: int, out: list[Transition]) -> None:
        if step is not None:
            out += self.breaker.on_earned(step.level, _EARNED_ACTIONS[step.action],  # type: ignore[arg-type]
                                          step.reason, now_ms)

    # --- time -----------------------------------------------------------------------------

    def tick(self, now_ms: int) -> list[Detection]:
        """Detections due by time alone (runs that never ended), and expiry of idle state.

        Cheap when nothing is due, so the stream may tick every agent often; ``next_due_ms``
        says when ticking this agent can next change anything.
        """
        detections: list[Detection] = []
        if now_ms >= self.loops.next_deadline:
            detections = self.loops.tick(now_ms)
        if max(now_ms, self.clock.watermark) >= self.next_maintenance:
            self._maintain(self.clock.watermark, now_ms)
        return detections

    @property
    def next_due_ms(self) -> int:
        """Earliest time at which ``tick``/``advance`` has work: a never-ending-run check, a
        breaker deadline (cool-down, probation, pin expiry) or a maintenance sweep."""
        due = min(self.loops.next_deadline, self.next_maintenance)
        if self.breaker.wake_at is not None:
            due = min(due, self.breaker.wake_at)
        return due

    def advance(self, now_ms: int) -> tuple[list[Detection], list[Transition]]:
        """``tick`` plus the breaker: its recovery deadlines and the tick's detections."""
        detections = self.tick(now_ms)
        if detections:
            transitions = self.breaker.on_detections(detections, now_ms)
            if self._note_trips(transitions):
                self._earned(self.autonomy.judge(now_ms), now_ms, transitions)
            return detections, transitions
        return detections, self.breaker.tick(now_ms)

    def on_command(self, command: Command | Mapping[str, Any], now_ms: int) -> list[Transition]:
        """Apply an operator command (a ``Command`` or a command.avsc record)."""
        return self.breaker.on_command(command, now_ms)

    def _maintain(self, watermark: int, now_ms: int) -> None:
        # Windows expire on the watermark only: advancing them to a wall-clock ``now`` ahead
        # of event time would push on-time events out of their buckets. ``now_ms`` only ages
        # out runs of an agent that has gone quiet.
        latest = max(watermark, now_ms)
        self.next_maintenance = (latest // MAINTENANCE_EVERY_MS + 1) * MAINTENANCE_EVERY_MS
        self.loops.expire(now_ms)
        self.denials.expire(watermark)
        self.spend.expire(now_ms)
        self.injection.expire(watermark)

    # --- state ----------------------------------------------------------------------------

    def to_record(self) -> MonitorState:
        """The monitor as a named, versioned record (``detectors.monitor_state``)."""
        return MonitorState(
            agent=self.agent_id,
            clock=self.clock.to_state(),
            next_maintenance=self.next_maintenance,
            loops=self.loops.to_state(),
            denials=self.denials.to_state(),
            spend=self.spend.to_state(),
            injection=self.injection.to_state(),
            breaker=self.breaker.to_state(),
            # Left out at rest: a restart would rebuild the same tracker (the default).
            autonomy=None if self.autonomy.at_rest else self.autonomy.to_state(),
        )

    @classmethod
    def from_record(
        cls, record: MonitorState, policy: ResolvedPolicy, scanner: Scanner | None = None
    ) -> AgentMonitor:
        """Rebuild a monitor; ``policy`` and ``scanner`` are not part of the state.

        If the policy changed a window's geometry (length, buckets) since the state was
        written, that window starts empty; everything else carries over.
        """
        agent_id = record.agent
        monitor = cls.__new__(cls)  # every part is restored below; building fresh ones is waste
        monitor.agent_id, monitor.policy, monitor.scanner = agent_id, policy, scanner
        clock = monitor.clock = EventClock.from_state(record.clock, policy.event_time.grace_ms)
        monitor.next_maintenance = int(record.next_maintenance)
        monitor.loops = LoopDetector.from_state(record.loops, agent_id, policy, clock)
        monitor.denials = DenialRateDetector.from_state(record.denials, agent_id, policy, clock)
        monitor.spend = SpendDetector.from_state(record.spend, agent_id, policy, clock)
        monitor.injection = InjectionHitRate.from_state(
            record.injection, agent_id, policy, scanner, clock
        )
        monitor.breaker = Breaker.from_state(record.breaker, agent_id, policy.breaker)
        # Not in the state: a restarted worker forgets the last minute's call counts.
        monitor.rates = RateCounter(policy.breaker.containment.rate_caps)
        earned = record.autonomy
        monitor.autonomy = (AutonomyTracker.from_state(earned, policy.autonomy)
                            if earned is not None else AutonomyTracker(policy.autonomy))
        return monitor

    def to_state(self) -> dict[str, Any]:
        """Compact plain data (lists, ints, floats, str), e.g. for JSON; the stream stores
        ``to_record`` instead."""
        return {"v": STATE_VERSION, **self._plain(self.to_record())}

    @staticmethod
    def _plain(record: MonitorState) -> dict[str, Any]:
        return {"agent": record.agent, "clock": record.clock, "maint": record.next_maintenance,
                "loops": record.loops, "denials": record.denials, "spend": record.spend,
                "injection": record.injection, "breaker": record.breaker,
                **({} if record.autonomy is None else {"autonomy": record.autonomy})}

    @classmethod
    def from_state(
        cls, state: Mapping[str, Any], policy: ResolvedPolicy, scanner: Scanner | None = None
    ) -> AgentMonitor:
        """``from_record`` for ``to_state`` output of this release or of release 1 (same
        layout); StateVersionError (a ValueError) for any other version."""
        if state.get("v") not in (1, STATE_VERSION):
            raise StateVersionError(state.get("v"),
                                    f"unknown monitor state version {state.get('v')!r}")
        return cls.from_record(monitor_from_plain(dict(state)), policy, scanner)
