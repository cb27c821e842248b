"""The embedded ClickHouse's HTTP interface (sinks/clickhouse_http.py), used the way any
ClickHouse client uses a server: clickhouse-connect over HTTP, with its default compression,
bound parameters, settings, inserts and a result larger than one chunk."""

from __future__ import annotations

from pathlib import Path

import clickhouse_connect
import pytest
from clickhouse_connect.driver.exceptions import DatabaseError

from tripwire.sdk.local_stack import STACK_FILE, read_stack, write_stack
from tripwire.sinks.clickhouse_http import ClickHouseHttpInterface, HttpAddress, reading_dsn
from tripwire.streams.broker import free_port
from tripwire.streams.settings import TripwireSettings


@pytest.fixture
def interface(ch_client):
    address = HttpAddress.on_loopback(free_port())
    served = ClickHouseHttpInterface(address, ch_client).start()
    try:
        yield address
    finally:
        served.stop()


def test_queries_inserts_and_parameters_over_http(interface: HttpAddress) -> None:
    client = clickhouse_connect.get_client(dsn=interface.dsn, autogenerate_session_id=False)
    client.command("CREATE TABLE IF NOT EXISTS http_t (id UInt32, name String, at DateTime64(3)) "
                   "ENGINE = MergeTree ORDER BY id")
    rows = [[i, f"name-{i}" * 3, 1_700_000_000_000 + i] for i in range(50_000)]
    client.insert("http_t", rows, column_names=["id", "name", "at"])  # lz4 by default
    assert client.query("SELECT count(), max(id) FROM http_t").result_rows == [(50_000, 49_999)]
    got = client.query("SELECT name FROM http_t WHERE id = {id:UInt32}", parameters={"id": 7})
    assert got.result_rows == [("name-7name-7name-7",)]
    # Larger than one chunk of the streamed answer, in column blocks as the backtest reads.
    with client.query_column_block_stream("SELECT id FROM http_t ORDER BY id") as blocks:
        ids = [i for block in blocks for i in block[0]]
    assert ids == list(range(50_000))
    assert client.query("SELECT getSetting('max_threads')",
                        settings={"max_threads": 3}).result_rows == [(3,)]
    with pytest.raises(DatabaseError, match="UNKNOWN_TABLE|Unknown table"):
        client.query("SELECT * FROM no_such_table")


def test_the_token_is_required(interface: HttpAddress) -> None:
    wrong = HttpAddress(interface.host, interface.port, "not-the-token")
    with pytest.raises(DatabaseError):
        clickhouse_connect.get_client(dsn=wrong.dsn, autogenerate_session_id=False)


def test_readers_use_the_running_stack_and_only_its_dir(tmp_path: Path) -> None:
    settings = TripwireSettings(data_dir=tmp_path)
    embedded = settings.clickhouse_dsn()
    assert reading_dsn(settings) == embedded  # no stack running
    write_stack(tmp_path, clickhouse=embedded, clickhouse_http="http://tripwire:x@h:1/default")
    assert (tmp_path / STACK_FILE).stat().st_mode & 0o777 == 0o600
    assert read_stack(tmp_path) is not None
    assert reading_dsn(settings) == "http://tripwire:x@h:1/default"
    configured = TripwireSettings(data_dir=tmp_path, clickhouse_url="http://u:p@server:8123/db")
    assert reading_dsn(configured) == "http://u:p@server:8123/db"



def test_the_step_sink_inserts_arrow_over_http(interface: HttpAddress, ch_client) -> None:
    """The sink's insert (Arrow IPC in the request body) the way it reaches a ClickHouse
    server in production: over HTTP, masked, absent fields stored as their defaults."""
    import time
    import uuid

    from tripwire.sinks.migrations import migrate
    from tripwire.sinks.step_sink import StepSink

    migrate(ch_client, 90)
    client = clickhouse_connect.get_client(dsn=interface.dsn, autogenerate_session_id=False)
    now = int(time.time() * 1000)
    events = [{"event_id": str(uuid.uuid4()), "ts": now + i, "agent_id": f"agent-{i % 3}",
               "run_id": "run-1", "step": i, "kind": "tool_call",
               "content": "mail bob@example.com" if i % 3 == 0 else None,
               "attributes": {"api_token": "t0k3n", "region": "eu"} if i % 2 else {}}
              for i in range(3_000)]
    assert StepSink(client).insert(events) == 3_000
    assert StepSink(client).insert(events[:10]) == 0  # already stored
    assert ch_client.query(
        "SELECT count(), countIf(content = 'mail [EMAIL]'), countIf(content = ''),"
        " countIf(attributes['api_token'] = '[SECRET]'), countIf(attributes = map()),"
        " sum(input_tokens), countIf(latency_ms IS NULL), countIf(tool = '') FROM steps"
    ).result_rows == [(3_000, 1_000, 2_000, 1_500, 1_500, 0, 3_000, 3_000)]
