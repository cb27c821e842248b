"""``tripwire evidence`` and ``tripwire dashboard`` (listed in streams.cli.COMMAND_MODULES).

* ``tripwire evidence RUN_ID`` / ``tripwire evidence --agent A --since T --until T``: the
  incident evidence as Markdown (default) or ``--format json``.
* ``tripwire dashboard``: serve the dashboards against an external ClickHouse (or an
  embedded dir no other process holds); ``tripwire run`` serves them itself.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tripwire.dashboards.evidence import Evidence
    from tripwire.dashboards.scope_evidence import ScopeEvidence

DEFAULT_PORT = 8080


def add_parsers(sub: Any) -> None:
    ev = sub.add_parser(
        "evidence", help="incident evidence for a run, or an agent over a time range",
        description="Every step in order, the side effects that ran, policy outcomes, "
        "approvals, cost, detections and mode changes: what an incident owner needs first.")
    ev.add_argument("run_id", nargs="?", help="the run to report on")
    ev.add_argument("--agent", help="report on this agent instead of a run")
    ev.add_argument("--since",
                    help="with --agent or --scope: start, ISO-8601 (UTC if no offset), epoch "
                    "ms, or that long ago: 10m, 6h, 7d")
    ev.add_argument("--until", help="with --agent: end (exclusive); default now")
    ev.add_argument("--scope", help="report on a scope instead: fleet, or e.g. "
                    "'workflow=refunds;tool=payments.*' (agent, version, environment, "
                    "workflow, tool, action_class), with --since")
    ev.add_argument("--format", choices=("markdown", "json"), default="markdown")
    ev.add_argument("--output", "-o", type=Path, help="write to this file instead of stdout")
    ev.add_argument("--export", type=Path, metavar="REPLAY.jsonl",
                    help="also write the steps as a replay set (JSON lines in the contract's "
                    "shape) for `tripwire backtest --replay` and tests")
    add_clickhouse_arguments(ev)
    ev.set_defaults(handler=evidence_command)

    dash = sub.add_parser(
        "dashboard", help="serve the safety and business dashboards against a ClickHouse",
        description="Serves the dashboards and the evidence view on HOST:PORT until ^C.")
    dash.add_argument("--host", default="127.0.0.1")
    dash.add_argument("--port", type=int,
                      help=f"default: TRIPWIRE_DASHBOARD_PORT or {DEFAULT_PORT}")
    add_clickhouse_arguments(dash)
    dash.add_argument("--daily-budget-usd", type=float,
                      help="an agent's daily spend budget for 'spend against budget'")
    dash.add_argument("--sla-ms", type=int, help="latency SLA for 'SLA adherence' (default 2000)")
    dash.add_argument("--sample", action="store_true",
                      help="first fill the database with a simulated fleet (for a look around)")
    dash.add_argument("--duration", type=float, help="stop after SECONDS")
    dash.set_defaults(handler=dashboard_command)


def add_clickhouse_arguments(parser: argparse.ArgumentParser) -> None:
    """``--clickhouse-url`` and ``--data-dir``, the two a reading command's :func:`_dsn` uses."""
    parser.add_argument("--clickhouse-url", help="ClickHouse DSN (default: configured)")
    parser.add_argument("--data-dir", type=Path,
                        help="embedded data dir (read through `tripwire run` while it runs "
                        "there)")


def _dsn(args: argparse.Namespace) -> tuple[str, Any]:
    from tripwire.streams.cli import load_settings

    settings = load_settings(data_dir=args.data_dir, clickhouse_url=args.clickhouse_url)
    from tripwire.sinks.clickhouse_http import reading_dsn

    return reading_dsn(settings), settings


