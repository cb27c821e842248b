"""The guard: an agent asks it before every tool call, and obeys the mode Tripwire set.

    guard = Guard(bootstrap, "agent-7", approval_hook=ask_a_human)
    guard.start()

    @guard.guarded("crm.update_contact", "write")
    def update_contact(contact_id: str, fields: dict) -> dict: ...

    with session.run() as run, guard.bind(run):
        update_contact("C-1", {"stage": "won"})

What each mode allows is tabled in :mod:`sdk.decisions`. A run stopped by a run-scoped
control is refused from its next check on. When the control plane has not been heard from
for ``staleness_s`` (see :mod:`sdk.control_follower`), the guard decides as if the mode were
the lower of the current one and ``safe_mode``, and says so in every decision; it recovers
by itself when the stream answers again.

Decisions other than a plain ``allow`` are emitted as ``policy_decision`` steps on the run
the guard is bound to (``attributes.decided_by = "tripwire-guard"``), so dashboards see what
was blocked. Events need a :class:`~sdk.steps.Run`, which numbers the steps; the guard
therefore emits through the run it is given or bound to rather than an emitter of its own.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import functools
import inspect
import logging
import threading
import time
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, TypeVar

from tripwire.schemas.command_signing import SHARED_AGENT, ControlVerifier, Secret
from tripwire.schemas.modes import Mode
from tripwire.schemas.topics import CONTROL_ACKS, CONTROLS, CONTROLS_SHARED
from tripwire.sdk.approvals import TripwireApprovals
from tripwire.sdk.control_acks import AckPublisher
from tripwire.sdk.control_follower import ControlFollower, ControlState
from tripwire.sdk.decisions import (
    DECIDED_BY,
    Approval,
    ApprovalHook,
    ApprovalRequest,
    Decision,
    GuardStatus,
    Proposal,
    ProposalOnly,
    RunHalted,
    ToolRefused,
    Verdict,
    require_action_class,
    verdict_for,
)
from tripwire.sdk.scopes import CallContext, lowest_ceiling
from tripwire.sdk.steps import Run, canonical_params_json

__all__ = [
    "Approval",
    "ApprovalHook",
    "ApprovalRequest",
    "AsyncGuard",
    "Decision",
    "Guard",
    "GuardStatus",
    "Proposal",
    "ProposalOnly",
    "RunHalted",
    "ToolRefused",
    "Verdict",
    "bound_run",
    "verdict_for",
]

log = logging.getLogger("tripwire.sdk.guard")

_BOUND_RUN: ContextVar[Run | None] = ContextVar("tripwire_guard_run", default=None)


def bound_run() -> Run | None:
    """The run :meth:`Guard.bind` bound in this context (thread / task), if any."""
    return _BOUND_RUN.get()


class _Binding:
    """Binds a run for the guard's decorators; usable with ``with`` and ``async with``."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self._token: Any = None

    def __enter__(self) -> Run:
        self._token = _BOUND_RUN.set(self.run)
        return self.run

    def __exit__(self, *exc: object) -> None:
        _BOUND_RUN.reset(self._token)

    async def __aenter__(self) -> Run:
        return self.__enter__()

    async def __aexit__(self, *exc: object) -> None:
        self.__exit__()


F = TypeVar("F", bound=Callable[..., Any])


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds")


def _params_of(signature: inspect.Signature, args: tuple, kwargs: dict) -> dict | None:
    """The call's arguments by name, if they are plain JSON (for params_hash and proposals)."""
    try:
        bound = signature.bind(*args, **kwargs)
    except TypeError:
        return None
    params = {k: v for k, v in bound.arguments.items() if k not in ("self", "cls")}
    try:
        canonical_params_json(params)
    except (TypeError, ValueError):
        return None
    return params


def _safely(what: str, emit: Callable[[], Any]) -> None:
    # Telemetry must never turn an allowed call into a failure, or a refusal into a crash.
    try:
        emit()
    except Exception as exc:  # noqa: BLE001
        log.warning("tripwire guard: could not record %s: %r", what, exc)


