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

Variants: other policies judged on the same events beside the enforced one, each with its
own breaker state machine, never published. Shadow elements of the policy
(``detectors/shadow.py``) become variants automatically; a backtest adds its candidate policy
with :meth:`AgentMonitor.add_variant`. A variant whose detector settings equal the enforced
ones only gets a breaker of its own, fed the enforced detections (a breaker rule in shadow
costs nothing per event); otherwise it is a full monitor of its own, or, when added with
``share=True`` (the backtest's candidate), just the detectors whose sections differ, on this
monitor's clock. Their output is taken with :meth:`AgentMonitor.take_variant_output` after
each call.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from tripwire.detectors.breaker import Breaker, Command, Transition
from tripwire.detectors.denial_rate import DenialRateDetector
from tripwire.detectors.detection import Detection
from tripwire.detectors.loops import LoopDetector
from tripwire.detectors.policy import ResolvedPolicy
from tripwire.detectors.prompt_injection_hits import InjectionHitRate, Scanner
from tripwire.detectors.shadow import enforced_policy, shadow_variants
from tripwire.detectors.spend import SpendDetector
from tripwire.detectors.stream_detector import Event
from tripwire.detectors.windows import NO_DEADLINE, EventClock
from tripwire.schemas.modes import Mode

MAINTENANCE_EVERY_MS = 300_000
"""Time between sweeps that drop emptied windows (idle tools) and idle runs. A sweep costs
tens of microseconds, so it runs rarely; five minutes is the denial window, the time an idle
tool window takes to empty anyway. Ended runs do not wait for it: they are dropped whenever
a new run starts."""

STATE_VERSION = 1


class Variant:
    """One policy judged beside the enforced one: its own breaker (and, if its detector
    settings differ, its own monitor), and what it did since its output was last taken."""

    __slots__ = ("name", "policy", "breaker", "monitor", "own", "replaced", "detections",
                 "transitions")

    def __init__(
        self, name: str, agent_id: str, policy: ResolvedPolicy, enforced: ResolvedPolicy,
        scanner: Scanner | None, clock: EventClock | None = None, share: bool = False,
    ) -> None:
        self.name = name
        self.policy = policy
        self.monitor: AgentMonitor | None = None
        # Detectors of its own beside the enforced monitor's shared ones (``share``): only
        # for the sections that differ, on the enforced monitor's clock.
        self.own: dict[str, Any] = {}
        self.replaced: frozenset[str] = frozenset()
        if _same_detectors(policy, enforced):
            self.breaker = Breaker(agent_id, policy.breaker)
        elif share and clock is not None and all(
                getattr(policy, s) == getattr(enforced, s) for s in _SHARED_SECTIONS):
            self.breaker = Breaker(agent_id, policy.breaker)
            for section, attr, build in _DETECTOR_SECTIONS:
                if getattr(policy, section) != getattr(enforced, section):
                    self.own[attr] = build(agent_id, policy, scanner, clock)
            self.replaced = frozenset(d.name for d in self.own.values())
        else:
            self.monitor = AgentMonitor(agent_id, policy, scanner, variants=False)
            self.breaker = self.monitor.breaker
        self.detections: list[Detection] = []
        self.transitions: list[Transition] = []

    def observe_own(self, event: Event, on_time: bool, scanner: Scanner | None
                    ) -> list[Detection]:
        """What its own detectors find in an event the enforced monitor has just fed; each
        detector sees the events ``AgentMonitor.feed`` gives it."""
        out: list[Detection] = []
        own = self.own
        if "loops" in own:
            own["loops"].observe(event, on_time, out)
        kind = event["kind"]
        if "spend" in own and (
            event.get("cost_usd") is not None
            or event.get("input_tokens") is not None
            or event.get("output_tokens") is not None
            or kind == "run_end"
        ):
            own["spend"].observe(event, on_time, out)
        if on_time:
            if "denials" in own and kind == "policy_decision":
                own["denials"].observe(event, True, out)
            if "injection" in own and (event.get("injection_flagged") or (
                    scanner is not None and event.get("content"))):
                own["injection"].observe(event, True, out)
        return out

    def merged(self, shared: list[Detection], own: list[Detection]) -> list[Detection]:
        """The detections this variant's policy makes of one event: the enforced ones of the
        sections it shares, its own for the others, in the order ``feed`` emits them."""
        replaced = self.replaced
        if not own and not any(d.detector in replaced for d in shared):
            return shared
        out: list[Detection] = []
        for name in _DETECTOR_ORDER:
            source = own if name in replaced else shared
            out += [d for d in source if d.detector == name]
        return out

    def expire_own(self, watermark: int, now_ms: int) -> None:
        """``AgentMonitor._maintain`` for its own detectors."""
        for attr, detector in self.own.items():
            detector.expire(watermark if attr in ("denials", "injection") else now_ms)


def _restore_detector(attr: str, state: Any, agent_id: str, policy: ResolvedPolicy,
                      scanner: Scanner | None, clock: EventClock) -> Any:
    if attr == "loops":
        return LoopDetector.from_state(state, agent_id, policy, clock)
    if attr == "spend":
        return SpendDetector.from_state(state, agent_id, policy, clock)
    if attr == "denials":
        return DenialRateDetector.from_state(state, agent_id, policy, clock)
    return InjectionHitRate.from_state(state, agent_id, policy, scanner, clock)


_SHARED_SECTIONS = ("event_time", "runs")
"""Sections every detector reads: a variant that changes them needs a monitor of its own."""
_DETECTOR_ORDER = ("loop", "spend", "denial_rate", "injection")
"""The order ``AgentMonitor.feed`` emits detections in, by detector."""
_DETECTOR_SECTIONS: tuple[tuple[str, str, Any], ...] = (
    ("loops", "loops", lambda a, p, s, c: LoopDetector(a, p, c)),
    ("spend", "spend", lambda a, p, s, c: SpendDetector(a, p, c)),
    ("denial_rate", "denials", lambda a, p, s, c: DenialRateDetector(a, p, c)),
    ("injection", "injection", lambda a, p, s, c: InjectionHitRate(a, p, s, c)),
)


def _same_detectors(a: ResolvedPolicy, b: ResolvedPolicy) -> bool:
    return a is b or all(
        getattr(a, section) == getattr(b, section)
        for section in type(a).model_fields
        if section != "breaker"
    )


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
        "next_maintenance",
        "variants",
    )

    def __init__(
        self,
        agent_id: str,
        policy: ResolvedPolicy,
        scanner: Scanner | None = None,
        *,
        variants: bool = True,
    ) -> None:
        """``variants=False``: ignore the policy's shadow elements (a variant's own monitor)."""
        self.agent_id = agent_id
        self.policy = policy
        self.scanner = scanner
        enforced = enforced_policy(policy)
        clock = self.clock = EventClock(enforced.event_time.grace_ms)
        self.loops = LoopDetector(agent_id, enforced, clock)
        self.denials = DenialRateDetector(agent_id, enforced, clock)
        self.spend = SpendDetector(agent_id, enforced, clock)
        self.injection = InjectionHitRate(agent_id, enforced, scanner, clock)
        self.breaker = Breaker(agent_id, enforced.breaker)
        self.next_maintenance = 0
        self.variants: tuple[Variant, ...] = ()
        if variants:
            for name, variant in shadow_variants(policy).items():
                self.add_variant(name, variant, share=True)

    def add_variant(self, name: str, policy: ResolvedPolicy, share: bool = False) -> Variant:
        """Judge ``policy`` (its enforced part) on this monitor's events from now on.

        ``share``: when it differs in detector sections (not in event_time or runs), run
        only those detectors twice and share the others (shadow bands, a backtest's
        candidate)."""
        variant = Variant(name, self.agent_id, enforced_policy(policy),
                          enforced_policy(self.policy), self.scanner, self.clock, share)
        self.variants = (*self.variants, variant)
        return variant

    def take_variant_output(self) -> list[tuple[str, list[Detection], list[Transition]]]:
        """(name, detections, transitions) of each variant since the last call; the
        detections are those of a variant's own detectors (none for a breaker-only one)."""
        out = []
        for v in self.variants:
            if v.detections or v.transitions:
                out.append((v.name, v.detections, v.transitions))
                v.detections, v.transitions = [], []
        return out

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
        kind = event["kind"]
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
        shared: tuple[Variant, ...] = ()
        if self.variants:
            events = events if isinstance(events, list) else list(events)
            for v in self.variants:
                if v.monitor is not None:
                    found_v, moved_v = v.monitor.feed_many(events)
                    v.detections += found_v
                    v.transitions += moved_v
            shared = tuple(v for v in self.variants if v.monitor is None)
            if any(v.own for v in shared):
                return self._feed_many_partial(events, shared)
        for event in events:
            found = self.feed(event)
            if found:
                detections += found
                transitions += breaker.on_detections(found, clock.watermark)
                for v in shared:
                    v.transitions += v.breaker.on_detections(found, clock.watermark)
            elif breaker.deadline is not None and clock.watermark >= breaker.deadline:
                transitions += breaker.tick(clock.watermark)
        for v in shared:
            # Each breaker step is stamped with its own deadline, so ticking once at the end
            # gives the same transitions as ticking at every event.
            if v.breaker.deadline is not None and clock.watermark >= v.breaker.deadline:
                v.transitions += v.breaker.tick(clock.watermark)
        return detections, transitions

    def _feed_many_partial(self, events: list[Event], variants: tuple[Variant, ...]
                           ) -> tuple[list[Detection], list[Transition]]:
        """``feed_many`` with variants that run some detectors of their own: the same steps,
        plus each variant's detectors and breaker after every event."""
        detections: list[Detection] = []
        transitions: list[Transition] = []
        breaker, clock, scanner = self.breaker, self.clock, self.scanner
        for event in events:
            maintained = self.next_maintenance
            found = self.feed(event)
            watermark = clock.watermark
            # feed's on-time test, after the fact: the watermark now includes this event.
            on_time = event["ts"] >= watermark - clock.grace_ms
            maintained = maintained != self.next_maintenance
            if found:
                detections += found
                transitions += breaker.on_detections(found, watermark)
            elif breaker.deadline is not None and watermark >= breaker.deadline:
                transitions += breaker.tick(watermark)
            for v in variants:
                own = v.observe_own(event, on_time, scanner) if v.own else []
                if maintained:
                    v.expire_own(watermark, watermark)
                mine = v.merged(found, own) if v.own else found
                if own:
                    v.detections += own
                if mine:
                    v.transitions += v.breaker.on_detections(mine, watermark)
        for v in variants:
            if v.breaker.deadline is not None and clock.watermark >= v.breaker.deadline:
                v.transitions += v.breaker.tick(clock.watermark)
        return detections, transitions

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
        if self.breaker.deadline is not None:
            due = min(due, self.breaker.deadline)
        return due

    @property
    def timer_due_ms(self) -> int | None:
        """When this monitor must be advanced even if its agent sends nothing: a run's
        never-ending check or a breaker deadline, its variants' included; None if never.
        (Maintenance sweeps are left out: they happen with the next event anyway.)"""
        due = self.loops.next_deadline
        if self.breaker.deadline is not None and self.breaker.deadline < due:
            due = self.breaker.deadline
        for v in self.variants:
            if v.monitor is not None:
                own = v.monitor.timer_due_ms
                if own is not None and own < due:
                    due = own
                continue
            if v.breaker.deadline is not None and v.breaker.deadline < due:
                due = v.breaker.deadline
            if "loops" in v.own and v.own["loops"].next_deadline < due:
                due = v.own["loops"].next_deadline
        return None if due >= NO_DEADLINE else due

    def advance(self, now_ms: int) -> tuple[list[Detection], list[Transition]]:
        """``tick`` plus the breaker: its recovery deadlines and the tick's detections."""
        maintained = self.next_maintenance
        detections = self.tick(now_ms)
        maintained = maintained != self.next_maintenance
        for v in self.variants:
            if v.monitor is not None:
                found_v, moved_v = v.monitor.advance(now_ms)
                v.detections += found_v
                v.transitions += moved_v
            elif v.own:
                loops = v.own.get("loops")
                own = loops.tick(now_ms) if loops is not None and now_ms >= (
                    loops.next_deadline) else []
                if maintained:
                    v.expire_own(self.clock.watermark, now_ms)
                v.detections += own
                mine = v.merged(detections, own)
                v.transitions += (v.breaker.on_detections(mine, now_ms) if mine
                                  else v.breaker.tick(now_ms))
            elif detections:
                v.transitions += v.breaker.on_detections(detections, now_ms)
            else:
                v.transitions += v.breaker.tick(now_ms)
        if detections:
            return detections, self.breaker.on_detections(detections, now_ms)
        return detections, self.breaker.tick(now_ms)

    def on_command(self, command: Command | Mapping[str, Any], now_ms: int) -> list[Transition]:
        """Apply an operator command (a ``Command`` or a command.avsc record), to the
        variants too: an operator's pin stands for every state machine of the agent."""
        for v in self.variants:
            v.transitions += v.breaker.on_command(command, now_ms)
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

    def to_state(self) -> dict[str, Any]:
        """Compact plain data (lists, ints, floats, str) for the stream's changelog table."""
        state = self._own_state()
        if self.variants:
            state["variants"] = {
                v.name: {"monitor": v.monitor._own_state()} if v.monitor is not None
                else {"breaker": v.breaker.to_state(),
                      **({"own": {a: d.to_state() for a, d in v.own.items()}} if v.own else {})}
                for v in self.variants
            }
        return state

    def _own_state(self) -> dict[str, Any]:
        return {
            "v": STATE_VERSION,
            "agent": self.agent_id,
            "clock": self.clock.to_state(),
            "maint": self.next_maintenance,
            "loops": self.loops.to_state(),
            "denials": self.denials.to_state(),
            "spend": self.spend.to_state(),
            "injection": self.injection.to_state(),
            "breaker": self.breaker.to_state(),
        }

    @classmethod
    def from_state(
        cls, state: Mapping[str, Any], policy: ResolvedPolicy, scanner: Scanner | None = None
    ) -> AgentMonitor:
        """Rebuild a monitor; ``policy`` and ``scanner`` are not part of the state.

        If the policy changed a window's geometry (length, buckets) since the state was
        written, that window starts empty; everything else carries over.
        """
        if state.get("v") != STATE_VERSION:
            raise ValueError(f"unknown monitor state version {state.get('v')!r}")
        agent_id = str(state["agent"])
        monitor = cls.__new__(cls)  # every part is restored below; building fresh ones is waste
        monitor.agent_id, monitor.policy, monitor.scanner = agent_id, policy, scanner
        enforced = enforced_policy(policy)
        clock = monitor.clock = EventClock.from_state(state["clock"], enforced.event_time.grace_ms)
        monitor.next_maintenance = int(state["maint"])
        monitor.loops = LoopDetector.from_state(state["loops"], agent_id, enforced, clock)
        monitor.denials = DenialRateDetector.from_state(state["denials"], agent_id, enforced,
                                                        clock)
        monitor.spend = SpendDetector.from_state(state["spend"], agent_id, enforced, clock)
        monitor.injection = InjectionHitRate.from_state(
            state["injection"], agent_id, enforced, scanner, clock
        )
        monitor.breaker = Breaker.from_state(state["breaker"], agent_id, enforced.breaker)
        monitor.variants = ()
        # Variants come from the policy in force; one whose state was saved resumes, a new one
        # (a shadow element added since) starts fresh, a removed one is dropped.
        saved = state.get("variants") or {}
        for name, variant_policy in shadow_variants(policy).items():
            variant = monitor.add_variant(name, variant_policy, share=True)
            kept = saved.get(name) or {}
            if variant.monitor is not None and "monitor" in kept:
                restored = cls.from_state(kept["monitor"], variant.policy, scanner)
                variant.monitor, variant.breaker = restored, restored.breaker
            elif variant.monitor is None and "breaker" in kept:
                variant.breaker = Breaker.from_state(kept["breaker"], agent_id,
                                                     variant.policy.breaker)
                own_states = kept.get("own") or {}
                for attr in list(variant.own):
                    if attr in own_states:
                        variant.own[attr] = _restore_detector(
                            attr, own_states[attr], agent_id, variant.policy, scanner, clock)
        return monitor
