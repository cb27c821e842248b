"""Everything Tripwire knows about one agent: its detectors and its breaker.

The stream keeps one ``AgentMonitor`` per agent, feeds it that agent's events in partition
order, publishes the detections and transitions, and stores ``to_record()`` in a changelogged
table once per batch; ``from_record`` resumes exactly where ``to_record`` left off.

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

A variant is judged as if its policy were the enforced one, so its breaker gets every input
the enforced breaker gets (``_judge_event``): the agent versions seen (version containment),
rate caps (the enforced counter's findings: caps cannot be marked shadow, so a shadow
variant's caps are the enforced ones; a backtest candidate whose caps differ counts for
itself), and earned autonomy from a tracker of its own, which counts the variant's own trips.
A variant never publishes and never touches the enforced breaker or tracker: its output only
reaches the shadow tables (or the backtest's report).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from tripwire.detectors.autonomy import AutonomyTracker, Step
from tripwire.detectors.breaker import Breaker, Command, Transition
from tripwire.detectors.containment import RateCap
from tripwire.detectors.denial_rate import DenialBands, DenialRateDetector, bands_only
from tripwire.detectors.detection import Detection
from tripwire.detectors.loops import LoopDetector
from tripwire.detectors.monitor_state import (
    STATE_VERSION,
    MonitorState,
    StateVersionError,
    VariantState,
    monitor_from_plain,
)
from tripwire.detectors.policy import ResolvedPolicy
from tripwire.detectors.prompt_injection_hits import InjectionHitRate, Scanner
from tripwire.detectors.rate_caps import RateCounter
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

INBOX = "tripwire-inbox"
"""``attributes.decided_by`` of the decisions the approval inbox publishes: they count for
earned autonomy only. They may arrive after their run ended (a proposal accepted later),
and fed to the loop detector they would reopen that run."""
_TRIPS = frozenset({"downgrade", "escalate", "probation_failed"})
_EARNED_ACTIONS = {"start": "autonomy_start", "promote": "promote", "demote": "demote",
                   "cap": "autonomy_cap"}
_DECISIONS = frozenset({"approval_decision", "policy_decision"})
_NO_CAPS: list[tuple[RateCap, int]] = []
_NOTHING: list[Detection] = []  # shared "found nothing": never appended to
_UNSEEN = object()


def _from_inbox(event: Event) -> bool:
    return event["kind"] == "approval_decision" and (event.get("attributes") or {}).get(
        "decided_by") == INBOX


# --- one breaker and its earned autonomy: the enforced pair and each variant's ----------------


def _note_trips(autonomy: AutonomyTracker, transitions: list[Transition]) -> bool:
    tripped = False
    for t in transitions:
        if t.action in _TRIPS:
            autonomy.note_trip(t.ts)
            tripped = True
    return tripped


def _earned(breaker: Breaker, step: Step | None, now_ms: int, out: list[Transition]) -> None:
    if step is not None:
        out += breaker.on_earned(step.level, _EARNED_ACTIONS[step.action],  # type: ignore[arg-type]
                                 step.reason, now_ms)


def _begin(breaker: Breaker, autonomy: AutonomyTracker, event: Event, version: str | None,
           out: list[Transition]) -> None:
    """Before the event's detectors: earned autonomy's start (first event, new version).
    agent_version only matters with per-version starts (measured: ~1.5 us an event
    otherwise)."""
    if autonomy.level is None or (autonomy.policy.versions and version != autonomy.version):
        _earned(breaker, autonomy.begin(version), event["ts"], out)


def _judge_event(
    breaker: Breaker, autonomy: AutonomyTracker, event: Event, found: list[Detection],
    version: str | None, watermark: int, caps: list[tuple[RateCap, int]],
    out: list[Transition], tick: bool,
) -> None:
    """After the event's detectors: what one breaker (and its earned autonomy) does with the
    event. ``tick``: also act on due deadlines when nothing was found (variants leave that to
    the end of the batch: every breaker step is stamped with its own deadline, so it is the
    same)."""
    if version is not None and (not breaker.versions or breaker.versions[-1][0] != version):
        breaker.saw_version(version, watermark)
    for cap, count in caps:
        out += breaker.cap(cap.limit_key, cap.target, f"rate_cap.{cap.name}",
                           f"{count} calls in 60 s, cap {cap.per_minute}", watermark)
    judge = autonomy.policy.earn and event["kind"] in _DECISIONS
    if found:
        moved = breaker.on_detections(found, watermark, version)
        judge = _note_trips(autonomy, moved) or judge
        out += moved
    elif tick and breaker.wake_at is not None and watermark >= breaker.wake_at:
        out += breaker.tick(watermark)
    if judge:
        now = max(watermark, event["ts"])
        _earned(breaker, autonomy.judge(now), now, out)


def _advance_breaker(breaker: Breaker, autonomy: AutonomyTracker, found: list[Detection],
                     now_ms: int) -> list[Transition]:
    """What one breaker does at a time-driven ``advance``."""
    if found:
        transitions = breaker.on_detections(found, now_ms)
        if _note_trips(autonomy, transitions):
            _earned(breaker, autonomy.judge(now_ms), now_ms, transitions)
        return transitions
    return breaker.tick(now_ms)


class Variant:
    """One policy judged beside the enforced one: its own breaker and earned-autonomy
    tracker (and, if its detector settings differ, its own monitor or detectors), and what it
    did since its output was last taken."""

    __slots__ = ("name", "policy", "breaker", "autonomy", "rates", "monitor", "own",
                 "replaced", "detections", "transitions")

    def __init__(
        self, name: str, agent_id: str, policy: ResolvedPolicy, enforced: ResolvedPolicy,
        scanner: Scanner | None, clock: EventClock | None = None, share: bool = False,
        denials: DenialRateDetector | None = None,
    ) -> None:
        """``denials``: the enforced monitor's denial-rate detector, whose counts a variant
        that changes only the denial-rate bands judges with its own (``DenialBands``)."""
        self.name = name
        self.policy = policy
        self.monitor: AgentMonitor | None = None
        # Detectors of its own beside the enforced monitor's shared ones (``share``): only
        # for the sections that differ, on the enforced monitor's clock.
        self.own: dict[str, Any] = {}
        self.replaced: frozenset[str] = frozenset()
        # None: the enforced counter's findings apply (same caps).
        self.rates: RateCounter | None = None
        if _same_detectors(policy, enforced):
            self.breaker = Breaker(agent_id, policy.breaker)
        elif share and clock is not None and all(
                getattr(policy, s) == getattr(enforced, s) for s in _SHARED_SECTIONS):
            self.breaker = Breaker(agent_id, policy.breaker)
            for section, attr, build in _DETECTOR_SECTIONS:
                if getattr(policy, section) == getattr(enforced, section):
                    continue
                if attr == "denials" and denials is not None and bands_only(policy, enforced):
                    self.own[attr] = DenialBands(denials, policy)
                else:
                    self.own[attr] = build(agent_id, policy, scanner, clock)
            self.replaced = frozenset(d.name for d in self.own.values())
        else:
            self.monitor = AgentMonitor(agent_id, policy, scanner, variants=False)
            self.breaker = self.monitor.breaker
        if self.monitor is not None:
            self.autonomy = self.monitor.autonomy
        else:
            self.autonomy = AutonomyTracker(policy.autonomy)
            caps = policy.breaker.containment.rate_caps
            if caps != enforced.breaker.containment.rate_caps:
                self.rates = RateCounter(caps)
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

    def to_record(self) -> VariantState:
        if self.monitor is not None:
            return VariantState(monitor=self.monitor.to_record())
        return VariantState(
            breaker=self.breaker.to_state(),
            own={a: d.to_state() for a, d in self.own.items()} or None,
            autonomy=None if self.autonomy.at_rest else self.autonomy.to_state(),
        )


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
_NOT_DETECTORS = frozenset({"breaker", "autonomy", "otlp"})
"""Sections no detector reads: every variant has its own breaker and autonomy tracker, and
``otlp`` only shapes events before they reach a monitor."""


def _same_detectors(a: ResolvedPolicy, b: ResolvedPolicy) -> bool:
    return a is b or all(
        getattr(a, section) == getattr(b, section)
        for section in type(a).model_fields
        if section not in _NOT_DETECTORS
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
        "autonomy",
        "next_maintenance",
        "rates",
        "variants",
        "_shared",
        "_every_event",
        "_own_kinds",
        "_variants_earn",
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
        self.autonomy = AutonomyTracker(enforced.autonomy)
        self.next_maintenance = 0
        self.rates = RateCounter(enforced.breaker.containment.rate_caps)
        self._set_variants(())
        if variants:
            for name, variant in shadow_variants(policy).items():
                self.add_variant(name, variant, share=True)

    def add_variant(self, name: str, policy: ResolvedPolicy, share: bool = False) -> Variant:
        """Judge ``policy`` (its enforced part) on this monitor's events from now on.

        ``share``: when it differs in detector sections (not in event_time or runs), run
        only those detectors twice and share the others (shadow bands, a backtest's
        candidate)."""
        variant = Variant(name, self.agent_id, enforced_policy(policy),
                          enforced_policy(self.policy), self.scanner, self.clock, share,
                          self.denials)
        self._set_variants((*self.variants, variant))
        return variant

    def _set_variants(self, variants: tuple[Variant, ...]) -> None:
        self.variants = variants
        # Variants fed from this monitor's detectors (the others have a monitor of their own).
        self._shared = tuple(v for v in variants if v.monitor is None)
        # Whether they need every event (own detectors or rate counter), or only those that
        # can move a breaker that sees no detections of its own.
        self._every_event = any(v.own or v.rates is not None for v in self._shared)
        # The event kinds those own detectors and counters can see at all, or None for any
        # kind (loops see every event; spend and injection look at fields, not kinds). A
        # backtest candidate that changes only the denial-rate bands then steps its variant
        # on policy decisions only (plus the events that move any variant, and sweeps).
        kinds: set[str] | None = set()
        for v in self._shared:
            if kinds is not None and ("loops" in v.own or "spend" in v.own
                                      or "injection" in v.own):
                kinds = None
            elif kinds is not None:
                if "denials" in v.own:
                    kinds.add("policy_decision")
                if v.rates is not None:
                    kinds.add("tool_call")
        self._own_kinds = frozenset(kinds) if kinds is not None else None
        # Whether decisions move them (earned autonomy counts them); otherwise a decision is
        # like any other event to a variant that sees no detections.
        self._variants_earn = any(v.autonomy.policy.earn for v in self._shared)

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
        """Detections caused by one event; the breaker is not involved (see ``feed_many``,
        which inlines this for speed: change both)."""
        out: list[Detection] = []
        kind = event["kind"]
        if kind == "approval_decision" or kind == "policy_decision":
            self.autonomy.observe(event)
            if kind == "approval_decision" and (event.get("attributes") or {}).get(
                    "decided_by") == INBOX:
                return out
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
        """Feed events in order and let the breaker act; returns (detections, transitions).
        Variants see the same events (their output: ``take_variant_output``)."""
        detections: list[Detection] = []
        transitions: list[Transition] = []
        shared = self._shared
        if self.variants:
            events = events if isinstance(events, list) else list(events)
            for v in self.variants:
                if v.monitor is not None:
                    found_v, moved_v = v.monitor.feed_many(events)
                    v.detections += found_v
                    v.transitions += moved_v
        breaker, autonomy, clock, rates = self.breaker, self.autonomy, self.clock, self.rates
        every_event, variants_earn = self._every_event, self._variants_earn
        own_kinds = self._own_kinds
        last_version: object = _UNSEEN
        # ``feed``, ``_begin`` and ``_judge_event`` inlined for the events that find nothing
        # (nearly all): the same steps in the same order, without three calls and a list per
        # event (measured: ~10 % of a replay's CPU on the bench dataset). A change to
        # ``feed`` must be made here too: tests/test_feed_many_reference.py holds the two
        # together (a per-event reference built from ``feed`` and ``_judge_event``).
        earn = autonomy.policy.earn
        per_version = autonomy.policy.versions
        loops, spend, denials, injection = self.loops, self.spend, self.denials, self.injection
        scanner = self.scanner
        grace = clock.grace_ms
        count_caps = bool(rates.caps)
        # Whether an event that finds nothing can skip straight to the deadline test: no
        # counters to feed (rate caps; a variant's own detectors or counters, unless they see
        # only some kinds: then the events of other kinds that no sweep follows), and what
        # earns autonomy (decisions) taken per event below.
        quiet = not count_caps and (not every_event or own_kinds is not None)
        earning = earn or variants_earn
        out: list[Detection] = []
        # What the breaker last saw, read again after each call that may change it.
        wake = breaker.wake_at
        seen_version = breaker.versions[-1][0] if breaker.versions else None
        for event in events:
            kind = event["kind"]
            version = event.get("agent_version")
            ts: int = event["ts"]
            if autonomy.level is None or (per_version and version != autonomy.version):
                _earned(breaker, autonomy.begin(version), ts, transitions)
                wake = breaker.wake_at
            maintenance = self.next_maintenance
            decision = kind in _DECISIONS
            if decision and earn:
                autonomy.observe(event)
            if not (kind == "approval_decision" and (event.get("attributes") or {}).get(
                    "decided_by") == INBOX):
                # EventClock.admit, inlined.
                watermark = clock.watermark
                if ts > watermark:
                    clock.watermark = watermark = ts
                    on_time = True
                elif ts >= watermark - grace:
                    on_time = True
                else:
                    clock.late_events += 1
                    on_time = False
                loops.observe(event, on_time, out)
                # Each detector only sees the kinds it counts: most events concern one of them.
                # (``feed``'s ``get`` tests as ``in`` tests first: the same answers, and a key
                # the event lacks, as most of a stored step's optional keys, costs no call.)
                if (
                    ("cost_usd" in event and event["cost_usd"] is not None)
                    or ("input_tokens" in event and event["input_tokens"] is not None)
                    or ("output_tokens" in event and event["output_tokens"] is not None)
                    or kind == "run_end"
                ):
                    spend.observe(event, on_time, out)
                if on_time:
                    if kind == "policy_decision":
                        denials.observe(event, True, out)
                    if ("injection_flagged" in event and event["injection_flagged"]) or (
                        scanner is not None and "content" in event and event["content"]
                    ):
                        injection.observe(event, True, out)
                if watermark >= maintenance:
                    self._maintain(watermark, watermark)
            if out:
                found = out
                out = []
                detections += found
            else:
                found = _NOTHING
                if quiet and not (decision and earning) and version == last_version and (
                        version is None or version == seen_version) and (
                        not every_event or (kind not in own_kinds  # type: ignore[operator]
                                            and maintenance == self.next_maintenance)):
                    # Nothing found, no counters, nothing earned and the same version as
                    # before: no breaker (the enforced one or a variant's) can move except on
                    # a due deadline. The tests below, decided at once (most events: 643 -> 620
                    # bytecodes an event replayed on the bench dataset). A backtest candidate
                    # with other denial-rate bands skips here too on all but decisions.
                    if wake is not None and clock.watermark >= wake:
                        transitions += breaker.tick(clock.watermark)
                        wake = breaker.wake_at
                    continue
            caps = rates.observe(event) if count_caps else _NO_CAPS
            watermark = clock.watermark
            if found or caps or (earn and decision) or (
                    version is not None and version != seen_version):
                _judge_event(breaker, autonomy, event, found, version, watermark, caps,
                             transitions, True)
                wake = breaker.wake_at
                seen_version = breaker.versions[-1][0] if breaker.versions else None
            elif wake is not None and watermark >= wake:
                transitions += breaker.tick(watermark)
                wake = breaker.wake_at
            # A variant without detectors or counters of its own only moves on detections,
            # caps, decisions (earned autonomy) and version changes: other events skip it.
            # One with its own only needs, besides those, the kinds they see and the sweeps.
            if shared and ((every_event and (own_kinds is None or kind in own_kinds
                                             or maintenance != self.next_maintenance))
                           or found or caps or version != last_version
                           or (decision and variants_earn)):
                self._step_variants(event, found, version, caps,
                                    maintenance != self.next_maintenance)
            last_version = version
        if (not autonomy.policy.earn and autonomy.level is not None
                and autonomy.level.rank > autonomy.ceiling.rank):
            # A lowered ceiling (policy change) applies even where nothing is earned.
            _earned(breaker, autonomy.judge(clock.watermark), clock.watermark, transitions)
        for v in shared:
            # Each breaker step is stamped with its own deadline, so ticking once at the end
            # gives the same transitions as ticking at every event.
            wake = v.breaker.wake_at
            if wake is not None and clock.watermark >= wake:
                v.transitions += v.breaker.tick(clock.watermark)
        return detections, transitions

    def _step_variants(self, event: Event, found: list[Detection], version: str | None,
                       caps: list[tuple[RateCap, int]], maintained: bool) -> None:
        """One event for the variants fed from this monitor's detectors: each one's own
        detectors, earned autonomy and breaker, after the enforced ones (``feed_many``)."""
        clock = self.clock
        watermark = clock.watermark
        decision = event["kind"] in _DECISIONS
        inbox = decision and _from_inbox(event)
        # feed's on-time test, after the fact: the watermark now includes this event.
        on_time = event["ts"] >= watermark - clock.grace_ms
        for v in self._shared:
            out = v.transitions
            autonomy = v.autonomy
            _begin(v.breaker, autonomy, event, version, out)
            earn = autonomy.policy.earn
            if decision and earn:  # (observe keeps nothing for a tracker that does not earn)
                autonomy.observe(event)
            mine = found
            if v.own:
                own = [] if inbox else v.observe_own(event, on_time, self.scanner)
                if maintained:
                    v.expire_own(watermark, watermark)
                if own:
                    v.detections += own
                if own or found:
                    mine = v.merged(found, own)
            v_caps = caps if v.rates is None else (
                v.rates.observe(event) if v.rates.caps else _NO_CAPS)
            if not mine and not v_caps and not (earn and decision) and (
                    version is None or (v.breaker.versions
                                        and v.breaker.versions[-1][0] == version)):
                continue  # _judge_event would do nothing: no version, caps, detections, judging
            _judge_event(v.breaker, autonomy, event, mine, version, watermark, v_caps, out,
                         False)

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

    @property
    def timer_due_ms(self) -> int | None:
        """When this monitor must be advanced even if its agent sends nothing: a run's
        never-ending check or a breaker deadline (tool restrictions lifting included), its
        variants' included; None if never. (Maintenance sweeps are left out: they happen with
        the next event anyway.)"""
        due = self.loops.next_deadline
        wake = self.breaker.wake_at
        if wake is not None and wake < due:
            due = wake
        for v in self.variants:
            if v.monitor is not None:
                own = v.monitor.timer_due_ms
                if own is not None and own < due:
                    due = own
                continue
            wake = v.breaker.wake_at
            if wake is not None and wake < due:
                due = wake
            if "loops" in v.own and v.own["loops"].next_deadline < due:
                due = v.own["loops"].next_deadline
        return None if due >= NO_DEADLINE else due

    def advance(self, now_ms: int) -> tuple[list[Detection], list[Transition]]:
        """``tick`` plus the breaker: its recovery deadlines and the tick's detections; the
        variants likewise."""
        maintained = self.next_maintenance
        detections = self.tick(now_ms)
        maintained = maintained != self.next_maintenance
        for v in self.variants:
            if v.monitor is not None:
                found_v, moved_v = v.monitor.advance(now_ms)
                v.detections += found_v
                v.transitions += moved_v
                continue
            mine = detections
            if v.own:
                loops = v.own.get("loops")
                own = loops.tick(now_ms) if loops is not None and now_ms >= (
                    loops.next_deadline) else []
                if maintained:
                    v.expire_own(self.clock.watermark, now_ms)
                v.detections += own
                mine = v.merged(detections, own)
            v.transitions += _advance_breaker(v.breaker, v.autonomy, mine, now_ms)
        return detections, _advance_breaker(self.breaker, self.autonomy, detections, now_ms)

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
            variants={v.name: v.to_record() for v in self.variants} or None,
        )

    @classmethod
    def from_record(
        cls, record: MonitorState, policy: ResolvedPolicy, scanner: Scanner | None = None
    ) -> AgentMonitor:
        """Rebuild a monitor; ``policy`` and ``scanner`` are not part of the state.

        If the policy changed a window's geometry (length, buckets) since the state was
        written, that window starts empty; everything else carries over. Variants come from
        the policy in force: one whose state was saved resumes, a new one (a shadow element
        added since) starts fresh, a removed one is dropped.
        """
        agent_id = record.agent
        monitor = cls.__new__(cls)  # every part is restored below; building fresh ones is waste
        monitor.agent_id, monitor.policy, monitor.scanner = agent_id, policy, scanner
        enforced = enforced_policy(policy)
        clock = monitor.clock = EventClock.from_state(record.clock, enforced.event_time.grace_ms)
        monitor.next_maintenance = int(record.next_maintenance)
        monitor.loops = LoopDetector.from_state(record.loops, agent_id, enforced, clock)
        monitor.denials = DenialRateDetector.from_state(record.denials, agent_id, enforced,
                                                        clock)
        monitor.spend = SpendDetector.from_state(record.spend, agent_id, enforced, clock)
        monitor.injection = InjectionHitRate.from_state(
            record.injection, agent_id, enforced, scanner, clock
        )
        monitor.breaker = Breaker.from_state(record.breaker, agent_id, enforced.breaker)
        # Not in the state: a restarted worker forgets the last minute's call counts.
        monitor.rates = RateCounter(enforced.breaker.containment.rate_caps)
        earned = record.autonomy
        monitor.autonomy = (AutonomyTracker.from_state(earned, enforced.autonomy)
                            if earned is not None else AutonomyTracker(enforced.autonomy))
        monitor._set_variants(())
        saved = record.variants or {}
        for name, variant_policy in shadow_variants(policy).items():
            variant = monitor.add_variant(name, variant_policy, share=True)
            kept = saved.get(name)
            if kept is not None:
                variant_from_record(variant, kept, scanner, clock)
        return monitor

    def to_state(self) -> dict[str, Any]:
        """Compact plain data (lists, ints, floats, str), e.g. for JSON; the stream stores
        ``to_record`` instead."""
        return {"v": STATE_VERSION, **_plain(self.to_record())}

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


def variant_from_record(variant: Variant, kept: VariantState, scanner: Scanner | None,
                        clock: EventClock) -> None:
    """Resume a variant just built by ``add_variant`` from its saved state, where the saved
    state is of the same kind (a policy change can turn a breaker-only variant into one with
    a monitor of its own; that one starts fresh)."""
    agent_id = variant.breaker.agent_id
    if variant.monitor is not None:
        if kept.monitor is not None:
            restored = AgentMonitor.from_record(kept.monitor, variant.policy, scanner)
            variant.monitor, variant.breaker = restored, restored.breaker
            variant.autonomy = restored.autonomy
        return
    if kept.breaker is None:
        return
    variant.breaker = Breaker.from_state(kept.breaker, agent_id, variant.policy.breaker)
    if kept.autonomy is not None:
        variant.autonomy = AutonomyTracker.from_state(kept.autonomy, variant.policy.autonomy)
    own_states = kept.own or {}
    for attr in list(variant.own):
        if attr not in own_states:
            continue
        own = variant.own[attr]
        if isinstance(own, DenialBands):
            own.restore(own_states[attr])
        else:
            variant.own[attr] = _restore_detector(attr, own_states[attr], agent_id,
                                                  variant.policy, scanner, clock)


def _plain(record: MonitorState) -> dict[str, Any]:
    out: dict[str, Any] = {
        "agent": record.agent, "clock": record.clock, "maint": record.next_maintenance,
        "loops": record.loops, "denials": record.denials, "spend": record.spend,
        "injection": record.injection, "breaker": record.breaker}
    if record.autonomy is not None:
        out["autonomy"] = record.autonomy
    if record.variants:
        out["variants"] = {name: _plain_variant(v) for name, v in record.variants.items()}
    return out


def _plain_variant(v: VariantState) -> dict[str, Any]:
    if v.monitor is not None:
        return {"monitor": {"v": STATE_VERSION, **_plain(v.monitor)}}
    out: dict[str, Any] = {"breaker": v.breaker}
    if v.own:
        out["own"] = v.own
    if v.autonomy is not None:
        out["autonomy"] = v.autonomy
    return out