class _GuardBase:
    def __init__(
        self,
        bootstrap: str,
        agent_id: str,
        *,
        topic: str = CONTROLS,
        staleness_s: float = 15.0,
        safe_mode: Mode | str = Mode.READ_ONLY,
        approval_hook: ApprovalHook | None = None,
        route_approvals: bool = True,
        approval_timeout_s: float = 300.0,
        control_keys: Mapping[str, Secret] | None = None,
        emit_allowed: bool = False,
        fetch_max_wait_ms: int = 50,
        request_timeout_ms: int = 10_000,
        max_tracked_runs: int = 1024,
        client_id: str = "tripwire-guard",
        consumer_options: Mapping[str, Any] | None = None,
        agent_version: str | None = None,
        environment: str | None = None,
        workflow: str | None = None,
        shared_control_keys: Mapping[str, Secret] | None = None,
        shared_topic: str | None = CONTROLS_SHARED,
        ack_topic: str | None = CONTROL_ACKS,
        instance_id: str | None = None,
    ) -> None:
        if not agent_id:
            raise ValueError("agent_id must be a non-empty string")
        if agent_id == SHARED_AGENT:
            raise ValueError(f"agent_id {SHARED_AGENT!r} is reserved for shared scopes")
        # What scoped controls match on besides the call itself; a bound run's session fills
        # in what is not given here.
        self.agent_version = agent_version
        self.environment = environment
        self.workflow = workflow
        if staleness_s <= 0:
            raise ValueError("staleness_s must be > 0")
        self.safe_mode = Mode(safe_mode)
        if self.safe_mode == Mode.AUTONOMOUS:
            raise ValueError("safe_mode=autonomous would fail open; pick a restricting mode")
        self.agent_id = agent_id
        self.staleness_s = staleness_s
        self.approval_hook = approval_hook
        # Without a hook of its own, approvals go to Tripwire's inbox (sdk/approvals.py).
        self.approvals: TripwireApprovals | None = None
        if approval_hook is None and route_approvals:
            self.approvals = TripwireApprovals(bootstrap, agent_id, control_keys=control_keys,
                                               timeout_s=approval_timeout_s)
            self.approval_hook = self.approvals
        self.emit_allowed = emit_allowed
        self.state = ControlState(agent_id, max_runs=max_tracked_runs)
        verifier = ControlVerifier(agent_id, control_keys) if control_keys else None
        shared_verifier = (ControlVerifier(SHARED_AGENT, shared_control_keys)
                           if shared_control_keys else None)
        self.acks = AckPublisher(bootstrap, agent_id, topic=ack_topic, instance_id=instance_id,
                                 agent_keys=control_keys, agent_version=agent_version,
                                 workflow=workflow, environment=environment,
                                 ) if ack_topic else None
        self.follower = ControlFollower(
            bootstrap,
            self.state,
            topic=topic,
            staleness_s=staleness_s,
            verifier=verifier,
            fetch_max_wait_ms=fetch_max_wait_ms,
            request_timeout_ms=request_timeout_ms,
            client_id=client_id,
            consumer_options=consumer_options,
            shared_topic=shared_topic,
            shared_verifier=shared_verifier,
            on_applied=self.acks.applied if self.acks else None,
        )
        self._task: asyncio.Task[None] | None = None
        self._ack_task: asyncio.Task[None] | None = None

    # -- deciding ------------------------------------------------------------------------------

    def check(
        self,
        tool: str,
        action_class: str,
        run: Run | str | None = None,
        *,
        params: Mapping[str, Any] | None = None,
    ) -> Decision:
        """Decide one tool call and record the decision on the run (given or bound).

        ``run`` is a :class:`~sdk.steps.Run` (decisions are emitted on it), a run id (checked
        against run stops, nothing emitted) or None for the run bound with :meth:`bind`.
        """
        if isinstance(run, str):
            return self.decide(tool, action_class, run, params=params)
        return self._checked(tool, action_class, params, run)[1]

    def decide(
        self,
        tool: str,
        action_class: str,
        run_id: str | None = None,
        *,
        params: Mapping[str, Any] | None = None,
        session: Any = None,
    ) -> Decision:
        """The decision for one tool call, without emitting anything. ``params`` are checked
        against standing rules' parameter conditions (unknown parameters meet them)."""
        require_action_class(action_class)
        call = self._call(tool, action_class, params, session)
        mode, rule, reason, seq, stale, control = self._effective(run_id, call)
        return Decision(
            verdict=verdict_for(mode, action_class),
            mode=mode,
            tool=tool,
            action_class=action_class,
            rule=rule,
            reason=reason,
            run_id=run_id,
            stale=stale,
            seq=seq,
            control=control,
        )

    def _call(self, tool: str | None, action_class: str | None,
              params: Mapping[str, Any] | None, session: Any) -> CallContext:
        if session is None:
            bound = _BOUND_RUN.get()
            session = bound.session if bound is not None else None
        call = CallContext(
            agent_id=self.agent_id,
            tool=tool,
            action_class=action_class,
            agent_version=self.agent_version or getattr(session, "agent_version", None),
            environment=self.environment or getattr(session, "environment", None),
            workflow=self.workflow or getattr(session, "workflow", None),
            params=params,
        )
        if session is not None and self.acks is not None:
            self.acks.learn(call.agent_version, call.workflow, call.environment)
        return call

    def _effective(
        self, run_id: str | None, call: CallContext | None = None
    ) -> tuple[Mode, str, str, int | None, bool, str | None]:
        agent = self.state.agent
        if agent is None:
            mode, seq, reason = Mode.AUTONOMOUS, None, "no control recorded for this agent"
            control: str | None = None
        else:
            mode, seq = agent.mode, agent.seq
            reason = f"{agent.mode} since {_iso(agent.issued_at)}: {agent.reason}"
            control = self.agent_id
        rule = f"guard.mode.{mode}"
        if run_id is not None:
            run = self.state.run(run_id)
            if run is not None and run.mode.rank <= mode.rank:
                mode, seq, control = run.mode, run.seq, f"run={run_id}"
                if mode == Mode.HALTED:
                    rule, reason = "guard.run_stopped", f"run {run_id} stopped: {run.reason}"
                else:
                    rule, reason = f"guard.run.{mode}", f"run {run_id} set to {mode}: {run.reason}"
        ceiling = lowest_ceiling(self.state.scoped(), call or self._call(None, None, None, None),
                                 time.time_ns() // 1_000_000)
        if ceiling is not None and ceiling.mode.rank < mode.rank:
            scoped = ceiling.control
            mode, seq, control = ceiling.mode, scoped.seq, scoped.key
            rule = f"guard.scope.{scoped.scope.kind}.{mode}"
            why = f" when {scoped.condition.describe()}" if scoped.condition else ""
            reason = (f"{scoped.scope.key()} capped at {mode}{why} since "
                      f"{_iso(scoped.issued_at)}: {scoped.reason}")
        stale = not self.follower.fresh()
        if stale:
            silent = self.follower.silent_for()
            if silent is None:
                said = "the control plane has not been heard from yet"
            else:
                said = (f"no word from the control plane for {silent:.1f} s "
                        f"(limit {self.staleness_s:g} s)")
            if self.safe_mode.rank < mode.rank:
                mode, rule = self.safe_mode, f"guard.safe_mode.{self.safe_mode}"
                reason, control = f"{said}: safe mode {self.safe_mode}", None
            else:
                reason = f"{reason}; {said}"
        return mode, rule, reason, seq, stale, control

    def status(self) -> GuardStatus:
        agent = self.state.agent
        effective, _, reason, _, stale, _ = self._effective(None)
        return GuardStatus(
            agent_id=self.agent_id,
            mode=agent.mode if agent else Mode.AUTONOMOUS,
            effective_mode=effective,
            stale=stale,
            caught_up=self.follower.caught_up.is_set(),
            silent_for_s=self.follower.silent_for(),
            seq=agent.seq if agent else None,
            since_ms=agent.issued_at if agent else None,
            reason=reason,
            rule=agent.rule if agent else None,
            source=agent.source if agent else None,
            expires_at=agent.expires_at if agent else None,
            stopped_runs=self.state.stopped_runs(),
            rejected_controls=dict(self.follower.rejected),
        )

    def bind(self, run: Run) -> _Binding:
        """``with guard.bind(run):`` — guarded tools called inside record on ``run`` and are
        checked against its run stops."""
        return _Binding(run)

    def _resolve_run(self, run: Run | str | None) -> tuple[Run | None, str | None]:
        if isinstance(run, Run):
            return run, run.run_id
        if isinstance(run, str):
            return None, run
        bound = _BOUND_RUN.get()
        if bound is not None and bound.session.agent_id == self.agent_id:
            return bound, bound.run_id
        return None, None

    # -- recording -----------------------------------------------------------------------------

    def _emit_decision(
        self, decision: Decision, run: Run | None, params: Mapping[str, Any] | None
    ) -> None:
        if run is None or (decision.allowed and not self.emit_allowed):
            return
        attributes = {
            "decided_by": DECIDED_BY,
            "guard_verdict": decision.verdict,
            "guard_mode": str(decision.mode),
            "guard_stale": str(decision.stale).lower(),
        }
        if decision.seq is not None:
            attributes["control_seq"] = str(decision.seq)
        _safely("policy_decision", lambda: run.policy_decision(
            decision.tool, decision.action_class, decision.policy_outcome, decision.rule,
            params=params, attributes=attributes))

    def _end_run(self, decision: Decision, run: Run | None) -> None:
        if run is not None and run.started and not run.ended:
            _safely("run_end", lambda: run.end(
                "abandoned", {"stopped_by": DECIDED_BY, "guard_rule": decision.rule}))

    # -- enforcing -----------------------------------------------------------------------------

    def _settle(
        self, decision: Decision, run: Run | None, params: Mapping[str, Any] | None
    ) -> Proposal | None:
        """None if the call may run; a Proposal for suggest_only; raises if refused."""
        if decision.verdict == "allow":
            return None
        if decision.verdict == "suggest_only":
            if self.approvals is not None:
                self.approvals.propose(ApprovalRequest(
                    self.agent_id, decision.run_id, decision.tool, decision.action_class,
                    params, decision, run))
            return Proposal(decision.tool, decision.action_class, params, decision)
        if decision.ends_run:
            self._end_run(decision, run)
            raise RunHalted(decision)
        raise ToolRefused(decision)

    def _approval_request(
        self, decision: Decision, run: Run | None, params: Mapping[str, Any] | None
    ) -> ApprovalRequest:
        emitted: list[dict] = []
        if run is not None:
            _safely("approval_request", lambda: emitted.append(run.approval_request(
                decision.tool, decision.action_class, params=params,
                attributes={"decided_by": DECIDED_BY})))
        return ApprovalRequest(self.agent_id, decision.run_id, decision.tool,
                               decision.action_class, params, decision, run,
                               emitted[0]["step"] if emitted else None)

    def _approval_outcome(
        self,
        decision: Decision,
        run: Run | None,
        params: Mapping[str, Any] | None,
        approval: Approval,
        waited_s: float,
    ) -> Decision:
        wait_ms = int(waited_s * 1000)
        if run is not None and not approval.recorded:
            _safely("approval_decision", lambda: run.approval_decision(
                decision.tool, approval.approver, approval.approved, wait_ms,
                action_class=decision.action_class, attributes={"decided_by": DECIDED_BY}))
        if not approval.approved:
            refused = replace(decision, verdict="deny", rule="guard.approval.refused",
                              reason=f"approval refused by {approval.approver}"
                              + (f": {approval.note}" if approval.note else ""))
            self._emit_decision(refused, run, params)
            return refused
        # The mode may have dropped while a human was deciding (a kill, a stopped run).
        now = self.decide(decision.tool, decision.action_class, decision.run_id, params=params,
                          session=run.session if run is not None else None)
        if now.verdict not in ("allow", "needs_approval"):
            self._emit_decision(now, run, params)
            return now
        return replace(now, verdict="allow", rule="guard.approval.approved",
                       reason=f"approved by {approval.approver} after {wait_ms} ms")

    def _no_hook(self, decision: Decision, run: Run | None, params: Any) -> Decision:
        refused = replace(decision, verdict="deny", rule="guard.approval.no_hook",
                          reason=f"{decision.reason}; approval needed and no approval hook "
                          "is configured")
        self._emit_decision(refused, run, params)
        return refused

    def _approve_sync(
        self, decision: Decision, run: Run | None, params: Mapping[str, Any] | None
    ) -> Decision:
        if self.approval_hook is None:
            return self._no_hook(decision, run, params)
        request = self._approval_request(decision, run, params)
        started = time.monotonic()
        approval = _as_approval(self._call_hook_sync(request))
        return self._approval_outcome(decision, run, params, approval,
                                      time.monotonic() - started)

    async def _approve_async(
        self, decision: Decision, run: Run | None, params: Mapping[str, Any] | None
    ) -> Decision:
        if self.approval_hook is None:
            return self._no_hook(decision, run, params)
        request = self._approval_request(decision, run, params)
        started = time.monotonic()
        try:
            ask = getattr(self.approval_hook, "ask_async", None)
            result = ask(request) if ask is not None else self.approval_hook(request)
            if inspect.isawaitable(result):
                result = await result
        except Exception as exc:  # noqa: BLE001 - a failing approval flow means "not approved"
            log.warning("tripwire guard: approval hook failed: %r", exc)
            result = Approval(False, "approval_hook", f"approval hook failed: {exc!r}")
        return self._approval_outcome(decision, run, params, _as_approval(result),
                                      time.monotonic() - started)

    def _call_hook_sync(self, request: ApprovalRequest) -> Approval | bool:
        assert self.approval_hook is not None
        try:
            result = self.approval_hook(request)
        except Exception as exc:  # noqa: BLE001 - a failing approval flow means "not approved"
            log.warning("tripwire guard: approval hook failed: %r", exc)
            return Approval(False, "approval_hook", f"approval hook failed: {exc!r}")
        if inspect.isawaitable(result):
            if inspect.iscoroutine(result):
                result.close()
            return Approval(False, "approval_hook", "async approval hook on a sync tool")
        return result

    def _record_call(
        self,
        run: Run | None,
        decision: Decision,
        params: Mapping[str, Any] | None,
        started: float,
        error: BaseException | None,
    ) -> None:
        if run is None:
            return
        status = "ok" if error is None else (
            "timeout" if isinstance(error, TimeoutError) else "error")
        latency_ms = int((time.monotonic() - started) * 1000)
        _safely("tool_call", lambda: run.tool_call(
            decision.tool, decision.action_class, params, status=status, latency_ms=latency_ms,
            attributes={"guard_rule": decision.rule} if not decision.rule.startswith(
                "guard.mode.") else None))

    # -- integration ---------------------------------------------------------------------------

    def guarded(
        self, tool: str, action_class: str, *, record_call: bool = True
    ) -> Callable[[F], F]:
        """Decorate a sync or async tool function so every call is checked first.

        Allowed calls run (after approval in approve_to_act) and, with ``record_call``, are
        recorded as ``tool_call`` steps on the bound run. In suggest_only the function does not
        run and the call returns a :class:`Proposal`; refused calls raise :class:`ToolRefused`
        (:class:`RunHalted` when the run must end).
        """
        require_action_class(action_class)

        def wrap(fn: F) -> F:
            signature = inspect.signature(fn)
            if inspect.iscoroutinefunction(fn):

                @functools.wraps(fn)
                async def guarded_async(*args: Any, **kwargs: Any) -> Any:
                    params = _params_of(signature, args, kwargs)
                    run, decision = self._checked(tool, action_class, params)
                    if decision.verdict == "needs_approval":
                        decision = await self._approve_async(decision, run, params)
                    proposal = self._settle(decision, run, params)
                    if proposal is not None:
                        return proposal
                    started, error = time.monotonic(), None
                    try:
                        return await fn(*args, **kwargs)
                    except BaseException as exc:
                        error = exc
                        raise
                    finally:
                        if record_call:
                            self._record_call(run, decision, params, started, error)

                return guarded_async  # type: ignore[return-value]

            @functools.wraps(fn)
            def guarded_sync(*args: Any, **kwargs: Any) -> Any:
                params = _params_of(signature, args, kwargs)
                run, decision = self._checked(tool, action_class, params)
                if decision.verdict == "needs_approval":
                    decision = self._approve_sync(decision, run, params)
                proposal = self._settle(decision, run, params)
                if proposal is not None:
                    return proposal
                started, error = time.monotonic(), None
                try:
                    return fn(*args, **kwargs)
                except BaseException as exc:
                    error = exc
                    raise
                finally:
                    if record_call:
                        self._record_call(run, decision, params, started, error)

            return guarded_sync  # type: ignore[return-value]

        return wrap

    def action(
        self,
        tool: str,
        action_class: str,
        params: Mapping[str, Any] | None = None,
        *,
        run: Run | None = None,
        record_call: bool = True,
    ) -> _GuardedAction:
        """Context manager around inline tool code: ``with guard.action("crm.update",
        "write", {"id": 1}):``. Entering raises :class:`ToolRefused`, :class:`RunHalted` or
        :class:`ProposalOnly` instead of letting the block run; ``async with`` awaits an
        async approval hook."""
        require_action_class(action_class)
        return _GuardedAction(self, tool, action_class, params, run, record_call)

    def _checked(
        self, tool: str, action_class: str, params: Mapping[str, Any] | None,
        run: Run | None = None,
    ) -> tuple[Run | None, Decision]:
        run_obj, run_id = self._resolve_run(run)
        decision = self.decide(tool, action_class, run_id, params=params,
                               session=run_obj.session if run_obj is not None else None)
        self._emit_decision(decision, run_obj, params)
        return run_obj, decision

    # -- lifecycle helpers shared by both flavours ---------------------------------------------

    async def _start_follower(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self.follower.run(),
                                             name=f"tripwire-guard-{self.agent_id}")
        if self.acks is not None and self._ack_task is None:
            self._ack_task = asyncio.create_task(self.acks.run(self.follower.caught_up),
                                                 name=f"tripwire-guard-acks-{self.agent_id}")

    async def _stop_follower(self) -> None:
        for name in ("_task", "_ack_task"):
            task = getattr(self, name)
            setattr(self, name, None)
            if task is not None:
                await _cancelled(task)

    def _mode_now(self, run_id: str | None) -> Mode:
        return self._effective(run_id)[0]


async def _cancelled(task: asyncio.Task[Any]) -> None:
    """Cancel ``task`` and wait until it has ended, cancelling again while it runs on.

    Once is not always enough on Python 3.11: ``asyncio.wait_for`` drops a cancellation that
    arrives as the awaited item does (fixed in 3.12), and the task then goes on looping. The
    ack sender waited on its queue that way (it uses ``asyncio.timeout`` now), and a guard
    closed at that moment waited forever; this is the backstop for any other code the tasks
    run. A second of grace between cancellations lets a task's own clean-up (stopping its
    producer) finish before it is interrupted."""
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=1.0)
    with contextlib.suppress(asyncio.CancelledError, Exception):
        task.result()


