"""A worker told to stop exits within a deadline, even when Kafka is gone.

Faust's shutdown talks to the broker: the consumer's stop waits out aiokafka's request
timeout (60 s) and the service tasks then wait on the dead connections, so a worker whose
broker had gone ignored SIGTERM for minutes (measured: still running 5 min after it; a
healthy worker stops in ~2 s). An operator's Ctrl-C or an orchestrator's SIGTERM must work
exactly when something is broken.

Nothing is lost by leaving early: offsets are committed only after their rows are stored,
so what the worker had not committed is delivered again to the next worker and
deduplicated by the sinks (the SIGKILL exactly-once test covers the same situation).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Callable

log = logging.getLogger("tripwire")

EXIT_ABANDONED = 3
"""Exit status of a worker that gave up an orderly stop (0 is a clean stop, 2 a start-up
error): a supervisor can tell the two apart."""


class ShutdownDeadline:
    """Armed when the worker starts stopping; if the process is still alive ``timeout_s``
    later, it runs the cleanups (children, stack file) and exits at once."""

    def __init__(self, timeout_s: float, what: str,
                 exit_process: Callable[[int], None] = os._exit) -> None:
        self.timeout_s = timeout_s
        self.what = what
        self._exit = exit_process
        self._cleanups: list[Callable[[], None]] = []
        self._timer: threading.Timer | None = None
        self._lock = threading.Lock()

    def on_abandon(self, cleanup: Callable[[], None]) -> None:
        """Run ``cleanup`` before exiting early (last added, first run)."""
        self._cleanups.append(cleanup)

    def arm(self) -> None:
        """Start counting (later calls change nothing: the first stop request sets the time)."""
        with self._lock:
            if self._timer is not None:
                return
            self._timer = threading.Timer(self.timeout_s, self._abandon)
            self._timer.daemon = True
            self._timer.start()

    def disarm(self) -> None:
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()

    def _abandon(self) -> None:
        log.error("stop did not finish in %.0f s (%s): exiting without the final commit; "
                  "uncommitted records are delivered again to the next worker and "
                  "deduplicated", self.timeout_s, self.what)
        for cleanup in reversed(self._cleanups):
            try:
                cleanup()
            except Exception:  # noqa: BLE001 - exiting anyway; the next cleanup still runs
                log.exception("cleanup failed while abandoning the stop")
        sys.stdout.flush()
        self._exit(EXIT_ABANDONED)
