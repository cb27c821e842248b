"""A database filled with a simulated fleet and what the breaker would have done about it.

For the dashboard tests, the screenshots and ``tripwire dashboard --sample``: the steps come
from :func:`simulator.fleet.fleet_events` (through the real :class:`~sinks.step_sink.StepSink`,
so the rollups fill the way they do in production), and the detections and mode changes are
derived from those steps with the built-in policy's thresholds, the way the stream worker
reports them (same tables, same shapes as ``schemas/detection.avsc`` and ``control.avsc``):

* ``denial_storm``: denial rate (of its last 20 decisions, at least 10) over 0.3 (S3,
  approve_to_act), 0.5 (S2, suggest_only), 0.8 (S1, read_only);
* ``runaway_loop``: each run's 5th identical tool call (S3, the run is stopped); the third
  stopped run escalates the agent to suggest_only;
* ``overspend``: the first run over the $5 run budget (S2, suggest_only);
* ``injection``: the first injected content read (S3, approve_to_act), the third (S2,
  suggest_only);
* ``never_ending_run``: a run silent for 30 minutes without a run_end (S3, run stopped).
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from tripwire.schemas.topics import CONTROL_ACKS
from tripwire.simulator.fleet import fleet_events, scenario_of
from tripwire.simulator.scenarios import SCENARIOS
from tripwire.sinks.clickhouse import Client
from tripwire.sinks.control_audit import RecordRef, control_ack_row, insert_rows
from tripwire.sinks.step_sink import StepSink

_NAMESPACE = uuid.UUID("8a1f3f9e-2b7c-4d1e-9f6a-3c5b7e2d1a40")
_MODE_RANK = {"halted": 0, "read_only": 1, "suggest_only": 2, "approve_to_act": 3,
              "autonomous": 4}
INSERT_BATCH = 5000


@dataclass
class SampleFleet:
    """What :func:`fill` stored: counts, and the runs and agents the story is about."""

    steps: int = 0
    detections: list[dict[str, Any]] = field(default_factory=list)
    mode_changes: list[dict[str, Any]] = field(default_factory=list)
    tripped_runs: dict[str, str] = field(default_factory=dict)
    """run_id -> agent_id of runs whose detection changed a mode or stopped the run."""

    def final_modes(self) -> dict[str, str]:
        """The agents left below autonomous, and their mode."""
        modes: dict[str, str] = {}
        for change in self.mode_changes:
            if change["scope"] == "agent":
                modes[change["agent_id"]] = change["mode"]
        return {agent: mode for agent, mode in modes.items() if mode != "autonomous"}


def fill(
    client: Client,
    *,
    end_ms: int,
    hours: float = 2.0,
    agents: int = 12,
    seed: int = 7,
    scenarios: Iterable[str] = SCENARIOS,
) -> SampleFleet:
    """Store ``hours`` of fleet traffic ending at ``end_ms``, plus the breaker's reaction."""
    start_ms = int(end_ms - hours * 3600_000)
    events: list[dict[str, Any]] = []
    for event in fleet_events(seed, agents, list(scenarios), start_ms):
        if event["ts"] >= end_ms:
            break
        events.append(event)
    sink = StepSink(client, check_stored=False)
    for i in range(0, len(events), INSERT_BATCH):
        sink.insert(events[i : i + INSERT_BATCH])
    sample = SampleFleet(steps=len(events))
    breaker = _Breaker(sample)
    breaker.react(events, end_ms)
    breaker.earned_ladder(EARNING_AGENT, start_ms)
    if sample.detections:
        client.insert("detections", [list(d.values()) for d in sample.detections],
                      column_names=list(sample.detections[0]))
    if sample.mode_changes:
        client.insert("mode_changes", [list(m.values()) for m in sample.mode_changes],
                      column_names=list(sample.mode_changes[0]))
        insert_rows(client, "control_acks", _guard_acks(sample.mode_changes))
    decisions = inbox_rows(events)
    if decisions:
        client.insert("approval_decisions", [list(r.values()) for r in decisions],
                      column_names=list(decisions[0]))
    _shadow(client, events)
    return sample


