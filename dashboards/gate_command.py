"""``tripwire gate``: compare two agent versions' records on the same window.

    tripwire gate --agent A | --workflow W --candidate 2.5.0 --baseline 2.4.1 [--window 24h]
                  [--from T --to T] [--policy FILE] [--format md|json]

Exit status: 0 pass, 1 the candidate is worse (a judged metric failed), 3 not enough data
for any judgement (a canary too small to judge yet), 2 bad usage or input. Thresholds: the
``release_gate`` section of the policy file (``detectors/release_gate.py``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from tripwire.dashboards.commands import _dsn, add_clickhouse_arguments

DEFAULT_WINDOW = "24h"
EXIT = {"pass": 0, "fail": 1, "insufficient": 3}


def add_gate_parser(sub: Any) -> None:
    g = sub.add_parser(
        "gate", help="release gate: compare a candidate agent version with a baseline",
        description="Compares the two versions' policy-denial rate, trips per run by "
        "detector, task success, cost per completed task, steps per run and approval "
        "decline rate on the same window, each with a confidence interval; exit 1 if the "
        "candidate is worse beyond the policy's tolerances, 3 if there is too little data.")
    scope = g.add_mutually_exclusive_group(required=True)
    scope.add_argument("--agent", help="the agent both versions ran as")
    scope.add_argument("--workflow", help="every agent of this workflow")
    g.add_argument("--candidate", required=True, help="agent_version under test")
    g.add_argument("--baseline", required=True, help="agent_version to compare against")
    g.add_argument("--window", help=f"window ending now (default {DEFAULT_WINDOW})")
    g.add_argument("--from", dest="from_", help="window start, ISO-8601 or epoch ms")
    g.add_argument("--to", help="window end (exclusive), default now")
    g.add_argument("--policy", type=Path,
                   help="policy file with release_gate thresholds (default: "
                   "TRIPWIRE_POLICY_FILE, else built-in)")
    g.add_argument("--format", choices=("md", "markdown", "json"), default="md")
    g.add_argument("--output", "-o", type=Path, help="write the report here, not stdout")
    add_clickhouse_arguments(g)
    g.set_defaults(handler=gate_command)


def gate_command(args: argparse.Namespace) -> int:
    from tripwire.dashboards.change_commands import window
    from tripwire.detectors.policy import Policy, load_policy_file
    from tripwire.detectors.release_gate import compare
    from tripwire.sinks.clickhouse import connect, reach_failure, read_failure
    from tripwire.streams.cli import load_settings

    args.since = args.window
    try:
        from_ms, to_ms = window(args, DEFAULT_WINDOW)
        path = args.policy if args.policy is not None else load_settings().policy_file
        policy = load_policy_file(path) if path is not None else Policy()
    except (ValueError, OSError) as exc:
        print(f"tripwire gate: {exc}", file=sys.stderr)
        return 2
    dsn, _ = _dsn(args)
    try:
        client = connect(dsn)
    except Exception as exc:  # noqa: BLE001 - one line, no traceback
        print(f"tripwire gate: {reach_failure(dsn, exc)}", file=sys.stderr)
        return 2
    try:
        records = version_records(client, from_ms, to_ms, args.agent, args.workflow,
                                  (args.baseline, args.candidate))
    except Exception as exc:  # noqa: BLE001 - e.g. no tables yet
        print(f"tripwire gate: {read_failure(dsn, exc)}", file=sys.stderr)
        return 2
    finally:
        client.close()
    scope = f"agent `{args.agent}`" if args.agent else f"workflow `{args.workflow}`"
    report = compare(records[args.baseline], records[args.candidate], policy.release_gate,
                     scope, (from_ms, to_ms))
    text = (json.dumps(report.to_json(), indent=2) + "\n" if args.format == "json"
            else report.to_markdown())
    if args.output:
        args.output.write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return EXIT[report.verdict]


def version_records(client: Any, from_ms: int, to_ms: int, agent: str | None,
                    workflow: str | None, versions: tuple[str, ...]) -> dict[str, Any]:
    """A :class:`~detectors.release_gate.VersionRecord` per version (empty if it has none)."""
    from tripwire.dashboards.runner import run_query
    from tripwire.detectors.release_gate import VersionRecord

    values = {"from_ms": from_ms, "to_ms": to_ms, "agents": [agent] if agent else [],
              "workflows": [workflow] if workflow else [], "environments": []}
    out = {v: VersionRecord(v) for v in versions}
    for row in run_query(client, "release_gate_decisions", values).records():
        rec = out.get(row["version"])
        if rec is not None:
            rec.decisions, rec.denied = int(row["decisions"]), int(row["denied"])
            rec.approvals, rec.declined = int(row["approvals"]), int(row["declined"])
    for row in run_query(client, "release_gate_runs", values).records():
        rec = out.get(row["version"])
        if rec is not None:
            rec.run_cost.append(float(row["cost_usd"]))
            rec.run_steps.append(float(row["steps"]))
            rec.run_success.append(float(row["succeeded"]))
    for row in run_query(client, "release_gate_trips", values).records():
        rec = out.get(row["version"])
        if rec is not None:
            rec.trips[row["detector"]] = int(row["trips"])
    return out
