"""Real chDB for tests: one data dir per test session, one fresh database per test.

Why this shape (measured with chdb 4.4 / ClickHouse 26.9):

* A process can have only one chDB dir open at a time; a second dir opens only after
  every client on the first is closed. So all in-process tests share one session dir
  and are isolated by database instead, and no client outlives its test: between
  tests no engine is open, and a test that must use another dir in-process still can.
* A dir is locked by the process that has it open. Code under test that runs in a
  subprocess (e.g. ``tripwire run``) needs a dir of its own; read it after that
  process has exited, with :func:`run_sql_in_subprocess` or in-process.

Use: ``ch_dsn`` (a DSN naming the test's database, for code that connects itself),
``ch_client`` (a client on it), ``ch_migrated`` (the same client, schema applied).
"""

from __future__ import annotations

import io
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tripwire.sinks.clickhouse import Client, connect
from tripwire.sinks.migrations import migrate
from tripwire.sinks.tabsep import run_sql

TEST_RETENTION_DAYS = 30


@pytest.fixture(scope="session")
def chdb_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("chdb")


@pytest.fixture
def ch_dsn(chdb_dir: Path) -> Iterator[str]:
    """``chdb:///<session dir>?database=<fresh db>``; the database is dropped afterwards."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    _admin(chdb_dir, f"CREATE DATABASE {name}")
    yield f"chdb://{chdb_dir}?database={name}"
    _admin(chdb_dir, f"DROP DATABASE IF EXISTS {name} SYNC")


@pytest.fixture
def ch_client(ch_dsn: str) -> Iterator[Client]:
    with client_on(ch_dsn) as client:
        yield client


@pytest.fixture
def ch_migrated(ch_client: Client) -> Client:
    migrate(ch_client, TEST_RETENTION_DAYS)
    return ch_client


@contextmanager
def sample_fleet_database(chdb_dir: Path, prefix: str, end_ms: int,
                          hours: float = 2.0) -> Iterator[tuple[str, object]]:
    """(dsn, SampleFleet) of a fresh database holding ``hours`` of the scenario fleet up to
    ``end_ms``, dropped afterwards. No client stays open: each test opens its own."""
    from tripwire.dashboards.sample_fleet import fill

    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    _admin(chdb_dir, f"CREATE DATABASE {name}")
    dsn = f"chdb://{chdb_dir}?database={name}"
    client = connect(dsn)
    try:
        migrate(client, TEST_RETENTION_DAYS)
        sample = fill(client, end_ms=end_ms, hours=hours)
    finally:
        client.close()
    try:
        yield dsn, sample
    finally:
        _admin(chdb_dir, f"DROP DATABASE IF EXISTS {name} SYNC")


@contextmanager
def client_on(dsn: str) -> Iterator[Client]:
    client = connect(dsn)
    try:
        yield client
    finally:
        client.close()


def tabsep_rows(client: Client, query: str) -> list[list[str]]:
    """The rows `tripwire sql` prints for ``query`` (run_sql's TabSeparated), split on tabs."""
    out = io.StringIO()
    run_sql(client, query, out)
    return [line.split("\t") for line in out.getvalue().splitlines()]


@contextmanager
def tabsep_reader(dsn: str) -> Iterator[Callable[[str], list[list[str]]]]:
    """``sql(query)`` -> :func:`tabsep_rows`, read in this process on one client for all
    queries: for a dir a worker or `tripwire run` wrote, once that process has exited. A
    `tripwire sql` process per query paid a chDB start-up each (1.2-2 s)."""
    with client_on(dsn) as client:
        yield lambda query: tabsep_rows(client, query)


def run_sql_in_subprocess(dsn: str, sql: str, timeout: float = 120) -> str:
    """TabSeparated result of ``sql`` on ``dsn``, from a fresh process.

    For a chDB dir this process cannot open (it has another one open); the dir must
    not be held by a running process either.
    """
    code = (
        "import sys\n"
        "from tripwire.sinks.clickhouse import connect\n"
        "from tripwire.sinks.tabsep import run_sql\n"
        "run_sql(connect(sys.argv[1]), sys.argv[2], sys.stdout)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, dsn, sql],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"query in subprocess failed: {done.stderr.strip()[-2000:]}")
    return done.stdout


def _admin(chdb_dir: Path, statement: str) -> None:
    client = connect(f"chdb://{chdb_dir}")
    try:
        client.command(statement)
    finally:
        client.close()


def store_control_acks(bootstrap: str, client: Client, partitions: int) -> int:
    """Copy the guards' acknowledgements from Kafka into ``client``'s ``control_acks``, rows
    built as the worker's sink builds them (streams/app.py ``_store_acks``, ``control_ack_row``):
    the worker writes to its own chDB directory, which another process cannot open. Again
    and again is fine: the copies collapse (ReplacingMergeTree, FINAL reads)."""
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    from tripwire.bench.worker_process import read_all
    from tripwire.schemas.codec import control_ack_codec
    from tripwire.schemas.topics import CONTROL_ACKS
    from tripwire.sinks.control_audit import RecordRef, control_ack_row, insert_rows

    codec = control_ack_codec()
    # In a thread of its own: a caller may hold this thread's event loop (playwright's sync
    # API does).
    with ThreadPoolExecutor(1) as pool:
        records = pool.submit(asyncio.run, read_all(bootstrap, CONTROL_ACKS, partitions)).result()
    rows = [control_ack_row(RecordRef(m.topic, m.partition, m.offset, 0, m.key),
                            codec.decode(m.value), verified=False) for m in records]
    return insert_rows(client, "control_acks", rows)