def _guard_acks(changes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each agent's guard acknowledging its mode changes a little later (40-400 ms, the spread
    bench/fleet_kill.py measures on a loaded 2-core machine), one hello before each; rows
    built as the worker builds them from the guards' records (``control_ack_row``)."""
    rows: list[dict[str, Any]] = []
    for i, change in enumerate(changes):
        guard = f"{change['agent_id']}-guard-1"
        applied = change["issued_at"] + 40 + (i * 37) % 360
        for kind in ("hello", "applied"):
            ack = {
                "applied_at": applied - 1000 if kind == "hello" else applied, "kind": kind,
                "guard_instance": guard, "agent_id": change["agent_id"],
                "control_key": change["agent_id"] if kind == "applied" else None,
                "seq": change["seq"] if kind == "applied" else None,
                "mode": change["mode"] if kind == "applied" else None, "command_id": None,
                "issued_at": change["issued_at"] if kind == "applied" else None,
            }
            ref = RecordRef(CONTROL_ACKS, 0, 2 * i + (kind == "applied"), ack["applied_at"])
            rows.append(control_ack_row(ref, ack, verified=True))
    return rows


EARNING_AGENT = "agent-011"
"""The sample agent that earns its autonomy (the safety dashboard's ladder panel)."""
_SAMPLE_REASONS = ("wrong_recipient", "too_risky", "needs_review", "wrong_data")


