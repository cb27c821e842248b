"""Who may use the web UI, and as what: authentication, roles and the audit of every action.

Identities come from, in this order:

* a trusted reverse proxy's identity header (SSO): ``TRIPWIRE_WEB_PROXY_USER_HEADER`` names
  it, and it is believed only on connections from ``TRIPWIRE_WEB_TRUSTED_PROXIES``;
* ``Authorization: Bearer <token>`` (scripts), a token from ``TRIPWIRE_WEB_USERS``;
* the session cookie set by ``POST /login`` with such a token (the browser).

Roles are ordered: a ``viewer`` reads dashboards, the inbox and the console; an ``approver``
also approves and declines; an ``operator`` also kills, pins and releases agents. Every
action, every refused attempt and every login is audited (``web_audit`` in ClickHouse).

State-changing requests must carry the ``X-Tripwire-Request`` header: a cross-site form
cannot set it, and the session cookie is ``SameSite=Strict`` besides.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from aiohttp import web

log = logging.getLogger(__name__)

ROLES = ("viewer", "approver", "operator")
RANK = {role: i for i, role in enumerate(ROLES)}
COOKIE = "tripwire_session"
CSRF_HEADER = "X-Tripwire-Request"
USER_KEY = web.RequestKey("tripwire_user", object)  # the authenticated User of a request
PUBLIC_PATHS = frozenset({"/login", "/logout", "/healthz", "/static/style.css",
                          "/static/login.js"})

Audit = Callable[[dict[str, Any]], Awaitable[None]]


@dataclass(frozen=True)
class User:
    name: str
    role: str
    via: str
    """proxy, token or session."""

    def can(self, role: str) -> bool:
        return RANK[self.role] >= RANK[role]


@dataclass
class Access:
    """Authentication and roles for one server. ``users``: name -> (role, token or None)."""

    users: Mapping[str, tuple[str, str | None]] = field(default_factory=dict)
    proxy_header: str | None = None
    trusted_proxies: frozenset[str] = frozenset({"127.0.0.1", "::1"})
    proxy_default_role: str | None = "viewer"
    session_s: float = 12 * 3600
    secret: bytes = field(default_factory=lambda: secrets.token_bytes(32))
    audit: Audit | None = None
    generated_token: str | None = None
    """Set when no user was configured: the one-run operator token ``admin`` logs in with."""

    def __post_init__(self) -> None:
        for name, (role, _token) in self.users.items():
            if role not in RANK:
                raise ValueError(f"web user {name!r}: role {role!r} is not one of {ROLES}")
        if self.proxy_default_role is not None and self.proxy_default_role not in RANK:
            raise ValueError(f"proxy default role {self.proxy_default_role!r} is not one of "
                             f"{ROLES}")

    @classmethod
    def from_settings(cls, settings: Any) -> Access:
        users = {name: (u.role, u.token.get_secret_value() if u.token else None)
                 for name, u in settings.web_users.items()}
        default = settings.web_proxy_default_role
        generated = None
        if not users and not settings.web_proxy_user_header:
            # Nobody configured: never serve open; one operator token for this run instead.
            generated = secrets.token_urlsafe(24)
            users = {"admin": ("operator", generated)}
        return cls(users=users, proxy_header=settings.web_proxy_user_header,
                   trusted_proxies=frozenset(settings.web_trusted_proxies),
                   proxy_default_role=None if default == "none" else default,
                   session_s=settings.web_session_hours * 3600, generated_token=generated)

    # -- identifying -----------------------------------------------------------------------

    def identify(self, request: web.Request) -> User | None:
        if self.proxy_header:
            name = request.headers.get(self.proxy_header)
            if name and request.remote in self.trusted_proxies:
                known = self.users.get(name)
                role = known[0] if known else self.proxy_default_role
                return User(name, role, "proxy") if role else None
        auth = request.headers.get("Authorization", "")
        if auth.startswith("Bearer "):
            return self.by_token(auth[len("Bearer "):].strip(), "token")
        cookie = request.cookies.get(COOKIE)
        return self._from_cookie(cookie) if cookie else None

    def by_token(self, token: str, via: str) -> User | None:
        if not token:
            return None
        found = None
        for name, (role, expected) in self.users.items():
            # Compare against every user so the time taken does not tell which one matched.
            if expected and hmac.compare_digest(expected.encode(), token.encode()):
                found = User(name, role, via)
        return found

    def session_cookie(self, user: User, now: float | None = None) -> str:
        expires = int((time.time() if now is None else now) + self.session_s)
        body = f"{quote(user.name, safe='')}|{user.role}|{expires}"
        return f"{body}|{self._mac(body)}"

    def _from_cookie(self, value: str) -> User | None:
        body, _, mac = value.rpartition("|")
        if not body or not hmac.compare_digest(self._mac(body), mac):
            return None
        name, role, expires = body.split("|")
        if int(expires) < time.time() or role not in RANK:
            return None
        from urllib.parse import unquote

        name = unquote(name)
        # A user removed from the configuration loses access with their next request.
        known = self.users.get(name)
        if known is not None and known[0] != role:
            role = known[0]
        return User(name, role, "session")

    def _mac(self, body: str) -> str:
        return hmac.new(self.secret, body.encode(), hashlib.sha256).hexdigest()

    # -- enforcing -------------------------------------------------------------------------

    async def require(self, request: web.Request, role: str, action: str,
                      target: str = "") -> User:
        """The request's user if they hold ``role``; else 403, audited."""
        user: User = request[USER_KEY]  # type: ignore[assignment]
        if not user.can(role):
            await self.record(user, action, target, "forbidden",
                              f"needs role {role}, has {user.role}")
            raise web.HTTPForbidden(text=f"{action} needs the {role} role; "
                                    f"{user.name} is a {user.role}")
        return user

    async def record(self, user: User | None, action: str, target: str, outcome: str,
                     detail: str = "") -> None:
        row = {"ts_ms": int(time.time() * 1000), "user": user.name if user else "",
               "role": user.role if user else "", "via": user.via if user else "",
               "action": action, "target": target, "outcome": outcome, "detail": detail[:2000]}
        log.info("web audit: %s", row)
        if self.audit is not None:
            try:
                await self.audit(row)
            except Exception as exc:  # noqa: BLE001 - audited in the log at least
                log.error("web audit row not stored: %r (%s)", exc, row)

    def middleware(self) -> Callable[..., Any]:
        @web.middleware
        async def authenticate(request: web.Request, handler: Callable[..., Any]) -> Any:
            if request.path in PUBLIC_PATHS:
                return await handler(request)
            user = self.identify(request)
            if user is None:
                if request.path.startswith("/api/") or request.method != "GET":
                    raise web.HTTPUnauthorized(text="log in first (POST /login with a token, "
                                               "or Authorization: Bearer <token>)")
                raise web.HTTPFound(f"/login?next={quote(request.path_qs, safe='')}")
            if request.method not in ("GET", "HEAD") and user.via != "token" \
                    and request.headers.get(CSRF_HEADER) != "1":
                raise web.HTTPForbidden(text=f"missing {CSRF_HEADER} header")
            request[USER_KEY] = user
            return await handler(request)

        return authenticate

    # -- routes ----------------------------------------------------------------------------

    def add_routes(self, app: web.Application, static_dir: Any) -> None:
        async def login_page(request: web.Request) -> web.FileResponse:
            return web.FileResponse(static_dir / "login.html")

        async def login(request: web.Request) -> web.Response:
            form = await request.post()
            token = str(form.get("token", ""))
            user = self.by_token(token, "session")
            if user is None:
                await self.record(None, "login", "", "refused", "unknown token")
                raise web.HTTPUnauthorized(text="unknown token")
            await self.record(user, "login", "", "ok")
            nxt = str(form.get("next") or "/")
            if not nxt.startswith("/") or nxt.startswith("//"):
                nxt = "/"
            res = web.HTTPFound(nxt)
            res.set_cookie(COOKIE, self.session_cookie(user), httponly=True,
                           samesite="Strict", max_age=int(self.session_s), path="/")
            raise res

        async def logout(request: web.Request) -> web.Response:
            res = web.HTTPFound("/login")
            res.del_cookie(COOKIE, path="/")
            raise res

        async def whoami(request: web.Request) -> web.Response:
            user: User = request[USER_KEY]  # type: ignore[assignment]
            return web.json_response({"name": user.name, "role": user.role, "via": user.via})

        app.router.add_get("/login", login_page)
        app.router.add_post("/login", login)
        app.router.add_post("/logout", logout)
        app.router.add_get("/api/whoami", whoami)


class OpenAccess(Access):
    """No authentication: every request is an anonymous viewer. For library use and tests
    of the read-only pages; ``tripwire run`` and ``tripwire dashboard`` never use it."""

    def identify(self, request: web.Request) -> User | None:
        return User("anonymous", "viewer", "open")
