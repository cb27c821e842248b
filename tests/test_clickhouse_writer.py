"""The worker's ClickHouse writer process, on a real chDB directory of its own."""

from __future__ import annotations

import itertools
import os
import signal
import time
from pathlib import Path

import pytest

from chdb_fixtures import run_sql_in_subprocess
from tripwire.schemas.codec import StepBatchCodec
from tripwire.simulator.fleet import fleet_events
from tripwire.simulator.scenarios import SCENARIOS
from tripwire.streams.clickhouse_writer import ClickHouseWriter, WriterError

pytestmark = pytest.mark.integration


def records(n: int) -> tuple[list[tuple], list[dict]]:
    start_ms = int(time.time() * 1000) - 3_600_000  # inside the table's retention
    events = list(itertools.islice(
        fleet_events(seed=5, agents=4, scenarios=SCENARIOS, start_ms=start_ms), n))
    codec = StepBatchCodec()
    recs = [(codec.encode([e]), None, 0, i, ()) for i, e in enumerate(events)]
    return recs, events


def test_stores_each_valid_event_once_and_survives_its_own_death(tmp_path: Path) -> None:
    dsn = f"chdb://{tmp_path / 'ch'}"
    recs, events = records(300)
    bad = (b"\x00not avro", None, 0, 999, ())
    writer = ClickHouseWriter(dsn, retention_days=30).start()
    try:
        assert writer.insert_steps(recs[:200] + [bad]) == 200, "the bad record adds nothing"
        assert writer.insert_steps(recs[100:200]) == 0, "already stored"
        os.kill(writer._proc.pid, signal.SIGKILL)  # noqa: SLF001 - the child, on purpose
        writer._proc.join()  # noqa: SLF001
        # The next call starts a new writer on the same directory; nothing is lost.
        assert writer.insert_steps(recs[150:]) == 100
        writer.insert_breaker([], [])
    finally:
        writer.close()
    assert not writer._proc  # noqa: SLF001 - closed and reaped
    ids = run_sql_in_subprocess(dsn, "SELECT toString(event_id) FROM steps ORDER BY event_id")
    assert sorted(ids.split()) == sorted(e["event_id"] for e in events)


def test_a_writer_that_cannot_start_says_why(tmp_path: Path) -> None:
    with pytest.raises(WriterError, match="nohost.invalid"):
        ClickHouseWriter("http://nohost.invalid:1/db", retention_days=30,
                         start_timeout_s=60).start()


def test_the_writer_exits_when_its_worker_is_gone(tmp_path: Path) -> None:
    writer = ClickHouseWriter(f"chdb://{tmp_path / 'ch'}", retention_days=30).start()
    proc = writer._proc  # noqa: SLF001
    writer._conn.close()  # noqa: SLF001 - what a dead worker leaves behind
    proc.join(30)
    assert proc.exitcode == 0
