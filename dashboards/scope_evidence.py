"""Evidence for any scope and window: the last minutes before a kill, for the responder.

``tripwire evidence --scope "workflow=refunds" --since -5m`` (or the fleet: ``--scope fleet``)
answers the runbooks' first questions from the raw ``steps`` rows:

* what ran with a side effect, grouped by how it is undone: **irreversible** (must be undone
  by hand or cannot be: money moved, data deleted, mail sent), **compensable** (a compensating
  action exists: update back, cancel, refund), **reversible** (nothing to undo). A tool's
  class comes from the policy's ``standing.reversibility`` map, else from its action class
  (destructive and money irreversible, write and external compensable, read reversible);
* what changed just before: agent versions, models and policy versions (the
  ``policy_version`` step attribute, when agents send it) seen in the window and a lookback
  before it, each with when it first and last appeared and whether it appeared mid-way
  (a canary rolled out, a model switched);
* the mode changes (controls) in the window: what Tripwire and operators already did.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from tripwire.dashboards.evidence import (
    SIDE_EFFECT_CLASSES,
    epoch_ms,
    time_text,
    utc_datetime,
)
from tripwire.dashboards.runner import json_value, run_query
from tripwire.detectors.standing_rules import StandingPolicy
from tripwire.sdk.scopes import CallContext, Scope
from tripwire.sinks.clickhouse import Client

__all__ = ["ScopeEvidence", "scope_evidence"]

REVERSIBILITY_ORDER = ("irreversible", "compensable", "reversible")
LOOKBACK_MS = 15 * 60_000
"""How far before the window "what changed" looks: long enough to see a rollout that
started a little before the symptoms, short enough to stay about this incident."""


@dataclass
class ScopeEvidence:
    scope: Scope
    from_ms: int
    to_ms: int
    steps: list[dict[str, Any]]
    side_effects: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    changes: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    mode_changes: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {
            "scope": self.scope.key(),
            "since": utc_datetime(self.from_ms),
            "until": utc_datetime(self.to_ms),
            "agents": sorted({s["agent_id"] for s in self.steps}),
            "steps": len(self.steps),
            "side_effects": {k: len(v) for k, v in self.side_effects.items()},
            "side_effects_by_tool": {
                k: dict(Counter(s["tool"] for s in v)) for k, v in self.side_effects.items()},
        }

    def to_json(self) -> dict[str, Any]:
        return json_value({
            "kind": "scope",
            "summary": self.summary(),
            "side_effects": self.side_effects,
            "changes_before": self.changes,
            "mode_changes": self.mode_changes,
            "steps": self.steps,
        })

    def to_markdown(self) -> str:
        s = self.summary()
        out = [f"# Incident evidence: scope `{s['scope']}` {time_text(s['since'])} → "
               f"{time_text(s['until'])} UTC", "",
               f"{s['steps']} steps by {len(s['agents'])} agent(s): "
               f"{', '.join(s['agents'][:20])}{' …' if len(s['agents']) > 20 else ''}", ""]
        out += ["## Side effects that ran, by how they are undone", ""]
        for kind in REVERSIBILITY_ORDER:
            rows = self.side_effects.get(kind, [])
            out += _table_section(
                f"{kind} ({len(rows)})", "None.",
                ["time", "agent", "run", "tool", "class", "status", "params_hash"],
                [[time_text(r["ts"]), r["agent_id"], r["run_id"][:8], r["tool"],
                  r["action_class"], r["status"], r["params_hash"][:12]] for r in rows])
        out += ["## What changed just before", ""]
        for what, rows in self.changes.items():
            out += _table_section(
                what, "None seen.",
                ["value", "first seen", "last seen", "steps", "agents", "appeared mid-way"],
                [[r["value"], time_text(r["first_seen"]), time_text(r["last_seen"]), r["steps"],
                  r["agents"], "yes" if r["appeared"] else ""] for r in rows])
        out += [f"## Mode changes ({len(self.mode_changes)})", ""]
        if self.mode_changes:
            out += ["| time | agent | scope | from | to | rule | reason |",
                    "|---|---|---|---|---|---|---|"]
            out += [f"| {time_text(m['issued_at'])} | {m['agent_id']} | {m['scope']} | "
                    f"{m['previous_mode']} | {m['mode']} | {m['rule']} | {m['reason']} |"
                    for m in self.mode_changes]
        else:
            out.append("None.")
        return "\n".join(out) + "\n"


def _table_section(title: str, empty: str, header: list[str], rows: list[list[Any]]) -> list[str]:
    """One ``###`` section of the Markdown: a table of ``rows``, or ``empty`` if none. Cells
    go in as they are (these reports never escaped them; kept so the output is unchanged)."""
    out = [f"### {title}", ""]
    if not rows:
        return out + [empty, ""]
    out += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return out + [""]


def scope_evidence(
    client: Client,
    scope: Scope,
    from_ms: int,
    to_ms: int,
    standing: StandingPolicy | None = None,
    lookback_ms: int = LOOKBACK_MS,
) -> ScopeEvidence:
    """Steps of ``scope`` in [from_ms, to_ms), side effects by reversibility, and what changed
    in the lookback before the window and in it."""
    if to_ms <= from_ms:
        raise ValueError("--until must be after --since")
    standing = standing or StandingPolicy()
    wide = _steps(client, scope, from_ms - lookback_ms, to_ms)
    steps = [s for s in wide if epoch_ms(s["ts"]) >= from_ms]
    ev = ScopeEvidence(scope, from_ms, to_ms, steps)
    for s in steps:
        if s["kind"] == "tool_call" and s["action_class"] in SIDE_EFFECT_CLASSES:
            kind = standing.reversibility_of(s["tool"], s["action_class"])
            ev.side_effects.setdefault(kind, []).append(s)
    ev.changes = {
        "agent versions": _seen(wide, lambda s: s["agent_version"]),
        "models": _seen(wide, lambda s: s["model"]),
        "policy versions": _seen(wide, lambda s: (s["attributes"] or {}).get("policy_version")),
    }
    agents = sorted({s["agent_id"] for s in wide})
    if agents:
        ev.mode_changes = run_query(client, "evidence_scope_mode_changes", {
            "agents": agents, "from_ms": from_ms - lookback_ms, "to_ms": to_ms}).records()
    return ev


def _steps(client: Client, scope: Scope, from_ms: int, to_ms: int) -> list[dict[str, Any]]:
    def one(value: str | None) -> list[str]:
        return [value] if value else []

    rows = run_query(client, "evidence_scope_steps", {
        "from_ms": from_ms, "to_ms": to_ms, "agents": one(scope.agent_id),
        "versions": one(scope.agent_version), "workflows": one(scope.workflow),
        "environments": one(scope.environment), "action_classes": one(scope.action_class),
    }).records()
    if scope.tool is None:
        return rows
    probe = Scope(tool=scope.tool)
    return [r for r in rows
            if probe.matches(CallContext(agent_id=r["agent_id"], tool=r["tool"] or None))]


def _seen(steps: list[dict[str, Any]], value_of: Any) -> list[dict[str, Any]]:
    first: dict[str, dict[str, Any]] = {}
    start = epoch_ms(steps[0]["ts"]) if steps else 0
    for s in steps:
        value = value_of(s)
        if not value:
            continue
        row = first.setdefault(value, {"value": value, "first_seen": s["ts"], "steps": 0,
                                       "agent_set": set()})
        row["last_seen"] = s["ts"]
        row["steps"] += 1
        row["agent_set"].add(s["agent_id"])
    out = []
    for row in sorted(first.values(), key=lambda r: r["first_seen"]):
        agents = row.pop("agent_set")
        row["agents"] = len(agents)
        # Appeared after the scope was already running: a rollout or switch, not a constant.
        row["appeared"] = epoch_ms(row["first_seen"]) > start
        out.append(row)
    return out
