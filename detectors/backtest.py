"""Backtest: replay recorded steps through the worker's own monitor under two policies.

Pure: events in (plain dicts in the shape the stream decodes, one agent at a time, in event
time order), outcomes out. The reader (``sinks/step_history.py``) streams them from
ClickHouse; ``tripwire backtest`` (``dashboards/change_commands.py``) prints the report.

How an agent is replayed, and why it matches the live worker:

* One :class:`~detectors.agent_monitor.AgentMonitor` per agent, built from the policy in
  force (``current``), fed with ``feed_many`` exactly as ``streams/step_processor.py`` does.
  The candidate policy is a *variant* of that monitor (``AgentMonitor.add_variant``): it
  gets a breaker of its own, fed the detections of the sections both policies share and of
  its own detectors for the sections it changes (only those run twice; other denial-rate
  bands alone not even that: ``DenialBands`` judges the shared counts with them); a candidate
  that changes ``event_time`` or ``runs`` gets a full monitor of its own. When the two resolve to
  the same policy for an agent, the agent is replayed once and both sides share the outcome.
* Time-driven work (cool-downs, probations, runs that never end) is what the worker's timer
  does: ``advance(now)`` at each monitor deadline (``timer_due_ms``) that falls between two
  of the agent's events, on the event-time axis, and at the end of the window. Live, the
  timer runs each second with ``now`` = the agent's watermark plus the wall time since its
  last event, so on live traffic (event time ~ wall time) it fires within a second of the
  deadline, and the breaker stamps each of its own steps with the deadline itself.
* Every agent starts autonomous with empty windows at the start of the window (the backtest
  does not know what happened before it).
"""

from __future__ import annotations

from bisect import bisect_right
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from tripwire.detectors.agent_monitor import AgentMonitor
from tripwire.detectors.breaker import Transition
from tripwire.detectors.detection import Detection
from tripwire.detectors.policy import Policy, ResolvedPolicy
from tripwire.detectors.prompt_injection_hits import Scanner
from tripwire.detectors.shadow import enforced_policy
from tripwire.detectors.stream_detector import Event
from tripwire.schemas.modes import Mode

CANDIDATE = "candidate"
TRIP_ACTIONS = frozenset({"downgrade", "escalate", "probation_failed", "stop_run"})
DOWNGRADE_ACTIONS = frozenset({"downgrade", "escalate", "probation_failed"})
KEPT_TRANSITIONS = 50
"""Transitions kept per agent and policy for the report (all are counted): an agent that
flaps all week would otherwise hold its whole history in memory."""
EVIDENCE_MARGIN_MS = 5 * 60_000


@dataclass
class Outcome:
    """What one policy did to one agent over the window."""

    events: int = 0
    detections: Counter[str] = field(default_factory=Counter)
    """By detector."""
    trips: Counter[str] = field(default_factory=Counter)
    """Downgrades, escalations, failed probations and run stops, by rule."""
    mode_changes: int = 0
    run_stops: int = 0
    downgrades: int = 0
    lowest_mode: Mode = Mode.AUTONOMOUS
    final_mode: Mode = Mode.AUTONOMOUS
    below_autonomous_ms: int = 0
    first_downgrade_ts: int | None = None
    transitions: list[Transition] = field(default_factory=list)
    transitions_total: int = 0
    keep: int = KEPT_TRANSITIONS
    _below_since: int | None = None

    @property
    def downgraded(self) -> bool:
        return self.downgrades > 0

    def add(self, detections: list[Detection], transitions: list[Transition]) -> None:
        for d in detections:
            self.detections[d.detector] += 1
        for t in transitions:
            self.transitions_total += 1
            if len(self.transitions) < self.keep:
                self.transitions.append(t)
            if t.action in TRIP_ACTIONS:
                self.trips[t.rule or "?"] += 1
            if t.scope == "run":
                self.run_stops += 1
                continue
            if t.action in DOWNGRADE_ACTIONS and t.new_mode.rank < t.prev_mode.rank:
                self.downgrades += 1
                if self.first_downgrade_ts is None:
                    self.first_downgrade_ts = t.ts
            if t.new_mode != t.prev_mode:
                self.mode_changes += 1
                if t.new_mode.rank < self.lowest_mode.rank:
                    self.lowest_mode = t.new_mode
                below = t.new_mode != Mode.AUTONOMOUS
                if below and self._below_since is None:
                    self._below_since = t.ts
                elif not below and self._below_since is not None:
                    self.below_autonomous_ms += t.ts - self._below_since
                    self._below_since = None
            self.final_mode = t.new_mode

    def close(self, end_ms: int) -> None:
        if self._below_since is not None:
            self.below_autonomous_ms += max(0, end_ms - self._below_since)
            self._below_since = None

    def to_json(self) -> dict[str, Any]:
        return {
            "detections": dict(sorted(self.detections.items())),
            "trips": dict(sorted(self.trips.items())),
            "mode_changes": self.mode_changes,
            "downgrades": self.downgrades,
            "run_stops": self.run_stops,
            "lowest_mode": str(self.lowest_mode),
            "final_mode": str(self.final_mode),
            "below_autonomous_ms": self.below_autonomous_ms,
            "first_downgrade": _iso(self.first_downgrade_ts),
            "transitions_total": self.transitions_total,
            "transitions": [transition_json(t) for t in self.transitions],
        }


