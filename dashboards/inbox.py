"""The approval inbox: pending requests from ``approval-requests``, one-click decisions back.

:class:`Inbox` tails every partition of ``approval-requests`` and ``approval-decisions``
from the beginning (so a restarted server shows what is still pending and what was decided)
and keeps the pending requests in memory, parameters masked (``sinks/masking.py``) as soon
as they are read. A decision by a logged-in approver:

1. is published on ``approval-decisions`` keyed by the agent, signed with the agent's
   derived control key (``sign_approval_decision``), so only the waiting guard acts on it;
2. is stored in ClickHouse ``approval_decisions`` (approver, wait, reason);
3. is published as an ``approval_decision`` step on ``agent-steps`` (``attributes.decided_by
   = tripwire-inbox``), which is how the worker's earned-autonomy record sees it;
4. is audited (``web_audit``).

A request nobody answers is declined as ``expired`` at its ``expires_at`` the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from tripwire.schemas.codec import (
    DecodeError,
    StepBatchCodec,
    approval_decision_codec,
    approval_request_codec,
)
from tripwire.schemas.command_signing import (
    derive_agent_key,
    sign_approval_decision,
    verify_approval_decision,
)
from tripwire.schemas.topics import APPROVAL_DECISIONS, APPROVAL_REQUESTS, STEPS
from tripwire.sdk.approvals import DECLINE_REASONS, EXPIRED, EXPIRY_APPROVER
from tripwire.sdk.steps import blank_event
from tripwire.sinks.masking import mask

log = logging.getLogger(__name__)

INBOX_DECIDED_BY = "tripwire-inbox"
"""``attributes.decided_by`` of the approval_decision steps the inbox publishes."""
KEEP_DECIDED = 200  # decided requests kept in memory for the page's "recently decided" list
EXPIRY_CHECK_S = 0.5


class InboxError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


StoreRow = Callable[[dict[str, Any]], Awaitable[None]]


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def masked_params(params_json: str | None) -> dict[str, Any] | None:
    """The request's parameters with secrets and personal data masked, value by value."""
    if params_json is None:
        return None
    try:
        params = json.loads(params_json)
    except ValueError:
        return {"(unreadable)": mask(params_json)}

    def walk(value: Any, key: str = "") -> Any:
        if isinstance(value, dict):
            return {k: walk(v, k) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v, key) for v in value]
        if isinstance(value, str):
            # key=value gives the masker the field name (password=..., token=...).
            masked = mask(f"{key}={value}") if key else mask(value)
            return masked[len(key) + 1:] if key and masked.startswith(f"{key}=") else masked
        return value

    return walk(params)


