"""Owner alerts against a real HTTP receiver (aiohttp on 127.0.0.1)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web

from tripwire.sinks.alerts import ALERT_ID_HEADER, AlertNotifier, AlertRoutes, alert_kind


@dataclass
class Receiver:
    """Webhook endpoints /hook/<name>; each answers from its script of statuses (then 200)."""

    base: str = ""
    requests: list[tuple[str, dict[str, Any], str]] = field(default_factory=list)
    scripts: dict[str, list[int]] = field(default_factory=dict)
    delay_s: float = 0.0

    def url(self, name: str) -> str:
        return f"{self.base}/hook/{name}"

    def bodies(self, name: str | None = None, *, accepted_only: bool = True) -> list[dict]:
        return [body for path, body, status in self.requests
                if (name is None or path == name) and (not accepted_only or status == "200")]

    async def handle(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        body = await request.json()
        assert request.headers[ALERT_ID_HEADER] == body["alert_id"]
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        script = self.scripts.get(name, [])
        status = script.pop(0) if script else 200
        self.requests.append((name, body, str(status)))
        return web.Response(status=status)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rec = Receiver()
    app = web.Application()
    app.router.add_post("/hook/{name}", rec.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    rec.base = f"http://{host}:{port}"
    yield rec
    await runner.cleanup()


def transition(seq: int, mode: str, previous: str | None, **kw: Any) -> dict[str, Any]:
    return {"agent_id": "agent-1", "mode": mode, "previous_mode": previous, "scope": "agent",
            "run_id": None, "reason": f"reason {seq}", "detection_ids": [f"d-{seq}"], "seq": seq,
            "issued_at": 1_800_000_000_000 + seq, "rule": "r", "expires_at": None,
            "source": "breaker", "owner": "team-a", "workflow": "crm-sync"} | kw


def notifier(receiver: Receiver, rows: list[dict] | None = None, **options: Any) -> AlertNotifier:
    options.setdefault("backoff_s", 0.01)
    return AlertNotifier({"owner:team-a": receiver.url("team-a")},
                         record=rows.append if rows is not None else None, **options)


async def test_exactly_one_alert_per_transition(receiver):
    rows: list[dict] = []
    async with notifier(receiver, rows) as alerts:
        sequence = [
            transition(1, "read_only", "autonomous"),
            transition(2, "halted", "read_only", scope="run", run_id="run-9"),
            transition(3, "halted", "read_only", source="operator", action="kill",
                       operator="alice"),
            transition(4, "approve_to_act", "halted", source="operator"),
            transition(5, "approve_to_act", "approve_to_act"),  # probation passed: no change
        ]
        queued = [alerts.notify(t) for t in sequence]
        assert queued == [True, True, True, True, False]
        assert alerts.notify(sequence[0]) is False  # redelivered after a worker restart
        assert await alerts.wait_idle(5)
    bodies = receiver.bodies()
    assert [b["kind"] for b in bodies] == ["downgrade", "run_stop", "kill", "recovery"]
    assert [b["seq"] for b in bodies] == [1, 2, 3, 4]
    assert len({b["alert_id"] for b in bodies}) == 4
    assert len(receiver.requests) == 4
    assert "downgraded agent *agent-1* (owner team-a) from autonomous to read_only" in \
        bodies[0]["text"]
    assert "run-9" in bodies[1]["text"] and "halted by alice" in bodies[2]["text"]
    assert bodies[0]["detection_ids"] == ["d-1"] and bodies[0]["owner"] == "team-a"
    outcomes = sorted((r["seq"], r["outcome"]) for r in rows)
    assert outcomes == [(1, "delivered"), (1, "suppressed"), (2, "delivered"),
                        (3, "delivered"), (4, "delivered")]
    assert all(r["route"] in ("owner:team-a", "-") for r in rows)
    assert not any("http" in str(v) for r in rows for v in r.values())  # no URLs recorded


async def test_a_flapping_agent_gets_one_alert_per_state_and_one_summary(receiver):
    rows: list[dict] = []
    async with notifier(receiver, rows, dedup_window_s=0.6) as alerts:
        modes = ["read_only", "approve_to_act", "read_only", "approve_to_act", "read_only",
                 "approve_to_act", "read_only"]
        previous = "autonomous"
        for seq, mode in enumerate(modes, start=1):
            alerts.notify(transition(seq, mode, previous))
            previous = mode
        assert await alerts.wait_idle(5)
        assert [b["kind"] for b in receiver.bodies()] == ["downgrade", "recovery"]
        await asyncio.sleep(0.9)  # the window ends: one summary with the current state
        assert await alerts.wait_idle(5)
        await asyncio.sleep(0.7)
    bodies = receiver.bodies()
    assert [b["kind"] for b in bodies] == ["downgrade", "recovery", "summary"]
    summary = bodies[-1]
    assert summary["mode"] == "read_only" and summary["seq"] == 7 and summary["suppressed"] == 5
    assert "5 more time(s)" in summary["text"]
    assert sum(r["outcome"] == "suppressed" for r in rows) == 5


async def test_no_summary_when_a_later_alert_already_told_the_latest_state(receiver):
    async with notifier(receiver, dedup_window_s=0.4) as alerts:
        alerts.notify(transition(1, "read_only", "autonomous"))
        alerts.notify(transition(2, "read_only", "read_only", previous_mode="suggest_only"))
        alerts.notify(transition(3, "halted", "read_only"))  # newer, and not folded
        await asyncio.sleep(0.6)
        assert await alerts.wait_idle(5)
    assert [b["seq"] for b in receiver.bodies()] == [1, 3]


async def test_retries_with_backoff_until_delivered(receiver):
    receiver.scripts["team-a"] = [500, 503, 200]
    rows: list[dict] = []
    async with notifier(receiver, rows, max_retries=3, backoff_s=0.05) as alerts:
        started = time.monotonic()
        alerts.notify(transition(1, "read_only", "autonomous"))
        assert await alerts.wait_idle(5)
        elapsed = time.monotonic() - started
    assert [status for _, _, status in receiver.requests] == ["500", "503", "200"]
    assert len({b["alert_id"] for _, b, _ in receiver.requests}) == 1
    assert len(receiver.bodies()) == 1
    assert elapsed >= 0.05 * 0.5 + 0.1 * 0.5  # backed off twice (with jitter)
    [row] = rows
    assert (row["outcome"], row["attempts"], row["status_code"]) == ("delivered", 3, 200)


async def test_gives_up_after_max_retries_and_on_client_errors(receiver):
    receiver.scripts["team-a"] = [503] * 10
    receiver.scripts["gone"] = [404]
    rows: list[dict] = []
    routes = {"owner:team-a": receiver.url("team-a"), "owner:team-b": receiver.url("gone")}
    async with AlertNotifier(routes, max_retries=2, backoff_s=0.01, record=rows.append) as alerts:
        alerts.notify(transition(1, "read_only", "autonomous"))
        alerts.notify(transition(1, "read_only", "autonomous", agent_id="agent-2",
                                 owner="team-b", workflow=None))
        assert await alerts.wait_idle(5)
    by_agent = {r["agent_id"]: r for r in rows}
    assert (by_agent["agent-1"]["outcome"], by_agent["agent-1"]["attempts"]) == ("failed", 3)
    assert by_agent["agent-1"]["error"] == "HTTP 503"
    assert (by_agent["agent-2"]["outcome"], by_agent["agent-2"]["attempts"]) == ("failed", 1)


async def test_an_unreachable_webhook_is_recorded_as_failed():
    rows: list[dict] = []
    from tripwire.streams.broker import free_port

    routes = {"default": f"http://127.0.0.1:{free_port()}/nothing-listens"}
    async with AlertNotifier(routes, max_retries=1, backoff_s=0.01, record=rows.append) as alerts:
        alerts.notify(transition(1, "read_only", "autonomous"))
        assert await alerts.wait_idle(5)
    [row] = rows
    assert row["outcome"] == "failed" and row["status_code"] is None
    assert "ClientConnectorError" in row["error"]


async def test_routes_by_workflow_and_owner_else_default(receiver):
    routes = {"workflow:crm-sync": receiver.url("crm"), "owner:team-a": receiver.url("team-a"),
              "default": receiver.url("fallback")}
    rows: list[dict] = []
    async with AlertNotifier(routes, record=rows.append) as alerts:
        alerts.notify(transition(1, "read_only", "autonomous"))
        alerts.notify(transition(1, "read_only", "autonomous", agent_id="agent-2",
                                 owner="team-z", workflow="other"))
        assert await alerts.wait_idle(5)
    assert [b["agent_id"] for b in receiver.bodies("crm")] == ["agent-1"]
    assert [b["agent_id"] for b in receiver.bodies("team-a")] == ["agent-1"]
    assert [b["agent_id"] for b in receiver.bodies("fallback")] == ["agent-2"]
    async with AlertNotifier({}, record=rows.append) as alerts:
        assert alerts.notify(transition(2, "halted", "read_only")) is False
    assert rows[-1]["outcome"] == "unrouted"


async def test_never_blocks_the_caller(receiver):
    receiver.delay_s = 2.0  # a webhook that takes its time
    rows: list[dict] = []
    async with notifier(receiver, rows, queue_size=20, dedup_window_s=0,
                        timeout_s=0.2, max_retries=0) as alerts:
        lag: list[float] = []

        async def heartbeat() -> None:
            for _ in range(20):
                t0 = time.monotonic()
                await asyncio.sleep(0.01)
                lag.append(time.monotonic() - t0 - 0.01)

        beat = asyncio.create_task(heartbeat())
        started = time.monotonic()
        for i in range(200):
            alerts.notify(transition(i + 1, "read_only", "autonomous", agent_id=f"agent-{i}"))
        assert time.monotonic() - started < 0.2  # 200 notifies, no waiting on HTTP
        await beat
        assert max(lag) < 0.1  # the loop kept running while deliveries hung
        assert alerts.counts["dropped"] == 180  # past the bounded queue: dropped, recorded
    outcomes = [r["outcome"] for r in rows]
    assert outcomes.count("dropped") == 180 and outcomes.count("failed") == 20


def test_kinds():
    assert alert_kind(transition(1, "read_only", "autonomous")) == "downgrade"
    assert alert_kind(transition(1, "read_only", None)) == "downgrade"
    assert alert_kind(transition(1, "autonomous", None)) is None
    assert alert_kind(transition(1, "halted", "suggest_only", source="operator")) == "kill"
    assert alert_kind(transition(1, "halted", "suggest_only")) == "downgrade"
    assert alert_kind(transition(1, "suggest_only", "read_only")) == "recovery"
    assert alert_kind(transition(1, "halted", "autonomous", scope="run", run_id="r")) == "run_stop"
    assert alert_kind(transition(1, "read_only", "read_only")) is None


def test_routes_are_validated():
    with pytest.raises(ValueError, match="owner:<name>"):
        AlertRoutes({"team-a": "https://example.com/x"})
    with pytest.raises(ValueError, match="http"):
        AlertRoutes({"default": "ftp://example.com/x"})
    routes = AlertRoutes.from_json('{"default": "https://example.com/x"}')
    assert routes.targets("anyone", None) == [("default", "https://example.com/x")]
    assert AlertRoutes.from_json(None).targets("a", "b") == []
