"""The breaker policy: every threshold, window, severity mapping, cool-down and budget.

One pydantic model, loaded from YAML or TOML (``load_policy``) and validated at start: unknown
keys, impossible values and inconsistent combinations are refused with the field named.

Layout of a policy file::

    defaults:            # a ResolvedPolicy; anything left out keeps the built-in default
      spend: {run_budget_usd: 5}
    workflows:           # per-workflow overrides, deep-merged over the defaults
      billing: {spend: {run_budget_usd: 20}}
    agents:              # per-agent overrides, deep-merged over defaults and workflow
      agent-42: {loops: {max_steps: 200}}

Deep merge: mappings merge key by key, anything else (numbers, lists of bands, rule lists)
replaces the inherited value as a whole. ``Policy.for_agent`` resolves agent over workflow
over defaults. Each default's reasoning is its ``Field(description=...)``; ``describe_policy``
prints them all (for the README).
"""

from __future__ import annotations

import tomllib
import weakref
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from tripwire.detectors.autonomy_policy import AutonomyPolicy
from tripwire.detectors.containment import ContainmentPolicy
from tripwire.detectors.otlp_policy import OtlpPolicy
from tripwire.detectors.release_gate import ReleaseGatePolicy
from tripwire.detectors.severity import Severity
from tripwire.detectors.standing_rules import StandingPolicy
from tripwire.schemas.modes import Mode

MINUTE_MS = 60_000
HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS


class PolicyModel(BaseModel):
    # Frozen so resolved policies are hashable: compiled thresholds are cached per policy and
    # shared by every agent that resolves to it.
    model_config = ConfigDict(extra="forbid", frozen=True)


class Band(PolicyModel):
    """A threshold and the severity of a detection that crosses it."""

    at: float = Field(gt=0, description="Threshold; for *_bands relative to a limit, a multiple.")
    severity: Severity
    shadow: bool = Field(
        False,
        description="Judged on live traffic, never enforced: its would-be detections and "
        "transitions are recorded apart (detectors/shadow.py). Off by default.",
    )


class RateBand(Band):
    """A band on a rate (a fraction of decisions), so the threshold is at most 1."""

    at: float = Field(gt=0, le=1, description="Fraction of decisions, in (0, 1].")


def _ascending(bands: tuple[Band, ...]) -> tuple[Band, ...]:
    if not bands:
        raise ValueError("at least one band is needed")
    for i in range(1, len(bands)):
        if bands[i].at <= bands[i - 1].at:
            raise ValueError(
                f"[{i}].at = {bands[i].at:g} must be above [{i - 1}].at = {bands[i - 1].at:g}"
            )
        if _GRAVITY[bands[i].severity] < _GRAVITY[bands[i - 1].severity]:
            raise ValueError(
                f"[{i}].severity {bands[i].severity} is milder than [{i - 1}].severity "
                f"{bands[i - 1].severity}: a higher threshold cannot mean a milder problem"
            )
    return bands


_GRAVITY: dict[str, int] = {"S3": 1, "S2": 2, "S1": 3}


def _check_window(section: str, window_ms: int, buckets: int, field: str = "window_ms") -> None:
    if window_ms % buckets:
        raise ValueError(
            f"{section}.{field} = {window_ms} is not a multiple of {section}.buckets = {buckets}"
        )


class EventTimePolicy(PolicyModel):
    grace_ms: int = Field(
        30_000,
        ge=0,
        le=10 * MINUTE_MS,
        description="How far behind the newest event an event may be and still count in time "
        "windows. The SDK flushes batches every few seconds and retries reorder a little; "
        "30 s absorbs that without delaying baselines. Later events are counted as late and "
        "still count for run-scoped checks.",
    )
    rearm_ratio: float = Field(
        0.8,
        gt=0,
        le=1,
        description="A fired band re-arms once its value falls below this fraction of the "
        "threshold. 0.8 keeps a value hovering at a threshold from firing on every other "
        "event while still re-arming after a real recovery.",
    )
    evidence_max: int = Field(
        20,
        ge=1,
        le=200,
        description="Most event ids a detection cites. 20 is enough to show a pattern to a "
        "human and bounds both message size and per-agent memory.",
    )


