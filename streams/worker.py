"""Process entry points: the Faust worker alone, or the whole embedded stack around it."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import faust
from pydantic import SecretStr

from tripwire import detectors
from tripwire.detectors.policy import Policy, load_policy_file
from tripwire.schemas.service_errors import ServiceError
from tripwire.schemas.topics import ensure_topics, tripwire_topics
from tripwire.sdk.local_stack import provision_dev_keys, remove_stack, write_stack
from tripwire.sinks.clickhouse import Client, connect
from tripwire.sinks.clickhouse_http import HttpAddress
from tripwire.sinks.migrations import migrate
from tripwire.streams import compiled_readers
from tripwire.streams.app import REPORT_INTERVAL_S, build_app
from tripwire.streams.broker import EmbeddedBroker, free_port
from tripwire.streams.clickhouse_writer import ClickHouseWriter, WriterError
from tripwire.streams.console import LOG_FILE, setup_console
from tripwire.streams.settings import TripwireSettings
from tripwire.streams.shutdown_deadline import ShutdownDeadline
from tripwire.streams.standing_publisher import publish_standing

log = logging.getLogger("tripwire")


def prepare_topics(settings: TripwireSettings) -> None:
    """Every topic with its partition count: a worker must never create one implicitly."""
    asyncio.run(
        ensure_topics(settings.bootstrap(), tripwire_topics(settings.partitions),
                      settings.replication_factor, timeout_s=settings.kafka_connect_timeout_s)
    )


def prepare_services(settings: TripwireSettings) -> Client:
    """Topics and schema first (``tripwire init``); a worker's writer migrates on start."""
    prepare_topics(settings)
    client = connect(settings.clickhouse_dsn())
    migrate(client, settings.retention_days)
    return client


class DataDirUnusable(ServiceError):
    """The data dir cannot be created or written."""


class KeysRequired(ServiceError):
    """A worker against external services was given no operator or control keys."""


def prepare_data_dir(settings: TripwireSettings) -> Path:
    """The data dir, created if missing; :class:`DataDirUnusable` naming it if it cannot be."""
    path = settings.data_dir.resolve()
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".tripwire-write-test"
        probe.touch()
        probe.unlink()
    except OSError as exc:
        raise DataDirUnusable(
            f"cannot use data dir {path} ({exc.strerror or exc}): set TRIPWIRE_DATA_DIR "
            "(or --data-dir) to a writable directory") from exc
    return path


def with_keys(settings: TripwireSettings, dev_keys: bool) -> TripwireSettings:
    """Settings whose operator and control keys are set: as configured, or (``dev_keys``)
    completed with the data dir's development keys; :class:`KeysRequired` otherwise."""
    has_operator, has_control = bool(settings.operator_keys), settings.control_key_id is not None
    if has_operator and has_control:
        return settings
    if not dev_keys:
        missing = " and ".join(
            name for name, ok in (("TRIPWIRE_OPERATOR_KEYS", has_operator),
                                  ("TRIPWIRE_CONTROL_KEY_ID/_KEYS", has_control)) if not ok)
        raise KeysRequired(
            f"refusing to start without keys: set {missing} (docs/security.md), or pass "
            "--insecure-dev-keys (TRIPWIRE_INSECURE_DEV_KEYS=true) to use development keys "
            f"kept in {settings.data_dir.resolve() / 'dev-keys.json'}")
    keys, made = provision_dev_keys(settings.data_dir)
    update: dict[str, object] = {}
    if not has_operator:
        update["operator_keys"] = {keys.operator_key_id: SecretStr(keys.operator_key)}
    if not has_control:
        update["control_key_id"] = keys.control_key_id
        update["control_keys"] = {keys.control_key_id: SecretStr(keys.control_key)}
    log.warning("development keys %s %s (operator key %s, control key %s): for this machine "
                "only; `tripwire kill|pin|release|status` here find them",
                "made in" if made else "from", keys.path, keys.operator_key_id,
                keys.control_key_id)
    return settings.model_copy(update=update)


class InvalidPolicy(SystemExit):
    """The policy file does not validate; the message names the field."""


