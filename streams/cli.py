"""The ``tripwire`` command line."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import typing
from collections.abc import Sequence
from pathlib import Path

from pydantic import ValidationError

from tripwire.streams.operational_errors import OPERATIONAL_ERRORS, one_line
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
        problems = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"]) or "settings"
            problems.append(f"TRIPWIRE_{loc.upper()}: {err['msg']}")
        print("tripwire: invalid configuration: " + "; ".join(problems), file=sys.stderr)
        raise SystemExit(2) from None


class _Parser(argparse.ArgumentParser):
    """Bad arguments: one line naming the problem and where the help is, exit status 2."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(
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
    worker = sub.add_parser("worker", help="only the Faust worker, against "
                            "TRIPWIRE_KAFKA_BOOTSTRAP and TRIPWIRE_CLICKHOUSE_URL (the "
                            "production entry point)")
    worker.add_argument("--duration", type=float, help="stop cleanly after SECONDS")
    worker.add_argument("--insecure-dev-keys", action="store_true", default=None,
                        help="without configured operator/control keys, use development keys "
                        "in the data dir instead of refusing to start (never in production)")

    router = sub.add_parser("otlp-router", help="only the OTLP span router (TRIPWIRE_OTLP_TOPIC"
                            " -> agent-steps); `worker` and `run` start it when it is set")
    router.add_argument("--duration", type=float, help="stop cleanly after SECONDS")
    router.add_argument("--parent-pid", type=int, help=argparse.SUPPRESS)

    sql = sub.add_parser("sql", help="run a query, print TabSeparated rows")
    sql.add_argument("query")
    sql.add_argument("--data-dir", type=Path,
                     help="embedded data dir (read through `tripwire run` while it runs "
                     "there)")

    sim = sub.add_parser("simulate", help="emit simulated fleet traffic to a broker")
    sim.add_argument("--bootstrap", help="host:port (default: configured bootstrap)")
    sim.add_argument("--topic", default="agent-steps")
    sim.add_argument("--agents", type=int, default=10)
    sim.add_argument("--rate", type=float, default=500.0, help="events per second, fleet-wide")
    sim.add_argument("--duration", type=float, default=None, help="seconds (default: until ^C)")
    sim.add_argument("--max-events", type=int, default=None)
    sim.add_argument("--seed", type=int, default=1)
    sim.add_argument("--scenario", action="append", default=[], choices=[
                         "denial_storm", "runaway_loop", "overspend", "injection",
                         "never_ending_run", "all"],
                     help="misbehaviour to include (repeatable): denial_storm, runaway_loop, "
                     "overspend, injection, never_ending_run, or 'all'")

    sub.add_parser("scan", help="prompt-injection scanner: JSON lines in, JSON lines out")
    for module in COMMAND_MODULES:
        importlib.import_module(module).add_parsers(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    # Until a worker sets up its console: Tripwire's own errors on stderr, libraries' log
    # records and retry warnings dropped (a failure reaches the user as the one line below).
    root = logging.getLogger()
    if not any(getattr(h, "tripwire_cli", False) for h in root.handlers):
        quiet = logging.StreamHandler(sys.stderr)
        quiet.tripwire_cli = True  # type: ignore[attr-defined] - one per process, however
        quiet.setLevel(logging.ERROR)  # many times main() runs (tests call it repeatedly)
        quiet.addFilter(lambda record: record.name.startswith("tripwire"))
        quiet.setFormatter(logging.Formatter("tripwire: %(message)s"))
        root.addHandler(quiet)
    try:
        return _run(args)
    except OPERATIONAL_ERRORS as exc:
        # Operational errors are reported, not dumped: one line saying what was tried and
        # what to set (the code raising them words them; see schemas/service_errors.py).
        print(f"tripwire {args.command}: {one_line(exc, args)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _run(args: argparse.Namespace) -> int:
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
        from tripwire.sinks.clickhouse import redact
        from tripwire.streams.worker import prepare_services

        settings = load_settings()
        prepare_services(settings).close()
        print(f"tripwire: topics ready on {settings.bootstrap()}; "
              f"schema ready in {redact(settings.clickhouse_dsn())}")
        return 0
    if args.command == "worker":
        settings = load_settings(insecure_dev_keys=args.insecure_dev_keys)
        if settings.kafka_bootstrap is None:
            print("tripwire: invalid configuration: TRIPWIRE_KAFKA_BOOTSTRAP: required by "
                  "`tripwire worker` (use `tripwire run` for the embedded broker)", file=sys.stderr)
            return 2
        from tripwire.streams.worker import run_worker

        return run_worker(settings, duration=args.duration)
    if args.command == "otlp-router":
        from tripwire.streams.otlp_router import run_router
        from tripwire.streams.worker import load_breaker_policy

        settings = load_settings()
        return run_router(settings, load_breaker_policy(settings), duration=args.duration,
                          parent_pid=args.parent_pid)
    if args.command == "sql":
        from tripwire.sinks.clickhouse import connect
        from tripwire.sinks.clickhouse_http import reading_dsn
        from tripwire.sinks.tabsep import run_sql

        settings = load_settings(data_dir=args.data_dir)
        return run_sql(connect(reading_dsn(settings)), args.query, sys.stdout)
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
            connect_timeout_s=settings.kafka_connect_timeout_s,
        )
        print(report)
        return 0
    if args.command == "scan":
        from tripwire.detectors.injection import scan_lines

        return scan_lines(sys.stdin, sys.stdout)
    raise AssertionError(args.command)


if __name__ == "__main__":
    raise SystemExit(main())
