"""ClickHouse's HTTP interface in front of the embedded chDB that ``tripwire run`` holds.

A chDB directory belongs to one process (see :mod:`tripwire.sinks.clickhouse`), so while
``tripwire run`` is up, ``tripwire sql|evidence|backtest|gate`` from another shell could not
open its data: the operator trying the demo met "cannot open chDB" exactly when an incident
needs the evidence. The writer process that holds the directory therefore also answers
ClickHouse's HTTP protocol on loopback, enough of it for clickhouse-connect (the same client
and code path the CLI uses against a ClickHouse server in production): queries with bound
parameters and per-query settings, results streamed in the requested format (chunked), and
inserts whose data follows the query in the body, compressed or not. The URL, with a token
made for this run, goes into ``stack.json`` (mode 600), where :func:`reading_dsn` finds it.
"""

from __future__ import annotations

import base64
import hmac
import logging
import re
import secrets
import threading
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from tripwire.sdk.local_stack import read_stack

log = logging.getLogger("tripwire.sink")

USER = "tripwire"
CHUNK_BYTES = 1 << 16
# URL parameters that steer the HTTP exchange rather than the query: ClickHouse's server
# reads them itself, the embedded engine would reject them as unknown settings.
_TRANSPORT_PARAMS = frozenset({
    "query", "query_id", "database", "default_format", "session_id", "session_timeout",
    "session_check", "user", "password", "quota_key", "compress", "decompress", "buffer_size",
    "wait_end_of_query", "client_protocol_version", "send_progress_in_http_headers",
    "http_headers_progress_interval_ms", "cancel_http_readonly_queries_on_client_close",
    "enable_http_compression", "role",
})
_TRAILING_FORMAT = re.compile(r"\bFORMAT\s+\w+\s*;?\s*$", re.IGNORECASE)
# An INSERT whose data follows it in the body: the query ends at the newline after FORMAT.
_INSERT_HEAD = re.compile(rb"\s*INSERT\b.*?\bFORMAT\s+\w+[ \t]*\r?\n", re.IGNORECASE | re.DOTALL)
_INSERT_PARTS = re.compile(
    r"\s*INSERT\s+INTO\s+(?P<table>[^\s(]+)\s*(?:\((?P<columns>[^)]*)\))?\s*FORMAT\s+(?P<fmt>\w+)",
    re.IGNORECASE | re.DOTALL)


@dataclass(frozen=True)
class HttpAddress:
    """Where the interface listens and the password it wants (user ``tripwire``)."""

    host: str
    port: int
    token: str

    @classmethod
    def on_loopback(cls, port: int) -> HttpAddress:
        return cls("127.0.0.1", port, secrets.token_urlsafe(24))

    @property
    def dsn(self) -> str:
        return f"http://{USER}:{self.token}@{self.host}:{self.port}/default"


def reading_dsn(settings: Any) -> str:
    """The DSN a command that reads ClickHouse should use (a TripwireSettings): the configured
    one, else the embedded dir, reached over this interface while a running ``tripwire run``
    (its ``stack.json``) holds that dir."""
    dsn = settings.clickhouse_dsn()
    if settings.clickhouse_url:
        return dsn
    stack = read_stack(settings.data_dir)
    if stack and stack.get("clickhouse") == dsn and isinstance(stack.get("clickhouse_http"), str):
        return stack["clickhouse_http"]
    return dsn


