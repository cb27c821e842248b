"""Process entry points: the Faust worker alone, or the whole embedded stack around it."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable

import faust

from tripwire.detectors.policy import Policy, load_policy
from tripwire.schemas.topics import ensure_topics, tripwire_topics
from tripwire.sinks.clickhouse import Client, connect
from tripwire.sinks.migrations import migrate
from tripwire.streams.app import build_app
from tripwire.streams.broker import EmbeddedBroker
from tripwire.streams.clickhouse_writer import ClickHouseWriter, WriterError
from tripwire.streams.settings import TripwireSettings

log = logging.getLogger("tripwire")


def prepare_topics(settings: TripwireSettings) -> None:
    """Every topic with its partition count: a worker must never create one implicitly."""
    asyncio.run(
        ensure_topics(settings.bootstrap(), tripwire_topics(settings.partitions),
                      settings.replication_factor)
    )


def prepare_services(settings: TripwireSettings) -> Client:
    """Topics and schema first (``tripwire init``); a worker's writer migrates on start."""
    prepare_topics(settings)
    client = connect(settings.clickhouse_dsn())
    migrate(client, settings.retention_days)
    return client


class InvalidPolicy(SystemExit):
    """The policy file does not validate; the message names the field."""


def load_breaker_policy(settings: TripwireSettings) -> Policy:
    if settings.policy_file is None:
        return Policy()
    try:
        return load_policy(settings.policy_file)
    except (ValueError, OSError) as exc:  # pydantic's ValidationError is a ValueError
        print(f"tripwire: invalid policy file {settings.policy_file}:\n{exc}", file=sys.stderr)
        raise InvalidPolicy(2) from None


def stop_after(seconds: float) -> None:
    """Stop the way an operator would (SIGTERM), so shutdown takes the one tested path."""
    t = threading.Timer(seconds, os.kill, (os.getpid(), signal.SIGTERM))
    t.daemon = True
    t.start()


def run_worker(
    settings: TripwireSettings,
    duration: float | None = None,
    on_started: Callable[[], None] | None = None,
    serve_dashboards: bool = False,
) -> int:
    # The Faust producer, consumer and this loop share one interpreter lock; a shorter switch
    # interval keeps a busy thread from holding the event loop for 5 ms slices at a time.
    sys.setswitchinterval(0.001)
    policy = load_breaker_policy(settings)
    prepare_topics(settings)
    # The dashboards of `tripwire run` are served by the writer: it holds the embedded
    # ClickHouse, and a chDB directory belongs to one process.
    writer = ClickHouseWriter(
        settings.clickhouse_dsn(), settings.retention_days,
        dashboards=(settings.dashboard_host, settings.dashboard_port, settings)
        if serve_dashboards else None)
    try:
        writer.start()
    except WriterError as exc:
        print(f"tripwire: {exc}", file=sys.stderr)
        return 2
    if writer.dashboard_url is not None:
        print(f"tripwire: dashboards        {writer.dashboard_url}", flush=True)
    tw = build_app(settings, writer, policy)
    try:
        remembered = tw.remember_applied_commands()
    except WriterError as exc:
        writer.close()
        print(f"tripwire: cannot read the operator command audit: {exc}", file=sys.stderr)
        return 2
    if remembered:
        print(f"tripwire: {remembered} recently applied operator command(s) remembered: "
              "their replays stay refused", flush=True)
    if on_started is not None:
        tw.app.task(_call_soon(on_started))
    if duration is not None:
        stop_after(duration)
    worker = faust.Worker(tw.app, loglevel=settings.log_level.upper(), quiet=True,
                          redirect_stdouts=False)
    code = 0
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        code = int(exc.code or 0)
    finally:
        writer.close()
    print(f"tripwire: worker stopped: {tw.summary()}", flush=True)
    return code


def _call_soon(fn: Callable[[], None]) -> Callable[[], object]:
    async def task() -> None:
        fn()

    return task


def run_embedded(settings: TripwireSettings, duration: float | None,
                 demo: Callable[[str], Callable[[], None]] | None) -> int:
    """``tripwire run``: broker (unless external) + topics + chDB + worker (+ demo fleet)."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    broker: EmbeddedBroker | None = None
    if settings.embedded_broker:
        broker = EmbeddedBroker(settings.broker_port, log_path=settings.data_dir / "broker.log")
        broker.start()
    try:
        print(f"tripwire: kafka bootstrap   {settings.bootstrap()}"
              f"{' (embedded broker)' if broker else ''}", flush=True)
        print(f"tripwire: clickhouse        {settings.clickhouse_dsn()}", flush=True)
        stop_demo: Callable[[], None] | None = None

        def start_demo() -> None:
            nonlocal stop_demo
            if demo is not None:
                stop_demo = demo(settings.bootstrap())
                print("tripwire: demo fleet        started", flush=True)

        code = run_worker(settings, duration=duration, on_started=start_demo,
                          serve_dashboards=True)
        if stop_demo is not None:
            stop_demo()
        return code
    finally:
        if broker is not None:
            broker.stop()
        sys.stdout.flush()