def transition_json(t: Transition) -> dict[str, Any]:
    return {
        "ts": _iso(t.ts), "seq": t.seq, "action": t.action, "from": str(t.prev_mode),
        "to": str(t.new_mode), "rule": t.rule, "scope": t.scope, "run_id": t.run_id,
        "reason": t.reason,
    }


@dataclass
class AgentResult:
    agent_id: str
    workflow: str | None
    first_ts: int
    last_ts: int
    events: int
    current: Outcome
    candidate: Outcome
    same_policy: bool
    """Both policies resolve to the same one for this agent: replayed once."""

    @property
    def differs(self) -> bool:
        c, n = self.current, self.candidate
        return (c.trips, c.mode_changes, c.lowest_mode, c.below_autonomous_ms) != (
            n.trips, n.mode_changes, n.lowest_mode, n.below_autonomous_ms)

    def evidence_window(self) -> tuple[int, int]:
        """Around the first downgrade either policy made, else the agent's whole window."""
        firsts = [t for t in (self.current.first_downgrade_ts,
                              self.candidate.first_downgrade_ts) if t is not None]
        if not firsts:
            return self.first_ts, self.last_ts + 1
        return min(firsts) - EVIDENCE_MARGIN_MS, max(firsts) + EVIDENCE_MARGIN_MS

    def evidence_command(self) -> str:
        lo, hi = self.evidence_window()
        return f"tripwire evidence --agent {self.agent_id} --since {lo} --until {hi}"


