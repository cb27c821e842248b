"""Release gates: is agent version B behaving worse than version A on the same window?

Pure statistics over per-version figures (the queries live in ``dashboards/queries``,
the command in ``dashboards/gate_command.py``). Each comparison is judged only when both
versions have at least its minimum sample, and fails only when the candidate is worse than
the baseline by more than its tolerance *with confidence* (the whole confidence interval of
the difference lies beyond the tolerance), so a small canary is never failed on noise and an
equal one passes:

* proportions (policy-denial rate, approval decline rate, task success): difference of two
  proportions with Newcombe's hybrid score interval (method 10 of Newcombe 1998, from two
  Wilson intervals), which keeps its coverage for small samples and rates near 0 or 1;
* rates of counts (trips per run, by detector and in total): log rate ratio with a 0.5
  continuity correction, exp(log r ± z·sqrt(1/(a+½) + 1/(b+½)));
* ratio figures (cost per completed task, steps per run): ratio of two ratio estimators,
  their variances by the delta method from per-run values.

Thresholds come from the policy file's ``release_gate`` section (:class:`ReleaseGatePolicy`,
every default with its reason).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class ReleaseGatePolicy(BaseModel):
    """``release_gate:`` in the policy file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    confidence: float = Field(
        0.95, gt=0.5, lt=1,
        description="Confidence of every interval. 95 %: one false alarm in twenty judged "
        "metrics of equal versions would be too many, so each metric also has a tolerance.")
    min_decisions: int = Field(
        100, ge=1,
        description="Policy decisions each version needs before its denial rate is judged: "
        "with 100, a 5 % rate is known to about ±4 points.")
    min_approvals: int = Field(
        30, ge=1, description="Approval decisions each version needs for the decline rate.")
    min_runs: int = Field(
        30, ge=1,
        description="Finished runs each version needs for success, cost, steps and trips per "
        "run: the usual minimum for a normal approximation of a mean.")
    max_denial_rate_increase: float = Field(
        0.02, ge=0, le=1,
        description="Denied share of policy decisions the candidate may add (absolute). Two "
        "points is the day-to-day spread of a healthy fleet's denial rate.")
    max_decline_rate_increase: float = Field(
        0.05, ge=0, le=1,
        description="Declined share of approval decisions the candidate may add (absolute).")
    max_success_drop: float = Field(
        0.03, ge=0, le=1,
        description="Drop in the share of runs that succeed the candidate may show (absolute).")
    max_trip_rate_ratio: float = Field(
        1.5, ge=1,
        description="Trips (detections) per run, candidate over baseline, in total and per "
        "detector. 1.5: half as many again is a regression, not noise, once significant.")
    max_cost_per_task_ratio: float = Field(
        1.2, ge=1,
        description="Cost per completed task, candidate over baseline: 20 % dearer per task "
        "needs a decision, not a silent rollout.")
    max_steps_per_run_ratio: float = Field(
        1.3, ge=1,
        description="Steps per run, candidate over baseline: the loop figure. 30 % longer runs "
        "is an agent going round in circles more often.")


Direction = Literal["lower_is_better", "higher_is_better"]
Verdict = Literal["pass", "fail", "insufficient"]


@dataclass
class Comparison:
    metric: str
    kind: Literal["difference", "ratio"]
    baseline: float | None
    candidate: float | None
    estimate: float | None
    """candidate - baseline (difference) or candidate / baseline (ratio)."""
    low: float | None
    high: float | None
    tolerance: float
    verdict: Verdict
    samples: tuple[int, int]
    detail: str = ""

    def to_json(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in (
            "metric", "kind", "baseline", "candidate", "estimate", "low", "high", "tolerance",
            "verdict", "detail")} | {"samples": list(self.samples)}


def z_value(confidence: float) -> float:
    return NormalDist().inv_cdf(0.5 + confidence / 2)


def wilson(successes: int, n: int, z: float) -> tuple[float, float]:
    """Wilson score interval of a proportion."""
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    z2 = z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def newcombe(a: int, n_a: int, b: int, n_b: int, z: float) -> tuple[float, float, float]:
    """(difference, low, high) of p_a - p_b, Newcombe's hybrid score interval."""
    p_a, p_b = a / n_a, b / n_b
    l_a, u_a = wilson(a, n_a, z)
    l_b, u_b = wilson(b, n_b, z)
    d = p_a - p_b
    low = d - math.sqrt((p_a - l_a) ** 2 + (u_b - p_b) ** 2)
    high = d + math.sqrt((u_a - p_a) ** 2 + (p_b - l_b) ** 2)
    return d, max(-1.0, low), min(1.0, high)  # clamped: rounding can leave them 1e-16 out