class RunsPolicy(PolicyModel):
    ttl_after_end_ms: int = Field(
        MINUTE_MS,
        gt=0,
        description="How long a run's state is kept after its run_end, for its late events "
        "(later ones are beyond the grace anyway). Must exceed event_time.grace_ms; 1 min is "
        "twice the default grace, and an agent finishing a run a minute keeps ~1 ended run.",
    )
    idle_expiry_ms: int = Field(
        3 * HOUR_MS,
        gt=0,
        description="A run with no events for this long is forgotten. Must exceed the "
        "highest never-ending-run threshold so that detection fires first; 3 h covers the "
        "default 4 x 30 min.",
    )
    max_open_runs: int = Field(
        32,
        ge=1,
        le=10_000,
        description="Cap on runs tracked per agent (least recently active evicted). Agents "
        "run a handful of runs concurrently; 32 bounds memory if one opens runs in a loop.",
    )


class DenialRatePolicy(PolicyModel):
    window_ms: int = Field(
        5 * MINUTE_MS,
        gt=0,
        description="Sliding window of the denial rate. 5 min is long enough to collect the "
        "minimum sample for an active agent and short enough that a recovered agent clears.",
    )
    buckets: int = Field(
        10,
        ge=1,
        le=600,
        description="Buckets of the window (30 s each by default): the window's edge is "
        "accurate to one bucket, and memory is 2 numbers per bucket per key.",
    )
    min_decisions: int = Field(
        10,
        ge=1,
        description="Decisions the agent-wide window needs before a rate counts (like "
        "resilience4j's minimumNumberOfCalls): 1 denial of 2 is noise, 5 of 10 is a pattern.",
    )
    min_decisions_per_tool: int = Field(
        5,
        ge=1,
        description="Same for one tool. Lower than agent-wide because one tool sees fewer "
        "decisions, and a tool denied 5 times in a row is already telling.",
    )
    per_tool: bool = Field(
        True, description="Also track the rate per agent+tool, to name the tool at fault."
    )
    max_tools: int = Field(
        32,
        ge=1,
        le=10_000,
        description="Cap on per-tool windows per agent (least recently used evicted); idle "
        "tools expire when their window empties.",
    )
    bands: tuple[RateBand, ...] = Field(
        (
            RateBand(at=0.3, severity="S3"),
            RateBand(at=0.5, severity="S2"),
            RateBand(at=0.8, severity="S1"),
        ),
        description="Denied / decided. 30%: the agent misreads its permissions (S3); 50%: "
        "most of what it tries is refused (S2); 80%: it keeps pushing against the policy, "
        "the signature of a hijacked or runaway agent (S1).",
    )

    _bands_ascending = field_validator("bands")(_ascending)

    @model_validator(mode="after")
    def _geometry(self) -> DenialRatePolicy:
        _check_window("denial_rate", self.window_ms, self.buckets)
        return self


