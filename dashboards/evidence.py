"""Incident evidence: the blast radius of one run, or of one agent over a time range.

What an incident owner needs in the first ten minutes, read from the raw ``steps`` rows
(not the rollups, so it matches what is stored exactly): every step in order, which
tool calls actually ran with a side effect (write, external, money, destructive), what
policy blocked, who approved what and after how long, the cost, and the detections and
mode changes around it, with the agent version and workflow. As JSON for tools
(:meth:`Evidence.to_json`) and Markdown for people (:meth:`Evidence.to_markdown`).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from tripwire.dashboards.runner import json_value, run_query
from tripwire.sinks.clickhouse import Client

SIDE_EFFECT_CLASSES = ("write", "external", "money", "destructive")
BLOCKING_OUTCOMES = ("denied", "escalated")
CONTENT_PREVIEW = 80


class EvidenceNotFound(LookupError):
    pass


@dataclass
class Evidence:
    kind: str  # "run" or "agent"
    scope: dict[str, Any]
    steps: list[dict[str, Any]]
    detections: list[dict[str, Any]] = field(default_factory=list)
    mode_changes: list[dict[str, Any]] = field(default_factory=list)
    operator_commands: list[dict[str, Any]] | None = None

    # --- what happened ------------------------------------------------------------------

    def side_effects(self) -> list[dict[str, Any]]:
        """Tool calls that ran with a side effect, each with the approval that let it run."""
        approvals: dict[tuple[str, str], dict[str, Any]] = {}
        out = []
        for s in self.steps:
            if s["kind"] == "approval_decision":
                approvals[(s["run_id"], s["tool"])] = s
            elif s["kind"] == "tool_call" and s["action_class"] in SIDE_EFFECT_CLASSES:
                approval = approvals.pop((s["run_id"], s["tool"]), None)
                out.append({**s, "approved_by": approval["approver"] if approval else None,
                            "approval_wait_ms": approval["wait_ms"] if approval else None})
        return out

    def blocked_actions(self) -> list[dict[str, Any]]:
        return [
            s for s in self.steps
            if (s["kind"] == "policy_decision" and s["policy_outcome"] in BLOCKING_OUTCOMES)
            or (s["kind"] == "approval_decision" and s["approved"] is False)
        ]

    def approvals(self) -> list[dict[str, Any]]:
        return [s for s in self.steps if s["kind"] in ("approval_request", "approval_decision")]

    def summary(self) -> dict[str, Any]:
        steps = self.steps
        decisions = [s for s in steps if s["kind"] == "approval_decision"]
        waits = [s["wait_ms"] for s in decisions if s["wait_ms"] is not None]
        runs = Counter(s["run_id"] for s in steps)
        outcomes = {s["run_id"]: s["outcome"] for s in steps if s["kind"] == "run_end"}
        return {
            "agents": _distinct(steps, "agent_id"),
            "agent_versions": _distinct(steps, "agent_version"),
            "workflows": _distinct(steps, "workflow"),
            "environments": _distinct(steps, "environment"),
            "owners": _distinct(steps, "owner"),
            "first_ts": steps[0]["ts"] if steps else None,
            "last_ts": steps[-1]["ts"] if steps else None,
            "runs": len(runs),
            "run_outcomes": dict(Counter(outcomes.get(r, "open") for r in runs)),
            "steps": len(steps),
            "steps_by_kind": dict(Counter(s["kind"] for s in steps)),
            "tool_calls_by_class": dict(
                Counter(s["action_class"] for s in steps if s["kind"] == "tool_call")
            ),
            "side_effects_by_class": dict(
                Counter(s["action_class"] for s in self.side_effects())
            ),
            "policy_outcomes": dict(
                Counter(s["policy_outcome"] for s in steps if s["kind"] == "policy_decision")
            ),
            "approvals_requested": sum(1 for s in steps if s["kind"] == "approval_request"),
            "approvals_granted": sum(1 for s in decisions if s["approved"] is True),
            "approvals_rejected": sum(1 for s in decisions if s["approved"] is False),
            "approval_wait_ms_avg": round(sum(waits) / len(waits)) if waits else None,
            "approval_wait_ms_max": max(waits) if waits else None,
            "cost_usd": round(sum(s["cost_usd"] for s in steps), 6),
            "input_tokens": sum(s["input_tokens"] for s in steps),
            "output_tokens": sum(s["output_tokens"] for s in steps),
            "tool_errors": sum(1 for s in steps
                               if s["kind"] == "tool_call" and s["status"] in ("error", "timeout")),
            "injection_flagged": sum(1 for s in steps if s["injection_flagged"]),
            "detections_by_severity": dict(Counter(d["severity"] for d in self.detections)),
            "mode_changes": len(self.mode_changes),
        }

    # --- renderings ---------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        return json_value({
            "kind": self.kind,
            "scope": self.scope,
            "summary": self.summary(),
            "side_effects": self.side_effects(),
            "blocked_actions": self.blocked_actions(),
            "approvals": self.approvals(),
            "detections": self.detections,
            "mode_changes": self.mode_changes,
            "operator_commands": self.operator_commands,
            "steps": self.steps,
        })

    def to_markdown(self) -> str:
        return _Markdown(self).render()


def run_evidence(client: Client, run_id: str) -> Evidence:
    """Everything about one run; EvidenceNotFound if no step of it is stored."""
    steps = _run_steps(client, run_id)
    if not steps:
        raise EvidenceNotFound(f"no steps stored for run {run_id!r}")
    agent = steps[0]["agent_id"]
    lo, hi = epoch_ms(min(s["ts"] for s in steps)), epoch_ms(max(s["ts"] for s in steps)) + 1
    ev = Evidence("run", {"run_id": run_id, "agent_id": agent}, steps)
    _add_context(client, ev, agent, lo, hi, run_id)
    return ev


def _run_steps(client: Client, run_id: str) -> list[dict[str, Any]]:
    located = run_query(client, "evidence_run_locate", {"run_id": run_id}).records()
    if located:
        where = located[0]
        steps = run_query(client, "evidence_run_steps_located", {
            "run_id": run_id, "agent": where["agent_id"],
            "from_ms": epoch_ms(where["first_ts"]), "to_ms": epoch_ms(where["last_ts"]),
        }).records()
        # The rollup only knows steps stored after it was created: if it does not account
        # for them all, read the run the slow, complete way.
        if len(steps) == where["steps"]:
            return steps
    return run_query(client, "evidence_run_steps", {"run_id": run_id}).records()


def agent_evidence(client: Client, agent_id: str, from_ms: int, to_ms: int) -> Evidence:
    """Everything one agent did between two instants (epoch ms, end exclusive)."""
    if to_ms <= from_ms:
        raise ValueError("--until must be after --since")
    steps = run_query(client, "evidence_agent_steps",
                      {"agent": agent_id, "from_ms": from_ms, "to_ms": to_ms}).records()
    scope = {"agent_id": agent_id, "since": utc_datetime(from_ms), "until": utc_datetime(to_ms)}
    ev = Evidence("agent", scope, steps)
    _add_context(client, ev, agent_id, from_ms, to_ms, "")
    return ev


def _add_context(client: Client, ev: Evidence, agent: str, lo: int, hi: int, run_id: str) -> None:
    window = {"agent": agent, "from_ms": lo, "to_ms": hi, "run_id": run_id}
    # Only a run's own event ids: for an agent window the time range already covers them.
    event_ids = [s["event_id"] for s in ev.steps] if run_id else []
    ev.detections = run_query(client, "evidence_detections",
                              {**window, "event_ids": event_ids}).records()
    ids = [d["detection_id"] for d in ev.detections]
    ev.mode_changes = run_query(client, "evidence_mode_changes",
                                {**window, "detection_ids": ids}).records()
    commands = run_query(client, "evidence_operator_commands", window)
    ev.operator_commands = None if commands.notes else commands.records()


def _distinct(steps: list[dict[str, Any]], key: str) -> list[str]:
    return sorted({s[key] for s in steps if s[key]})


def epoch_ms(ts: datetime) -> int:
    """Epoch milliseconds of a ClickHouse DateTime64 (naive ones are UTC)."""
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    return int(ts.timestamp() * 1000)


def utc_datetime(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def time_text(ts: Any) -> str:
    """A timestamp as the evidence reports print it: UTC to the millisecond."""
    if not isinstance(ts, datetime):
        return "" if ts is None else str(ts)
    return ts.strftime("%Y-%m-%d %H:%M:%S.") + f"{ts.microsecond // 1000:03d}"


def _cell(value: Any) -> str:
    text = "" if value is None else str(value)
    return text.replace("|", "\\|").replace("\n", " ").replace("\r", " ")


def _counts(counter: dict[str, int]) -> str:
    return ", ".join(f"{k or '(none)'} {v}" for k, v in sorted(counter.items())) or "none"


class _Markdown:
    def __init__(self, ev: Evidence) -> None:
        self.ev = ev
        self.out: list[str] = []

    def render(self) -> str:
        ev, s = self.ev, self.ev.summary()
        if ev.kind == "run":
            self.line(f"# Incident evidence: run `{ev.scope['run_id']}`")
        else:
            self.line(f"# Incident evidence: agent `{ev.scope['agent_id']}` "
                      f"{time_text(ev.scope['since'])} → {time_text(ev.scope['until'])} UTC")
        self.line("")
        self.line(f"Agent **{', '.join(s['agents']) or ev.scope.get('agent_id')}** · version "
                  f"{', '.join(s['agent_versions']) or '?'} · workflow "
                  f"**{', '.join(s['workflows']) or '?'}** · owner {', '.join(s['owners']) or '?'}"
                  f" · environment {', '.join(s['environments']) or '?'}")
        self.line("")
        self.summary_table(s)
        self.side_effects()
        self.blocked()
        self.detections()
        self.mode_changes()
        self.operator_commands()
        self.all_steps()
        return "\n".join(self.out) + "\n"

    def line(self, text: str) -> None:
        self.out.append(text)

    def table(self, header: list[str], rows: list[list[Any]]) -> None:
        self.line("| " + " | ".join(header) + " |")
        self.line("|" + "---|" * len(header))
        for row in rows:
            self.line("| " + " | ".join(_cell(v) for v in row) + " |")
        self.line("")

    def summary_table(self, s: dict[str, Any]) -> None:
        self.line("## Summary")
        self.line("")
        wait = (f", waited avg {s['approval_wait_ms_avg'] / 1000:.1f} s, max "
                f"{s['approval_wait_ms_max'] / 1000:.1f} s" if s["approval_wait_ms_avg"] is not None
                else "")
        modes = " → ".join([self.ev.mode_changes[0]["previous_mode"]]
                           + [m["mode"] if m["scope"] == "agent" else f"(run {m['mode']})"
                              for m in self.ev.mode_changes]) if self.ev.mode_changes else "none"
        self.table(["", ""], [
            ["Time (UTC)", f"{time_text(s['first_ts'])} → {time_text(s['last_ts'])}"],
            ["Runs", f"{s['runs']} ({_counts(s['run_outcomes'])})"],
            ["Steps", f"{s['steps']} ({_counts(s['steps_by_kind'])})"],
            ["Tool calls that ran", _counts(s["tool_calls_by_class"])],
            ["**Side effects that ran**",
             f"**{sum(s['side_effects_by_class'].values())}** "
             f"({_counts(s['side_effects_by_class'])})"],
            ["Policy decisions", _counts(s["policy_outcomes"])],
            ["Approvals", f"{s['approvals_requested']} requested, {s['approvals_granted']} "
                          f"granted, {s['approvals_rejected']} rejected{wait}"],
            ["Cost", f"${s['cost_usd']:,.4f} ({s['input_tokens']:,} input + "
                     f"{s['output_tokens']:,} output tokens)"],
            ["Tool errors", s["tool_errors"]],
            ["Injection flagged by the agent", s["injection_flagged"]],
            ["Detections", _counts(s["detections_by_severity"])],
            ["Mode changes", modes],
        ])

    def side_effects(self) -> None:
        rows = self.ev.side_effects()
        self.line(f"## Side effects that ran ({len(rows)})")
        self.line("")
        if not rows:
            self.line("No write, external, money or destructive tool call ran.")
            self.line("")
            return
        self.table(
            ["time", "run", "step", "tool", "class", "status", "approved by", "params_hash",
             "event_id"],
            [[time_text(r["ts"]), r["run_id"][:8], r["step"], r["tool"], r["action_class"],
              r["status"], r["approved_by"] or "", r["params_hash"][:12], r["event_id"]]
             for r in rows],
        )

    def blocked(self) -> None:
        rows = self.ev.blocked_actions()
        self.line(f"## Blocked actions ({len(rows)})")
        self.line("")
        if not rows:
            self.line("Nothing was blocked.")
            self.line("")
            return
        self.table(
            ["time", "run", "step", "tool", "class", "blocked by"],
            [[time_text(r["ts"]), r["run_id"][:8], r["step"], r["tool"], r["action_class"],
              f"policy {r['policy_outcome']} ({r['policy_rule']})"
              if r["kind"] == "policy_decision" else f"approver {r['approver']} rejected"]
             for r in rows],
        )

    def detections(self) -> None:
        rows = self.ev.detections
        self.line(f"## Detections ({len(rows)})")
        self.line("")
        if rows:
            self.table(
                ["time", "severity", "detector", "metric", "value", "threshold", "message",
                 "detection_id"],
                [[time_text(d["ts"]), d["severity"], d["detector"], d["metric"], f"{d['value']:g}",
                  f"{d['threshold']:g}", d["message"], d["detection_id"]] for d in rows],
            )
        else:
            self.line("None.")
            self.line("")

    def mode_changes(self) -> None:
        rows = self.ev.mode_changes
        self.line(f"## Mode changes ({len(rows)})")
        self.line("")
        if rows:
            self.table(
                ["time", "seq", "scope", "from", "to", "rule", "source", "reason"],
                [[time_text(m["issued_at"]), m["seq"],
                  m["scope"] + (f" {m['run_id'][:8]}" if m["run_id"] else ""),
                  m["previous_mode"], m["mode"], m["rule"], m["source"], m["reason"]]
                 for m in rows],
            )
        else:
            self.line("None.")
            self.line("")

    def operator_commands(self) -> None:
        rows = self.ev.operator_commands
        if rows is None:
            return
        self.line(f"## Operator commands ({len(rows)})")
        self.line("")
        if rows:
            self.table(
                ["received", "operator", "action", "mode", "outcome", "reason"],
                [[time_text(c["received_at"]), c["operator"], c["action"], c["mode"],
                  c["outcome"] + (f" ({c['reject_reason']})" if c["reject_reason"] else ""),
                  c["reason"]] for c in rows],
            )
        else:
            self.line("None.")
            self.line("")

    def all_steps(self) -> None:
        self.line(f"## Every step ({len(self.ev.steps)})")
        self.line("")
        self.table(
            ["time", "run", "step", "kind", "tool", "class", "policy", "status", "cost",
             "latency ms", "detail"],
            [[time_text(s["ts"]), s["run_id"][:8], s["step"], s["kind"], s["tool"],
              s["action_class"], _policy(s), s["status"] or s["outcome"],
              f"{s['cost_usd']:.4f}" if s["cost_usd"] else "",
              "" if s["latency_ms"] is None else s["latency_ms"], _detail(s)]
             for s in self.ev.steps],
        )


def _policy(s: dict[str, Any]) -> str:
    if s["kind"] == "policy_decision":
        return f"{s['policy_outcome']} ({s['policy_rule']})"
    if s["kind"] == "approval_decision":
        verdict = "approved" if s["approved"] else "rejected"
        return f"{verdict} by {s['approver']} after {(s['wait_ms'] or 0) / 1000:.1f} s"
    return ""


def _detail(s: dict[str, Any]) -> str:
    parts = []
    if s["model"]:
        parts.append(f"{s['model']} {s['input_tokens']}+{s['output_tokens']} tok")
    if s["injection_flagged"]:
        parts.append("INJECTION FLAGGED")
    if s["content"]:
        text = s["content"].replace("\n", " ")
        parts.append(repr(text[:CONTENT_PREVIEW] + ("…" if len(text) > CONTENT_PREVIEW else "")))
    return "; ".join(parts)
