"""Spend: per-run budgets, per-agent rolling hour and day budgets, and spend spikes.

* Run: tokens (input + output) and USD summed per run against ``spend.run_budget_*``;
  run-scoped, so the breaker stops the run. Late events still count: a run's bill does not
  depend on when its events arrive.
* Hour / day: per-agent sliding windows against ``spend.hour_budget_*`` / ``day_budget_*``;
  a window exists only for a budget that is set.
* Spike: the last ``spend.spike_window_ms`` of spend against the agent's own baseline, an EWMA
  of earlier periods of the same length (``EwmaBaseline``), floored at
  ``spend.spike_min_baseline`` so a new or near-idle agent does not spike on its first calls.

Every check latches (``detectors/severity.py``): run totals only grow, so a run fires each
band once; window totals fall as spend ages out, which re-arms them.

Evidence is the agent's last ``evidence_max`` spend events, each tagged with its run; a run
detection cites those of its own run.

Duplicated events (at-least-once delivery) are counted twice; for budgets that errs on the
side of stopping early.
"""

from __future__ import annotations

from array import array

from tripwire.detectors.detection import Detection
from tripwire.detectors.evidence import EvidenceRing
from tripwire.detectors.policy import DAY_MS, HOUR_MS, ResolvedPolicy
from tripwire.detectors.runs import NOT_ENDED, RunEntry, RunTable
from tripwire.detectors.severity import SeverityBands, compile_bands
from tripwire.detectors.stream_detector import Event, StreamDetector
from tripwire.detectors.windows import BucketRing, CoalescedWindows, EventClock, EwmaBaseline

USD, TOKENS = "usd", "tokens"
QUANTITY = {USD: 0, TOKENS: 1}  # index of each unit in CoalescedWindows


class RunSpend(RunEntry):
    __slots__ = ("run_id", "tag", "usd", "tokens", "usd_level", "tokens_level")

    def __init__(self, run_id: str, tag: int, ts: int) -> None:
        # RunEntry.__init__, inlined (as in RunLoops: once per run start).
        self.first_ts = self.last_ts = ts
        self.ended_ts = NOT_ENDED
        self.run_id = run_id
        self.tag = tag  # marks this run's ids in the agent's evidence ring
        self.usd = 0.0
        self.tokens = 0
        self.usd_level = 0
        self.tokens_level = 0

    def to_state(self) -> list:
        return [
            self.first_ts,
            self.last_ts,
            self.ended_ts,
            self.usd,
            self.tokens,
            self.usd_level,
            self.tokens_level,
            self.tag,
        ]

    @classmethod
    def from_state(cls, run_id: str, state: list) -> RunSpend:
        run = cls(run_id, int(state[7]), int(state[0]))
        run.last_ts, run.ended_ts = int(state[1]), int(state[2])
        run.usd, run.tokens = float(state[3]), int(state[4])
        run.usd_level, run.tokens_level = int(state[5]), int(state[6])
        return run


class WindowBudget:
    """One budget on one rolling window (hour or day, USD or tokens), compiled from policy."""

    __slots__ = (
        "metric",
        "unit",
        "quantity",
        "label",
        "window_ms",
        "buckets",
        "budget",
        "bands",
        "first",
    )

    def __init__(
        self,
        label: str,
        unit: str,
        window_ms: int,
        buckets: int,
        budget: float,
        bands: SeverityBands,
    ) -> None:
        self.metric = f"{label}_cost_usd" if unit == USD else f"{label}_tokens"
        self.unit = unit
        self.quantity = QUANTITY[unit]
        self.label = label
        self.window_ms = window_ms
        self.buckets = buckets
        self.budget = budget
        self.bands = bands
        self.first = bands.thresholds[0]


INFINITY = float("inf")