class Inbox:
    def __init__(
        self,
        bootstrap: str,
        *,
        store_decision: StoreRow | None = None,
        control_key: tuple[str, str] | None = None,
        fetch_max_wait_ms: int = 50,
    ) -> None:
        self.bootstrap = bootstrap
        self.store_decision = store_decision
        self.control_key = control_key
        self.fetch_max_wait_ms = fetch_max_wait_ms
        self.pending: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self.decided: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._requests = approval_request_codec()
        self._decisions = approval_decision_codec()
        self._steps = StepBatchCodec()
        self._producer: AIOKafkaProducer | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._lock = asyncio.Lock()
        self.caught_up = asyncio.Event()

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        self._producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all",
                                          client_id="tripwire-inbox")
        await self._producer.start()
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False,
                                    fetch_max_wait_ms=self.fetch_max_wait_ms,
                                    client_id="tripwire-inbox")
        await consumer.start()
        await consumer.topics()
        tps = []
        for topic in (APPROVAL_REQUESTS, APPROVAL_DECISIONS):
            parts = consumer.partitions_for_topic(topic)
            if not parts:
                await consumer.stop()
                raise LookupError(f"topic {topic} does not exist (run tripwire init)")
            tps += [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        self._tasks = [asyncio.create_task(self._follow(consumer, tps)),
                       asyncio.create_task(self._expire_loop())]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        if self._producer is not None:
            await self._producer.stop()

    async def _follow(self, consumer: AIOKafkaConsumer, tps: list[TopicPartition]) -> None:
        try:
            while True:
                batches = await consumer.getmany(*tps, timeout_ms=self.fetch_max_wait_ms)
                for tp, records in batches.items():
                    for record in records:
                        self._on_record(tp.topic, record)
                if not self.caught_up.is_set():
                    done = True
                    for tp in tps:
                        hw = consumer.highwater(tp)
                        if hw is None or await consumer.position(tp) < hw:
                            done = False
                    if done:
                        self.caught_up.set()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("inbox: following the approval topics failed")
            raise
        finally:
            await consumer.stop()

    def _on_record(self, topic: str, record: Any) -> None:
        if record.value is None:
            return
        try:
            if topic == APPROVAL_REQUESTS:
                req = self._requests.decode(record.value)
            else:
                dec = self._decisions.decode(record.value)
        except DecodeError as exc:
            log.warning("inbox: undecodable record on %s: %s", topic, exc.reason)
            return
        if topic == APPROVAL_DECISIONS and self.control_key is not None:
            # Only decisions this deployment signed settle a request: a forged one on the
            # topic must not clear it from the inbox (the guard ignores it too).
            key_id, master = self.control_key
            keys = {key_id: derive_agent_key(master, dec["agent_id"])}
            rejection = verify_approval_decision(dec, record.headers, dec["agent_id"], keys)
            if rejection is not None:
                log.warning("inbox: ignored %s decision for %s", rejection, dec["request_id"])
                return
        if topic == APPROVAL_REQUESTS:
            rid = req["request_id"]
            if rid in self.decided or rid in self.pending:
                return
            req["params"] = masked_params(req.pop("params_json"))
            if req.get("rationale"):
                req["rationale"] = mask(req["rationale"])
            self.pending[rid] = req
        else:
            self._settled(dec)

    def _settled(self, decision: dict[str, Any]) -> None:
        rid = decision["request_id"]
        request = self.pending.pop(rid, None)
        entry = {**(request or {}), **decision}
        entry["wait_ms"] = decision["decided_at"] - decision["requested_at"]
        self.decided[rid] = entry
        self.decided.move_to_end(rid)
        while len(self.decided) > KEEP_DECIDED:
            self.decided.popitem(last=False)

    # -- reading ---------------------------------------------------------------------------

    def listing(self) -> dict[str, Any]:
        now = _now_ms()
        return {
            "now": now,
            "pending": [r for r in self.pending.values() if r["expires_at"] > now],
            "decided": list(reversed(self.decided.values())),
            "reasons": dict(DECLINE_REASONS),
        }

    # -- deciding --------------------------------------------------------------------------

    async def decide(self, request_id: str, *, approver: str, approved: bool,
                     reason_code: str | None = None, reason_text: str | None = None,
                     now_ms: int | None = None) -> dict[str, Any]:
        reason_text = (reason_text or "").strip() or None
        if not approved and approver != EXPIRY_APPROVER:
            if reason_code not in DECLINE_REASONS:
                raise InboxError(400, f"a decline needs a reason: one of {list(DECLINE_REASONS)}")
            if reason_code == "other" and not reason_text:
                raise InboxError(400, "reason 'other' needs a text")
        if approved:
            reason_code = reason_text = None
        async with self._lock:  # one decision per request, even with two approvers clicking
            request = self.pending.get(request_id)
            if request is None:
                if request_id in self.decided:
                    raise InboxError(409, f"request {request_id} was already decided")
                raise InboxError(404, f"no pending request {request_id}")
            now = _now_ms() if now_ms is None else now_ms
            if request["expires_at"] <= now and approver != EXPIRY_APPROVER:
                raise InboxError(409, f"request {request_id} has expired")
            decision = {
                "request_id": request_id, "agent_id": request["agent_id"],
                "run_id": request.get("run_id"), "tool": request["tool"],
                "action_class": request["action_class"], "kind": request["kind"],
                "approved": approved, "approver": approver, "reason_code": reason_code,
                "reason_text": mask(reason_text) if reason_text else None,
                "requested_at": request["requested_at"], "decided_at": now,
            }
            await self._publish(request, decision)
            self._settled(decision)
        return self.decided[request_id]

    async def _publish(self, request: dict[str, Any], decision: dict[str, Any]) -> None:
        assert self._producer is not None
        key = request["agent_id"].encode("utf-8")
        headers = (sign_approval_decision(decision, *self.control_key)
                   if self.control_key else None)
        sends = [await self._producer.send(APPROVAL_DECISIONS, self._decisions.encode(decision),
                                           key=key, headers=headers)]
        step = self._step_event(request, decision)
        if step is not None:
            sends.append(await self._producer.send(STEPS, self._steps.encode([step]), key=key))
        await asyncio.gather(*sends)
        if self.store_decision is not None:
            await self.store_decision(self.row(request, decision))

    @staticmethod
    def row(request: dict[str, Any], decision: dict[str, Any]) -> dict[str, Any]:
        return {
            "decided_at": decision["decided_at"], "requested_at": decision["requested_at"],
            "request_id": decision["request_id"], "agent_id": decision["agent_id"],
            "agent_version": request.get("agent_version") or "",
            "workflow": request.get("workflow") or "",
            "environment": request.get("environment") or "",
            "run_id": decision.get("run_id") or "", "tool": decision["tool"],
            "action_class": decision["action_class"], "kind": decision["kind"],
            "trig": request.get("trigger") or "", "approved": int(decision["approved"]),
            "approver": decision["approver"],
            "wait_ms": decision["decided_at"] - decision["requested_at"],
            "reason_code": decision.get("reason_code") or "",
            "reason_text": decision.get("reason_text") or "",
        }

    @staticmethod
    def _step_event(request: dict[str, Any], decision: dict[str, Any]) -> dict[str, Any] | None:
        # A step needs a run; a request made outside any run is only stored and audited.
        if not request.get("run_id"):
            return None
        event = blank_event()
        attributes = {"decided_by": INBOX_DECIDED_BY, "request_id": decision["request_id"],
                      "approval_kind": decision["kind"], "trigger": request.get("trigger", "")}
        if decision.get("reason_code"):
            attributes["decline_reason"] = decision["reason_code"]
        if decision.get("reason_text"):
            attributes["decline_text"] = decision["reason_text"]
        event.update(
            event_id=str(uuid.uuid4()), ts=decision["decided_at"], agent_id=request["agent_id"],
            agent_version=request.get("agent_version"), run_id=request["run_id"],
            step=request.get("step") or 0, workflow=request.get("workflow"),
            owner=request.get("owner"), environment=request.get("environment"),
            kind="approval_decision", tool=request["tool"],
            action_class=request["action_class"], approver=decision["approver"],
            approved=decision["approved"],
            wait_ms=decision["decided_at"] - decision["requested_at"], attributes=attributes)
        return event

    async def _expire_loop(self) -> None:
        while True:
            await asyncio.sleep(EXPIRY_CHECK_S)
            if not self.caught_up.is_set():
                continue  # a decision for an old request may still be ahead in the topic
            now = _now_ms()
            for rid in [r for r, req in self.pending.items() if req["expires_at"] <= now]:
                try:
                    await self.decide(rid, approver=EXPIRY_APPROVER, approved=False,
                                      reason_code=EXPIRED, now_ms=now)
                except InboxError:
                    pass
                except Exception:
                    log.exception("inbox: could not expire %s", rid)