class Backtest:
    """Feed it each agent's events (in chunks, agents one after another); ``finish`` for
    the report. Memory: one agent's monitors plus a bounded summary per agent."""

    def __init__(
        self,
        current: Policy,
        candidate: Policy,
        *,
        scanner: Scanner | None = None,
        from_ms: int | None = None,
        to_ms: int | None = None,
        keep_transitions: int = KEPT_TRANSITIONS,
    ) -> None:
        self.keep_transitions = keep_transitions
        self.current = current
        self.candidate = candidate
        self.scanner = scanner
        self.from_ms = from_ms
        self.to_ms = to_ms
        self.results: list[AgentResult] = []
        self.events = 0
        self._agent: str | None = None
        self._monitor: AgentMonitor | None = None
        self._result: AgentResult | None = None
        self._replaced: frozenset[str] | None = None
        self._gap = 1
        self._same: dict[tuple[int, int], bool] = {}

    # --- input ------------------------------------------------------------------------

    def feed(self, agent_id: str, workflow: str | None, events: list[Event],
             ts: list[int] | None = None) -> None:
        """The next events of ``agent_id`` in event-time order (``ts``: their ``ts`` values,
        if the caller has them as a column already). A new agent closes the previous one."""
        if not events:
            return
        if ts is None:
            ts = [e["ts"] for e in events]
        if agent_id != self._agent:
            self._close_agent()
            self._open_agent(agent_id, workflow, ts[0])
        result, monitor = self._result, self._monitor
        assert result is not None and monitor is not None
        result.events += len(events)
        result.last_ts = ts[-1]
        self.events += len(events)
        i, n = 0, len(events)
        stuck: int | None = None
        gap = self._gap
        while i < n:
            due = monitor.timer_due_ms
            if due is not None and due < ts[i] and due != stuck:
                self._collect(*monitor.advance(due))
                if monitor.timer_due_ms == due:  # cannot happen; never loop on it
                    stuck = due
                continue
            # Events up to the next deadline, and no further than the earliest deadline they
            # can create themselves (a run's never-ending check), so each one is met on time.
            limit = ts[i] + gap
            if due is not None and ts[i] <= due < limit:
                limit = due
            j = bisect_right(ts, limit, i)
            self._collect(*monitor.feed_many(events[i:j]))
            i = j

    def finish(self) -> BacktestReport:
        self._close_agent()
        return BacktestReport(self.results, self.events, self.from_ms, self.to_ms)

    # --- per agent --------------------------------------------------------------------

    def _open_agent(self, agent_id: str, workflow: str | None, first_ts: int) -> None:
        current = enforced_policy(self.current.for_agent(agent_id, workflow))
        candidate = enforced_policy(self.candidate.for_agent(agent_id, workflow))
        key = (id(current), id(candidate))
        same = self._same.get(key)
        if same is None:
            same = self._same[key] = current is candidate or current == candidate
        self._gap = max(1, min(_first_timeout(p) for p in (current, candidate)))
        monitor = self._monitor = AgentMonitor(agent_id, current, self.scanner, variants=False)
        self._replaced = None
        if not same:
            variant = monitor.add_variant(CANDIDATE, candidate, share=True)
            # Detector names whose detections the candidate makes itself; None: all of them.
            self._replaced = variant.replaced if variant.monitor is None else None
        self._agent = agent_id
        outcome = Outcome(keep=self.keep_transitions)
        self._result = AgentResult(agent_id, workflow, first_ts, first_ts, 0, outcome,
                                   outcome if same else Outcome(keep=self.keep_transitions),
                                   same)

    def _collect(self, detections: list[Detection], transitions: list[Transition]) -> None:
        result, monitor = self._result, self._monitor
        assert result is not None and monitor is not None
        result.current.add(detections, transitions)
        if result.same_policy:
            return
        moved: list[Transition] = []
        own: list[Detection] = []
        for _, found, changes in monitor.take_variant_output():
            own, moved = found, changes
        replaced = self._replaced
        if replaced is not None:
            own = [d for d in detections if d.detector not in replaced] + own
        result.candidate.add(own, moved)

    def _close_agent(self) -> None:
        result, monitor = self._result, self._monitor
        if result is None or monitor is None:
            return
        end = self.to_ms if self.to_ms is not None else result.last_ts + 1
        while True:
            due = monitor.timer_due_ms
            if due is None or due >= end:
                break
            self._collect(*monitor.advance(due))
            if monitor.timer_due_ms == due:
                break
        result.current.close(end)
        if not result.same_policy:
            result.candidate.close(end)
        self.results.append(result)
        self._agent = self._monitor = self._result = None


EVENT_KEYS = frozenset({
    "event_id", "ts", "run_id", "step", "kind", "tool", "params_hash", "policy_outcome",
    "input_tokens", "output_tokens", "cost_usd", "source_trust", "injection_flagged",
    "attributes", "agent_version"})
"""Event keys the monitor reads under any policy: the loop, spend, denial-rate and injection
detectors' inputs, ``attributes`` (the inbox's and the guard's decisions) and
``agent_version`` (version containment)."""


