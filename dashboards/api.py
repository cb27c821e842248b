"""The dashboards' HTTP surface: the page, its static assets and the JSON endpoints.

Every chart is drawn in the browser from ``/api/panels/{name}``, the result of the named
query of the same name; nothing here writes SQL. Queries are blocking client calls, so
they run on a small thread pool and never stall the event loop.

Endpoints:

* ``GET /api/dashboards``: the panels of each dashboard (title, chart, width, ...);
* ``GET /api/panels/{name}?range=6h&agent=..&workflow=..&environment=..``: one panel's
  rows (see :class:`dashboards.filters.Filters` for every parameter);
* ``GET /api/filters?range=6h``: agents, workflows and environments for the drop-downs;
* ``GET /api/evidence/run/{run_id}[?format=markdown]`` and
  ``GET /api/evidence/agent/{agent_id}?from=..&to=..[&format=markdown]``: incident evidence;
* ``GET /api/evidence/scope?scope=workflow=refunds&from=..[&to=..][&format=markdown]``: the
  evidence of any scope and window, what ``tripwire evidence --scope`` prints
  (``dashboards/scope_evidence.py``; ``scope`` in the CLI's syntax, ``fleet`` if absent).
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import web

from tripwire.dashboards.access import Access, OpenAccess
from tripwire.dashboards.catalog import DASHBOARDS, Query, catalog, panels
from tripwire.dashboards.evidence import Evidence, EvidenceNotFound, agent_evidence, run_evidence
from tripwire.dashboards.filters import Filters, now_ms, parse_instant
from tripwire.dashboards.runner import run_query
from tripwire.dashboards.scope_evidence import ScopeEvidence, scope_evidence
from tripwire.detectors.standing_rules import StandingPolicy
from tripwire.sdk.scopes import Scope
from tripwire.sinks.clickhouse import Client

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
T = TypeVar("T")


def plotly_js_path() -> Path:
    """plotly.min.js as shipped in the plotly package: served locally, no CDN."""
    spec = importlib.util.find_spec("plotly")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the plotly package is not installed (it ships plotly.min.js)")
    path = Path(next(iter(spec.submodule_search_locations))) / "package_data" / "plotly.min.js"
    if not path.is_file():
        raise RuntimeError(f"plotly.min.js not found at {path}")
    return path


@dataclass(frozen=True)
class Defaults:
    """Business settings the page does not ask for unless the user overrides them."""

    daily_budget_usd: float | None = None
    sla_ms: int | None = None


def panel_meta(q: Query) -> dict[str, Any]:
    return {
        "name": q.name,
        "title": q.title,
        "description": q.description,
        "chart": q.chart,
        "width": q.width,
        "unit": q.unit,
        "link": q.link,
        "orientation": q.orientation,
    }


class DashboardApi:
    def __init__(self, client: Client, defaults: Defaults | None = None, workers: int = 4,
                 standing: StandingPolicy | None = None):
        self.client = client
        self.defaults = defaults or Defaults()
        # The policy's reversibility map groups scope evidence's side effects, as the CLI's.
        self.standing = standing
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="dashboard-q")

    async def blocking(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)

    def filters(self, request: web.Request, **extra: Any) -> Filters:
        try:
            f = Filters.from_request(request.query, default_budget=self.defaults.daily_budget_usd,
                                     default_sla_ms=self.defaults.sla_ms)
        except (ValueError, KeyError) as ex:
            raise web.HTTPBadRequest(text=str(ex)) from None
        return Filters(**{**f.__dict__, "extra": extra}) if extra else f

    # --- handlers -----------------------------------------------------------------------

    async def index(self, request: web.Request) -> web.FileResponse:
        return web.FileResponse(STATIC_DIR / "index.html")

    async def plotly(self, request: web.Request) -> web.FileResponse:
        return web.FileResponse(plotly_js_path(), headers={"Cache-Control": "max-age=86400"})

    async def dashboards(self, request: web.Request) -> web.Response:
        return web.json_response({d: [panel_meta(q) for q in panels(d)] for d in DASHBOARDS})

    async def panel(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        q = catalog().get(name)
        if q is None or not q.is_panel:
            raise web.HTTPNotFound(text=f"no panel named {name!r}")
        values = self.filters(request).values()
        result = await self.blocking(run_query, self.client, q, values)
        return web.json_response({**panel_meta(q), **result.to_json(),
                                  "bucket_s": values["bucket_s"]})

    async def filter_options(self, request: web.Request) -> web.Response:
        values = self.filters(request).values()
        result = await self.blocking(run_query, self.client, "filter_options", values)
        options: dict[str, list[str]] = {"agent": [], "workflow": [], "environment": []}
        for dimension, value in result.rows:
            options.setdefault(dimension, []).append(value)
        return web.json_response(options)

    async def run_evidence(self, request: web.Request) -> web.Response:
        run_id = request.match_info["run_id"]
        return await self._evidence(request, run_evidence, self.client, run_id)

    async def agent_evidence(self, request: web.Request) -> web.Response:
        agent = request.match_info["agent_id"]
        try:
            lo, hi = parse_instant(request.query["from"]), parse_instant(request.query["to"])
        except (KeyError, ValueError) as ex:
            raise web.HTTPBadRequest(text=f"from and to are required: {ex}") from None
        return await self._evidence(request, agent_evidence, self.client, agent, lo, hi)

    async def scope_evidence(self, request: web.Request) -> web.Response:
        q = request.query
        try:
            scope = Scope.from_key(q.get("scope", "fleet"))
            lo = parse_instant(q["from"])
            hi = parse_instant(q["to"]) if q.get("to") else now_ms()
        except KeyError:
            raise web.HTTPBadRequest(text="from is required (ISO-8601 UTC or epoch ms)") from None
        except ValueError as ex:
            raise web.HTTPBadRequest(text=str(ex)) from None
        return await self._evidence(request, scope_evidence, self.client, scope, lo, hi,
                                    self.standing)

    async def _evidence(self, request: web.Request,
                        fn: Callable[..., Evidence | ScopeEvidence], *args: Any) -> web.Response:
        try:
            ev = await self.blocking(fn, *args)
        except EvidenceNotFound as ex:
            raise web.HTTPNotFound(text=str(ex)) from None
        except ValueError as ex:
            raise web.HTTPBadRequest(text=str(ex)) from None
        if request.query.get("format") == "markdown":
            return web.Response(text=ev.to_markdown(), content_type="text/markdown",
                                charset="utf-8")
        return web.json_response(ev.to_json())

    async def health(self, request: web.Request) -> web.Response:
        await self.blocking(self.client.command, "SELECT 1")
        return web.json_response({"ok": True})


@web.middleware
async def _errors(request: web.Request, handler: Callable[..., Any]) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException:
        raise
    except Exception as ex:  # a failing query must not take the page down with it
        log.exception("dashboard request %s failed", request.path)
        return web.json_response({"error": str(ex)[:2000]}, status=500)


def build_app(client: Client, defaults: Defaults | None = None, access: Access | None = None,
              settings: Any = None) -> web.Application:
    """The app; with ``settings`` (Kafka, keys) also the approval inbox and operator console
    (``dashboards/human_loop.py``). Without ``access`` every request is an anonymous viewer
    (library use); ``tripwire run`` and ``tripwire dashboard`` always pass one."""
    api = DashboardApi(client, defaults, standing=_standing(settings))
    access = access or OpenAccess()
    app = web.Application(middlewares=[_errors, access.middleware()])
    access.add_routes(app, STATIC_DIR)
    from tripwire.dashboards.human_loop import HumanLoop, web_audit_writer

    if access.audit is None and not isinstance(access, OpenAccess):
        access.audit = web_audit_writer(client, api.blocking)
    if settings is not None:
        HumanLoop.from_settings(client, access, api.blocking, settings).add_routes(app, STATIC_DIR)
    app.router.add_get("/", api.index)
    app.router.add_get("/static/plotly.min.js", api.plotly)
    app.router.add_static("/static/", STATIC_DIR, show_index=False)
    app.router.add_get("/api/dashboards", api.dashboards)
    app.router.add_get("/api/panels/{name}", api.panel)
    app.router.add_get("/api/filters", api.filter_options)
    app.router.add_get("/api/evidence/run/{run_id}", api.run_evidence)
    app.router.add_get("/api/evidence/agent/{agent_id}", api.agent_evidence)
    app.router.add_get("/api/evidence/scope", api.scope_evidence)
    app.router.add_get("/healthz", api.health)

    async def close_pool(_: web.Application) -> None:
        api.pool.shutdown(wait=False, cancel_futures=True)

    app.on_cleanup.append(close_pool)
    return app


def _standing(settings: Any) -> StandingPolicy | None:
    """The standing rules of the configured policy file (None: the defaults)."""
    path = getattr(settings, "policy_file", None)
    if path is None:
        return None
    from tripwire.detectors.policy import load_policy

    return load_policy(path).standing
