"""What a worker prints: Tripwire's own lines on stdout, everything else in its log file.

The console gets the ``tripwire`` loggers (start-up summary, one status line per interval,
trips, operator actions, rejected commands) and only errors of the libraries underneath;
Faust's service chatter (every service starting and stopping, subscription tables,
rebalances) goes to ``<data dir>/worker.log`` with everything else, at the configured level.

``TRIPWIRE_LOG_FORMAT=json`` makes each console line one JSON object (``ts``, ``level``,
``logger``, ``message``) for log shippers.

A library error that repeats prints once a minute: with its broker gone, aiokafka logs three
errors per reconnect attempt (connect failed, metadata failed, fetch failed): ~120 lines a
second (measured: 2,509 in the 35 s between stopping the broker and the worker's exit, in
its log file), which buried the worker's own lines; the console now showed 9 of them. Each
repeat still goes to the log file; the next console line of the kind says how many it stood
for.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

LOGGER = "tripwire"
LOG_FILE = "worker.log"
REPEAT_WINDOW_S = 60.0
"""A library error of the same kind (logger and message template) prints at most once in
this long; an outage is still visible each minute, and the log file has every line."""


class RepeatLimiter:
    """Which of a stream of (time, kind) to let through: the first of a kind, then the first
    one at least ``window_s`` after the last one let through, each with the count of those
    held back in between."""

    def __init__(self, window_s: float = REPEAT_WINDOW_S) -> None:
        self.window_s = window_s
        # kind -> (time the last one was let through, how many were held back since)
        self._last: dict[tuple[str, str], tuple[float, int]] = {}

    def admit(self, kind: tuple[str, str], now: float) -> int | None:
        """None: hold this one back; otherwise let it through, and how many were held back
        since the last one of its kind that was."""
        last = self._last.get(kind)
        if last is not None and now - last[0] < self.window_s:
            self._last[kind] = (last[0], last[1] + 1)
            return None
        self._last[kind] = (now, 0)
        return 0 if last is None else last[1]


class ConsoleFilter(logging.Filter):
    """Tripwire's records at the handler's level; other libraries' only from ERROR up, and
    each kind of those at most once a :data:`REPEAT_WINDOW_S`."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self._clock = clock
        self._repeats = RepeatLimiter()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == LOGGER or record.name.startswith(LOGGER + "."):
            return True
        if record.levelno < logging.ERROR:
            return False
        held = self._repeats.admit((record.name, str(record.msg)), self._clock())
        if held is None:
            return False
        if held:
            # Read by the console's formatters only; the file handler's ignores it.
            record.tripwire_repeats = held
        return True


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
        message += _repeats_note(record)
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
        held = getattr(record, "tripwire_repeats", 0)
        if held:
            line["repeats_not_shown"] = held
        return json.dumps(line, ensure_ascii=False)


def _repeats_note(record: logging.LogRecord) -> str:
    held = getattr(record, "tripwire_repeats", 0)
    if not held:
        return ""
    return f" ({held} more like it since its last line here, in {LOG_FILE})"


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
    threading.excepthook = _log_thread_failure
    return handler


def _log_thread_failure(args: threading.ExceptHookArgs) -> None:
    """A library thread's uncaught exception as one console line (traceback in the file),
    not a bare traceback on stderr: aiokafka's consumer thread raises one when it is stopped
    with its broker gone."""
    if args.exc_type is SystemExit:
        return
    name = args.thread.name if args.thread is not None else "?"
    why = str(args.exc_value) if args.exc_value is not None else ""
    logging.getLogger(LOGGER).error(
        "thread %s failed%s", name, f": {why}" if why else "",
        exc_info=(args.exc_type, args.exc_value, args.exc_traceback)
        if args.exc_value is not None else None)
