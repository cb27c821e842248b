"""The dashboard web server in a thread of its own, so it can live inside any process.

``tripwire run`` constructs it inside the worker process with that process's ClickHouse
client (the embedded chDB dir can be opened by one process only, so the page must be
served from the process that holds it). Its own thread and event loop keep it independent
of the Faust worker's loop: a slow query never delays the stream, and stopping the worker
does not need the server's cooperation.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from aiohttp import web

from tripwire.dashboards.access import Access
from tripwire.dashboards.api import Defaults, build_app
from tripwire.sinks.clickhouse import Client

START_TIMEOUT_S = 15.0


class DashboardServer:
    """``DashboardServer(client).start()`` serves the dashboards on ``.url`` until ``.stop()``.

    ``port=0`` picks a free port (``.url`` then tells which).
    """

    def __init__(
        self,
        client: Client,
        host: str = "127.0.0.1",
        port: int = 8080,
        settings: Any = None,
        *,
        daily_budget_usd: float | None = None,
        sla_ms: int | None = None,
        access: Access | None = None,
    ) -> None:
        """``settings`` (a TripwireSettings) turns on authentication (``access`` from its
        ``web_*`` fields unless given), the approval inbox and the operator console."""
        self.client = client
        self.settings = settings
        if settings is not None and access is None:
            access = Access.from_settings(settings)
        self.access = access
        self.host = host
        self.port = port
        self.defaults = Defaults(daily_budget_usd=daily_budget_usd, sla_ms=sla_ms)
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._started = threading.Event()
        self._stopping: asyncio.Event | None = None
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> DashboardServer:
        if self._thread is not None:
            raise RuntimeError("DashboardServer already started")
        self._thread = threading.Thread(target=self._serve, name="tripwire-dashboard",
                                        daemon=True)
        self._thread.start()
        if not self._started.wait(START_TIMEOUT_S):
            raise RuntimeError(f"dashboard server did not start within {START_TIMEOUT_S} s")
        if self._error is not None:
            self._thread.join(timeout=5)
            self._thread = None
            raise RuntimeError(f"dashboard server failed to start on {self.url}: "
                               f"{self._error}") from self._error
        if self.access is not None and self.access.generated_token:
            print(f"tripwire: dashboard login   user admin (operator), token "
                  f"{self.access.generated_token} (this run only; set TRIPWIRE_WEB_USERS)",
                  flush=True)
        return self

    def stop(self) -> None:
        thread, loop, stopping = self._thread, self._loop, self._stopping
        if thread is None:
            return
        if loop is not None and stopping is not None and not loop.is_closed():
            loop.call_soon_threadsafe(stopping.set)
        thread.join(timeout=15)
        self._thread = None

    def __enter__(self) -> DashboardServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _serve(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._main())
        except BaseException as ex:  # reported to start(); the thread just ends
            self._error = ex
        finally:
            self._started.set()
            loop.close()

    async def _main(self) -> None:
        self._stopping = asyncio.Event()
        runner = web.AppRunner(build_app(self.client, self.defaults, self.access, self.settings),
                               access_log=None)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.host, self.port)
            await site.start()
            server = getattr(site, "_server", None)
            sockets = getattr(server, "sockets", None) or []
            if sockets:
                self.port = sockets[0].getsockname()[1]
            self._started.set()
            await self._stopping.wait()
        finally:
            await runner.cleanup()