def rate_ratio(k_a: int, n_a: int, k_b: int, n_b: int, z: float) -> tuple[float, float, float]:
    """(ratio, low, high) of (k_a/n_a) / (k_b/n_b), counts of rare events per exposure."""
    a, b = k_a + 0.5, k_b + 0.5
    ratio = (a / n_a) / (b / n_b)
    se = math.sqrt(1 / a + 1 / b)
    return ratio, ratio * math.exp(-z * se), ratio * math.exp(z * se)


def ratio_estimate(x: Sequence[float], y: Sequence[float]) -> tuple[float, float] | None:
    """(sum x / sum y, variance of it) by the delta method; None if sum y is 0."""
    n = len(x)
    sy = sum(y)
    if n < 2 or sy <= 0:
        return None
    r = sum(x) / sy
    mean_y = sy / n
    resid = [xi - r * yi for xi, yi in zip(x, y, strict=True)]
    var = sum(e * e for e in resid) / (n - 1) / n / (mean_y * mean_y)
    return r, var


def ratio_of_ratios(a: tuple[float, float], b: tuple[float, float], z: float
                    ) -> tuple[float, float, float] | None:
    (r_a, v_a), (r_b, v_b) = a, b
    if r_a <= 0 or r_b <= 0:
        return None
    ratio = r_a / r_b
    se = math.sqrt(v_a / (r_a * r_a) + v_b / (r_b * r_b))
    return ratio, ratio * math.exp(-z * se), ratio * math.exp(z * se)


@dataclass
class VersionRecord:
    """What one version did in the window (``dashboards/queries/release_gate_*.sql``)."""

    version: str
    decisions: int = 0
    denied: int = 0
    approvals: int = 0
    declined: int = 0
    run_cost: list[float] = field(default_factory=list)
    """Per finished run: its cost, its steps, 1 if it succeeded."""
    run_steps: list[float] = field(default_factory=list)
    run_success: list[float] = field(default_factory=list)
    trips: dict[str, int] = field(default_factory=dict)
    """Detections attributed to this version (through their evidence events), by detector."""

    @property
    def runs(self) -> int:
        return len(self.run_success)


@dataclass
class GateReport:
    scope: str
    baseline: VersionRecord
    candidate: VersionRecord
    window: tuple[int, int]
    comparisons: list[Comparison]

    @property
    def verdict(self) -> Verdict:
        verdicts = {c.verdict for c in self.comparisons}
        if "fail" in verdicts:
            return "fail"
        if not verdicts or verdicts == {"insufficient"}:
            return "insufficient"
        return "pass"

    def to_json(self) -> dict[str, Any]:
        return {"scope": self.scope, "baseline": self.baseline.version,
                "candidate": self.candidate.version, "window_ms": list(self.window),
                "verdict": self.verdict, "comparisons": [c.to_json() for c in self.comparisons]}

    def to_markdown(self) -> str:
        b, c = self.baseline, self.candidate
        out = [f"# Release gate: {self.scope} `{c.version}` against `{b.version}`: "
               f"**{self.verdict.upper()}**", "",
               f"Baseline {b.runs} runs, {b.decisions} policy decisions, {b.approvals} approvals"
               f" · candidate {c.runs} runs, {c.decisions} policy decisions, {c.approvals} "
               "approvals", "",
               "| metric | baseline | candidate | change (CI) | tolerance | verdict |",
               "|---|---:|---:|---|---:|---|"]
        for cmp in self.comparisons:
            out.append(f"| {cmp.metric} | {_fmt(cmp.baseline)} | {_fmt(cmp.candidate)} | "
                       f"{_change(cmp)} | {_tol(cmp)} | {cmp.verdict}"
                       f"{' (' + cmp.detail + ')' if cmp.detail else ''} |")
        out.append("")
        return "\n".join(out)


def _fmt(v: float | None) -> str:
    return "–" if v is None else f"{v:.4g}"


def _change(c: Comparison) -> str:
    if c.estimate is None:
        return "–"
    if c.kind == "difference":
        return f"{c.estimate:+.4f} ({c.low:+.4f} … {c.high:+.4f})"
    return f"×{c.estimate:.3g} ({c.low:.3g} … {c.high:.3g})"


def _tol(c: Comparison) -> str:
    return f"{c.tolerance:+.3f}" if c.kind == "difference" else f"×{c.tolerance:g}"


