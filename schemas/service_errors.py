"""Operational failures: a service Tripwire needs is unreachable, refuses, or lacks a topic.

Raised by the code that talks to Kafka and ClickHouse with a message that names what was
tried and what to set; ``tripwire``'s main prints that message as one line and exits 2
(no traceback). Shared by the SDK and the server, hence in the contract package.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager


class ServiceError(Exception):
    """An operational error whose message is complete: what was tried, what to set."""


class KafkaUnreachable(ServiceError, ConnectionError):
    def __init__(self, bootstrap: str, detail: object) -> None:
        super().__init__(
            f"cannot reach Kafka at {bootstrap} ({detail}): set TRIPWIRE_KAFKA_BOOTSTRAP "
            "(or --bootstrap) to a running broker, or start one with `tripwire run`")
        self.bootstrap = bootstrap


class TopicMissing(ServiceError, LookupError):
    def __init__(self, topic: str, bootstrap: str) -> None:
        super().__init__(
            f"topic {topic} does not exist on Kafka at {bootstrap}: run `tripwire init` "
            "(or `tripwire run`) against it, or set TRIPWIRE_KAFKA_BOOTSTRAP to the right broker")
        self.topic = topic


class ClickHouseUnavailable(ServiceError, RuntimeError):
    """ClickHouse could not be reached or opened, or refused the request."""

    def __init__(self, dsn: str, detail: object) -> None:
        super().__init__(f"ClickHouse at {dsn}: {_reason(detail)}: set TRIPWIRE_CLICKHOUSE_URL "
                         "(or --clickhouse-url / --data-dir) to a reachable database")
        self.dsn = dsn


@contextmanager
def kafka_errors(bootstrap: str) -> Iterator[None]:
    """Turn a failure to reach ``bootstrap`` into :class:`KafkaUnreachable`."""
    from aiokafka.errors import KafkaConnectionError, KafkaTimeoutError, RequestTimedOutError

    try:
        yield
    except (KafkaConnectionError, KafkaTimeoutError, RequestTimedOutError, OSError,
            TimeoutError) as exc:
        if isinstance(exc, ServiceError):
            raise
        raise KafkaUnreachable(bootstrap, _one_line(exc) or type(exc).__name__) from exc


def _reason(detail: object) -> str:
    """The operating system's reason if the detail carries one (a driver's connection error
    wraps "[Errno 111] Connection refused" in a page of pool and URL details), else the
    detail on one line."""
    found = re.search(r"\[Errno -?\d+\] ([^\"'()\]]+)", str(detail))
    return found.group(1).strip() if found else _one_line(detail)


def _one_line(detail: object) -> str:
    text = " ".join(str(detail).split())
    return text if len(text) <= 400 else text[:397] + "..."