def event_keys(*policies: Policy, scanner: Scanner | None = None) -> frozenset[str]:
    """The event keys a backtest of ``policies`` reads (with ``scanner``), for the reader to
    leave the others out: ``content`` only with a scanner, ``action_class`` only if some
    agent's enforced policy has rate caps, ``approver`` and ``approved`` only if some earns
    autonomy. Every agent and workflow override is resolved, so whichever agent shows up is
    covered."""
    keys = set(EVENT_KEYS)
    if scanner is not None:
        keys.add("content")
    for policy in policies:
        for agent in (*policy.agents, None):
            for workflow in (*policy.workflows, None):
                resolved = enforced_policy(policy.for_agent(
                    agent if agent is not None else "", workflow))
                if resolved.breaker.containment.rate_caps:
                    keys.add("action_class")
                if resolved.autonomy.earn:
                    keys.update(("approver", "approved"))
    return frozenset(keys)


def _first_timeout(policy: ResolvedPolicy) -> int:
    """The soonest a run's never-ending check can fall after the event that opens it (a late
    event, up to the grace behind, opens it that much earlier)."""
    loops = policy.loops
    return int(loops.run_timeout_ms * loops.timeout_bands[0].at) - policy.event_time.grace_ms


def replay(current: Policy, candidate: Policy, agents: Iterable[tuple[str, str | None,
           list[Event]]], **options: Any) -> BacktestReport:
    """Convenience: a whole backtest over (agent_id, workflow, events) chunks."""
    bt = Backtest(current, candidate, **options)
    for agent_id, workflow, events in agents:
        bt.feed(agent_id, workflow, events)
    return bt.finish()


def replay_one(policy: ResolvedPolicy | Policy, agent_id: str, events: list[Event],
               workflow: str | None = None, to_ms: int | None = None,
               scanner: Scanner | None = None) -> Outcome:
    """One policy, one agent's events: its outcome (for tests and the replay-set gate)."""
    whole = policy if isinstance(policy, Policy) else Policy(defaults=policy)
    bt = Backtest(whole, whole, scanner=scanner, to_ms=to_ms)
    bt.feed(agent_id, workflow, sorted(events, key=lambda e: (e["ts"], e["step"])))
    return bt.finish().agents[0].current


# --- the report ---------------------------------------------------------------------------


