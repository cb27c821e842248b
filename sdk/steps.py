"""Step helpers: turn an agent's actions into canonical StepEvents.

An :class:`AgentSession` carries the identity fields every event repeats (agent, version,
workflow, owner, environment); a :class:`Run` numbers the steps of one task run and closes it
with an outcome. Events are handed to a *sink*, anything with an ``emit(event)`` method: an
:class:`~sdk.emitter.Emitter`, an :class:`~sdk.emitter.AsyncEmitter`, or a list-backed
collector in tests and the simulator.

Input errors (unknown enum values, steps after ``run_end``) raise at the call site, so a bad
event never reaches the background sender where it would be lost silently.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import time
import uuid
from collections.abc import Callable, Mapping
from enum import Enum
from importlib import resources
from types import TracebackType
from typing import Any, Protocol

__all__ = [
    "AgentSession",
    "EventSink",
    "Run",
    "RunAlreadyEnded",
    "blank_event",
    "canonical_params_json",
    "params_hash",
]


class EventSink(Protocol):
    def emit(self, event: Mapping[str, Any]) -> bool | None: ...


def _load_schema() -> tuple[list[str], dict[str, frozenset[str]]]:
    # The field list and enum symbols come from the contract itself so a schema change cannot
    # leave the SDK producing events with missing or stale fields.
    avsc = resources.files("tripwire.schemas").joinpath("step_event.avsc")
    schema = json.loads(avsc.read_text("utf-8"))
    fields: list[str] = []
    enums: dict[str, frozenset[str]] = {}
    for f in schema["fields"]:
        fields.append(f["name"])
        types = f["type"] if isinstance(f["type"], list) else [f["type"]]
        for t in types:
            if isinstance(t, dict) and t.get("type") == "enum":
                enums[f["name"]] = frozenset(t["symbols"])
    return fields, enums


FIELDS, ENUM_SYMBOLS = _load_schema()


def blank_event() -> dict[str, Any]:
    """A canonical event with every StepEvent field present and unset."""
    event: dict[str, Any] = dict.fromkeys(FIELDS)
    event["attributes"] = {}
    return event


def canonical_params_json(params: Mapping[str, Any]) -> str:
    """The canonical JSON text that :func:`params_hash` hashes (see there for the rules)."""
    return json.dumps(
        params, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


def params_hash(params: Mapping[str, Any]) -> str:
    """SHA-256 of the canonical JSON of a tool call's arguments, as 64 lowercase hex digits.

    Canonicalisation, so producers in other languages can compute the same hash:

    * JSON with object keys sorted by Unicode code point (not UTF-16 code unit), at every
      nesting level;
    * no insignificant whitespace: separators are exactly ``,`` and ``:``;
    * non-ASCII characters written as themselves (not ``\\uXXXX`` escapes), the text encoded
      as UTF-8 before hashing; control characters, ``"`` and ``\\`` use JSON's short escapes
      (``\\n``, ``\\"``, ...) or ``\\u00XX`` lowercase hex;
    * numbers as Python's ``json`` writes them: integers in decimal, floats in shortest
      round-trip form with a fraction or exponent (``1.0``, ``1e-07``); NaN and infinities are
      rejected. Pass integral values as integers to stay portable across languages;
    * ``true``, ``false``, ``null`` for booleans and None; tuples are arrays.

    Example: ``{"b": 1, "a": "é"}`` → ``{"a":"é","b":1}`` →
    ``aa58fba8483623bed37c1b02edfccbdd9a53123837c20bfa4cb4049993a2872e``.
    """
    return hashlib.sha256(canonical_params_json(params).encode("utf-8")).hexdigest()


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _new_id() -> str:
    return str(uuid.uuid4())


def _sym(field: str, value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, Enum):
        value = value.value
    if value not in ENUM_SYMBOLS[field]:
        raise ValueError(
            f"{field}={value!r} is not one of {sorted(ENUM_SYMBOLS[field])}"
        )
    return str(value)


def _attrs(attributes: Mapping[str, Any] | None) -> dict[str, str]:
    if not attributes:
        return {}
    return {str(k): str(v) for k, v in attributes.items()}


class RunAlreadyEnded(RuntimeError):
    """A step was recorded on a run that already emitted its run_end."""


class AgentSession:
    """The identity of one agent process; starts runs whose events go to ``sink``.

    ``clock`` (epoch ms) and ``new_id`` are injectable so the simulator can produce a
    reproducible event sequence from a seed.
    """

    def __init__(
        self,
        sink: EventSink,
        agent_id: str,
        *,
        agent_version: str | None = None,
        workflow: str | None = None,
        owner: str | None = None,
        environment: str | Enum | None = None,
        clock: Callable[[], int] = _now_ms,
        new_id: Callable[[], str] = _new_id,
    ) -> None:
        if not agent_id:
            raise ValueError("agent_id must be a non-empty string")
        self.sink = sink
        self.agent_id = agent_id
        self.agent_version = agent_version
        self.workflow = workflow
        self.owner = owner
        self.environment = _sym("environment", environment)
        self.clock = clock
        self.new_id = new_id

    def run(self, run_id: str | None = None, attributes: Mapping[str, Any] | None = None) -> Run:
        """A run to use as ``with session.run() as run:`` or ``async with``.

        run_start is emitted on entry; run_end on exit with outcome ``success``, ``failure``
        if an exception escapes, ``abandoned`` on cancellation/interrupt or after
        :meth:`Run.abandon`.
        """
        return Run(self, run_id or self.new_id(), attributes)

    def start_run(
        self, run_id: str | None = None, attributes: Mapping[str, Any] | None = None
    ) -> Run:
        """Emit run_start now; the caller ends the run with :meth:`Run.end` (or never)."""
        run = self.run(run_id, attributes)
        run.start()
        return run


class Run:
    """One task run: numbers steps from 0 and emits exactly one run_start and at most one
    run_end. Step methods return the emitted event."""

    def __init__(
        self, session: AgentSession, run_id: str, attributes: Mapping[str, Any] | None = None
    ) -> None:
        self.session = session
        self.run_id = run_id
        self._start_attributes = _attrs(attributes)
        # itertools.count's next() is atomic under the GIL, so parallel tool threads of one
        # run still get distinct step numbers.
        self._steps = itertools.count()
        self.started = False
        self.outcome: str | None = None

    @property
    def ended(self) -> bool:
        return self.outcome is not None

    def _event(self, kind: str, attributes: Mapping[str, Any] | None, **fields: Any) -> dict:
        if self.ended:
            raise RunAlreadyEnded(f"run {self.run_id} already ended with {self.outcome}")
        if not self.started and kind != "run_start":
            raise RuntimeError(f"run {self.run_id} was not started (use `with` or start())")
        s = self.session
        event = blank_event()
        event.update(
            event_id=s.new_id(),
            ts=s.clock(),
            agent_id=s.agent_id,
            agent_version=s.agent_version,
            run_id=self.run_id,
            step=next(self._steps),
            workflow=s.workflow,
            owner=s.owner,
            environment=s.environment,
            kind=kind,
            attributes=_attrs(attributes),
        )
        event.update(fields)
        s.sink.emit(event)
        return event

    def start(self) -> dict:
        if self.started:
            raise RuntimeError(f"run {self.run_id} already started")
        event = self._event("run_start", self._start_attributes)
        self.started = True
        return event

    def end(self, outcome: str = "success", attributes: Mapping[str, Any] | None = None) -> dict:
        event = self._event("run_end", attributes, outcome=_sym("outcome", outcome))
        self.outcome = event["outcome"]
        return event

    def abandon(self, attributes: Mapping[str, Any] | None = None) -> dict:
        return self.end("abandoned", attributes)

    def model_call(
        self,
        model: str,
        input_tokens: int,
        output_tokens: int,
        cost_usd: float | None = None,
        latency_ms: int | None = None,
        *,
        status: str | None = "ok",
        attributes: Mapping[str, Any] | None = None,
    ) -> dict:
        return self._event(
            "model_call",
            attributes,
            model=model,
            input_tokens=int(input_tokens),
            output_tokens=int(output_tokens),
            cost_usd=None if cost_usd is None else float(cost_usd),
            latency_ms=None if latency_ms is None else int(latency_ms),
            status=_sym("status", status),
        )

    def tool_call(
        self,
        tool: str,
        action_class: str,
        params: Mapping[str, Any] | None = None,
        *,
        status: str | None = "ok",
        latency_ms: int | None = None,
        content: str | None = None,
        source_trust: str | None = None,
        injection_flagged: bool | None = None,
        attributes: Mapping[str, Any] | None = None,
    ) -> dict:
        return self._event(
            "tool_call",
            attributes,
            tool=tool,
            action_class=_sym("action_class", action_class),
            params_hash=None if params is None else params_hash(params),
            status=_sym("status", status),
            latency_ms=None if latency_ms is None else int(latency_ms),
            content=content,
            source_trust=_sym("source_trust", source_trust),
            injection_flagged=injection_flagged,
        )

    def policy_decision(
        self,
        tool: str,
        action_class: str,
        outcome: str,
        rule: str | None = None,
        *,
        params: Mapping[str, Any] | None = None,
        attributes: Mapping[str, Any] | None = None,
    ) -> dict:
        return self._event(
            "policy_decision",
            attributes,
            tool=tool,
            action_class=_sym("action_class", action_class),
            policy_outcome=_sym("policy_outcome", outcome),
            policy_rule=rule,
            params_hash=None if params is None else params_hash(params),
        )

    def approval_request(
        self,
        tool: str,
        action_class: str,
        *,
        params: Mapping[str, Any] | None = None,
        attributes: Mapping[str, Any] | None = None,
    ) -> dict:
        return self._event(
            "approval_request",
            attributes,
            tool=tool,
            action_class=_sym("action_class", action_class),
            params_hash=None if params is None else params_hash(params),
        )

    def approval_decision(
        self,
        tool: str,
        approver: str,
        approved: bool,
        wait_ms: int,
        *,
        action_class: str | None = None,
        attributes: Mapping[str, Any] | None = None,
    ) -> dict:
        return self._event(
            "approval_decision",
            attributes,
            tool=tool,
            action_class=_sym("action_class", action_class),
            approver=approver,
            approved=bool(approved),
            wait_ms=int(wait_ms),
        )

    def output(
        self,
        content: str,
        *,
        source_trust: str | None = None,
        attributes: Mapping[str, Any] | None = None,
    ) -> dict:
        return self._event(
            "output", attributes, content=content, source_trust=_sym("source_trust", source_trust)
        )

    # Context-manager protocol: the same object serves `with` and `async with` so agent code
    # does not need two helpers.

    def __enter__(self) -> Run:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.ended:
            return
        if exc_type is None:
            self.end("success")
        elif issubclass(exc_type, Exception):
            self.end("failure", {"error_type": exc_type.__name__})
        else:
            # CancelledError, KeyboardInterrupt, SystemExit: the task was stopped from
            # outside, it did not fail on its own.
            self.end("abandoned", {"error_type": exc_type.__name__})

    async def __aenter__(self) -> Run:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)