class SpendSettings:
    """The spend policy compiled once and shared by every agent that resolves to it."""

    __slots__ = (
        "policy",
        "evidence_max",
        "run_usd_bands",
        "run_tokens_bands",
        "run_usd_next",
        "run_tokens_next",
        "checks",
        "spike_bands",
        "spike_quantity",
        "spike_below",
        "ttl_after_end_ms",
        "idle_expiry_ms",
        "max_open_runs",
        "grace_ms",
    )

    def __init__(self, policy: ResolvedPolicy) -> None:
        spend, rearm = policy.spend, policy.event_time.rearm_ratio
        self.policy = spend
        self.evidence_max = policy.event_time.evidence_max
        self.run_usd_bands = (
            compile_bands(spend.run_bands, spend.run_budget_usd, rearm)
            if spend.run_budget_usd is not None
            else None
        )
        self.run_tokens_bands = (
            compile_bands(spend.run_bands, spend.run_budget_tokens, rearm)
            if spend.run_budget_tokens is not None
            else None
        )
        # Threshold that fires next, by latch level: the per-event test is one comparison.
        self.run_usd_next = _next_thresholds(self.run_usd_bands)
        self.run_tokens_next = _next_thresholds(self.run_tokens_bands)
        checks = []
        for label, window_ms, buckets, usd, tokens in (
            ("hour", HOUR_MS, spend.hour_buckets, spend.hour_budget_usd, spend.hour_budget_tokens),
            ("day", DAY_MS, spend.day_buckets, spend.day_budget_usd, spend.day_budget_tokens),
        ):
            for unit, budget in ((USD, usd), (TOKENS, tokens)):
                if budget is not None:
                    bands = compile_bands(spend.budget_bands, budget, rearm)
                    checks.append(WindowBudget(label, unit, window_ms, buckets, budget, bands))
        self.checks = tuple(checks)
        self.spike_bands = compile_bands(spend.spike_bands, 1.0, rearm)
        self.spike_quantity = QUANTITY[spend.spike_metric]
        # Spend in the spike window under which no usual amount (floored at
        # spike_min_baseline) makes a ratio that reaches the first band; the 1e-9 margin
        # dwarfs the division's rounding, so the skipped ratio would have been below it.
        self.spike_below = (self.spike_bands.thresholds[0] * spend.spike_min_baseline
                            * (1 - 1e-9))
        self.ttl_after_end_ms = policy.runs.ttl_after_end_ms
        self.idle_expiry_ms = policy.runs.idle_expiry_ms
        self.max_open_runs = policy.runs.max_open_runs
        self.grace_ms = policy.event_time.grace_ms

    def new_windows(self) -> CoalescedWindows:
        """One ring per budget that is set, then the spike ring last."""
        spend = self.policy
        return CoalescedWindows(
            tuple(BucketRing(c.window_ms, c.buckets, single=True) for c in self.checks)
            + (BucketRing(spend.spike_window_ms, spend.spike_buckets, single=True),),
            tuple(c.quantity for c in self.checks) + (self.spike_quantity,),
            EwmaBaseline(spend.spike_window_ms, spend.spike_alpha, self.grace_ms),
            self.spike_quantity,
        )


def _next_thresholds(bands: SeverityBands | None) -> tuple[float, ...]:
    if bands is None:
        return (INFINITY,)
    return (*bands.thresholds, INFINITY)