def _finish_tasks(loop: asyncio.AbstractEventLoop, timeout_s: float) -> None:
    """What ``asyncio.run`` does before closing its loop: cancel the tasks still on it
    (aiokafka's own, a follower's that outlived ``close``'s timeout) and let them end, so
    none is destroyed pending once the loop is closed."""
    pending = asyncio.all_tasks(loop)
    for task in pending:
        task.cancel()
    if pending:
        loop.run_until_complete(asyncio.wait(pending, timeout=timeout_s))
    loop.run_until_complete(loop.shutdown_asyncgens())


def _as_approval(result: Approval | bool) -> Approval:
    if isinstance(result, Approval):
        return result
    return Approval(bool(result), "approval_hook")


class _GuardedAction:
    def __init__(
        self,
        guard: _GuardBase,
        tool: str,
        action_class: str,
        params: Mapping[str, Any] | None,
        run: Run | None,
        record_call: bool,
    ) -> None:
        self.guard = guard
        self.tool = tool
        self.action_class = action_class
        self.params = params
        self.run = run
        self.record_call = record_call
        self.decision: Decision | None = None
        self._run: Run | None = None
        self._started = 0.0

    def _enter(self, decision: Decision) -> Decision:
        proposal = self.guard._settle(decision, self._run, self.params)
        if proposal is not None:
            raise ProposalOnly(decision, proposal)
        self.decision = decision
        self._started = time.monotonic()
        return decision

    def __enter__(self) -> Decision:
        self._run, decision = self.guard._checked(self.tool, self.action_class, self.params,
                                                  self.run)
        if decision.verdict == "needs_approval":
            decision = self.guard._approve_sync(decision, self._run, self.params)
        return self._enter(decision)

    async def __aenter__(self) -> Decision:
        self._run, decision = self.guard._checked(self.tool, self.action_class, self.params,
                                                  self.run)
        if decision.verdict == "needs_approval":
            decision = await self.guard._approve_async(decision, self._run, self.params)
        return self._enter(decision)

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        if self.record_call and self.decision is not None:
            self.guard._record_call(self._run, self.decision, self.params, self._started, exc)

    async def __aexit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        self.__exit__(exc_type, exc, tb)