class LoopPolicy(PolicyModel):
    max_steps: int = Field(
        50,
        ge=1,
        description="Step budget of one run (events per run, by step number). Typical task "
        "runs take 5-20 steps; 50 leaves room for hard tasks and still stops a runaway early.",
    )
    step_bands: tuple[Band, ...] = Field(
        (Band(at=1.0, severity="S3"), Band(at=2.0, severity="S2")),
        description="Multiples of max_steps. Over budget is a local problem (S3); twice "
        "over means the run is burning resources (S2).",
    )
    repeat_limit: int = Field(
        5,
        ge=2,
        description="Same tool with the same params_hash this many times in a run is a "
        "stuck retry: 2-3 identical calls happen (a flaky tool), 5 is a loop.",
    )
    repeat_horizon: int = Field(
        20,
        ge=4,
        le=256,
        description="Repeats are counted among the run's last N tool calls. A call repeated "
        "after 20 other calls is progress-then-retry, not a loop; the bound keeps per-run "
        "memory fixed.",
    )
    repeat_bands: tuple[Band, ...] = Field(
        (Band(at=1.0, severity="S3"), Band(at=2.0, severity="S2")),
        description="Multiples of repeat_limit: 5 repeats S3, 10 repeats S2 (repeated wrong "
        "outcome).",
    )
    cycle_periods: tuple[int, ...] = Field(
        (2, 3),
        description="Cycle lengths looked for: A,B,A,B (2) and A,B,C,A,B,C (3). Longer "
        "cycles are rare and indistinguishable from legitimate iteration over a list.",
    )
    cycle_min_repeats: int = Field(
        3,
        ge=2,
        description="Times a cycle must repeat back to back. Twice happens (check, fix, "
        "check, fix); three times the agent is going round in circles.",
    )
    cycle_bands: tuple[Band, ...] = Field(
        (Band(at=1.0, severity="S3"), Band(at=2.0, severity="S2")),
        description="Multiples of cycle_min_repeats.",
    )
    cycle_match: Literal["tool", "tool_and_params"] = Field(
        "tool_and_params",
        description="What makes two calls 'the same' in a cycle. Tool and params by "
        "default: search/read/search/read over different inputs is browsing, not a loop.",
    )
    run_timeout_ms: int = Field(
        30 * MINUTE_MS,
        gt=0,
        description="A run without run_end this long after its first event never ended. "
        "Task runs take seconds to minutes; 30 min allows slow human approvals.",
    )
    timeout_bands: tuple[Band, ...] = Field(
        (Band(at=1.0, severity="S3"), Band(at=4.0, severity="S2")),
        description="Multiples of run_timeout_ms: a hung run is a local problem (S3) until "
        "it has held resources for 2 h (S2).",
    )

    _steps_ascending = field_validator(
        "step_bands", "repeat_bands", "cycle_bands", "timeout_bands"
    )(_ascending)

    @field_validator("cycle_periods")
    @classmethod
    def _periods(cls, periods: tuple[int, ...]) -> tuple[int, ...]:
        if any(p < 2 or p > 8 for p in periods) or len(set(periods)) != len(periods):
            raise ValueError("cycle periods must be distinct and within 2..8")
        return tuple(sorted(periods))

    @model_validator(mode="after")
    def _horizon(self) -> LoopPolicy:
        needed = max(self.cycle_periods, default=2) + 1
        if self.repeat_horizon < needed:
            raise ValueError(f"loops.repeat_horizon must be >= {needed} (longest cycle + 1)")
        top = self.repeat_limit * self.repeat_bands[-1].at
        if top > self.repeat_horizon:
            raise ValueError(
                f"loops.repeat_horizon = {self.repeat_horizon} cannot hold "
                f"repeat_limit x repeat_bands[-1].at = {top:g} repeats: that band never fires"
            )
        return self