def inbox_rows(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``approval_decisions`` rows for the fleet's approval decisions, as if made in the inbox
    (declines get a reason from the inbox's list, picked by the event id)."""
    from datetime import UTC, datetime

    rows = []
    for e in events:
        if e["kind"] != "approval_decision":
            continue
        approved = bool(e.get("approved"))
        wait = int(e.get("wait_ms") or 0)
        rows.append({
            "decided_at": datetime.fromtimestamp(e["ts"] / 1000, UTC),
            "requested_at": datetime.fromtimestamp((e["ts"] - wait) / 1000, UTC),
            "request_id": e["event_id"], "agent_id": e["agent_id"],
            "agent_version": e.get("agent_version") or "", "workflow": e.get("workflow") or "",
            "environment": e.get("environment") or "", "run_id": e["run_id"],
            "tool": e.get("tool") or "", "action_class": e.get("action_class") or "",
            "kind": "approval", "trig": "mode.approve_to_act", "approved": int(approved),
            "approver": e.get("approver") or "", "wait_ms": wait,
            "reason_code": "" if approved else
            _SAMPLE_REASONS[int(e["event_id"][:8], 16) % len(_SAMPLE_REASONS)],
            "reason_text": "",
        })
    return rows


SAMPLE_SHADOW_POLICY = {"defaults": {"denial_rate": {"bands": [
    {"at": 0.15, "severity": "S3", "shadow": True}, {"at": 0.3, "severity": "S3"},
    {"at": 0.5, "severity": "S2"}, {"at": 0.8, "severity": "S1"}]}},
    "standing": {"rules": [{"name": "external-calls-need-human", "action_class": "external",
                            "environment": "prod", "effect": "approve", "shadow": True}]}}
"""A stricter denial-rate band and a standing rule in shadow, so the shadow panels have
something to show."""


def _shadow(client: Client, events: list[dict[str, Any]]) -> None:
    # The real monitor's shadow state machines (not a stand-in): what the stream would
    # record for this fleet under SAMPLE_SHADOW_POLICY.
    from tripwire.detectors.agent_monitor import AgentMonitor
    from tripwire.detectors.policy import Policy
    from tripwire.detectors.shadow import shadow_records
    from tripwire.detectors.standing_shadow import StandingShadow
    from tripwire.sinks.shadow_sink import insert_shadow, shadow_rows

    policy = Policy.model_validate(SAMPLE_SHADOW_POLICY)
    standing = StandingShadow(policy.standing)  # as streams/step_processor.py judges them
    by_agent: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for event in events:
        by_agent[event["agent_id"]].append(event)
    records = []
    for agent_id, mine in sorted(by_agent.items()):
        monitor = AgentMonitor(agent_id, policy.for_agent(agent_id, mine[0]["workflow"]))
        detections, transitions = monitor.feed_many(mine)
        records += shadow_records(monitor.take_variant_output(), detections, transitions)
        records += standing.judge(agent_id, mine)
    for table, rows in shadow_rows(records).items():
        insert_shadow(client, table, rows)


class _Breaker:
    """Just enough of the detectors and breaker to tell each scenario's story."""

    def __init__(self, sample: SampleFleet) -> None:
        self.sample = sample
        self.modes: dict[str, str] = defaultdict(lambda: "autonomous")
        self.seq: dict[str, int] = defaultdict(int)

    def react(self, events: list[dict[str, Any]], end_ms: int) -> None:
        by_agent: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for event in events:
            by_agent[event["agent_id"]].append(event)
        for agent_id, mine in sorted(by_agent.items()):
            scenario = scenario_of(agent_id)
            handler = getattr(self, f"_{scenario}", None) if scenario else None
            if handler is not None:
                handler(agent_id, mine, end_ms)

    # --- scenarios --------------------------------------------------------------------

    def _denial_storm(self, agent: str, events: list[dict[str, Any]], end_ms: int) -> None:
        # The denial rate over the last 20 decisions stands in for the 5-minute window.
        decisions = [e for e in events if e["kind"] == "policy_decision"]
        bands = (("S3", 0.3, "approve_to_act", "local_quality"), ("S2", 0.5, "suggest_only",
                 "repeated_or_costly"), ("S1", 0.8, "read_only", "harmful"))
        level = 0
        for i in range(10, len(decisions) + 1):
            window = decisions[max(0, i - 20) : i]
            denied = [e for e in window if e["policy_outcome"] == "denied"]
            rate = len(denied) / len(window)
            reached = max((n for n, band in enumerate(bands, 1) if rate >= band[1]), default=0)
            if reached <= level:
                continue
            level = reached
            severity, threshold, mode, rule = bands[level - 1]
            last = window[-1]
            det = self.detection(
                agent, last, "denial_rate", "denial_rate", round(rate, 3), threshold, severity,
                denied, 300_000,
                f"{len(denied)} of {len(window)} policy decisions denied within 300 s",
                run=None)
            self.change(agent, mode, last["ts"] + 5, rule, det)
            self.sample.tripped_runs[last["run_id"]] = agent
            if level == len(bands):
                return

    def _runaway_loop(self, agent: str, events: list[dict[str, Any]], end_ms: int) -> None:
        repeats: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
        stops: list[dict[str, Any]] = []
        for e in events:
            if e["kind"] != "tool_call":
                continue
            key = (e["run_id"], e["tool"], e["params_hash"])
            repeats[key].append(e)
            if len(repeats[key]) == 5:
                det = self.detection(
                    agent, e, "loop", "repeated_calls", 5, 5, "S3", repeats[key], None,
                    f"run {e['run_id']} called {e['tool']} with the same params 5 times in its "
                    "last 20 tool calls", run=e["run_id"], tool=e["tool"])
                self.stop_run(agent, e, det)
                stops.append(det)
                if len(stops) == 3:
                    self.change(agent, "suggest_only", e["ts"] + 10, "repeated_run_stops",
                                *stops, reason="3 runs stopped within 3600 s")

    def _overspend(self, agent: str, events: list[dict[str, Any]], end_ms: int) -> None:
        spent: dict[str, float] = defaultdict(float)
        cited: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for e in events:
            if not e.get("cost_usd"):
                continue
            spent[e["run_id"]] += e["cost_usd"]
            cited[e["run_id"]].append(e)
            if spent[e["run_id"]] > 5.0:
                det = self.detection(
                    agent, e, "spend", "run_cost_usd", round(spent[e["run_id"]], 2), 5.0, "S2",
                    cited[e["run_id"]], None,
                    f"run {e['run_id']} has spent ${spent[e['run_id']]:,.2f}, over $5.00",
                    run=e["run_id"])
                self.change(agent, "suggest_only", e["ts"] + 5, "repeated_or_costly", det)
                self.sample.tripped_runs[e["run_id"]] = agent
                return

    def _injection(self, agent: str, events: list[dict[str, Any]], end_ms: int) -> None:
        hits = [e for e in events if e["kind"] == "tool_call" and e.get("content")
                and e.get("source_trust") in ("external", "partner")]
        for count, severity, mode, rule in ((1, "S3", "approve_to_act", "local_quality"),
                                            (3, "S2", "suggest_only", "repeated_or_costly")):
            if len(hits) < count:
                return
            e = hits[count - 1]
            det = self.detection(
                agent, e, "injection", "injection_hits", count, count, severity,
                hits[:count], 600_000,
                f"{count} prompt-injection hits within 600 s; latest from "
                f"{e['source_trust']} content in a tool_call step via tool {e['tool']}",
                run=None)
            self.change(agent, mode, e["ts"] + 5, rule, det)
            self.sample.tripped_runs[e["run_id"]] = agent

    def _never_ending_run(self, agent: str, events: list[dict[str, Any]], end_ms: int) -> None:
        runs: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for e in events:
            runs[e["run_id"]].append(e)
        for run_id, steps in runs.items():
            due = steps[0]["ts"] + 1_800_000
            if any(s["kind"] == "run_end" for s in steps) or due >= end_ms:
                continue
            det = self.detection(
                agent, steps[-1], "loop", "run_age_ms", 1_800_000, 1_800_000, "S3",
                steps[-20:], None,
                f"run {run_id} has not ended 30 min after it started", run=run_id, ts=due)
            self.stop_run(agent, {**steps[-1], "ts": due}, det)
            return

    # --- records ----------------------------------------------------------------------

    def detection(
        self, agent: str, at: dict[str, Any], detector: str, metric: str, value: float,
        threshold: float, severity: str, evidence: list[dict[str, Any]],
        window_ms: int | None, message: str, *, run: str | None, tool: str | None = None,
        ts: int | None = None,
    ) -> dict[str, Any]:
        when = ts if ts is not None else at["ts"]
        det = {
            "detection_id": uuid.uuid5(_NAMESPACE, f"{agent}/{detector}/{metric}/{when}"),
            "ts": when,
            "agent_id": agent,
            "run_id": run or "",
            "tool": tool or "",
            "detector": detector,
            "metric": metric,
            "value": float(value),
            "threshold": float(threshold),
            "window_ms": window_ms,
            "severity": severity,
            "evidence_event_ids": [e["event_id"] for e in evidence[-20:]],
            "message": message,
        }
        self.sample.detections.append(det)
        return det

    def change(self, agent: str, mode: str, ts: int, rule: str, *dets: dict[str, Any],
               reason: str | None = None) -> None:
        previous = self.modes[agent]
        if _MODE_RANK[mode] >= _MODE_RANK[previous]:
            return  # a trip only ever lowers the mode
        self.modes[agent] = mode
        self.record(agent, mode, previous, "agent", "", ts, rule, dets,
                    reason or f"{dets[-1]['detector']}: {dets[-1]['message']}")

    def earned_ladder(self, agent: str, start_ms: int) -> None:
        """A new integration that started in shadow and earned its way up (autonomy.*)."""
        nxt = "after 50 more decision(s) at >= 95 % agreement, no trip"
        steps = (
            ("suggest_only", "autonomous", "autonomy.start",
             f"new agent starts at suggest_only (ceiling autonomous); next: approve_to_act {nxt}"),
            ("approve_to_act", "suggest_only", "autonomy.promote",
             "earned approve_to_act: 52 of 53 human decisions agreed (98.1 %) over 7 d, "
             f"policy-denial rate 1.2 % of 84, 0 trip(s); next: autonomous {nxt}"),
            ("autonomous", "approve_to_act", "autonomy.promote",
             "earned autonomous: 50 of 51 human decisions agreed (98.0 %) over 7 d, "
             "policy-denial rate 0.0 % of 61, 0 trip(s); next: at its ceiling autonomous"),
        )
        for i, (mode, previous, rule, reason) in enumerate(steps):
            self.modes[agent] = mode
            self.record(agent, mode, previous, "agent", "", start_ms + (5 + 40 * i) * 60_000,
                        rule, (), reason)

    def stop_run(self, agent: str, at: dict[str, Any], det: dict[str, Any]) -> None:
        self.record(agent, "halted", self.modes[agent], "run", at["run_id"], at["ts"] + 5,
                    "runaway_run", (det,), f"{det['detector']}: {det['message']}")
        self.sample.tripped_runs[at["run_id"]] = agent

    def record(self, agent: str, mode: str, previous: str, scope: str, run_id: str, ts: int,
               rule: str, dets: tuple[dict[str, Any], ...], reason: str) -> None:
        self.seq[agent] += 1
        self.sample.mode_changes.append({
            "agent_id": agent,
            "seq": self.seq[agent],
            "issued_at": ts,
            "mode": mode,
            "previous_mode": previous,
            "scope": scope,
            "run_id": run_id,
            "reason": reason,
            "detection_ids": [str(d["detection_id"]) for d in dets],
            "rule": rule,
            "expires_at": None,
            "source": "breaker",
        })
