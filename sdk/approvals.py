"""Approvals answered from Tripwire's inbox: the guard's approval hook when it has none of its own.

When a guarded call needs a human, :class:`TripwireApprovals` publishes an ApprovalRequest
(``schemas/approval_request.avsc``) on ``approval-requests`` keyed by the agent, and waits for
the signed ApprovalDecision on ``approval-decisions``, following only the agent's own
partition. The web inbox (``dashboards/inbox.py``) shows the request within a second; a human
approves or declines it there, and the server signs the decision with the agent's derived
control key, so the guard accepts only decisions Tripwire made for this agent.

The wait is bounded (``timeout_s``): the inbox declines a request as ``expired`` once its
``expires_at`` passes, and the guard gives up a little later on its own if even that answer
does not come. A suggest-only proposal is offered the same way (``kind=proposal``) without
waiting: whether a human accepts it is what earned autonomy counts.

The inbox records every decision (ClickHouse and an ``approval_decision`` step), so the
guard does not emit one of its own for them (:attr:`Approval.recorded`).

Give the approver the agent's reason with :func:`rationale`::

    with rationale("the customer asked for a refund in ticket T-88"):
        refund(order_id="O-1", amount=40)
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextvars import ContextVar
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from tripwire.schemas.codec import DecodeError, approval_decision_codec, approval_request_codec
from tripwire.schemas.command_signing import Secret, verify_approval_decision
from tripwire.schemas.topics import APPROVAL_DECISIONS, APPROVAL_REQUESTS
from tripwire.sdk.control_follower import key_partition
from tripwire.sdk.decisions import Approval, ApprovalRequest
from tripwire.sdk.steps import canonical_params_json, params_hash

__all__ = [
    "DECLINE_REASONS",
    "EXPIRED",
    "TripwireApprovals",
    "rationale",
]

log = logging.getLogger("tripwire.sdk.approvals")

DECLINE_REASONS: Mapping[str, str] = {
    "wrong_recipient": "Wrong recipient",
    "too_risky": "Too risky",
    "needs_review": "Needs review",
    "wrong_data": "Wrong data",
    "other": "Other",
}
"""The inbox's decline reasons, code -> label (``other`` needs a text)."""
EXPIRED = "expired"
"""reason_code of a request nobody answered before its ``expires_at``."""
EXPIRY_APPROVER = "tripwire-expiry"

# The guard waits this much past expires_at for the inbox's own expiry decision before it
# declines locally: the inbox checks expiries every 0.5 s and its answer is recorded.
_EXPIRY_GRACE_S = 3.0
_READY_TIMEOUT_S = 15.0

_RATIONALE: ContextVar[str | None] = ContextVar("tripwire_rationale", default=None)