class SpendPolicy(PolicyModel):
    run_budget_usd: float | None = Field(
        5.0,
        gt=0,
        description="Cost budget of one run (null: none). A typical run costs cents; $5 is "
        "a run that has gone wrong, not a big task.",
    )
    run_budget_tokens: int | None = Field(
        2_000_000,
        gt=0,
        description="Token budget of one run (null: none); covers agents on self-hosted "
        "models that report tokens but no cost.",
    )
    run_bands: tuple[Band, ...] = Field(
        (Band(at=1.0, severity="S2"),),
        description="Multiples of the run budgets. Over budget is cost (S2); the breaker "
        "stops the run rather than the agent.",
    )
    hour_budget_usd: float | None = Field(
        20.0, gt=0, description="Per-agent cost over a rolling hour (null: none)."
    )
    hour_budget_tokens: int | None = Field(
        None, gt=0, description="Per-agent tokens over a rolling hour (null: none)."
    )
    day_budget_usd: float | None = Field(
        200.0,
        gt=0,
        description="Per-agent cost over a rolling day (null: none). 10x the hourly budget: "
        "an agent may burst for an hour but not all day.",
    )
    day_budget_tokens: int | None = Field(
        None, gt=0, description="Per-agent tokens over a rolling day (null: none)."
    )
    budget_bands: tuple[Band, ...] = Field(
        (Band(at=0.8, severity="S3"), Band(at=1.0, severity="S2")),
        description="Multiples of the hour/day budgets: 80% warns (S3) while there is time "
        "to react, 100% is a cost problem (S2).",
    )
    hour_buckets: int = Field(
        12, ge=1, le=3600, description="Buckets of the hour window (5 min each)."
    )
    day_buckets: int = Field(24, ge=1, le=1440, description="Buckets of the day window (1 h each).")
    spike_metric: Literal["usd", "tokens"] = Field(
        "usd", description="What the spike detector compares: cost, or tokens for cost-less agents."
    )
    spike_window_ms: int = Field(
        5 * MINUTE_MS,
        gt=0,
        description="Current rate window and baseline period of the spike detector. 5 min "
        "reacts within minutes and holds enough calls to be a rate, not a single call.",
    )
    spike_buckets: int = Field(10, ge=1, le=600, description="Buckets of the spike window.")
    spike_alpha: float = Field(
        0.3,
        gt=0,
        le=1,
        description="EWMA weight of the newest period in the baseline; 0.3 follows a "
        "changed workload within ~5 active periods without being dragged up by one spike.",
    )
    spike_min_baseline: float = Field(
        0.5,
        gt=0,
        description="Floor under the baseline (units of spike_metric per window): a new or "
        "near-idle agent has a baseline near 0, and any spend would look like a spike. With "
        "5x, spending $2.50 in 5 min is the least that can spike.",
    )
    spike_bands: tuple[Band, ...] = Field(
        (Band(at=5.0, severity="S3"), Band(at=10.0, severity="S2")),
        description="Current window / baseline. Workloads vary 2-3x normally; 5x is unusual "
        "(S3), 10x is runaway spend (S2).",
    )

    _budget_bands_ascending = field_validator("run_bands", "budget_bands", "spike_bands")(
        _ascending
    )

    @model_validator(mode="after")
    def _geometry(self) -> SpendPolicy:
        _check_window("spend", HOUR_MS, self.hour_buckets, "hour_buckets (of 1 h)")
        _check_window("spend", DAY_MS, self.day_buckets, "day_buckets (of 24 h)")
        _check_window("spend", self.spike_window_ms, self.spike_buckets, "spike_window_ms")
        return self


class InjectionPolicy(PolicyModel):
    window_ms: int = Field(
        10 * MINUTE_MS,
        gt=0,
        description="Window of the injection hit count: an attack arrives through a few "
        "documents or pages read within minutes.",
    )
    buckets: int = Field(10, ge=1, le=600, description="Buckets of the window.")
    min_score: float = Field(
        0.5,
        ge=0,
        le=1,
        description="Scanner score from which content counts as a hit; the scanner's own hit "
        "flag is ignored so this one number decides. 0.5 is where the scanner is calibrated "
        "(detectors/injection.py HIT_THRESHOLD): one unambiguous sign is a hit, one weak "
        "sign alone is not.",
    )
    bands: tuple[Band, ...] = Field(
        (
            Band(at=1, severity="S3"),
            Band(at=3, severity="S2"),
            Band(at=5, severity="S1"),
        ),
        description="Hits in the window. One hit: a human should approve actions while "
        "injected text may be in context (S3). Three: the agent keeps reading hostile "
        "content (S2). Five: it is under attack (S1).",
    )

    _bands_ascending = field_validator("bands")(_ascending)

    @model_validator(mode="after")
    def _geometry(self) -> InjectionPolicy:
        _check_window("injection", self.window_ms, self.buckets)
        return self


Target = Mode | Literal["stop_run", "none"]


class BreakerRule(PolicyModel):
    """Detections matching every given field get ``target``; the first matching rule wins."""

    name: str = Field(min_length=1, description="Recorded on every transition it causes.")
    detector: str = Field("*", description="Detector name, or * for any.")
    metric: str = Field("*", description="Metric name, or * for any.")
    scope: Literal["agent", "run", "*"] = Field("*", description="agent, run or *.")
    severity: Severity | Literal["*"] = Field("*", description="S1, S2, S3 or *.")
    target: Target = Field(
        description="Mode to lower the agent to, stop_run (run-scoped detections only) or "
        "none (record the detection, change nothing)."
    )
    shadow: bool = Field(
        False,
        description="Judged on live traffic, never enforced: its would-be transitions are "
        "recorded apart (detectors/shadow.py). Off by default.",
    )

    @model_validator(mode="after")
    def _sensible_target(self) -> BreakerRule:
        if self.target == Mode.AUTONOMOUS:
            raise ValueError("target autonomous can never lower a mode; use none")
        if self.target == "stop_run" and self.scope != "run":
            raise ValueError("target stop_run needs scope: run (an agent has no run to stop)")
        return self

    def matches(self, detector: str, metric: str, scope: str, severity: str) -> bool:
        return (
            self.detector in ("*", detector)
            and self.metric in ("*", metric)
            and self.scope in ("*", scope)
            and self.severity in ("*", severity)
        )


