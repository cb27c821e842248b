"""One way to get a ClickHouse client, embedded (chDB) or a server over HTTP(S).

DSNs:

* ``chdb:///abs/dir`` or ``chdb:///abs/dir?database=name``: the in-process chDB engine
  on that directory (created if missing). The database must already exist.
* ``http(s)://user:pass@host:port/db``: a ClickHouse server.

chDB limits every caller has to live with (measured with chdb 4.4 / ClickHouse 26.9):

* One engine per process: while any client on dir A is open, opening dir B raises.
  Once every client on A is closed, B (or A again) opens fine, ~50 ms each time.
  Any number of clients can share the one open dir.
* A data dir is locked per process (flock on ``<dir>/status``); a second process
  cannot open it while the first lives. The kernel drops the lock when the owner dies,
  even by SIGKILL, so a stale ``status`` file never blocks a restart.
* Clients are thread-safe: each serialises its own calls; separate clients on the
  same dir run queries in parallel.
"""

from __future__ import annotations

import os
import re
from urllib.parse import parse_qs, urlsplit

import clickhouse_connect
from clickhouse_connect.driver import Client
from clickhouse_connect.driver.exceptions import ClickHouseError

from tripwire.schemas.service_errors import ClickHouseUnavailable, ServiceError

__all__ = ["Client", "ClickHouseUrlInvalid", "connect", "redact"]


class ClickHouseUrlInvalid(ServiceError, ValueError):
    """The DSN is not one :func:`connect` understands."""


def redact(dsn: str) -> str:
    """The DSN with its password replaced, for error messages and logs."""
    return re.sub(r"(://[^:/@]*:)[^@/]*@", r"\1***@", dsn)


def read_failure(dsn: str, exc: BaseException) -> str:
    """One line for a query that failed on a reachable ClickHouse: a database with no
    schema yet said as such (ClickHouse's own message repeats the whole query), anything
    else flattened and cut."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    if "UNKNOWN_TABLE" in text:
        return (f"ClickHouse at {redact(dsn)} has no Tripwire tables: nothing has been stored "
                "there yet (`tripwire init` creates the schema, a worker fills it); check "
                "TRIPWIRE_CLICKHOUSE_URL (or --clickhouse-url / --data-dir)")
    text = text if len(text) <= 400 else text[:397] + "..."
    return (f"ClickHouse at {redact(dsn)} refused: {text}: check TRIPWIRE_CLICKHOUSE_URL (or "
            "--clickhouse-url / --data-dir); `tripwire init` creates the schema")


def reach_failure(dsn: str, exc: BaseException) -> str:
    """One line for a connection that failed (``connect``'s errors already name the
    server and the setting)."""
    text = " ".join(str(exc).split())
    return text if "ClickHouse at" in text else f"cannot reach ClickHouse at {redact(dsn)}: {text}"


def connect(dsn: str) -> Client:
    """A client for ``dsn`` (see module docstring); ValueError for anything else, and
    :class:`ClickHouseUnavailable` if it cannot be reached or opened."""
    parts = urlsplit(dsn)
    if parts.scheme == "chdb":
        return _connect_chdb(dsn, parts.netloc, parts.path, parts.query)
    if parts.scheme in ("http", "https"):
        if not parts.hostname:
            raise ClickHouseUrlInvalid(f"ClickHouse DSN has no host: {redact(dsn)}: set "
                                       "TRIPWIRE_CLICKHOUSE_URL to http(s)://user:pass@host:port/db")
        # Without a session id the HTTP client keeps no server-side session state, so
        # one client can be used from several threads at once (sessions are locked
        # per request and concurrent use would fail with SESSION_IS_LOCKED).
        try:
            return clickhouse_connect.get_client(dsn=dsn, autogenerate_session_id=False)
        except (ClickHouseError, OSError) as exc:
            # get_client asks the server for its version: unreachable, wrong password or
            # unknown database all fail here.
            raise ClickHouseUnavailable(redact(dsn), exc) from exc
    raise ClickHouseUrlInvalid(
        f"unsupported ClickHouse DSN {redact(dsn)!r}: set TRIPWIRE_CLICKHOUSE_URL to "
        "chdb:///abs/dir or http(s)://user:pass@host:port/db"
    )


def _connect_chdb(dsn: str, netloc: str, path: str, query: str) -> Client:
    # chdb://name/... would be read by clickhouse-connect as "location name, database
    # path", which silently puts data in the wrong place; only absolute dirs are allowed.
    if netloc or not path.startswith("/"):
        raise ClickHouseUrlInvalid(f"chDB DSN must be chdb:///absolute/dir[?database=db], got "
                                   f"{dsn!r}: set TRIPWIRE_CLICKHOUSE_URL (or --data-dir)")
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        raise ClickHouseUnavailable(dsn, f"cannot create {path}: {exc.strerror}") from exc
    database = parse_qs(query).get("database", [None])[0]
    try:
        return clickhouse_connect.get_client(interface="chdb", path=path, database=database)
    except Exception as ex:
        # chDB reports a locked dir as "Error initializing EmbeddedServer: ." and writes
        # the real reason to stderr; say what is almost always going on instead.
        raise ClickHouseUnavailable(
            dsn, f"cannot open chDB at {path}. {_holder_hint(path)}This process can only "
            f"have one chDB dir open at a time, and a dir only one process at a time ({ex})"
        ) from ex


def _holder_hint(path: str) -> str:
    try:
        with open(os.path.join(path, "status"), encoding="utf-8", errors="replace") as f:
            first = f.readline().strip()
    except OSError:
        return ""
    return f"Last opened by {first} (see {path}/status). " if first.startswith("PID") else ""