def load_breaker_policy(settings: TripwireSettings) -> Policy:
    if settings.policy_file is None:
        return Policy()
    try:
        return load_policy_file(settings.policy_file)
    except ValueError as exc:  # says "invalid policy file <path>: <field>: <problem>"
        print(f"tripwire: {exc}", file=sys.stderr)
        raise InvalidPolicy(2) from None


def stop_after(seconds: float) -> None:
    """Stop the way an operator would (SIGTERM), so shutdown takes the one tested path."""
    t = threading.Timer(seconds, os.kill, (os.getpid(), signal.SIGTERM))
    t.daemon = True
    t.start()


class _Worker(faust.Worker):
    """Faust's worker, whose stop is bounded by a :class:`ShutdownDeadline`."""

    deadline: ShutdownDeadline | None = None

    async def on_stop(self) -> None:
        # Every stop passes here once, whether a signal, `duration` or a crash started it.
        if self.deadline is not None:
            self.deadline.arm()
        await super().on_stop()

    async def _sentinel_task(self) -> None:
        # mode's last step before closing the loop: a fixed 1.0 s sleep, after every service
        # has stopped and the loop's remaining tasks were gathered. It was most of a worker's
        # stop (1.12 s from SIGTERM to exit; 0.12 s without it); one more pass of the loop
        # still runs the callbacks the stop scheduled (transports closing).
        await asyncio.sleep(0.01)


def stop_deadline(settings: TripwireSettings) -> ShutdownDeadline:
    return ShutdownDeadline(
        settings.stop_timeout_s,
        f"waiting on Kafka at {settings.bootstrap()} or on ClickHouse; "
        "TRIPWIRE_STOP_TIMEOUT_S sets how long")


def run_worker(
    settings: TripwireSettings,
    duration: float | None = None,
    on_started: Callable[[], None] | None = None,
    serve_dashboards: bool = False,
    dev_keys: bool = False,
    clickhouse_http: HttpAddress | None = None,
    deadline: ShutdownDeadline | None = None,
) -> int:
    """The Faust worker until stopped. ``dev_keys``: complete missing keys with the data
    dir's development keys (``tripwire run``, ``--insecure-dev-keys``) instead of refusing.
    ``deadline``: bounds the stop (made from the settings if not given)."""
    deadline = deadline or stop_deadline(settings)
    data_dir = prepare_data_dir(settings)
    console = setup_console(settings.log_format, settings.log_level, data_dir)
    # The Faust producer, consumer and this loop share one interpreter lock; a shorter switch
    # interval keeps a busy thread from holding the event loop for 5 ms slices at a time.
    sys.setswitchinterval(0.001)
    policy = load_breaker_policy(settings)
    settings = with_keys(settings, dev_keys or settings.insecure_dev_keys)
    log.info("data dir          %s (Faust's log: %s)", data_dir, data_dir / LOG_FILE)
    log.info("kafka bootstrap   %s%s", settings.bootstrap(),
             " (embedded broker)" if settings.embedded_broker else "")
    log.info("detectors         %s", detectors.RUNNING)
    log.info("avro readers      %s", compiled_readers.RUNNING)
    prepare_topics(settings)
    # The dashboards of `tripwire run` are served by the writer: it holds the embedded
    # ClickHouse, and a chDB directory belongs to one process.
    writer = ClickHouseWriter(
        settings.clickhouse_dsn(), settings.retention_days,
        dashboards=(settings.dashboard_host, settings.dashboard_port, settings)
        if serve_dashboards else None,
        clickhouse_http=clickhouse_http)
    try:
        writer.start()
    except WriterError as exc:
        print(f"tripwire: {exc}", file=sys.stderr)
        return 2
    from tripwire.sinks.clickhouse import redact

    log.info("clickhouse        %s (schema ready)", redact(settings.clickhouse_dsn()))
    if writer.dashboard_url is not None:
        log.info("dashboards        %s", writer.dashboard_url)
    log.info("keys              operator %s, controls signed with %s",
             ", ".join(settings.operator_keys), settings.control_key_id)
    tw = build_app(settings, writer, policy)
    try:
        remembered = tw.remember_applied_commands()
    except WriterError as exc:
        writer.close()
        print(f"tripwire: cannot read the operator command audit: {exc}", file=sys.stderr)
        return 2
    if remembered:
        log.info("%d recently applied operator command(s) remembered: their replays stay "
                 "refused", remembered)
    try:
        # Before "ready": a guard started once the worker is up must find them.
        standing = asyncio.run(publish_standing(settings, policy, tw.scope_writer,
                                                int(time.time() * 1000)))
    except Exception as exc:  # noqa: BLE001 - one line saying what was tried
        writer.close()
        print(f"tripwire: cannot publish the standing rules to {settings.bootstrap()}: "
              f"{exc!r}", file=sys.stderr)
        return 2
    log.info("standing rules: %d in force, %d published or lifted now",
             len(policy.standing.controls()), len(standing))

    async def ready() -> None:
        log.info("Worker ready: consuming %s as group %s, a status line every %.0f s",
                 "agent-steps, agent-commands", settings.app_id, REPORT_INTERVAL_S)
        if on_started is not None:
            on_started()

    tw.app.task(ready)
    if duration is not None:
        stop_after(duration)
    # Faust sets logging up again when it starts: its chatter to the file, ours (and any
    # library's errors) to the same console handler.
    tw.app.conf.loghandlers = [console]
    router = None
    if settings.otlp_topic is not None:
        from tripwire.streams.otlp_router import RouterProcess

        router = RouterProcess(settings).start()
        deadline.on_abandon(router.stop)
    worker = _Worker(tw.app, loglevel=settings.log_level.upper(), quiet=True,
                     redirect_stdouts=False, logfile=str(data_dir / LOG_FILE))
    # The writer needs no cleanup: it exits when its pipe closes, as when a worker is killed.
    worker.deadline = deadline
    code = 0
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        code = int(exc.code or 0)
    finally:
        if router is not None:
            router.stop()
        writer.close()
        deadline.disarm()
    log.info("worker stopped: %s", tw.summary())
    return code