class SpendDetector(StreamDetector):
    name = "spend"

    __slots__ = (
        "settings",
        "runs",
        "entries",
        "windows",
        "levels",
        "spike_level",
        "ids",
        "id_tags",
        "next_tag",
    )

    def __init__(
        self, agent_id: str, policy: ResolvedPolicy, clock: EventClock | None = None
    ) -> None:
        super().__init__(agent_id, policy, clock)
        settings = self.settings = policy.compiled("spend", SpendSettings)
        self.runs: RunTable[RunSpend] = RunTable(settings.max_open_runs)
        self.entries = self.runs.entries  # the same dict, one attribute lookup closer
        self.windows = settings.new_windows()
        self.levels = [0] * len(settings.checks)  # latch of each budget check
        self.spike_level = 0
        self.ids: EvidenceRing | None = None
        # The run tag of each id in ``ids``, same positions: a run's detection cites its own.
        self.id_tags: array[int] = array("I")
        self.next_tag = 0

    def observe(self, event: Event, on_time: bool, out: list[Detection]) -> None:
        usd = event.get("cost_usd")
        tokens_in = event.get("input_tokens")
        tokens_out = event.get("output_tokens")
        ts: int = event["ts"]
        run_id: str = event["run_id"]
        if usd is None and tokens_in is None and tokens_out is None:
            if event["kind"] == "run_end":
                run = self.entries.get(run_id)
                if run is not None and run.ended_ts == NOT_ENDED:
                    run.ended_ts = ts
            return
        # A negative cost (a refund) must not lower a budget already crossed.
        usd = usd if usd is not None and usd > 0 else 0.0
        tokens = (tokens_in or 0) + (tokens_out or 0)
        if tokens < 0:
            tokens = 0
        if not usd and not tokens:
            return
        settings = self.settings
        run = self.entries.get(run_id)
        if run is None:
            if not on_time:
                return  # a straggler of a forgotten run; the clock counted it late
            run = RunSpend(run_id, self.next_tag, ts)
            self.next_tag = (self.next_tag + 1) & 0xFFFFFFFF
            self.runs.insert(run_id, run, self.clock.watermark, settings.ttl_after_end_ms)
        elif ts > run.last_ts:
            run.last_ts = ts
        elif ts < run.first_ts:
            run.first_ts = ts
        run.usd += usd
        run.tokens += tokens
        if event["kind"] == "run_end" and run.ended_ts == NOT_ENDED:
            run.ended_ts = ts
        if on_time:
            ids = self.ids
            if ids is None:
                ids = self.ids = EvidenceRing(settings.evidence_max)
            position = ids.count
            ids.add(event["event_id"])
            if position < settings.evidence_max:
                self.id_tags.append(run.tag)
            else:
                self.id_tags[position % settings.evidence_max] = run.tag
        if (
            run.usd >= settings.run_usd_next[run.usd_level]
            or run.tokens >= settings.run_tokens_next[run.tokens_level]
        ):
            self._run_checks(run, ts, out)
        if not on_time:
            return
        now = self.clock.watermark
        windows = self.windows
        windows.add(ts, now, usd, tokens)
        rings, pending, levels = windows.rings, windows.pending, self.levels
        i = 0
        for check in settings.checks:
            value = rings[i].total0 + pending[check.quantity]
            if levels[i] or value >= check.first:
                self._window_check(i, check, value, now, out)
            i += 1
        current = rings[-1].total0 + pending[settings.spike_quantity]
        # The usual amount is at least the floor, so below ``spike_below`` the ratio cannot
        # reach the first band: most spend events skip it (with the run table's dict read
        # directly: spend 1.11 -> 1.04 us an event on the bench dataset's first 20 agents).
        if self.spike_level or current >= settings.spike_below:
            usual = windows.baseline.value
            floor = settings.policy.spike_min_baseline
            if usual < floor:
                usual = floor
            ratio = current / usual
            if self.spike_level or ratio >= settings.spike_bands.thresholds[0]:
                self._spike(ratio, current, usual, now, out)

    def _run_checks(self, run: RunSpend, ts: int, out: list[Detection]) -> None:
        settings = self.settings
        bands = settings.run_usd_bands
        if bands is not None:
            level = run.usd_level
            if level < bands.count and run.usd >= bands.thresholds[level]:
                run.usd_level = bands.rise(run.usd, level)
                out.append(self._run_detection(run, "run_cost_usd", run.usd, bands, ts))
        bands = settings.run_tokens_bands
        if bands is not None:
            level = run.tokens_level
            if level < bands.count and run.tokens >= bands.thresholds[level]:
                run.tokens_level = bands.rise(run.tokens, level)
                out.append(self._run_detection(run, "run_tokens", run.tokens, bands, ts))

    def _window_check(
        self, i: int, check: WindowBudget, value: float, now: int, out: list[Detection]
    ) -> None:
        bands = check.bands
        level = self.levels[i]
        new_level = bands.rise(value, level)
        if new_level > level:
            self.levels[i] = new_level
            threshold = bands.threshold(new_level)
            money = check.unit == USD
            unit = "$" if money else ""
            out.append(
                Detection.build(
                    detector=self.name,
                    agent_id=self.agent_id,
                    metric=check.metric,
                    value=value,
                    threshold=threshold,
                    window_ms=check.window_ms,
                    severity=bands.severity(new_level),
                    evidence_event_ids=self._evidence(None),
                    ts=now,
                    message=f"{unit}{value:,.2f} {'spent' if money else 'tokens used'} in the "
                    f"last {check.label}: {threshold / check.budget:.0%} of the "
                    f"{unit}{check.budget:,.2f} budget reached",
                    scope="agent",
                )
            )
        elif level:
            self.levels[i] = bands.fall(value, level)

    def _spike(
        self, ratio: float, current: float, usual: float, now: int, out: list[Detection]
    ) -> None:
        spend = self.settings.policy
        bands = self.settings.spike_bands
        level = self.spike_level
        new_level = bands.rise(ratio, level)
        if new_level > level:
            self.spike_level = new_level
            unit = "$" if spend.spike_metric == USD else ""
            baseline = self.windows.baseline
            out.append(
                Detection.build(
                    detector=self.name,
                    agent_id=self.agent_id,
                    metric=f"spend_spike_{spend.spike_metric}",
                    value=ratio,
                    threshold=bands.threshold(new_level),
                    window_ms=spend.spike_window_ms,
                    severity=bands.severity(new_level),
                    evidence_event_ids=self._evidence(None),
                    ts=now,
                    message=f"{unit}{current:,.2f} in the last {spend.spike_window_ms // 1000} s "
                    f"is {ratio:.1f}x the usual {unit}{usual:,.2f} per period "
                    f"({baseline.periods} periods)",
                    scope="agent",
                )
            )
        elif level:
            self.spike_level = bands.fall(ratio, level)

    def _evidence(self, run: RunSpend | None) -> tuple[str, ...]:
        ids = self.ids
        if ids is None:
            return ()
        size = self.settings.evidence_max
        first = max(ids.count - size, 0)
        if run is None:
            return ids.at_positions(range(first, ids.count))
        tags = self.id_tags
        return ids.at_positions([p for p in range(first, ids.count) if tags[p % size] == run.tag])

    def _run_detection(
        self, run: RunSpend, metric: str, value: float, bands: SeverityBands, ts: int
    ) -> Detection:
        level = run.usd_level if metric == "run_cost_usd" else run.tokens_level
        threshold = bands.threshold(level)
        money = metric == "run_cost_usd"
        amount = f"${value:,.2f}" if money else f"{value:,.0f} tokens"
        budget = f"${threshold:,.2f}" if money else f"{threshold:,.0f} tokens"
        return Detection.build(
            detector=self.name,
            agent_id=self.agent_id,
            metric=metric,
            value=value,
            threshold=threshold,
            window_ms=None,
            severity=bands.severity(level),
            evidence_event_ids=self._evidence(run),
            ts=ts,
            message=f"run {run.run_id} has spent {amount}, over {budget}",
            scope="run",
            run_id=run.run_id,
        )

    def expire(self, now_ms: int) -> None:
        settings = self.settings
        watermark = self.clock.watermark
        self.runs.expire(watermark, now_ms, settings.ttl_after_end_ms, settings.idle_expiry_ms)
        if self.windows.advance(watermark):
            self.ids, self.id_tags = None, array("I")  # nothing left to cite

    def tick(self, now_ms: int) -> list[Detection]:
        self.expire(now_ms)
        return []

    def to_state(self) -> list:
        runs: list = []
        for run_id, run in self.runs.entries.items():
            runs += [run_id, run.to_state()]
        # Evidence run tags, run-length encoded: consecutive ids mostly share one.
        tags: list = []
        for tag in self.id_tags:
            if tags and tags[-2] == tag:
                tags[-1] += 1
            else:
                tags += [tag, 1]
        return [
            self.next_tag,
            self.runs.evicted,
            runs,
            self.windows.to_state(),
            list(self.levels),
            self.spike_level,
            self.ids.to_state() if self.ids is not None else [],
            tags,
        ]

    @classmethod
    def from_state(
        cls, state: list, agent_id: str, policy: ResolvedPolicy, clock: EventClock | None = None
    ) -> SpendDetector:
        detector = cls(agent_id, policy, clock)
        detector.next_tag = int(state[0])
        state = state[1:]
        detector.runs.evicted = int(state[0])
        runs = state[1]
        for i in range(0, len(runs), 2):
            detector.runs.entries[runs[i]] = RunSpend.from_state(runs[i], runs[i + 1])
        detector.windows.restore(state[2])
        if len(state[3]) == len(detector.settings.checks):
            detector.levels = [int(v) for v in state[3]]
        detector.spike_level = int(state[4])
        if state[5]:
            ids = detector.ids = EvidenceRing.from_state(state[5], detector.settings.evidence_max)
            if ids.count:
                tags = state[6]
                for i in range(0, len(tags), 2):
                    detector.id_tags.extend([int(tags[i])] * int(tags[i + 1]))
        return detector