@contextlib.contextmanager
def rationale(text: str) -> Iterator[None]:
    """Guarded calls made inside carry ``text`` to the approver as the agent's reason."""
    token = _RATIONALE.set(text)
    try:
        yield
    finally:
        _RATIONALE.reset(token)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class TripwireApprovals:
    """An approval hook that asks Tripwire's inbox and waits for its signed answer.

    Usable as ``approval_hook`` (blocking, for sync tools) and through :meth:`ask_async` (the
    async guard awaits it). Its Kafka clients start on first use in a daemon thread of their
    own, so an agent that never needs approval opens no connection for it.
    """

    def __init__(
        self,
        bootstrap: str,
        agent_id: str,
        *,
        control_keys: Mapping[str, Secret] | None = None,
        timeout_s: float = 300.0,
        requests_topic: str = APPROVAL_REQUESTS,
        decisions_topic: str = APPROVAL_DECISIONS,
        fetch_max_wait_ms: int = 50,
        on_proposal_decision: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        if timeout_s <= 0:
            raise ValueError("timeout_s must be > 0")
        self.bootstrap = bootstrap
        self.agent_id = agent_id
        self.control_keys = dict(control_keys or {})
        self.timeout_s = timeout_s
        self.requests_topic = requests_topic
        self.decisions_topic = decisions_topic
        self.fetch_max_wait_ms = fetch_max_wait_ms
        self.on_proposal_decision = on_proposal_decision
        self.rejected: dict[str, int] = {}
        """Decisions refused by reason (unsigned, bad_signature, ...)."""
        self._key = agent_id.encode("utf-8")
        self._requests = approval_request_codec()
        self._decisions = approval_decision_codec()
        self._lock = threading.Lock()
        self._pending: dict[str, concurrent.futures.Future[dict[str, Any]]] = {}
        self._proposals: set[str] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._producer: AIOKafkaProducer | None = None
        self._follower: asyncio.Task[None] | None = None
        self._ready = threading.Event()
        self._failed: BaseException | None = None

    # -- the hook --------------------------------------------------------------------------

    def __call__(self, request: ApprovalRequest) -> Approval:
        """Ask and block until decided or expired (sync tools)."""
        try:
            record, future = self._submit(request, "approval")
        except Exception as exc:  # noqa: BLE001 - an unreachable inbox means "not approved"
            return self._unavailable(exc)
        try:
            decision = future.result(timeout=self.timeout_s + _EXPIRY_GRACE_S)
        except concurrent.futures.TimeoutError:
            return self._expired_locally(record)
        finally:
            self._forget(record["request_id"])
        return _approval_of(decision)

    async def ask_async(self, request: ApprovalRequest) -> Approval:
        """Ask and await the decision without blocking the caller's event loop."""
        try:
            record, future = await asyncio.to_thread(self._submit, request, "approval")
        except Exception as exc:  # noqa: BLE001
            return self._unavailable(exc)
        try:
            # Not asyncio.wait_for: on Python 3.11 it swallows the caller's cancellation
            # when the decision arrives in the same turn of the loop.
            async with asyncio.timeout(self.timeout_s + _EXPIRY_GRACE_S):
                decision = await asyncio.wrap_future(future)
        except TimeoutError:
            return self._expired_locally(record)
        finally:
            self._forget(record["request_id"])
        return _approval_of(decision)

    def propose(self, request: ApprovalRequest) -> str | None:
        """Offer a suggest-only proposal to the inbox without waiting; its request id, or None
        if it could not be published (the proposal still goes back to the agent)."""
        try:
            record, _ = self._submit(request, "proposal")
        except Exception as exc:  # noqa: BLE001 - telemetry must not fail the agent
            log.warning("tripwire approvals %s: could not offer proposal: %r", self.agent_id, exc)
            return None
        return str(record["request_id"])

    def pending(self) -> list[str]:
        with self._lock:
            return list(self._pending)

    # -- publishing ------------------------------------------------------------------------

    def _record(self, request: ApprovalRequest, kind: str) -> dict[str, Any]:
        now = _now_ms()
        run = request.run
        session = run.session if run is not None else None
        params_json = None
        if request.params is not None:
            with contextlib.suppress(TypeError, ValueError):
                params_json = canonical_params_json(request.params)
        decision = request.decision
        return {
            "request_id": str(uuid.uuid4()),
            "agent_id": self.agent_id,
            "run_id": request.run_id,
            "step": request.step,
            "tool": request.tool,
            "action_class": request.action_class,
            "params_json": params_json,
            "params_hash": None if params_json is None else params_hash(request.params or {}),
            "kind": kind,
            # Whatever made the guard ask: guard.mode.<mode> -> mode.<mode>, a run's mode,
            # or any rule that answers needs_approval (e.g. a standing approval rule).
            "trigger": decision.rule.removeprefix("guard."),
            "trigger_detail": decision.reason,
            "rationale": _RATIONALE.get(),
            "agent_version": getattr(session, "agent_version", None),
            "workflow": getattr(session, "workflow", None),
            "owner": getattr(session, "owner", None),
            "environment": getattr(session, "environment", None),
            "requested_at": now,
            "expires_at": now + int(self.timeout_s * 1000),
            "attributes": {"guard_rule": decision.rule},
        }

    def _submit(
        self, request: ApprovalRequest, kind: str
    ) -> tuple[dict[str, Any], concurrent.futures.Future[dict[str, Any]]]:
        loop = self._start()
        record = self._record(request, kind)
        future: concurrent.futures.Future[dict[str, Any]] = concurrent.futures.Future()
        with self._lock:
            if kind == "approval":
                self._pending[record["request_id"]] = future
            else:
                self._proposals.add(record["request_id"])
        try:
            asyncio.run_coroutine_threadsafe(self._send(record), loop).result(_READY_TIMEOUT_S)
        except BaseException:
            self._forget(record["request_id"])
            raise
        return record, future

    async def _send(self, record: dict[str, Any]) -> None:
        assert self._producer is not None
        await self._producer.send_and_wait(self.requests_topic, self._requests.encode(record),
                                           key=self._key)

    def _forget(self, request_id: str) -> None:
        with self._lock:
            self._pending.pop(request_id, None)

    def _unavailable(self, exc: BaseException) -> Approval:
        log.warning("tripwire approvals %s: inbox unreachable: %r", self.agent_id, exc)
        return Approval(False, "tripwire-inbox", f"approval inbox unreachable: {exc!r}")

    def _expired_locally(self, record: dict[str, Any]) -> Approval:
        # The inbox normally answers an expired request itself (and records it); this is the
        # guard's own bound for when that answer never comes.
        return Approval(False, EXPIRY_APPROVER,
                        f"no decision within {self.timeout_s:g} s", reason_code=EXPIRED,
                        recorded=True)

    # -- following decisions ---------------------------------------------------------------

    def _start(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._thread is None:
                self._loop = asyncio.new_event_loop()
                self._thread = threading.Thread(target=self._loop.run_forever, daemon=True,
                                                name=f"tripwire-approvals-{self.agent_id}")
                self._thread.start()
                asyncio.run_coroutine_threadsafe(self._open(), self._loop)
                atexit.register(self.close)
        if not self._ready.wait(_READY_TIMEOUT_S):
            self._reset()
            raise TimeoutError(f"approval topics not reachable on {self.bootstrap} "
                               f"within {_READY_TIMEOUT_S:g} s")
        failed = self._failed
        if failed is not None:
            self._reset()  # the next request tries again
            raise RuntimeError(f"approval route failed to start: {failed!r}")
        assert self._loop is not None
        return self._loop

    def _reset(self) -> None:
        self.close()
        self._ready.clear()
        self._failed = None
        self._producer = None
        self._follower = None

    async def _open(self) -> None:
        try:
            self._producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all",
                                              client_id=f"tripwire-approvals-{self.agent_id}")
            await self._producer.start()
            consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap,
                                        enable_auto_commit=False,
                                        fetch_max_wait_ms=self.fetch_max_wait_ms,
                                        client_id=f"tripwire-approvals-{self.agent_id}")
            await consumer.start()
            await consumer.topics()
            partitions = consumer.partitions_for_topic(self.decisions_topic)
            if not partitions:
                await consumer.stop()
                raise LookupError(f"topic {self.decisions_topic} does not exist")
            tp = TopicPartition(self.decisions_topic,
                                key_partition(self._key, len(partitions)))
            consumer.assign([tp])
            # Only decisions made from now on can answer requests made from now on.
            await consumer.seek_to_end(tp)
            await consumer.position(tp)
        except BaseException as exc:  # noqa: BLE001 - reported to the asking thread
            if self._producer is not None:
                with contextlib.suppress(Exception):
                    await self._producer.stop()
            self._failed = exc
            self._ready.set()
            return
        self._follower = asyncio.create_task(self._follow(consumer, tp))
        self._ready.set()

    async def _follow(self, consumer: AIOKafkaConsumer, tp: TopicPartition) -> None:
        try:
            while True:
                batches = await consumer.getmany(tp, timeout_ms=self.fetch_max_wait_ms)
                for record in batches.get(tp, ()):
                    self._on_record(record)
        finally:
            await consumer.stop()

    def _on_record(self, record: Any) -> None:
        if record.key != self._key or record.value is None:
            return
        try:
            decision = self._decisions.decode(record.value)
        except DecodeError as exc:
            self._reject("malformed", exc.reason)
            return
        if self.control_keys:
            reason = verify_approval_decision(decision, record.headers, self.agent_id,
                                              self.control_keys)
            if reason is not None:
                self._reject(reason, decision.get("request_id", ""))
                return
        elif decision["agent_id"] != self.agent_id:
            return
        request_id = decision["request_id"]
        with self._lock:
            future = self._pending.get(request_id)
            proposal = request_id in self._proposals
            self._proposals.discard(request_id)
        if future is not None and not future.done():
            future.set_result(decision)
        elif proposal and self.on_proposal_decision is not None:
            try:
                self.on_proposal_decision(decision)
            except Exception as exc:  # noqa: BLE001 - the agent's callback must not stop us
                log.warning("tripwire approvals: on_proposal_decision failed: %r", exc)

    def _reject(self, reason: str, detail: str) -> None:
        self.rejected[reason] = self.rejected.get(reason, 0) + 1
        log.warning("tripwire approvals %s: ignored decision (%s) %s", self.agent_id, reason,
                    detail)

    def close(self, timeout_s: float = 5.0) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        self._loop = self._thread = None
        atexit.unregister(self.close)

        async def shut() -> None:
            if self._follower is not None:
                self._follower.cancel()
                with contextlib.suppress(BaseException):
                    await self._follower
            if self._producer is not None:
                await self._producer.stop()

        try:
            asyncio.run_coroutine_threadsafe(shut(), loop).result(timeout_s)
        except Exception as exc:  # noqa: BLE001 - closing must not raise into agent code
            log.debug("tripwire approvals: close failed: %r", exc)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout_s)


def _approval_of(decision: Mapping[str, Any]) -> Approval:
    code, text = decision.get("reason_code"), decision.get("reason_text")
    note = " - ".join(p for p in (code, text) if p) or None
    return Approval(bool(decision["approved"]), str(decision["approver"]), note,
                    reason_code=code, recorded=True)