DEFAULT_RULES: tuple[BreakerRule, ...] = (
    BreakerRule(name="runaway_run", scope="run", target="stop_run"),
    BreakerRule(name="spend_warning", detector="spend", severity="S3", target="none"),
    BreakerRule(name="harmful", severity="S1", target=Mode.READ_ONLY),
    BreakerRule(name="repeated_or_costly", severity="S2", target=Mode.SUGGEST_ONLY),
    BreakerRule(name="local_quality", severity="S3", target=Mode.APPROVE_TO_ACT),
)


class BreakerPolicy(PolicyModel):
    rules: tuple[BreakerRule, ...] = Field(
        DEFAULT_RULES,
        description="Ordered rules, first match wins. Defaults: a run-scoped problem stops "
        "that run; a spend warning is only recorded; S1 (harmful) -> read_only, the agent can "
        "still look but not act; S2 (repeated wrong outcomes, cost) -> suggest_only, a human "
        "carries out its suggestions; S3 (local quality) -> approve_to_act, it acts after a "
        "human approves. halted is left to operators (kill).",
    )
    cooldown_ms: int = Field(
        15 * MINUTE_MS,
        gt=0,
        description="Trip-free time before a downgraded agent gets probation one level up. "
        "15 min: long enough for a human to look, short enough that a false positive costs "
        "little.",
    )
    probation_ms: int = Field(
        10 * MINUTE_MS,
        gt=0,
        description="Trip-free time at the raised level before it is kept (half-open).",
    )
    backoff_multiplier: float = Field(
        2.0,
        ge=1,
        le=10,
        description="Cool-down factor after each failed probation (like Envoy's growing "
        "ejection time): an agent that keeps failing waits 15, 30, 60 min...",
    )
    max_cooldown_ms: int = Field(
        4 * HOUR_MS,
        gt=0,
        description="Cap on the grown cool-down: after that, a human is the better fix.",
    )
    run_stop_limit: int = Field(
        3,
        ge=1,
        le=32,
        description="Run stops within run_stop_window_ms that turn into an agent downgrade: "
        "one runaway run is bad luck, three in an hour is the agent.",
    )
    run_stop_window_ms: int = Field(
        HOUR_MS, gt=0, description="Window over which run stops are counted."
    )
    containment: ContainmentPolicy = Field(
        ContainmentPolicy(),
        description="Narrow containment first: per-tool restriction and when it escalates "
        "to the agent (detectors/containment.py).",
    )
    run_stop_escalation: Mode = Field(
        Mode.SUGGEST_ONLY,
        description="Mode after run_stop_limit run stops: suggest_only, as for repeated "
        "wrong outcomes (S2).",
    )

    @field_validator("rules")
    @classmethod
    def _unique_names(cls, rules: tuple[BreakerRule, ...]) -> tuple[BreakerRule, ...]:
        names = [r.name for r in rules]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"rule names must be unique, repeated: {', '.join(dupes)}")
        return rules

    @field_validator("run_stop_escalation")
    @classmethod
    def _lowers(cls, mode: Mode) -> Mode:
        if mode == Mode.AUTONOMOUS:
            raise ValueError("run_stop_escalation autonomous would never lower a mode")
        return mode

    @model_validator(mode="after")
    def _cap(self) -> BreakerPolicy:
        if self.max_cooldown_ms < self.cooldown_ms:
            raise ValueError("breaker.max_cooldown_ms must be >= breaker.cooldown_ms")
        return self

    def rule_for(self, detector: str, metric: str, scope: str, severity: str) -> BreakerRule | None:
        for rule in self.rules:
            if rule.matches(detector, metric, scope, severity):
                return rule
        return None


