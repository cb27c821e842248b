"""What ``tripwire``'s main turns into one line and exit status 2 instead of a traceback.

Code that talks to Kafka or ClickHouse raises :class:`~tripwire.schemas.service_errors.
ServiceError` with a complete message (what was tried, what to set). A library error that
still gets through (a query ClickHouse refuses, a connection dropped mid-command) is named
here with the service the command was configured to use.
"""

from __future__ import annotations

import argparse

from aiokafka.errors import KafkaError
from clickhouse_connect.driver.exceptions import ClickHouseError

from tripwire.schemas.service_errors import ServiceError
from tripwire.sinks.clickhouse import read_failure, redact
from tripwire.sinks.tabsep import QueryError

OPERATIONAL_ERRORS: tuple[type[BaseException], ...] = (
    ServiceError, KafkaError, ClickHouseError, QueryError, ConnectionError, TimeoutError,
    FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError,
)


def one_line(exc: BaseException, args: argparse.Namespace) -> str:
    """The message for ``exc`` on one line, naming the service and the setting."""
    if isinstance(exc, ServiceError):
        return " ".join(str(exc).split())
    detail = _flat(str(exc)) or type(exc).__name__
    if isinstance(exc, OSError) and exc.filename is not None:
        # A path from an argument or a setting (--key-file, --output, TRIPWIRE_*_FILE).
        return f"{exc.filename}: {exc.strerror}: check the path given"
    if isinstance(exc, ClickHouseError | QueryError):
        return read_failure(_clickhouse_target(args), exc)
    hint = ""
    if type(exc).__name__ == "UnknownError":
        # What the embedded broker answers an idempotent producer (no InitProducerId).
        hint = "; against the embedded broker also set TRIPWIRE_KAFKA_IDEMPOTENCE=false"
    return (f"Kafka at {_kafka_target(args)}: {type(exc).__name__}: {detail}: check "
            f"TRIPWIRE_KAFKA_BOOTSTRAP (or --bootstrap){hint}")


def _kafka_target(args: argparse.Namespace) -> str:
    if getattr(args, "bootstrap", None):
        return str(args.bootstrap)
    return _settings(args).bootstrap()


def _clickhouse_target(args: argparse.Namespace) -> str:
    if getattr(args, "clickhouse_url", None):
        return redact(str(args.clickhouse_url))
    return redact(_settings(args).clickhouse_dsn())


def _settings(args: argparse.Namespace):  # noqa: ANN202 - TripwireSettings, imported lazily
    from tripwire.streams.cli import load_settings

    return load_settings(data_dir=getattr(args, "data_dir", None))


def _flat(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= 400 else line[:397] + "..."
