"""Ordered, idempotent schema migrations, recorded in ``schema_migrations``.

Adding a table or a column: put ``sinks/sql/NNNN_short_name.sql`` next to the others,
with the next number, and never edit a file once it has shipped (a changed file is
logged as a checksum mismatch, not re-run). Rules for a file:

* Statements end with ``;``; ``--`` comments are fine anywhere.
* Every statement must be safe to run twice (``CREATE TABLE IF NOT EXISTS``, ``ADD
  COLUMN IF NOT EXISTS``...): a crash between running a file and recording it re-runs
  the whole file, and two workers starting together may both run it.
* ``{retention_days}`` is the only placeholder. A table that expires rows by it also
  goes into :data:`RETENTION_TTL`, so a changed retention setting reaches tables that
  already exist.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path

from tripwire.sinks.clickhouse import Client

log = logging.getLogger(__name__)

MIGRATIONS_TABLE = "schema_migrations"

# Table -> the time expression its TTL counts retention_days from. Must match the
# TTL clause of the table's DDL file.
RETENTION_TTL: dict[str, str] = {
    "steps": "toDateTime(ts)",
    "detections": "toDateTime(ts)",
    "mode_changes": "toDateTime(issued_at)",
    # Control-plane audit (0010_operator_commands_and_alerts.sql).
    "operator_commands": "toDateTime(record_ts)",
    "alert_deliveries": "toDateTime(ts)",
    # Guards' acknowledgements (0015_control_acks.sql).
    "control_acks": "toDateTime(applied_at)",
    # Humans in the loop (0016_approvals_and_web_audit.sql).
    "approval_decisions": "toDateTime(decided_at)",
    "web_audit": "toDateTime(ts)",
    # Shadow rules' would-be detections and transitions (0018_shadow_rules.sql).
    "shadow_detections": "toDateTime(ts)",
    "shadow_mode_changes": "toDateTime(issued_at)",
    # Dashboard rollups (0003_dashboard_rollups.sql).
    "agent_stats": "bucket",
    "block_stats": "bucket",
    "run_hour_stats": "hour",
}

_FILE_RE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_PLACEHOLDER_RE = re.compile(r"\{(\w+)\}")
_TTL_DAYS_RE = re.compile(r"\bTTL\b.*?toIntervalDay\((\d+)\)")


class MigrationError(RuntimeError):
    pass


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str
    checksum: str


def load_migrations(directory: Path | Traversable | None = None) -> list[Migration]:
    """The migration files of ``directory`` (default: the packaged ``sinks/sql``), in order."""
    root = directory if directory is not None else files("tripwire.sinks") / "sql"
    found: list[Migration] = []
    for entry in root.iterdir():
        if not entry.name.endswith(".sql"):
            continue
        m = _FILE_RE.match(entry.name)
        if m is None:
            raise MigrationError(f"migration file {entry.name!r} is not named NNNN_name.sql")
        text = entry.read_text(encoding="utf-8")
        digest = hashlib.sha256(text.encode()).hexdigest()
        found.append(Migration(int(m.group(1)), m.group(2), text, digest))
    found.sort(key=lambda mig: mig.version)
    versions = [mig.version for mig in found]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"two migration files share a number: {versions}")
    return found


def split_statements(sql: str) -> list[str]:
    """Split a file on ``;`` outside quotes and comments; ClickHouse runs one per request."""
    statements: list[str] = []
    buf: list[str] = []
    i, n = 0, len(sql)
    while i < n:
        ch = sql[i]
        if ch == "-" and sql.startswith("--", i):
            end = sql.find("\n", i)
            i = n if end < 0 else end + 1
            buf.append("\n")
            continue
        if ch == "/" and sql.startswith("/*", i):
            end = sql.find("*/", i + 2)
            i = n if end < 0 else end + 2
            buf.append(" ")
            continue
        if ch in "'\"`":
            j = i + 1
            while j < n and sql[j] != ch:
                j += 2 if sql[j] == "\\" else 1
            buf.append(sql[i : j + 1])
            i = j + 1
            continue
        if ch == ";":
            statements.append("".join(buf))
            buf = []
        else:
            buf.append(ch)
        i += 1
    statements.append("".join(buf))
    return [s.strip() for s in statements if s.strip()]


def render(sql: str, retention_days: int) -> str:
    """Fill the placeholders; anything but a positive int retention is refused."""
    days = _check_retention(retention_days)

    def fill(m: re.Match[str]) -> str:
        if m.group(1) != "retention_days":
            raise MigrationError(f"unknown placeholder {m.group(0)} in migration SQL")
        return str(days)

    return _PLACEHOLDER_RE.sub(fill, sql)


def applied_versions(client: Client) -> dict[int, str]:
    """version -> checksum of what is recorded as applied in the client's database."""
    rows = client.query(
        f"SELECT version, any(checksum) FROM {MIGRATIONS_TABLE} GROUP BY version"
    ).result_rows
    return {int(v): str(c) for v, c in rows}


def migrate(
    client: Client, retention_days: int, *, directory: Path | Traversable | None = None
) -> list[int]:
    """Bring the client's database up to date; returns the versions applied now."""
    days = _check_retention(retention_days)
    # ReplacingMergeTree: two workers racing on a fresh database may both record a
    # version; the duplicate row collapses and readers GROUP BY version anyway.
    client.command(
        f"CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} ("
        " version UInt32, name String, checksum String,"
        " applied_at DateTime64(3, 'UTC') DEFAULT now64(3, 'UTC')"
        ") ENGINE = ReplacingMergeTree ORDER BY version"
    )
    done = applied_versions(client)
    applied: list[int] = []
    for mig in load_migrations(directory):
        if mig.version in done:
            if done[mig.version] != mig.checksum:
                log.warning(
                    "migration %04d_%s changed after it was applied; not re-running it",
                    mig.version,
                    mig.name,
                )
            continue
        for statement in split_statements(mig.sql):
            try:
                client.command(render(statement, days))
            except Exception as ex:
                raise MigrationError(f"migration {mig.version:04d}_{mig.name} failed: {ex}") from ex
        client.insert(
            MIGRATIONS_TABLE,
            [[mig.version, mig.name, mig.checksum]],
            column_names=["version", "name", "checksum"],
        )
        log.info("applied migration %04d_%s", mig.version, mig.name)
        applied.append(mig.version)
    _apply_retention(client, days)
    return applied


def _apply_retention(client: Client, days: int) -> None:
    # The TTL is baked into CREATE TABLE on first run; without this a later change of
    # retention_days would silently not apply to a database that already exists.
    for table, expr in RETENTION_TTL.items():
        rows = client.query(
            "SELECT engine_full FROM system.tables"
            " WHERE database = currentDatabase() AND name = {t:String}",
            parameters={"t": table},
        ).result_rows
        if not rows:
            continue
        m = _TTL_DAYS_RE.search(rows[0][0])
        if m is not None and int(m.group(1)) == days:
            continue
        log.info("setting retention of %s to %d days", table, days)
        client.command(f"ALTER TABLE {table} MODIFY TTL {expr} + INTERVAL {days} DAY")


def _check_retention(retention_days: object) -> int:
    if (
        not isinstance(retention_days, int)
        or isinstance(retention_days, bool)
        or retention_days < 1
    ):
        raise ValueError(f"retention_days must be a positive int, got {retention_days!r}")
    return retention_days
