import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from chdb_fixtures import TEST_RETENTION_DAYS, run_sql_in_subprocess
from tripwire.sinks.clickhouse import Client, connect, redact
from tripwire.sinks.migrations import (
    MigrationError,
    applied_versions,
    load_migrations,
    migrate,
    render,
    split_statements,
)

pytestmark = pytest.mark.integration


def _create_query(client: Client, table: str) -> str:
    return client.query(
        "SELECT create_table_query FROM system.tables"
        " WHERE database = currentDatabase() AND name = {t:String}",
        parameters={"t": table},
    ).result_rows[0][0]


def test_migrate_twice_applies_once(ch_client: Client):
    every = [m.version for m in load_migrations()]
    assert every[:2] == [1, 2]  # steps, then detections and mode changes
    assert migrate(ch_client, TEST_RETENTION_DAYS) == every
    assert migrate(ch_client, TEST_RETENTION_DAYS) == []
    rows = ch_client.query("SELECT version, name FROM schema_migrations ORDER BY version")
    assert rows.result_rows[:2] == [(1, "steps"), (2, "detections_and_modes")]


def test_steps_table_has_dedup_engine_key_partition_ttl_and_run_index(ch_migrated: Client):
    ddl = _create_query(ch_migrated, "steps")
    assert "ENGINE = ReplacingMergeTree(ingested_at)" in ddl
    assert "PARTITION BY toYYYYMMDD(ts)" in ddl
    assert "ORDER BY (agent_id, ts, event_id)" in ddl
    assert f"TTL toDateTime(ts) + toIntervalDay({TEST_RETENTION_DAYS})" in ddl
    assert "ttl_only_drop_parts = 1, materialize_ttl_recalculate_only = 1" in ddl
    assert "INDEX run_id_bf run_id TYPE bloom_filter" in ddl
    assert "`ts` DateTime64(3, 'UTC')" in ddl
    assert "`kind` LowCardinality(String)" in ddl
    assert "`latency_ms` Nullable(Int64)" in ddl
    assert "`input_tokens` Int64" in ddl


def test_changed_retention_reaches_existing_table(ch_migrated: Client):
    migrate(ch_migrated, 7)
    assert "TTL toDateTime(ts) + toIntervalDay(7)" in _create_query(ch_migrated, "steps")


@pytest.mark.parametrize("bad", [0, -1, True, 1.5, "30", "1 DAY; DROP TABLE steps"])
def test_retention_must_be_a_positive_int(ch_client: Client, bad):
    with pytest.raises(ValueError, match="retention_days must be a positive int"):
        migrate(ch_client, bad)
    assert render("TTL ts + INTERVAL {retention_days} DAY", 5) == "TTL ts + INTERVAL 5 DAY"


def test_new_files_are_applied_in_order_and_only_once(ch_client: Client, tmp_path: Path):
    (tmp_path / "0001_first.sql").write_text(
        textwrap.dedent(
            """
            -- a comment; with a semicolon
            CREATE TABLE IF NOT EXISTS a (s String DEFAULT 'x;y') ENGINE = MergeTree ORDER BY s;
            /* block; comment */
            CREATE TABLE IF NOT EXISTS b (n UInt8) ENGINE = MergeTree ORDER BY n
            """
        )
    )
    assert migrate(ch_client, 1, directory=tmp_path) == [1]
    (tmp_path / "0002_second.sql").write_text(
        "ALTER TABLE a ADD COLUMN IF NOT EXISTS ttl_days UInt16 DEFAULT {retention_days};"
    )
    assert migrate(ch_client, 3, directory=tmp_path) == [2]
    assert migrate(ch_client, 3, directory=tmp_path) == []
    assert set(applied_versions(ch_client)) == {1, 2}
    ch_client.command("INSERT INTO a (s) VALUES ('k')")
    assert ch_client.query("SELECT s, ttl_days FROM a").result_rows == [("k", 3)]


def test_a_failing_migration_is_not_recorded(ch_client: Client, tmp_path: Path):
    (tmp_path / "0001_broken.sql").write_text("CREATE TABLE nope (x Nope) ENGINE = Memory;")
    with pytest.raises(MigrationError, match="0001_broken"):
        migrate(ch_client, 1, directory=tmp_path)
    assert applied_versions(ch_client) == {}


def test_bad_file_names_and_placeholders_are_refused(tmp_path: Path):
    (tmp_path / "1_short.sql").write_text("SELECT 1")
    with pytest.raises(MigrationError, match="NNNN_name.sql"):
        load_migrations(tmp_path)
    with pytest.raises(MigrationError, match="unknown placeholder"):
        render("SELECT {database}", 1)


def test_split_statements_respects_quotes_and_comments():
    sql = "SELECT ';' -- x; y\n; SELECT \"a;b\", `c;d` /* ; */ ;;  "
    assert split_statements(sql) == ["SELECT ';'", 'SELECT "a;b", `c;d`']


def test_packaged_migrations_are_numbered_from_one_and_unique():
    # Gaps are allowed (blocks of numbers are reserved for parallel work); order and
    # uniqueness are what migrate() relies on.
    versions = [m.version for m in load_migrations()]
    assert versions[0] == 1
    assert versions == sorted(set(versions))


@pytest.mark.parametrize(
    "dsn",
    ["postgres://u:hunter2@host/db", "chdb://relative/dir", "chdb:relative", "", "localhost:8123"],
)
def test_connect_refuses_other_dsns_without_leaking_passwords(dsn: str):
    with pytest.raises(ValueError) as info:
        connect(dsn)
    assert "hunter2" not in str(info.value)
    assert redact("https://u:pw@h:8443/db") == "https://u:***@h:8443/db"


def test_chdb_dir_is_created(tmp_path: Path):
    target = tmp_path / "new" / "clickhouse"
    # In a subprocess: this process may only open the session's chDB dir.
    assert run_sql_in_subprocess(f"chdb://{target}", "SELECT 41 + 1") == "42\n"
    assert target.is_dir()


def test_dir_held_by_another_process_is_a_clear_error(tmp_path: Path):
    target = tmp_path / "held"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from sinks.clickhouse import connect\n"
            "c = connect(sys.argv[1]); print('ready', flush=True); time.sleep(120)\n",
            f"chdb://{target}",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        out = subprocess.run(
            [
                sys.executable,
                "-c",
                "import sys\nfrom sinks.clickhouse import connect\n"
                "try:\n    connect(sys.argv[1])\nexcept RuntimeError as ex:\n    print(ex)\n",
                f"chdb://{target}",
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        ).stdout
        assert f"cannot open chDB at {target}" in out
        assert f"PID: {holder.pid}" in out
    finally:
        holder.kill()
        holder.wait()
    # The kernel dropped the dead holder's lock: the dir opens again.
    assert run_sql_in_subprocess(f"chdb://{target}", "SELECT 1") == "1\n"