class AsyncGuard(_GuardBase):
    """The guard on the caller's event loop: ``async with AsyncGuard(bootstrap, agent_id)``.

    ``check`` and ``decide`` are plain methods (they only read in-memory state), so sync code
    on the loop can call them too.
    """

    async def start(self, timeout_s: float = 10.0) -> bool:
        """Start following the control plane; wait up to ``timeout_s`` for the current state.

        Returns whether it was read. If not, the guard runs in its safe mode until it is.
        """
        await self._start_follower()
        return await self.wait_ready(timeout_s)

    async def wait_ready(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while not self.follower.fresh():
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.02)
        return True

    async def close(self) -> None:
        await self._stop_follower()
        if self.approvals is not None:
            await asyncio.to_thread(self.approvals.close)

    async def wait_for_mode(
        self, mode: Mode | str, timeout_s: float = 10.0, run_id: str | None = None
    ) -> bool:
        """Wait until the enforced mode (for ``run_id`` if given) is ``mode``; False on
        timeout. Meant for tests and demos."""
        target = Mode(mode)
        deadline = time.monotonic() + timeout_s
        while self._mode_now(run_id) != target:
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.02)
        return True

    async def __aenter__(self) -> AsyncGuard:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class Guard(_GuardBase):
    """The guard for synchronous agents: follows the control plane on a private event loop in
    a daemon thread; ``check`` may be called from any thread."""

    def __init__(self, bootstrap: str, agent_id: str, **options: Any) -> None:
        super().__init__(bootstrap, agent_id, **options)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def start(self, timeout_s: float = 10.0) -> bool:
        """Start following; wait up to ``timeout_s`` for the current state (see
        :meth:`AsyncGuard.start`)."""
        if self._thread is None:
            self._loop = asyncio.new_event_loop()
            self._thread = threading.Thread(target=self._loop.run_forever,
                                            name=f"tripwire-guard-{self.agent_id}", daemon=True)
            self._thread.start()
            asyncio.run_coroutine_threadsafe(self._start_follower(), self._loop).result()
            atexit.register(self.close)
        return self.wait_ready(timeout_s)

    def wait_ready(self, timeout_s: float) -> bool:
        return _poll(self.follower.fresh, timeout_s)

    def close(self, timeout_s: float = 5.0) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        self._loop = self._thread = None
        atexit.unregister(self.close)
        if self.approvals is not None:
            self.approvals.close(timeout_s)
        try:
            asyncio.run_coroutine_threadsafe(self._stop_follower(), loop).result(timeout_s)
        except Exception as exc:  # noqa: BLE001 - closing must not raise into agent code
            log.warning("tripwire guard: close failed: %r", exc)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout_s)
            if not thread.is_alive():
                _finish_tasks(loop, timeout_s)
                loop.close()

    def wait_for_mode(
        self, mode: Mode | str, timeout_s: float = 10.0, run_id: str | None = None
    ) -> bool:
        """See :meth:`AsyncGuard.wait_for_mode`."""
        target = Mode(mode)
        return _poll(lambda: self._mode_now(run_id) == target, timeout_s)

    def __enter__(self) -> Guard:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _poll(condition: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
    return True

