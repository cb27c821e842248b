"""``tripwire sql``: run one statement and print its result as clickhouse-client does.

ClickHouse formats the result itself (TabSeparated, the default output format of
clickhouse-client in batch mode and of the HTTP interface), so values come out byte
for byte as clickhouse-client prints them: ``\\t``, ``\\n`` and ``\\\\`` escaped, NULL
as ``\\N``, arrays, maps, floats and DateTime64 in ClickHouse's own spelling, which a
re-implementation in Python would only approximate. A statement with its own FORMAT
clause gets that format; one without a result (DDL, INSERT) prints nothing.
"""

from __future__ import annotations

import codecs
from typing import TextIO

from tripwire.sinks.clickhouse import Client

_CHUNK = 64 * 1024


class QueryError(RuntimeError):
    """ClickHouse refused or failed the statement; the message is ClickHouse's own."""


def run_sql(client: Client, sql: str, out: TextIO) -> None:
    """Run ``sql`` and stream its TabSeparated result to ``out``."""
    # Multi-byte UTF-8 characters can straddle chunk boundaries; String columns may
    # hold bytes that are not UTF-8 at all, which a text stream cannot carry as is.
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    try:
        with client.raw_stream(sql) as stream:
            while chunk := stream.read(_CHUNK):
                out.write(decoder.decode(chunk))
    except Exception as ex:
        raise QueryError(_clickhouse_message(ex)) from ex
    out.write(decoder.decode(b"", final=True))


def _clickhouse_message(ex: Exception) -> str:
    # The HTTP driver wraps the server's text ("HTTPDriver for http://... received
    # ClickHouse error code 60 ... Code: 60. DB::Exception: ..."); the part from
    # "Code:" on is what clickhouse-client would print.
    text = str(ex).strip()
    at = text.find("Code: ")
    return text[at:] if at > 0 else text or type(ex).__name__