class ResolvedPolicy(PolicyModel):
    """Everything one agent's monitor needs, after overrides are applied."""

    event_time: EventTimePolicy = EventTimePolicy()
    runs: RunsPolicy = RunsPolicy()
    denial_rate: DenialRatePolicy = DenialRatePolicy()
    loops: LoopPolicy = LoopPolicy()
    spend: SpendPolicy = SpendPolicy()
    injection: InjectionPolicy = InjectionPolicy()
    breaker: BreakerPolicy = BreakerPolicy()
    otlp: OtlpPolicy = OtlpPolicy()
    autonomy: AutonomyPolicy = AutonomyPolicy()

    @model_validator(mode="after")
    def _consistent(self) -> ResolvedPolicy:
        grace = self.event_time.grace_ms
        # A late event inside the grace must still find its bucket in the ring; otherwise the
        # grace would promise something the window cannot keep.
        for name, window_ms, buckets in (
            ("denial_rate.window_ms", self.denial_rate.window_ms, self.denial_rate.buckets),
            ("injection.window_ms", self.injection.window_ms, self.injection.buckets),
            ("spend.spike_window_ms", self.spend.spike_window_ms, self.spend.spike_buckets),
            ("spend.hour_buckets", HOUR_MS, self.spend.hour_buckets),
            ("spend.day_buckets", DAY_MS, self.spend.day_buckets),
        ):
            span = window_ms - window_ms // buckets
            if grace > span:
                raise ValueError(
                    f"event_time.grace_ms = {grace} exceeds what {name} keeps behind its newest "
                    f"bucket ({span} ms): lower the grace or use a longer window / more buckets"
                )
        if self.runs.ttl_after_end_ms <= grace:
            raise ValueError("runs.ttl_after_end_ms must exceed event_time.grace_ms")
        longest_timeout = self.loops.run_timeout_ms * self.loops.timeout_bands[-1].at
        if self.runs.idle_expiry_ms <= longest_timeout:
            raise ValueError(
                f"runs.idle_expiry_ms = {self.runs.idle_expiry_ms} must exceed loops."
                f"run_timeout_ms x timeout_bands[-1].at = {longest_timeout:g}, or a hung run "
                f"is forgotten before its last timeout band can fire"
            )
        from tripwire.detectors.shadow import split_shadow  # shadow.py imports this module

        split_shadow(self)  # the enforced policy and each shadow variant must be valid too
        return self

    def compiled(self, name: str, build: Callable[[ResolvedPolicy], T]) -> T:
        """``build(self)``, made once per policy object and shared by every agent using it.

        Looked up by identity: hashing a frozen policy walks every field (microseconds),
        too slow for constructing 100k monitors.
        """
        key = id(self)
        entry = _COMPILED.get(key)
        if entry is None or entry[0]() is not self:
            entry = _COMPILED[key] = (weakref.ref(self, _forget_compiled(key)), {})
        cache = entry[1]
        value = cache.get(name)
        if value is None:
            value = cache[name] = build(self)
        return value


T = TypeVar("T")
_COMPILED: dict[int, tuple[weakref.ref[ResolvedPolicy], dict[str, Any]]] = {}


def _forget_compiled(key: int) -> Callable[[weakref.ref[ResolvedPolicy]], None]:
    """The weakref callback dropping a dead policy's entry. It holds the dict itself: a policy
    collected at interpreter exit, once module globals are cleared, found ``_COMPILED`` None
    ("Exception ignored ... 'NoneType' object has no attribute 'pop'")."""
    compiled = _COMPILED

    def forget(ref: weakref.ref[ResolvedPolicy]) -> None:
        entry = compiled.get(key)
        if entry is not None and entry[0] is ref:  # not a newer policy given the same id
            del compiled[key]

    return forget

DEFAULT_POLICY = ResolvedPolicy()


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _prefixed(exc: ValidationError, prefix: str) -> str:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(part) for part in (prefix, *err["loc"]))
        lines.append(f"{loc}: {err['msg']}")
    return "; ".join(lines)


