"""What a worker prints: Tripwire's own lines on stdout, everything else in its log file.

The console gets the ``tripwire`` loggers (start-up summary, one status line per interval,
trips, operator actions, rejected commands) and only errors of the libraries underneath;
Faust's service chatter (every service starting and stopping, subscription tables,
rebalances) goes to ``<data dir>/worker.log`` with everything else, at the configured level.

``TRIPWIRE_LOG_FORMAT=json`` makes each console line one JSON object (``ts``, ``level``,
``logger``, ``message``) for log shippers.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

LOGGER = "tripwire"
LOG_FILE = "worker.log"


class ConsoleFilter(logging.Filter):
    """Tripwire's records at the handler's level; other libraries' only from ERROR up."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == LOGGER or record.name.startswith(LOGGER + "."):
            return True
        return record.levelno >= logging.ERROR


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if not record.name.startswith(LOGGER):
            message = f"{record.levelname} {record.name}: {message}"
        elif record.levelno >= logging.ERROR:
            message = f"{record.levelname}: {message}"
        if record.exc_info:
            # The traceback goes to the log file only: the console keeps one line per event.
            message += f" ({type(record.exc_info[1]).__name__}; traceback in {LOG_FILE})"
        return "tripwire: " + " ".join(message.splitlines())


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            line["error"] = repr(record.exc_info[1])
        return json.dumps(line, ensure_ascii=False)


def console_handler(fmt: Literal["text", "json"], level: str) -> logging.Handler:
    handler = logging.StreamHandler(sys.stdout)
    handler.setLevel(level.upper())
    handler.addFilter(ConsoleFilter())
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    return handler


def setup_console(fmt: Literal["text", "json"], level: str, data_dir: Path) -> logging.Handler:
    """Console and log file for the time before Faust takes over logging (it is handed the
    same console handler and the same file, see :func:`streams.worker.run_worker`)."""
    handler = console_handler(fmt, level)
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    file = logging.FileHandler(data_dir / LOG_FILE)
    file.setFormatter(logging.Formatter("[%(asctime)s] [%(process)d] [%(levelname)s] "
                                        "[%(name)s] %(message)s"))
    root.addHandler(file)
    root.setLevel(level.upper())
    return handler