def compare(baseline: VersionRecord, candidate: VersionRecord, policy: ReleaseGatePolicy,
            scope: str = "", window: tuple[int, int] = (0, 0)) -> GateReport:
    z = z_value(policy.confidence)
    out: list[Comparison] = []

    def proportion(metric: str, cand: tuple[int, int], base: tuple[int, int], minimum: int,
                   tolerance: float, direction: Direction) -> None:
        (k_c, n_c), (k_b, n_b) = cand, base
        if min(n_c, n_b) < minimum:
            out.append(Comparison(metric, "difference", _p(k_b, n_b), _p(k_c, n_c), None, None,
                                  None, tolerance, "insufficient", (n_b, n_c),
                                  f"needs {minimum} each"))
            return
        d, low, high = newcombe(k_c, n_c, k_b, n_b, z)
        worse = low > tolerance if direction == "lower_is_better" else high < -tolerance
        out.append(Comparison(metric, "difference", k_b / n_b, k_c / n_c, d, low, high,
                              tolerance if direction == "lower_is_better" else -tolerance,
                              "fail" if worse else "pass", (n_b, n_c)))

    proportion("policy-denial rate", (candidate.denied, candidate.decisions),
               (baseline.denied, baseline.decisions), policy.min_decisions,
               policy.max_denial_rate_increase, "lower_is_better")
    proportion("approval decline rate", (candidate.declined, candidate.approvals),
               (baseline.declined, baseline.approvals), policy.min_approvals,
               policy.max_decline_rate_increase, "lower_is_better")
    proportion("task success", (int(sum(candidate.run_success)), candidate.runs),
               (int(sum(baseline.run_success)), baseline.runs), policy.min_runs,
               policy.max_success_drop, "higher_is_better")

    enough_runs = min(candidate.runs, baseline.runs) >= policy.min_runs
    detectors = sorted(set(candidate.trips) | set(baseline.trips))
    for name, k_c, k_b in [("trips per run (all)", sum(candidate.trips.values()),
                            sum(baseline.trips.values()))] + [
            (f"trips per run ({d})", candidate.trips.get(d, 0), baseline.trips.get(d, 0))
            for d in detectors]:
        runs = (baseline.runs, candidate.runs)
        if not enough_runs:
            out.append(Comparison(name, "ratio", None, None, None, None, None,
                                  policy.max_trip_rate_ratio, "insufficient", runs,
                                  f"needs {policy.min_runs} runs each"))
            continue
        if k_c == 0 and k_b == 0:
            out.append(Comparison(name, "ratio", 0.0, 0.0, None, None, None,
                                  policy.max_trip_rate_ratio, "pass", runs, "none recorded"))
            continue
        ratio, low, high = rate_ratio(k_c, candidate.runs, k_b, baseline.runs, z)
        out.append(Comparison(name, "ratio", k_b / baseline.runs, k_c / candidate.runs, ratio,
                              low, high, policy.max_trip_rate_ratio,
                              "fail" if low > policy.max_trip_rate_ratio else "pass", runs))

    for name, xs, tolerance in (
        ("cost per completed task", (candidate.run_cost, candidate.run_success,
                                     baseline.run_cost, baseline.run_success),
         policy.max_cost_per_task_ratio),
        ("steps per run", (candidate.run_steps, [1.0] * candidate.runs, baseline.run_steps,
                           [1.0] * baseline.runs), policy.max_steps_per_run_ratio),
    ):
        runs = (baseline.runs, candidate.runs)
        est_c, est_b = ratio_estimate(xs[0], xs[1]), ratio_estimate(xs[2], xs[3])
        if not enough_runs or est_c is None or est_b is None:
            out.append(Comparison(name, "ratio", est_b[0] if est_b else None,
                                  est_c[0] if est_c else None, None, None, None, tolerance,
                                  "insufficient", runs, f"needs {policy.min_runs} runs each"))
            continue
        rr = ratio_of_ratios(est_c, est_b, z)
        if rr is None:
            out.append(Comparison(name, "ratio", est_b[0], est_c[0], None, None, None,
                                  tolerance, "pass", runs, "no cost recorded"))
            continue
        ratio, low, high = rr
        out.append(Comparison(name, "ratio", est_b[0], est_c[0], ratio, low, high, tolerance,
                              "fail" if low > tolerance else "pass", runs))
    return GateReport(scope, baseline, candidate, window, out)


def _p(k: int, n: int) -> float | None:
    return k / n if n else None
