"""DashboardServer: its own thread and loop, the JSON API and the static page, on real chDB."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from urllib.parse import quote

import pytest

from tripwire.dashboards.catalog import panels
from tripwire.dashboards.filters import now_ms
from tripwire.dashboards.sample_fleet import SampleFleet, fill
from tripwire.dashboards.server import DashboardServer
from tripwire.sinks.clickhouse import Client

pytestmark = pytest.mark.integration


@pytest.fixture
def served(ch_migrated: Client) -> Iterator[tuple[DashboardServer, SampleFleet]]:
    sample = fill(ch_migrated, end_ms=now_ms() - 60_000, hours=1.0, agents=4)
    with DashboardServer(ch_migrated, port=0) as server:
        yield server, sample


def get(url: str) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=30) as res:
            return res.status, res.headers.get("Content-Type", ""), res.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers.get("Content-Type", ""), err.read()


def get_json(url: str) -> dict:
    status, _, body = get(url)
    assert status == 200, body[:500]
    return json.loads(body)


def test_serves_page_assets_and_every_panel(served) -> None:
    server, _ = served
    assert server.url.startswith("http://127.0.0.1:") and not server.url.endswith(":0")
    status, ctype, body = get(server.url + "/")
    assert status == 200 and b"/static/plotly.min.js" in body
    assert b'src="http' not in body and b'href="http' not in body  # nothing remote
    status, ctype, body = get(server.url + "/static/plotly.min.js")
    assert status == 200 and len(body) > 1_000_000 and "javascript" in ctype
    assert get(server.url + "/static/app.js")[0] == 200
    boards = get_json(server.url + "/api/dashboards")
    assert [p["name"] for p in boards["safety"]] == [q.name for q in panels("safety")]
    for board in ("safety", "business"):
        for meta in boards[board]:
            data = get_json(f"{server.url}/api/panels/{meta['name']}?range=6h")
            assert data["chart"] == meta["chart"] and "rows" in data and "columns" in data


def test_filters_and_options(served) -> None:
    server, _ = served
    options = get_json(server.url + "/api/filters?range=6h")
    assert "agent-denial-storm-1" in options["agent"] and options["workflow"]
    every = get_json(server.url + "/api/panels/safety_current_modes?range=6h")
    one = get_json(server.url + "/api/panels/safety_current_modes?range=6h"
                   "&agent=agent-denial-storm-1")
    assert len(one["rows"]) == 1 < len(every["rows"])
    assert one["rows"][0][every["columns"].index("mode")] == "read_only"


def test_evidence_endpoints(served) -> None:
    server, sample = served
    run_id = next(iter(sample.tripped_runs))
    ev = get_json(f"{server.url}/api/evidence/run/{quote(run_id)}")
    assert ev["scope"]["run_id"] == run_id and ev["steps"]
    status, ctype, body = get(f"{server.url}/api/evidence/run/{quote(run_id)}?format=markdown")
    assert status == 200 and "markdown" in ctype and body.startswith(b"# Incident evidence")
    agent = get_json(f"{server.url}/api/evidence/agent/agent-overspend-1"
                     f"?from={now_ms() - 3600_000}&to={now_ms()}")
    assert agent["kind"] == "agent"
    scope = get_json(f"{server.url}/api/evidence/scope?scope=action_class%3Dmoney"
                     f"&from={now_ms() - 3600_000}")
    assert scope["kind"] == "scope" and scope["summary"]["scope"] == "action_class=money"
    assert scope["steps"] and all(s["action_class"] == "money" for s in scope["steps"])


def test_bad_requests_are_client_errors(served) -> None:
    server, _ = served
    assert get(server.url + "/api/panels/no_such_panel")[0] == 404
    assert get(server.url + "/api/panels/evidence_run_steps")[0] == 404  # not a panel
    assert get(server.url + "/api/panels/safety_summary?range=forever")[0] == 400
    assert get(server.url + "/api/evidence/run/nope")[0] == 404
    assert get(server.url + "/api/evidence/agent/a?from=1")[0] == 400
    assert get(server.url + "/api/evidence/scope?scope=fleet")[0] == 400  # no window
    assert get(server.url + "/api/evidence/scope?scope=team%3Dx&from=1")[0] == 400
    assert get(server.url + "/api/evidence/scope?from=5&to=1")[0] == 400


def test_runs_in_its_own_thread_and_stops(ch_migrated: Client) -> None:
    before = {t.name for t in threading.enumerate()}
    server = DashboardServer(ch_migrated, port=0).start()
    assert "tripwire-dashboard" in {t.name for t in threading.enumerate()} - before
    assert get_json(server.url + "/healthz") == {"ok": True}
    url = server.url
    server.stop()
    assert "tripwire-dashboard" not in {t.name for t in threading.enumerate()}
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(url + "/healthz", timeout=2)


def test_a_taken_port_fails_start(ch_migrated: Client) -> None:
    with DashboardServer(ch_migrated, port=0) as first:
        with pytest.raises(RuntimeError, match="failed to start"):
            DashboardServer(ch_migrated, port=first.port).start()


def test_dashboard_command_serves_until_its_duration(ch_dsn: str,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    import argparse
    import signal

    from tripwire.dashboards import commands

    parser = argparse.ArgumentParser(prog="tripwire")
    commands.add_parsers(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["dashboard", "--clickhouse-url", ch_dsn, "--port", "0",
                              "--duration", "0.5", "--sample"])
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        assert args.handler(args) == 0
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
    out = capsys.readouterr().out
    assert "sample fleet stored" in out and "dashboards on http://127.0.0.1:" in out
