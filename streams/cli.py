"""The ``tripwire`` command line."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from pathlib import Path

from pydantic import ValidationError

from tripwire.streams.settings import TripwireSettings, describe_settings

# Modules that add their own subcommands: each has ``add_parsers(sub)``, whose parsers set
# ``handler=fn`` (``fn(args) -> int``) with ``set_defaults``.
COMMAND_MODULES: list[str] = [
    "tripwire.bench.pipeline", "tripwire.sdk.operator_cli", "tripwire.dashboards.commands",
    "tripwire.dashboards.change_commands",
]


def load_settings(**overrides: object) -> TripwireSettings:
    """Settings from the environment plus CLI flags; invalid ones exit naming the field."""
    try:
        base = TripwireSettings()
        if overrides:
            merged = base.model_dump() | {k: v for k, v in overrides.items() if v is not None}
            return TripwireSettings(**merged)
        return base
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"]) or "settings"
            lines.append(f"  TRIPWIRE_{loc.upper()}: {err['msg']}")
        print("tripwire: invalid configuration\n" + "\n".join(lines), file=sys.stderr)
        raise SystemExit(2) from None


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="tripwire",
        description="Circuit breakers for AI agents, on the event stream.",
        epilog=describe_settings(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="embedded broker + ClickHouse (chDB) + worker, one process")
    run.add_argument("--demo", action="store_true", help="also run a simulated fleet")
    run.add_argument("--duration", type=float, help="stop cleanly after SECONDS")
    run.add_argument("--data-dir", type=Path, help="where embedded ClickHouse keeps its data")
    run.add_argument("--broker-port", type=int, help="embedded broker port (default 9092)")
    run.add_argument("--dashboard-port", type=int, help="dashboard port (default 8080)")
    run.add_argument("--demo-agents", type=int, default=12, help="healthy agents in the demo")
    run.add_argument("--demo-rate", type=float, default=200.0, help="demo events per second")

    sub.add_parser("init", help="create topics and run ClickHouse migrations, then exit")
    sub.add_parser("worker", help="only the Faust worker, against TRIPWIRE_KAFKA_BOOTSTRAP "
                   "and TRIPWIRE_CLICKHOUSE_URL (the production entry point)").add_argument(
        "--duration", type=float, help="stop cleanly after SECONDS")

    sql = sub.add_parser("sql", help="run a query, print TabSeparated rows")
    sql.add_argument("query")
    sql.add_argument("--data-dir", type=Path, help="embedded data dir (no worker may hold it)")

    sim = sub.add_parser("simulate", help="emit simulated fleet traffic to a broker")
    sim.add_argument("--bootstrap", help="host:port (default: configured bootstrap)")
    sim.add_argument("--topic", default="agent-steps")
    sim.add_argument("--agents", type=int, default=10)
    sim.add_argument("--rate", type=float, default=500.0, help="events per second, fleet-wide")
    sim.add_argument("--duration", type=float, default=None, help="seconds (default: until ^C)")
    sim.add_argument("--max-events", type=int, default=None)
    sim.add_argument("--seed", type=int, default=1)
    sim.add_argument("--scenario", action="append", default=[],
                     help="misbehaviour to include (repeatable): denial_storm, runaway_loop, "
                     "overspend, injection, never_ending_run, or 'all'")

    sub.add_parser("scan", help="prompt-injection scanner: JSON lines in, JSON lines out")
    for module in COMMAND_MODULES:
        importlib.import_module(module).add_parsers(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is not None:
        return int(handler(args))
    if args.command == "run":
        from tripwire.simulator.demo import demo_fleet
        from tripwire.streams.worker import run_embedded

        settings = load_settings(data_dir=args.data_dir, broker_port=args.broker_port,
                                 dashboard_port=args.dashboard_port)
        demo = demo_fleet(args.demo_agents, args.demo_rate) if args.demo else None
        return run_embedded(settings, args.duration, demo)
    if args.command == "init":
        from tripwire.streams.worker import prepare_services

        settings = load_settings()
        prepare_services(settings)
        print(f"tripwire: topics ready on {settings.bootstrap()}; "
              f"schema ready in {settings.clickhouse_dsn()}")
        return 0
    if args.command == "worker":
        settings = load_settings()
        if settings.kafka_bootstrap is None:
            print("tripwire: invalid configuration\n  TRIPWIRE_KAFKA_BOOTSTRAP: required by "
                  "`tripwire worker` (use `tripwire run` for the embedded broker)", file=sys.stderr)
            return 2
        from tripwire.streams.worker import run_worker

        return run_worker(settings, duration=args.duration)
    if args.command == "sql":
        from tripwire.sinks.clickhouse import connect
        from tripwire.sinks.tabsep import run_sql

        settings = load_settings(data_dir=args.data_dir)
        return run_sql(connect(settings.clickhouse_dsn()), args.query, sys.stdout)
    if args.command == "simulate":
        from tripwire.simulator.fleet import simulate_sync

        settings = load_settings()
        scenarios = ["denial_storm", "runaway_loop", "overspend", "injection",
                     "never_ending_run"] if "all" in args.scenario else args.scenario
        report = simulate_sync(
            bootstrap=args.bootstrap or settings.bootstrap(), topic=args.topic,
            agents=args.agents, duration_s=args.duration, rate=args.rate, seed=args.seed,
            # Simulated traffic tolerates re-sends: the sinks deduplicate by event_id.
            scenarios=scenarios, idempotence=False, max_events=args.max_events,
        )
        print(report)
        return 0
    if args.command == "scan":
        from tripwire.detectors.injection import scan_lines

        return scan_lines(sys.stdin, sys.stdout)
    raise AssertionError(args.command)


if __name__ == "__main__":
    raise SystemExit(main())
