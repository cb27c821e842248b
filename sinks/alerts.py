"""Owner alerts: a webhook call on every downgrade, run stop, kill and recovery.

The stream hands each mode transition to :meth:`AlertNotifier.notify` (a Control record dict
plus ``owner`` / ``workflow`` of the agent; ``action`` and ``operator`` if known). ``notify``
only classifies, deduplicates and queues; delivery runs in background tasks with retries and
exponential backoff, so a slow or dead webhook never holds up the stream. Every outcome
(delivered, failed, dropped, suppressed, unrouted) goes to the ``record`` callback, one row
per alert and route, shaped for the ``alert_deliveries`` table.

Routing (:class:`AlertRoutes`, e.g. from ``TRIPWIRE_ALERT_WEBHOOKS``)::

    {"owner:team-a": "https://hooks.slack.com/...", "workflow:crm-sync": "https://...",
     "default": "https://..."}

An alert goes to the agent's workflow route and its owner route (each URL once); to
``default`` only when neither exists. URLs are never recorded (a Slack webhook URL is a
credential); rows name the route instead.

Deduplication: an alert whose (agent, new mode, scope, run) was already alerted within
``dedup_window_s`` is suppressed. So that the owner's last message is never out of date, a
window that suppressed something newer than the agent's last alert ends with one summary
alert giving the current mode and how many changes were folded into it. A flapping agent
thus costs at most one alert per distinct state plus one summary per window.

The body is Slack-compatible (a ``text`` field) with the details as extra fields; the
``X-Tripwire-Alert-Id`` header (also ``alert_id`` in the body) is stable per transition, so a
receiver can drop the duplicate a retry after a lost response may cause.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import random
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from tripwire.schemas.modes import Mode

__all__ = ["ALERT_ID_HEADER", "AlertNotifier", "AlertRoutes", "alert_body", "alert_kind"]

log = logging.getLogger("tripwire.alerts")

ALERT_ID_HEADER = "X-Tripwire-Alert-Id"
_ALERT_NAMESPACE = uuid.UUID("6f1c2e0a-9b7d-4c1e-8f3a-2d5b7e9c1a40")
_RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})

Record = Callable[[dict[str, Any]], Any]


@dataclass(frozen=True)
class AlertRoutes:
    """Webhook URL per ``owner:<owner>``, ``workflow:<workflow>`` and ``default``."""

    routes: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, url in self.routes.items():
            if name != "default" and not name.startswith(("owner:", "workflow:")):
                raise ValueError(f"alert route {name!r}: expected owner:<name>, "
                                 "workflow:<name> or default")
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"alert route {name!r}: not an http(s) URL")

    @classmethod
    def from_json(cls, text: str | None) -> AlertRoutes:
        """Routes from a JSON object (the ``TRIPWIRE_ALERT_WEBHOOKS`` form); empty if unset."""
        if not text:
            return cls({})
        routes = json.loads(text)
        if not isinstance(routes, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in routes.items()
        ):
            raise ValueError("alert webhooks must be a JSON object of route name -> URL")
        return cls(routes)

    def targets(self, owner: str | None, workflow: str | None) -> list[tuple[str, str]]:
        """(route name, url) pairs for an agent, each URL once."""
        names = [n for n in (f"workflow:{workflow}" if workflow else None,
                             f"owner:{owner}" if owner else None) if n in self.routes]
        if not names and "default" in self.routes:
            names = ["default"]
        seen: set[str] = set()
        out = []
        for name in names:
            url = self.routes[name]
            if url not in seen:
                seen.add(url)
                out.append((name, url))
        return out


def alert_kind(transition: Mapping[str, Any]) -> str | None:
    """``downgrade``, ``run_stop``, ``kill`` or ``recovery``; None when the owner need not
    hear about it (the mode did not change)."""
    if transition.get("scope") == "run":
        return "run_stop" if transition.get("mode") == Mode.HALTED else None
    mode = Mode(transition["mode"])
    previous = transition.get("previous_mode")
    killed = mode == Mode.HALTED and (
        transition.get("action") in ("kill", "kill_all") or transition.get("source") == "operator")
    if previous is None:
        return ("kill" if killed else "downgrade") if mode != Mode.AUTONOMOUS else None
    previous = Mode(previous)
    if mode.rank < previous.rank:
        return "kill" if killed else "downgrade"
    if mode.rank > previous.rank:
        return "recovery"
    return None


def _alert_id(t: Mapping[str, Any], kind: str) -> str:
    seq = t.get("seq")
    if seq is None:
        return str(uuid.uuid4())
    return str(uuid.uuid5(_ALERT_NAMESPACE,
                          f"{t['agent_id']}\x1f{seq}\x1f{t.get('scope')}\x1f{t.get('run_id')}"
                          f"\x1f{kind}"))


def _text(t: Mapping[str, Any], kind: str, suppressed: int, window_s: float) -> str:
    agent = f"*{t['agent_id']}*"
    if t.get("owner"):
        agent += f" (owner {t['owner']})"
    why = t.get("reason") or "no reason given"
    rule = f" [rule {t['rule']}]" if t.get("rule") else ""
    if kind == "summary":
        return (f":repeat: Agent {agent} changed mode {suppressed} more time(s) in the last "
                f"{window_s:g} s (alerts folded); now {t['mode']}: {why}{rule}")
    if kind == "run_stop":
        return (f":octagonal_sign: Tripwire stopped run {t.get('run_id')} of agent {agent}: "
                f"{why}{rule}")
    if kind == "kill":
        by = f" by {t['operator']}" if t.get("operator") else ""
        return f":skull: Agent {agent} was halted{by}: {why}"
    if kind == "recovery":
        return (f":white_check_mark: Agent {agent} recovered from {t.get('previous_mode')} to "
                f"{t['mode']}: {why}{rule}")
    return (f":rotating_light: Tripwire downgraded agent {agent} from "
            f"{t.get('previous_mode') or 'autonomous'} to {t['mode']}: {why}{rule}")


def alert_body(t: Mapping[str, Any], kind: str, *, alert_id: str | None = None,
               suppressed: int = 0, window_s: float = 0.0) -> dict[str, Any]:
    """The JSON body: Slack's ``text`` plus the transition's details."""
    return {
        "text": _text(t, kind, suppressed, window_s),
        "alert_id": alert_id or _alert_id(t, kind),
        "kind": kind,
        "agent_id": t["agent_id"],
        "mode": t["mode"],
        "previous_mode": t.get("previous_mode"),
        "scope": t.get("scope", "agent"),
        "run_id": t.get("run_id"),
        "reason": t.get("reason"),
        "rule": t.get("rule"),
        "owner": t.get("owner"),
        "workflow": t.get("workflow"),
        "source": t.get("source"),
        "operator": t.get("operator"),
        "seq": t.get("seq"),
        "issued_at": t.get("issued_at"),
        "detection_ids": list(t.get("detection_ids") or ()),
        "suppressed": suppressed,
    }


@dataclass
class _Folded:
    """Alerts of one agent suppressed in the current window."""

    count: int = 0
    latest: Mapping[str, Any] | None = None
    latest_index: int = 0
    timer: asyncio.TimerHandle | None = None


@dataclass
class _Delivery:
    body: dict[str, Any]
    route: str
    url: str


class AlertNotifier:
    """Queues and delivers owner alerts; lives on one event loop (``notify`` must be called
    on it, as the stream's agents are)."""

    def __init__(
        self,
        routes: AlertRoutes | Mapping[str, str],
        *,
        max_retries: int = 5,
        backoff_s: float = 0.5,
        max_backoff_s: float = 30.0,
        timeout_s: float = 5.0,
        dedup_window_s: float = 300.0,
        queue_size: int = 10_000,
        concurrency: int = 4,
        record: Record | None = None,
    ) -> None:
        if max_retries < 0 or backoff_s < 0 or dedup_window_s < 0 or concurrency < 1:
            raise ValueError("max_retries, backoff_s, dedup_window_s must be >= 0; "
                             "concurrency >= 1")
        self.routes = routes if isinstance(routes, AlertRoutes) else AlertRoutes(routes)
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.timeout_s = timeout_s
        self.dedup_window_s = dedup_window_s
        self.concurrency = concurrency
        self._record_cb = record
        self._queue: asyncio.Queue[_Delivery] = asyncio.Queue(queue_size)
        self._workers: list[asyncio.Task[None]] = []
        self._background: set[asyncio.Task[Any]] = set()
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._recent: dict[tuple[Any, ...], float] = {}
        self._folded: dict[str, _Folded] = {}
        self._index: dict[str, int] = {}  # per agent: notify calls that asked for an alert
        self._last_sent: dict[str, int] = {}
        self._latest_seq: dict[str, int] = {}
        self._busy = 0
        self._closing = False
        self.counts: dict[str, int] = {}
        """Outcomes so far: delivered, failed, dropped, suppressed, unrouted."""

    async def start(self) -> None:
        if self._loop is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.timeout_s),
            headers={"User-Agent": "tripwire-alerts"})
        self._workers = [asyncio.create_task(self._work(), name=f"tripwire-alerts-{i}")
                         for i in range(self.concurrency)]

    async def __aenter__(self) -> AlertNotifier:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- accepting -----------------------------------------------------------------------------

    def notify(self, transition: Mapping[str, Any]) -> bool:
        """Consider one transition; True if an alert was queued. Never blocks or raises for a
        delivery problem (a malformed transition still raises, at the caller)."""
        if self._loop is None:
            raise RuntimeError("AlertNotifier.notify before start()")
        kind = alert_kind(transition)
        if kind is None or self._closing:
            return False
        agent = transition["agent_id"]
        seq = transition.get("seq")
        if seq is not None:
            # Controls apply in seq order; one at or below the latest is a redelivery (a
            # restarted worker re-reading), already alerted or folded.
            if seq <= self._latest_seq.get(agent, -1):
                self._record_outcome(alert_body(transition, kind), "-", "suppressed",
                                     attempts=0, error="duplicate")
                return False
            self._latest_seq[agent] = seq
        now = self._loop.time()
        self._forget_before(now)
        index = self._index[agent] = self._index.get(agent, 0) + 1
        key = (agent, str(transition["mode"]), transition.get("scope", "agent"),
               transition.get("run_id"))
        if key in self._recent:
            self._fold(agent, transition, index, kind, self._recent[key] - now)
            return False
        self._recent[key] = now + self.dedup_window_s
        self._last_sent[agent] = index
        return self._enqueue(alert_body(transition, kind), transition)

    def _fold(self, agent: str, t: Mapping[str, Any], index: int, kind: str,
              window_left_s: float) -> None:
        folded = self._folded.setdefault(agent, _Folded())
        folded.count += 1
        folded.latest, folded.latest_index = t, index
        if folded.timer is None:
            assert self._loop is not None
            folded.timer = self._loop.call_later(max(window_left_s, 0.0), self._flush, agent)
        body = alert_body(t, kind)
        self._record_outcome(body, "-", "suppressed", attempts=0)

    def _flush(self, agent: str) -> None:
        folded = self._folded.pop(agent, None)
        if folded is None or folded.latest is None:
            return
        if folded.latest_index <= self._last_sent.get(agent, 0):
            return  # an alert after the folded ones already told the owner the latest state
        self._last_sent[agent] = folded.latest_index
        t = folded.latest
        alert_id = str(uuid.uuid5(_ALERT_NAMESPACE, f"summary\x1f{_alert_id(t, 'summary')}"))
        self._enqueue(alert_body(t, "summary", alert_id=alert_id, suppressed=folded.count,
                                 window_s=self.dedup_window_s), t)

    def _enqueue(self, body: dict[str, Any], t: Mapping[str, Any]) -> bool:
        targets = self.routes.targets(t.get("owner"), t.get("workflow"))
        if not targets:
            self._record_outcome(body, "-", "unrouted", attempts=0)
            return False
        queued = False
        for route, url in targets:
            try:
                self._queue.put_nowait(_Delivery(body, route, url))
                queued = True
            except asyncio.QueueFull:
                self._record_outcome(body, route, "dropped", attempts=0, error="queue full")
        return queued

    def _forget_before(self, now: float) -> None:
        expired = [k for k, until in self._recent.items() if until <= now]
        for k in expired:
            del self._recent[k]

    # -- delivering ----------------------------------------------------------------------------

    async def _work(self) -> None:
        while True:
            delivery = await self._queue.get()
            self._busy += 1
            try:
                await self._deliver(delivery)
            except asyncio.CancelledError:
                self._record_outcome(delivery.body, delivery.route, "dropped", attempts=0,
                                     error="notifier closed during delivery")
                raise
            except Exception as exc:  # noqa: BLE001 - one bad alert must not stop the worker
                log.exception("tripwire alerts: delivery crashed")
                self._record_outcome(delivery.body, delivery.route, "failed", attempts=0,
                                     error=repr(exc))
            finally:
                self._busy -= 1
                self._queue.task_done()

    async def _deliver(self, d: _Delivery) -> None:
        assert self._session is not None
        started = time.monotonic()
        status: int | None = None
        error = ""
        for attempt in range(1, self.max_retries + 2):
            retry_after: float | None = None
            try:
                async with self._session.post(
                    d.url, json=d.body, headers={ALERT_ID_HEADER: d.body["alert_id"]}
                ) as response:
                    status = response.status
                    if 200 <= status < 300:
                        self._record_outcome(d.body, d.route, "delivered", attempts=attempt,
                                             status=status, started=started)
                        return
                    error = f"HTTP {status}"
                    if status not in _RETRYABLE_STATUS:
                        break
                    retry_after = _retry_after(response.headers.get("Retry-After"))
            except (aiohttp.ClientError, TimeoutError) as exc:
                status, error = None, f"{type(exc).__name__}: {exc}"
            if attempt > self.max_retries:
                break
            delay = min(self.backoff_s * 2 ** (attempt - 1), self.max_backoff_s)
            delay *= random.uniform(0.5, 1.0)  # spread retries of many alerts apart
            if retry_after is not None:
                delay = max(delay, min(retry_after, self.max_backoff_s))
            await asyncio.sleep(delay)
        log.warning("tripwire alerts: %s alert %s to %s failed after %d attempt(s): %s",
                    d.body["kind"], d.body["alert_id"], d.route, attempt, error)
        self._record_outcome(d.body, d.route, "failed", attempts=attempt, status=status,
                             error=error, started=started)

    # -- recording -----------------------------------------------------------------------------

    def _record_outcome(self, body: Mapping[str, Any], route: str, outcome: str, *,
                        attempts: int, status: int | None = None, error: str = "",
                        started: float | None = None) -> None:
        self.counts[outcome] = self.counts.get(outcome, 0) + 1
        if self._record_cb is None:
            return
        row = {
            "alert_id": body["alert_id"],
            "ts": time.time_ns() // 1_000_000,
            "kind": body["kind"],
            "agent_id": body["agent_id"],
            "mode": body["mode"],
            "previous_mode": body.get("previous_mode"),
            "scope": body.get("scope"),
            "run_id": body.get("run_id"),
            "seq": body.get("seq"),
            "owner": body.get("owner"),
            "workflow": body.get("workflow"),
            "route": route,
            "outcome": outcome,
            "attempts": attempts,
            "status_code": status,
            "error": error,
            "latency_ms": None if started is None else int((time.monotonic() - started) * 1000),
            "suppressed": body.get("suppressed", 0),
        }
        try:
            result = self._record_cb(row)
            if inspect.isawaitable(result):
                task = asyncio.ensure_future(result)
                self._background.add(task)
                task.add_done_callback(self._background.discard)
        except Exception:  # noqa: BLE001 - a failing audit write must not stop alerting
            log.exception("tripwire alerts: recording an outcome failed")

    # -- lifecycle -----------------------------------------------------------------------------

    @property
    def pending(self) -> int:
        """Alerts queued or being delivered."""
        return self._queue.qsize() + self._busy

    async def wait_idle(self, timeout_s: float | None = None) -> bool:
        """Wait until nothing is queued or in delivery (summaries still pending in a window
        do not count); False on timeout."""
        try:
            await asyncio.wait_for(self._queue.join(), timeout_s)
        except TimeoutError:
            return False
        return True

    async def close(self, timeout_s: float = 10.0) -> None:
        """Send folded summaries now, deliver what is queued for up to ``timeout_s``, stop."""
        if self._loop is None:
            return
        for agent in list(self._folded):
            timer = self._folded[agent].timer
            if timer is not None:
                timer.cancel()
            self._flush(agent)
        self._closing = True
        if not await self.wait_idle(timeout_s):
            log.warning("tripwire alerts: %d alert(s) undelivered at close", self.pending)
        for task in self._workers:
            task.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        while not self._queue.empty():
            left = self._queue.get_nowait()
            self._record_outcome(left.body, left.route, "dropped", attempts=0,
                                 error="notifier closed")
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
        self._loop = None


def _retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # an HTTP date; the backoff applies
