"""``tripwire backtest`` and ``tripwire gate`` (listed in streams.cli.COMMAND_MODULES).

* ``tripwire backtest --policy NEW.yaml [--since 7d | --from T --to T] [--agent A |
  --workflow W] [--format md|json] [--fail-on downgrade] [--replay FILE]``: replay stored
  steps (or a replay set) under NEW and under the policy in force; report the difference.
* ``tripwire gate --agent A | --workflow W --candidate V --baseline V [--window 24h]``:
  compare two agent versions' records; exit 1 if the candidate is worse.

Exit status: 0 pass, 1 the check failed (``--fail-on`` / a gate), 2 bad usage or input.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tripwire.dashboards.commands import _dsn, add_clickhouse_arguments

DEFAULT_SINCE = "7d"


@contextlib.contextmanager
def replay_collector() -> Iterator[None]:
    """No cyclic garbage collection while a backtest replays; what is alive before it
    (policies, the scanner's patterns) frozen out of the collector's scans. Each block read
    back is 65,536 event dicts alive at once, so at Python's default thresholds young
    collections kept rescanning and promoting them: measured (gc.callbacks, the bench
    dataset's first 1M steps) 4.2 % of the replay's CPU in 1,357 young, 123 middle and 11
    full collections. The replay makes no cycles to speak of (a full collection after 200,000
    and after 1M replayed events found the same 34 unreachable objects, with the bench's
    breaker change and with its detector change), so none is needed while it runs. The bench
    end to end, fresh processes alternating on 4M events: default 174,011 and 180,801 events
    per CPU s, the worker's thresholds (50,000/20/100) 182,159 and 187,555; those thresholds
    178,361 and 177,795, no collection 183,639 and 182,170."""
    enabled = gc.isenabled()
    gc.collect()
    gc.freeze()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
        gc.unfreeze()


def add_parsers(sub: Any) -> None:
    bt = sub.add_parser(
        "backtest", help="replay recorded steps under a new policy and the one in force",
        description="Replays the stored steps of a window (or a replay set) through the "
        "worker's detectors and breaker under NEW and under the policy in force, and "
        "reports trips, mode changes and downgrades that differ.")
    bt.add_argument("--policy", type=Path, required=True, help="the candidate policy file")
    bt.add_argument("--current", type=Path,
                    help="the policy in force (default: TRIPWIRE_POLICY_FILE, else built-in)")
    bt.add_argument("--since", help=f"window ending now: 15m, 6h, 7d (default {DEFAULT_SINCE})")
    bt.add_argument("--from", dest="from_", help="window start, ISO-8601 or epoch ms")
    bt.add_argument("--to", help="window end (exclusive), default now")
    scope = bt.add_mutually_exclusive_group()
    scope.add_argument("--agent", help="only this agent")
    scope.add_argument("--workflow", help="only agents of this workflow")
    bt.add_argument("--replay", type=Path,
                    help="replay this JSON-lines replay set (tripwire evidence --export) "
                    "instead of ClickHouse")
    bt.add_argument("--format", choices=("md", "markdown", "json"), default="md")
    bt.add_argument("--fail-on", choices=("downgrade",),
                    help="exit 1 if the new policy downgrades an agent the current one did not")
    bt.add_argument("--dashboard-url", help="link evidence to these dashboards (base URL)")
    bt.add_argument("--output", "-o", type=Path, help="write the report here, not stdout")
    add_clickhouse_arguments(bt)
    bt.set_defaults(handler=backtest_command)

    from tripwire.dashboards.gate_command import add_gate_parser

    add_gate_parser(sub)


def _fail(command: str, message: str) -> int:
    print(f"tripwire {command}: {message}", file=sys.stderr)
    return 2


def window(args: argparse.Namespace, default_since: str) -> tuple[int, int]:
    """(from_ms, to_ms) from --since or --from/--to; ValueError says what is wrong."""
    from tripwire.dashboards.filters import now_ms, parse_instant, parse_range

    if args.since and (args.from_ or args.to):
        raise ValueError("give either --since or --from/--to")
    to_ms = parse_instant(args.to) if args.to else now_ms()
    if args.from_:
        from_ms = parse_instant(args.from_)
    else:
        from_ms = to_ms - parse_range(args.since or default_since)
    if to_ms <= from_ms:
        raise ValueError("the window ends before it starts")
    return from_ms, to_ms


def load_policies(args: argparse.Namespace) -> tuple[Any, Any, str]:
    from tripwire.detectors.policy import Policy, load_policy_file
    from tripwire.streams.cli import load_settings

    candidate = load_policy_file(args.policy)
    current_path = args.current
    if current_path is None:
        settings = load_settings()
        current_path = settings.policy_file
    current = load_policy_file(current_path) if current_path is not None else Policy()
    return current, candidate, str(current_path) if current_path else "built-in defaults"


def backtest_command(args: argparse.Namespace) -> int:
    try:
        current, candidate, current_label = load_policies(args)
    except (ValueError, OSError) as exc:
        return _fail("backtest", str(exc))
    with replay_collector():
        return _backtest(args, current, candidate, current_label)


def _backtest(args: argparse.Namespace, current: Any, candidate: Any, current_label: str) -> int:
    from tripwire.detectors.backtest import Backtest, event_keys
    from tripwire.detectors.injection import scan_text

    t0 = time.perf_counter()
    if args.replay is not None:
        from tripwire.dashboards.replay_set import ReplaySetError, by_agent, read_replay_set

        try:
            events = read_replay_set(args.replay)
        except (ReplaySetError, OSError) as exc:
            return _fail("backtest", str(exc))
        if args.agent:
            events = [e for e in events if e["agent_id"] == args.agent]
        if args.workflow:
            events = [e for e in events if e.get("workflow") == args.workflow]
        from_ms = events[0]["ts"] if events else None
        to_ms = max(e["ts"] for e in events) + 1 if events else None
        bt = Backtest(current, candidate, scanner=scan_text, from_ms=from_ms, to_ms=to_ms)
        for agent, workflow, chunk in by_agent(events):
            bt.feed(agent, workflow, chunk)
    else:
        try:
            from_ms, to_ms = window(args, DEFAULT_SINCE)
        except ValueError as exc:
            return _fail("backtest", str(exc))
        from tripwire.sinks.clickhouse import connect, reach_failure, read_failure
        from tripwire.sinks.step_history import agent_chunks

        dsn, _ = _dsn(args)
        try:
            client = connect(dsn)
        except Exception as exc:  # noqa: BLE001 - one line, no traceback, says what was tried
            return _fail("backtest", reach_failure(dsn, exc))
        bt = Backtest(current, candidate, scanner=scan_text, from_ms=from_ms, to_ms=to_ms)
        try:
            for agent, workflow, chunk, ts in agent_chunks(
                    client, from_ms, to_ms, args.agent, args.workflow,
                    keys=event_keys(current, candidate, scanner=scan_text)):
                bt.feed(agent, workflow, chunk, ts)
        except Exception as exc:  # noqa: BLE001 - e.g. no steps table: say so in one line
            return _fail("backtest", read_failure(dsn, exc))
        finally:
            client.close()
    report = bt.finish()
    report.labels = (current_label, str(args.policy))
    report.elapsed_s = time.perf_counter() - t0
    if args.format == "json":
        text = json.dumps(report.to_json(), indent=2) + "\n"
    else:
        text = report.to_markdown(args.dashboard_url)
    if args.output:
        args.output.write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    if report.fails(args.fail_on):
        names = ", ".join(a.agent_id for a in report.newly_downgraded()[:10])
        print(f"tripwire backtest: the new policy downgrades agents the current one did not: "
              f"{names}", file=sys.stderr)
        return 1
    return 0