def run_embedded(settings: TripwireSettings, duration: float | None,
                 demo: Callable[[str], Callable[[], None]] | None) -> int:
    """``tripwire run``: broker (unless external) + topics + chDB + worker (+ demo fleet),
    with development keys, and a ``stack.json`` in the data dir while it runs so the CLI
    finds it (see :mod:`tripwire.sdk.local_stack`)."""
    data_dir = prepare_data_dir(settings)
    setup_console(settings.log_format, settings.log_level, data_dir)
    deadline = stop_deadline(settings)
    deadline.on_abandon(lambda: remove_stack(data_dir))
    broker: EmbeddedBroker | None = None
    if settings.embedded_broker:
        broker = EmbeddedBroker(settings.broker_port, log_path=data_dir / "broker.log")
        broker.start()
        deadline.on_abandon(broker.stop)
    try:
        stop_demo: Callable[[], None] | None = None

        # The embedded ClickHouse belongs to this process: other shells' `tripwire sql`,
        # `evidence`, `backtest` and `gate` reach it over ClickHouse's HTTP protocol.
        clickhouse_http = (HttpAddress.on_loopback(free_port())
                           if settings.clickhouse_dsn().startswith("chdb:") else None)

        def started() -> None:
            nonlocal stop_demo
            write_stack(data_dir, bootstrap=settings.bootstrap(),
                        clickhouse=settings.clickhouse_dsn(),
                        clickhouse_http=clickhouse_http.dsn if clickhouse_http else None)
            if demo is not None:
                stop_demo = demo(settings.bootstrap())
                deadline.on_abandon(stop_demo)
                log.info("demo fleet        started")

        code = run_worker(settings, duration=duration, on_started=started,
                          serve_dashboards=True, dev_keys=True,
                          clickhouse_http=clickhouse_http, deadline=deadline)
        if stop_demo is not None:
            stop_demo()
        return code
    finally:
        remove_stack(data_dir)
        if broker is not None:
            broker.stop()
        sys.stdout.flush()
