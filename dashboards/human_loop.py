"""The web routes where humans act: the approval inbox and the operator console.

Pages ``/inbox`` and ``/console``; JSON:

* ``GET /api/inbox``: pending requests (masked parameters, context, evidence link) and the
  recently decided ones (viewer);
* ``POST /api/inbox/{request_id}/approve`` and ``.../decline`` with JSON ``{"reason_code":
  ..., "reason_text": ...}`` (approver);
* ``GET /api/approvals/decisions?agent=..``: decisions stored in ClickHouse (viewer);
* ``GET /api/console``: agents, their modes and the available actions (viewer);
* ``POST /api/console/{action}`` with JSON ``{"agent_id", "reason", "mode"?, "duration"?}``
  (operator);
* ``GET /api/audit``: the web audit trail (viewer).

Everything that changes something is audited through :class:`~dashboards.access.Access`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import web

from tripwire.dashboards.access import USER_KEY, Access, User
from tripwire.dashboards.console import Console, ConsoleError, attach_ack_counts
from tripwire.dashboards.inbox import Inbox, InboxError
from tripwire.sdk.operator import OperatorKey
from tripwire.sinks.clickhouse import Client

log = logging.getLogger(__name__)
T = TypeVar("T")
Blocking = Callable[..., Awaitable[Any]]

_DECISION_COLUMNS = ("decided_at", "requested_at", "request_id", "agent_id", "agent_version",
                     "workflow", "environment", "run_id", "tool", "action_class", "kind", "trig",
                     "approved", "approver", "wait_ms", "reason_code", "reason_text")


def _ts(ms: int) -> Any:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ms / 1000, UTC)


def web_audit_writer(client: Client, blocking: Blocking) -> Callable[[dict[str, Any]],
                                                                     Awaitable[None]]:
    """Stores :class:`~dashboards.access.Access` audit rows in ClickHouse ``web_audit``."""
    columns = ("ts", "user", "role", "via", "action", "target", "outcome", "detail")

    async def store(row: dict[str, Any]) -> None:
        values = {**row, "ts": _ts(row["ts_ms"])}
        await blocking(client.insert, "web_audit", [[values[c] for c in columns]],
                       list(columns))

    return store


class HumanLoop:
    """Owns the inbox and the console of one server and their routes."""

    def __init__(self, client: Client, access: Access, blocking: Blocking, *,
                 inbox: Inbox | None, console: Console | None) -> None:
        self.client = client
        self.access = access
        self.blocking = blocking
        self.inbox = inbox
        self.console = console
        self.unavailable: str | None = None
        self._starting: asyncio.Task[None] | None = None
        if inbox is not None:
            inbox.store_decision = self._store_decision

    @classmethod
    def from_settings(cls, client: Client, access: Access, blocking: Blocking,
                      settings: Any) -> HumanLoop:
        control_key = None
        if settings.control_key_id:
            control_key = (settings.control_key_id,
                           settings.control_keys[settings.control_key_id].get_secret_value())
        operator_key = None
        if settings.operator_key_id and settings.operator_key is not None:
            operator_key = OperatorKey(settings.operator_key_id,
                                       settings.operator_key.get_secret_value())
        bootstrap = settings.bootstrap()
        return cls(
            client, access, blocking,
            inbox=Inbox(bootstrap, control_key=control_key),
            console=Console(bootstrap, operator_key=operator_key,
                            control_keys={k: v.get_secret_value()
                                          for k, v in settings.control_keys.items()},
                            idempotence=settings.idempotence()))

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self, _app: web.Application | None = None) -> None:
        # In the background: the pages serve at once (the Kafka clients take a second or
        # more to start, and `tripwire run` waits for the server before starting its worker).
        self._starting = asyncio.create_task(self._start_parts())

    async def _start_parts(self) -> None:
        for part in (self.inbox, self.console):
            if part is None:
                continue
            try:
                await asyncio.wait_for(part.start(), 30)
            except Exception as exc:  # noqa: BLE001 - the dashboards still serve
                self.unavailable = f"{type(part).__name__.lower()}: {exc}"
                log.error("tripwire dashboards: %s unavailable: %s", type(part).__name__, exc)

    async def stop(self, _app: web.Application | None = None) -> None:
        if self._starting is not None:
            self._starting.cancel()
            with contextlib.suppress(BaseException):
                await self._starting
        for part in (self.inbox, self.console):
            if part is not None:
                await part.stop()

    # -- storing ---------------------------------------------------------------------------

    async def _store_decision(self, row: dict[str, Any]) -> None:
        values = {**row, "decided_at": _ts(row["decided_at"]),
                  "requested_at": _ts(row["requested_at"])}
        await self.blocking(self.client.insert, "approval_decisions",
                            [[values[c] for c in _DECISION_COLUMNS]],
                            list(_DECISION_COLUMNS))


    # -- handlers --------------------------------------------------------------------------

    def _need(self, part: Any) -> Any:
        if part is None or self.unavailable:
            raise web.HTTPServiceUnavailable(
                text=f"not available: {self.unavailable or 'no Kafka configured'}")
        if self._starting is None or not self._starting.done():
            raise web.HTTPServiceUnavailable(text="starting: connecting to Kafka")
        return part

    async def inbox_list(self, request: web.Request) -> web.Response:
        inbox: Inbox = self._need(self.inbox)
        return web.json_response(inbox.listing())

    async def decide(self, request: web.Request) -> web.Response:
        inbox: Inbox = self._need(self.inbox)
        request_id = request.match_info["request_id"]
        verb = request.match_info["verb"]
        if verb not in ("approve", "decline"):
            raise web.HTTPNotFound()
        user = await self.access.require(request, "approver", verb, request_id)
        body = await _json_body(request)
        try:
            entry = await inbox.decide(
                request_id, approver=user.name, approved=verb == "approve",
                reason_code=body.get("reason_code"), reason_text=body.get("reason_text"))
        except InboxError as exc:
            await self.access.record(user, verb, request_id, "refused", str(exc))
            raise _http(exc.status, str(exc)) from None
        await self.access.record(user, verb, request_id, "ok",
                                 f"{entry['agent_id']} {entry['tool']}"
                                 + (f" reason={entry.get('reason_code')}"
                                    if entry.get("reason_code") else ""))
        return web.json_response(entry)

    async def decisions(self, request: web.Request) -> web.Response:
        agent = request.query.get("agent", "")
        sql = ("SELECT request_id, agent_id, tool, kind, approved, approver, wait_ms, "
               "reason_code, reason_text, toUnixTimestamp64Milli(decided_at) AS decided_at "
               "FROM approval_decisions FINAL WHERE ({agent:String} = '' OR agent_id = "
               "{agent:String}) ORDER BY decided_at DESC LIMIT 200")
        res = await self.blocking(self.client.query, sql, {"agent": agent})
        rows = [dict(zip(res.column_names, r, strict=True)) for r in res.result_rows]
        return web.json_response({"decisions": rows})

    async def console_state(self, request: web.Request) -> web.Response:
        console: Console = self._need(self.console)
        user: User = request[USER_KEY]  # type: ignore[assignment]
        known: set[str] = set()
        if self.inbox is not None:
            known |= {r["agent_id"] for r in self.inbox.pending.values()}
            known |= {r["agent_id"] for r in self.inbox.decided.values()}
        agents = console.agents(sorted(known))
        try:
            await self.blocking(attach_ack_counts, self.client, agents, int(time.time() * 1000))
        except Exception as exc:  # noqa: BLE001 - the page still works without the counts
            log.warning("console: guards' acknowledgements unavailable: %r", exc)
        return web.json_response({"agents": agents,
                                  "actions": console.action_list(),
                                  "me": {"name": user.name, "role": user.role}})

    async def console_act(self, request: web.Request) -> web.Response:
        console: Console = self._need(self.console)
        action = request.match_info["action"]
        body = await _json_body(request)
        target = str(body.get("agent_id") or "")
        user = await self.access.require(request, "operator", action, target)
        if not str(body.get("reason") or "").strip():
            await self.access.record(user, action, target, "refused", "no reason given")
            raise web.HTTPBadRequest(text="a reason is required")
        try:
            result = await console.act(action, body, user.name)
        except ConsoleError as exc:
            await self.access.record(user, action, target, "refused", str(exc))
            raise _http(exc.status, str(exc)) from None
        await self.access.record(user, action, target, "ok",
                                 f"reason={body.get('reason')} command={result['command_id']}"
                                 + (f" mode={body.get('mode')}" if body.get("mode") else ""))
        return web.json_response(result)

    async def audit_trail(self, request: web.Request) -> web.Response:
        sql = ("SELECT toUnixTimestamp64Milli(ts) AS ts, user, role, via, action, target, "
               "outcome, detail FROM web_audit ORDER BY ts DESC LIMIT 200")
        res = await self.blocking(self.client.query, sql)
        rows = [dict(zip(res.column_names, r, strict=True)) for r in res.result_rows]
        return web.json_response({"audit": rows})

    def add_routes(self, app: web.Application, static_dir: Path) -> None:
        async def inbox_page(_: web.Request) -> web.FileResponse:
            return web.FileResponse(static_dir / "inbox.html")

        async def console_page(_: web.Request) -> web.FileResponse:
            return web.FileResponse(static_dir / "console.html")

        app.router.add_get("/inbox", inbox_page)
        app.router.add_get("/console", console_page)
        app.router.add_get("/api/inbox", self.inbox_list)
        app.router.add_post("/api/inbox/{request_id}/{verb}", self.decide)
        app.router.add_get("/api/approvals/decisions", self.decisions)
        app.router.add_get("/api/console", self.console_state)
        app.router.add_post("/api/console/{action}", self.console_act)
        app.router.add_get("/api/audit", self.audit_trail)
        app.on_startup.append(self.start)
        app.on_cleanup.append(self.stop)


async def _json_body(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    try:
        body = await request.json()
    except ValueError:
        raise web.HTTPBadRequest(text="the body must be JSON") from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text="the body must be a JSON object")
    return body


def _http(status: int, text: str) -> web.HTTPException:
    classes = {400: web.HTTPBadRequest, 403: web.HTTPForbidden, 404: web.HTTPNotFound,
               409: web.HTTPConflict, 503: web.HTTPServiceUnavailable}
    return classes.get(status, web.HTTPBadRequest)(text=text)