def _decompress(body: bytes, encoding: str) -> bytes:
    if not encoding or encoding == "identity":
        return body
    if encoding == "lz4":
        import lz4.frame  # clickhouse-connect's own dependency

        return lz4.frame.decompress(body)
    if encoding == "zstd":
        import zstandard

        return zstandard.ZstdDecompressor().decompressobj().decompress(body)
    if encoding in ("gzip", "deflate"):
        return zlib.decompress(body, 47)  # 47: gzip or zlib header, detected
    raise ValueError(f"unsupported Content-Encoding {encoding!r}")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
        pass  # one line per request would drown the worker's console

    def do_GET(self) -> None:
        self._answer()

    def do_POST(self) -> None:
        self._answer()

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            parts = []
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    self.rfile.readline()
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _authorised(self, params: Mapping[str, str]) -> bool:
        auth = self.headers.get("Authorization", "")
        password = params.get("password") or self.headers.get("X-ClickHouse-Key", "")
        if auth.startswith("Basic "):
            try:
                password = base64.b64decode(auth[6:]).decode().partition(":")[2]
            except ValueError:
                return False
        return hmac.compare_digest(password.encode(), self.server.token.encode())

    def _fail(self, status: int, message: str, code: int = 0) -> None:
        body = message.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=UTF-8")
        self.send_header("X-ClickHouse-Exception-Code", str(code))
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _answer(self) -> None:
        url = urlsplit(self.path)
        params = dict(parse_qsl(url.query, keep_blank_values=True))
        try:
            body = _decompress(self._read_body(),
                               self.headers.get("Content-Encoding", "").strip().lower())
        except (ValueError, OSError, RuntimeError) as exc:
            self._fail(400, f"cannot read the request body: {exc}")
            return
        if url.path == "/ping":
            self._send(b"Ok.\n")
            return
        if not self._authorised(params):
            self._fail(403, f"Authentication failed: user {USER}, password from stack.json",
                       516)
            return
        sql, data = params.get("query"), None
        if sql is None:
            head = _INSERT_HEAD.match(body)
            sql, data = ((head.group(0).decode(), body[head.end():]) if head
                         else (body.decode("utf-8", "replace"), None))
        elif body:
            data = body
        settings = {k: v for k, v in params.items() if k not in _TRANSPORT_PARAMS}
        try:
            if data is not None:
                self._insert(sql, data, settings)
            else:
                self._query(sql, settings, params.get("default_format") or "TabSeparated")
        except Exception as exc:  # noqa: BLE001 - the client gets ClickHouse's message
            match = re.search(r"Code: (\d+)", str(exc))
            self._fail(500, str(exc), int(match.group(1)) if match else 1)

    def _insert(self, sql: str, data: bytes, settings: dict[str, str]) -> None:
        parts = _INSERT_PARTS.match(sql)
        if parts is None:
            raise ValueError(f"cannot read the INSERT {sql[:200]!r}")
        columns = ([c.strip().strip("`\"") for c in parts["columns"].split(",")]
                   if parts["columns"] else None)
        self.server.client.raw_insert(parts["table"], columns, data, settings=settings,
                                      fmt=parts["fmt"])
        self._send(b"")

    def _query(self, sql: str, settings: dict[str, str], default_format: str) -> None:
        if not sql.strip():
            raise ValueError("Code: 62. Empty query")
        fmt = None if _TRAILING_FORMAT.search(sql) else default_format
        stream = self.server.client.raw_stream(sql, settings=settings, fmt=fmt)
        try:
            first = stream.read(CHUNK_BYTES)
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.send_header("X-ClickHouse-Summary", "{}")
            self.end_headers()
            chunk = first
            while chunk:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                chunk = stream.read(CHUNK_BYTES)
            self.wfile.write(b"0\r\n\r\n")
        finally:
            stream.close()

    def _send(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-ClickHouse-Summary", "{}")
        self.end_headers()
        self.wfile.write(body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True  # a writer restarted after a crash takes its port back

    def __init__(self, address: HttpAddress, client: Any) -> None:
        super().__init__((address.host, address.port), _Handler)
        self.token = address.token
        self.client = client


class ClickHouseHttpInterface:
    """``ClickHouseHttpInterface(address, client).start()`` answers on ``address`` until
    ``.stop()``; ``client`` is a clickhouse-connect client on the embedded dir (a client of
    its own: queries here then run beside the writer's inserts, not behind them)."""

    def __init__(self, address: HttpAddress, client: Any) -> None:
        self.address = address
        self._server = _Server(address, client)
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        name="tripwire-clickhouse-http", daemon=True)

    def start(self) -> ClickHouseHttpInterface:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
