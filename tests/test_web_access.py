"""Access control of the web UI (dashboards/access.py) over real HTTP: tokens, sessions,
the SSO proxy header and whom it is believed from, CSRF, roles and the audit."""

from __future__ import annotations

import http.cookiejar
import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from tripwire.dashboards.access import Access, User
from tripwire.dashboards.server import DashboardServer
from tripwire.sinks.clickhouse import Client
from tripwire.streams.settings import TripwireSettings

pytestmark = pytest.mark.integration
USERS = {"ann": ("approver", "ann-secret"), "vic": ("viewer", "vic-secret")}


def request(url: str, *, headers: dict[str, str] | None = None, data: bytes | None = None,
            method: str | None = None, opener: Any = None) -> tuple[int, str]:
    req = urllib.request.Request(url, data=data, headers=headers or {}, method=method)
    try:
        with (opener or urllib.request.build_opener()).open(req, timeout=20) as res:
            return res.status, res.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


@pytest.fixture
def served(ch_migrated: Client) -> Iterator[tuple[DashboardServer, Client]]:
    access = Access(users=USERS, proxy_header="X-Forwarded-User",
                    trusted_proxies=frozenset({"127.0.0.1"}), proxy_default_role="viewer")
    with DashboardServer(ch_migrated, port=0, access=access) as server:
        yield server, ch_migrated


def test_nothing_is_served_without_a_login(served) -> None:
    server, _ = served
    assert request(server.url + "/api/dashboards")[0] == 401
    assert request(server.url + "/api/panels/safety_summary")[0] == 401
    status, body = request(server.url + "/", opener=_no_redirects())
    assert status == 302
    assert request(server.url + "/login")[0] == 200 and request(server.url + "/healthz")[0] == 200
    ok = request(server.url + "/api/dashboards", headers={"Authorization": "Bearer ann-secret"})
    assert ok[0] == 200 and "safety" in json.loads(ok[1])
    assert request(server.url + "/api/dashboards",
                   headers={"Authorization": "Bearer wrong"})[0] == 401


def test_browser_session_and_csrf(served) -> None:
    server, client = served
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    bad = request(server.url + "/login", data=b"token=nope", opener=opener)
    assert bad[0] == 401
    good = request(server.url + "/login", data=urllib.parse.urlencode(
        {"token": "ann-secret", "next": "/api/whoami"}).encode(), opener=opener)
    assert good[0] == 200 and json.loads(good[1])["name"] == "ann"
    cookie = next(c for c in jar if c.name == "tripwire_session")
    assert cookie.has_nonstandard_attr("HttpOnly")
    # A state-changing request from a session needs the header a cross-site form cannot set.
    assert request(server.url + "/api/inbox/x/approve", data=b"{}", opener=opener)[0] == 403
    # Tampering with the cookie (e.g. the role in it) logs out.
    cookie.value = cookie.value.replace("approver", "operator")
    assert request(server.url + "/api/whoami", opener=opener)[0] == 401
    logins = client.query("SELECT user, outcome FROM web_audit WHERE action = 'login' "
                          "ORDER BY ts").result_rows
    assert logins == [("", "refused"), ("ann", "ok")]


def test_the_proxy_header_is_believed_only_from_trusted_peers(ch_migrated: Client) -> None:
    trusted = Access(users={"oscar": ("operator", None)}, proxy_header="X-Forwarded-User",
                     trusted_proxies=frozenset({"127.0.0.1"}), proxy_default_role="viewer")
    with DashboardServer(ch_migrated, port=0, access=trusted) as server:
        me = request(server.url + "/api/whoami", headers={"X-Forwarded-User": "oscar"})
        assert json.loads(me[1]) == {"name": "oscar", "role": "operator", "via": "proxy"}
        other = request(server.url + "/api/whoami", headers={"X-Forwarded-User": "zed"})
        assert json.loads(other[1])["role"] == "viewer"
    elsewhere = Access(users={"oscar": ("operator", None)}, proxy_header="X-Forwarded-User",
                       trusted_proxies=frozenset({"10.9.9.9"}))
    with DashboardServer(ch_migrated, port=0, access=elsewhere) as server:
        assert request(server.url + "/api/whoami",
                       headers={"X-Forwarded-User": "oscar"})[0] == 401


def test_roles_are_ordered_and_settings_never_serve_open() -> None:
    assert User("a", "operator", "token").can("approver")
    assert not User("v", "viewer", "token").can("approver")
    with pytest.raises(ValueError, match="role"):
        Access(users={"x": ("admin", "t")})
    access = Access.from_settings(TripwireSettings(_env_file=None))
    assert access.generated_token and access.users["admin"][0] == "operator"
    configured = Access.from_settings(TripwireSettings(
        web_users={"ann": {"role": "approver", "token": "t"}}))
    assert configured.generated_token is None and configured.users == {"ann": ("approver", "t")}


def _no_redirects() -> Any:
    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any, **kwargs: Any) -> None:
            return None

    return urllib.request.build_opener(NoRedirect)