def evidence_command(args: argparse.Namespace) -> int:
    from tripwire.dashboards.evidence import EvidenceNotFound, agent_evidence, run_evidence
    from tripwire.dashboards.filters import now_ms, parse_instant
    from tripwire.sinks.clickhouse import connect

    if args.scope is not None:
        return scope_evidence_command(args)
    if bool(args.run_id) == bool(args.agent):
        print("tripwire evidence: give either RUN_ID or --agent A --since T [--until T]",
              file=sys.stderr)
        return 2
    if args.agent and not args.since:
        print("tripwire evidence: --agent needs --since", file=sys.stderr)
        return 2
    try:
        since = parse_instant(args.since) if args.since else None
        until = parse_instant(args.until) if args.until else now_ms()
    except ValueError as ex:
        print(f"tripwire evidence: {ex}", file=sys.stderr)
        return 2
    dsn, _ = _dsn(args)
    client = connect(dsn)
    try:
        if args.run_id:
            ev = run_evidence(client, args.run_id)
        else:
            assert since is not None
            ev = agent_evidence(client, args.agent, since, until)
    except EvidenceNotFound as ex:
        print(f"tripwire evidence: {ex}", file=sys.stderr)
        return 1
    except ValueError as ex:
        print(f"tripwire evidence: {ex}", file=sys.stderr)
        return 2
    finally:
        client.close()
    if args.export:
        from tripwire.dashboards.replay_set import write_replay_set

        count = write_replay_set(args.export, ev.steps)
        print(f"tripwire evidence: {count} steps written to {args.export}", file=sys.stderr)
    return _write_evidence(ev, args)


def _write_evidence(ev: Evidence | ScopeEvidence, args: argparse.Namespace) -> int:
    """Run, agent and scope evidence alike: ``--format`` json or Markdown, to ``--output``
    or stdout."""
    text = (json.dumps(ev.to_json(), indent=2, ensure_ascii=False) + "\n"
            if args.format == "json" else ev.to_markdown())
    if args.output:
        args.output.write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


def scope_evidence_command(args: argparse.Namespace) -> int:
    from tripwire.dashboards.filters import now_ms, parse_instant
    from tripwire.dashboards.scope_evidence import scope_evidence
    from tripwire.detectors.policy import Policy, load_policy
    from tripwire.sdk.scopes import Scope
    from tripwire.sinks.clickhouse import connect

    if args.run_id or args.agent or not args.since:
        print("tripwire evidence: --scope takes --since T [--until T], no RUN_ID or --agent",
              file=sys.stderr)
        return 2
    try:
        scope = Scope.from_key(args.scope)
        since, until = parse_instant(args.since), (
            parse_instant(args.until) if args.until else now_ms())
    except ValueError as ex:
        print(f"tripwire evidence: {ex}", file=sys.stderr)
        return 2
    dsn, settings = _dsn(args)
    policy = load_policy(settings.policy_file) if settings.policy_file else Policy()
    client = connect(dsn)
    try:
        ev = scope_evidence(client, scope, since, until, policy.standing)
    except ValueError as ex:
        print(f"tripwire evidence: {ex}", file=sys.stderr)
        return 2
    finally:
        client.close()
    return _write_evidence(ev, args)


def dashboard_command(args: argparse.Namespace) -> int:
    from tripwire.dashboards.server import DashboardServer
    from tripwire.sinks.clickhouse import connect, redact
    from tripwire.sinks.migrations import migrate

    dsn, settings = _dsn(args)
    port = args.port if args.port is not None else getattr(settings, "dashboard_port",
                                                           DEFAULT_PORT)
    client = connect(dsn)
    try:
        if args.sample:
            from tripwire.dashboards.filters import now_ms
            from tripwire.dashboards.sample_fleet import fill

            migrate(client, settings.retention_days)
            sample = fill(client, end_ms=now_ms() - 60_000, hours=3.0)
            print(f"tripwire: sample fleet stored: {sample.steps} steps", flush=True)
        from tripwire.dashboards.access import Access

        # The inbox and console need Kafka: only against a configured one (tripwire run
        # serves them with its embedded broker); logging in is required either way.
        server = DashboardServer(client, args.host, port,
                                 settings if settings.kafka_bootstrap else None,
                                 access=Access.from_settings(settings),
                                 daily_budget_usd=args.daily_budget_usd,
                                 sla_ms=args.sla_ms).start()
        print(f"tripwire: dashboards on {server.url} (ClickHouse {redact(dsn)})", flush=True)
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        stop.wait(args.duration)
        server.stop()
    finally:
        client.close()
    return 0