class Policy(PolicyModel):
    defaults: ResolvedPolicy = Field(
        DEFAULT_POLICY, description="Applies to every agent unless overridden."
    )
    workflows: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="Overrides per event.workflow, over the defaults."
    )
    agents: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="Overrides per agent_id, over workflow and defaults."
    )
    standing: StandingPolicy = Field(
        default_factory=StandingPolicy,
        description="Standing rules, tool reversibility and rate caps (detectors/"
        "standing_rules.py); fleet-wide, each rule names its own workflow/environment.",
    )
    release_gate: ReleaseGatePolicy = Field(
        ReleaseGatePolicy(),
        description="Thresholds of `tripwire gate` (detectors/release_gate.py).",
    )
    _resolved: dict[tuple[str | None, str | None], ResolvedPolicy] = PrivateAttr(
        default_factory=dict
    )

    @model_validator(mode="after")
    def _overrides_valid(self) -> Policy:
        # Each override alone must make a valid policy, so a typo in agents.x is reported at
        # start rather than when agent x first shows up.
        base = self.defaults.model_dump()
        for section, overrides in (("workflows", self.workflows), ("agents", self.agents)):
            for name, override in overrides.items():
                try:
                    ResolvedPolicy.model_validate(deep_merge(base, override))
                except ValidationError as exc:
                    raise ValueError(_prefixed(exc, f"{section}.{name}")) from None
        return self

    def for_agent(self, agent_id: str, workflow: str | None = None) -> ResolvedPolicy:
        """Agent override over workflow override over defaults (deep merge).

        Agents without overrides share ``defaults`` itself, so 100k agents hold one policy.
        """
        agent_key = agent_id if agent_id in self.agents else None
        workflow_key = workflow if workflow in self.workflows else None
        if agent_key is None and workflow_key is None:
            return self.defaults
        key = (agent_key, workflow_key)
        resolved = self._resolved.get(key)
        if resolved is None:
            merged = self.defaults.model_dump()
            if workflow_key is not None:
                merged = deep_merge(merged, self.workflows[workflow_key])
            if agent_key is not None:
                merged = deep_merge(merged, self.agents[agent_key])
            try:
                resolved = ResolvedPolicy.model_validate(merged)
            except ValidationError as exc:
                where = f"agents.{agent_key} over workflows.{workflow_key}"
                raise ValueError(_prefixed(exc, where)) from None
            self._resolved[key] = resolved
        return resolved


def load_policy(path: str | Path) -> Policy:
    """Read and validate a YAML (.yaml/.yml) or TOML (.toml) policy file."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    if path.suffix in (".yaml", ".yml"):
        data = yaml.safe_load(text)
    elif path.suffix == ".toml":
        data = tomllib.loads(text)
    else:
        raise ValueError(f"{path}: policy files are .yaml, .yml or .toml")
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a policy is a mapping at the top level")
    return Policy.model_validate(data)


def _problems(exc: Exception) -> str:
    """A validation error's fields and messages on one line; other errors' text."""
    errors = getattr(exc, "errors", None)
    if callable(errors):
        return "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in errors())
    return " ".join(str(exc).split())


def load_policy_file(path: str | Path) -> Policy:
    """``load_policy``, with any problem as one ValueError line naming the file and the
    fields: what a command prints before exiting 2."""
    try:
        return load_policy(path)
    except (ValueError, OSError) as exc:  # pydantic's ValidationError is a ValueError
        raise ValueError(f"invalid policy file {path}: {_problems(exc)}") from None


def _fields(model: type[BaseModel], prefix: str) -> Iterator[tuple[str, Any, str]]:
    for name, info in model.model_fields.items():
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            yield from _fields(annotation, f"{prefix}{name}.")
        else:
            default = info.default
            if isinstance(default, tuple) and default and isinstance(default[0], Band):
                default = ", ".join(f"{b.at:g}->{b.severity}" for b in default)
            elif isinstance(default, tuple) and default and isinstance(default[0], BreakerRule):
                default = "; ".join(
                    f"{r.name}: {r.detector}/{r.metric}/{r.scope}/{r.severity} -> {r.target}"
                    for r in default
                )
            yield f"{prefix}{name}", default, info.description or ""


def describe_policy() -> str:
    """Markdown table of every policy field, its default and why (for the README)."""
    lines = ["| field | default | why |", "|---|---|---|"]
    for name, default, why in _fields(ResolvedPolicy, ""):
        lines.append(f"| `{name}` | `{default}` | {why} |")
    return "\n".join(lines)