@dataclass
class BacktestReport:
    agents: list[AgentResult]
    events: int
    from_ms: int | None
    to_ms: int | None
    labels: tuple[str, str] = ("current", "candidate")
    elapsed_s: float | None = None

    def newly_downgraded(self) -> list[AgentResult]:
        """Agents the candidate would have downgraded and the current policy did not."""
        return [a for a in self.agents if a.candidate.downgraded and not a.current.downgraded]

    def no_longer_downgraded(self) -> list[AgentResult]:
        return [a for a in self.agents if a.current.downgraded and not a.candidate.downgraded]

    def changed(self) -> list[AgentResult]:
        return [a for a in self.agents if a.differs]

    def totals(self, side: str) -> dict[str, Any]:
        outs = [getattr(a, side) for a in self.agents]
        trips: Counter[str] = Counter()
        detections: Counter[str] = Counter()
        for o in outs:
            trips.update(o.trips)
            detections.update(o.detections)
        return {
            "agents_downgraded": sum(1 for o in outs if o.downgraded),
            "downgrades": sum(o.downgrades for o in outs),
            "run_stops": sum(o.run_stops for o in outs),
            "mode_changes": sum(o.mode_changes for o in outs),
            "below_autonomous_ms": sum(o.below_autonomous_ms for o in outs),
            "trips": dict(sorted(trips.items())),
            "detections": dict(sorted(detections.items())),
        }

    def fails(self, fail_on: str | None) -> bool:
        return fail_on == "downgrade" and bool(self.newly_downgraded())

    def to_json(self) -> dict[str, Any]:
        cur, cand = self.labels
        return {
            "window": {"from": _iso(self.from_ms), "to": _iso(self.to_ms)},
            "policies": {"current": cur, "candidate": cand},
            "events": self.events,
            "agents": len(self.agents),
            "totals": {"current": self.totals("current"), "candidate": self.totals("candidate")},
            "newly_downgraded": [a.agent_id for a in self.newly_downgraded()],
            "no_longer_downgraded": [a.agent_id for a in self.no_longer_downgraded()],
            "changed_agents": [
                {
                    "agent_id": a.agent_id,
                    "workflow": a.workflow,
                    "events": a.events,
                    "evidence": a.evidence_command(),
                    "current": a.current.to_json(),
                    "candidate": a.candidate.to_json(),
                }
                for a in self.changed()
            ],
        }

    def to_markdown(self, evidence_url: str | None = None) -> str:
        """``evidence_url``: the dashboards' base URL, to link each agent's evidence there
        (otherwise each row says which ``tripwire evidence`` command shows it)."""
        cur, cand = self.labels
        out = [f"# Backtest: `{cand}` against `{cur}`", ""]
        out.append(f"Window {_iso(self.from_ms) or 'start'} → {_iso(self.to_ms) or 'end'} · "
                   f"{self.events:,} events · {len(self.agents)} agents replayed"
                   + (f" in {self.elapsed_s:.1f} s" if self.elapsed_s else ""))
        out.append("")
        tc, tn = self.totals("current"), self.totals("candidate")
        out += ["| | current | candidate |", "|---|---:|---:|"]
        for label, key in (("agents downgraded", "agents_downgraded"),
                           ("downgrades", "downgrades"), ("run stops", "run_stops"),
                           ("mode changes", "mode_changes")):
            out.append(f"| {label} | {tc[key]} | {tn[key]} |")
        out.append(f"| time below autonomous | {_hours(tc['below_autonomous_ms'])} | "
                   f"{_hours(tn['below_autonomous_ms'])} |")
        out.append("")
        rules = sorted(set(tc["trips"]) | set(tn["trips"]))
        out += ["## Trips by rule", ""]
        if rules:
            out += ["| rule | current | candidate |", "|---|---:|---:|"]
            out += [f"| {r} | {tc['trips'].get(r, 0)} | {tn['trips'].get(r, 0)} |"
                    for r in rules]
        else:
            out.append("No trips under either policy.")
        out.append("")
        newly = self.newly_downgraded()
        out += [f"## Downgraded only under the candidate ({len(newly)})", ""]
        out += self._agent_rows(newly, evidence_url) or ["None."]
        out.append("")
        gone = self.no_longer_downgraded()
        out += [f"## Downgraded only under the current policy ({len(gone)})", ""]
        out += self._agent_rows(gone, evidence_url) or ["None."]
        out.append("")
        changed = [a for a in self.changed() if a not in newly and a not in gone]
        out += [f"## Other agents treated differently ({len(changed)})", ""]
        out += self._agent_rows(changed, evidence_url) or ["None."]
        out.append("")
        return "\n".join(out)

    @staticmethod
    def _agent_rows(agents: list[AgentResult], evidence_url: str | None) -> list[str]:
        if not agents:
            return []
        rows = ["| agent | trips (current → candidate) | lowest mode | below autonomous | "
                "first downgrade | evidence |", "|---|---|---|---|---|---|"]
        for a in agents:
            c, n = a.current, a.candidate
            lo, hi = a.evidence_window()
            link = (f"[evidence]({evidence_url.rstrip('/')}/api/evidence/agent/{a.agent_id}"
                    f"?from={lo}&to={hi}&format=markdown)"
                    if evidence_url else f"`{a.evidence_command()}`")
            first = n.first_downgrade_ts or c.first_downgrade_ts
            rows.append(
                f"| {a.agent_id} | {_rule_counts(c.trips)} → {_rule_counts(n.trips)} | "
                f"{c.lowest_mode} → {n.lowest_mode} | {_hours(c.below_autonomous_ms)} → "
                f"{_hours(n.below_autonomous_ms)} | {_iso(first) or ''} | {link} |")
        return rows


def _rule_counts(trips: Mapping[str, int]) -> str:
    return ", ".join(f"{r} {n}" for r, n in sorted(trips.items())) or "none"


def _hours(ms: int) -> str:
    return f"{ms / 3_600_000:.2f} h"


def _iso(ms: int | None) -> str | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
