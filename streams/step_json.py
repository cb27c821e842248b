"""The worker's JSON decode of agent-steps records: msgspec first, the contract's pydantic path
whenever msgspec does not accept the value.

The contract's JSON path (:meth:`~schemas.codec.StepBatchCodec.decode`, pydantic's strict
``StepEvent`` then ``to_record()``) took ~23 % of the worker's main thread on a backlog of one
JSON event per record (py-spy, last session's bench). msgspec decodes straight into a struct
with the same fields, types and bounds, several times faster; the canonical dict is then the
struct's fields in ``StepEvent`` order. It lives here, not in ``schemas/``: the SDK
distribution (``sdk/`` + ``schemas/``) must not require msgspec, the server already does.

Equivalence: msgspec accepts a subset of what pydantic accepts (it refuses NaN/Infinity, numbers
out of range of the field, and anything it is unsure of), and produces the same values for it;
everything it refuses goes to the pydantic path, which accepts or refuses it with the reason the
dead letter has always carried. ``tests/test_step_json.py`` checks this against pydantic as the
reference on generated valid events and near-valid mutations. Two differences are handled:
pydantic's JSON parser (jiter) refuses nesting deeper than 200 levels, msgspec allows ~1,000,
and an ISO-8601 ``ts`` is converted by the model's own :func:`~schemas.models.epoch_millis`.
Nesting: msgspec refuses unknown fields here (those values go to pydantic, extra fields are
rare), so what it accepts nests at most three deep (an array, an event, its ``attributes``
of strings). That replaced counting the value's brackets before every decode, which was
~5 % of the worker's decode loop (py-spy, one JSON event per record).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from tripwire.schemas.codec import StepBatchCodec
from tripwire.schemas.models import (
    AVRO_INT_MAX,
    AVRO_INT_MIN,
    AVRO_LONG_MAX,
    AVRO_LONG_MIN,
    StepEvent,
    epoch_millis,
)

_Int = Annotated[int, msgspec.Meta(ge=AVRO_INT_MIN, le=AVRO_INT_MAX)]
_Long = Annotated[int, msgspec.Meta(ge=AVRO_LONG_MIN, le=AVRO_LONG_MAX)]

class _StepEvent(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """``schemas.models.StepEvent`` as msgspec reads it (same names, order, optionality and
    bounds; enums as their symbols; ``ts`` also as an ISO-8601 string, converted after; no
    field the model does not have, see the module's docstring on nesting)."""

    event_id: str
    ts: int | str
    agent_id: str
    agent_version: str | None = None
    run_id: str
    step: _Int
    workflow: str | None = None
    owner: str | None = None
    environment: Literal["dev", "test", "prod"] | None = None
    kind: Literal["run_start", "model_call", "tool_call", "policy_decision",
                  "approval_request", "approval_decision", "output", "run_end"]
    tool: str | None = None
    action_class: Literal["read", "write", "external", "money", "destructive"] | None = None
    params_hash: str | None = None
    policy_outcome: Literal["allowed", "denied", "approval_required", "escalated"] | None = None
    policy_rule: str | None = None
    model: str | None = None
    input_tokens: _Long | None = None
    output_tokens: _Long | None = None
    cost_usd: float | None = None
    latency_ms: _Long | None = None
    status: Literal["ok", "error", "timeout"] | None = None
    outcome: Literal["success", "failure", "abandoned"] | None = None
    approver: str | None = None
    approved: bool | None = None
    wait_ms: _Long | None = None
    content: str | None = None
    source_trust: Literal["internal", "partner", "external"] | None = None
    injection_flagged: bool | None = None
    attributes: dict[str, str] = msgspec.field(default_factory=dict)


# The canonical dict's key order is the model's; asdict() follows the struct's.
if _StepEvent.__struct_fields__ != tuple(StepEvent.model_fields):
    raise RuntimeError("streams/step_json.py: _StepEvent's fields differ from StepEvent's")
_ONE = msgspec.json.Decoder(_StepEvent)
_TS = _StepEvent.__struct_fields__.index("ts")
_MANY = msgspec.json.Decoder(list[_StepEvent])


class _Refused(Exception):
    """msgspec's path does not accept the value; the pydantic path decides."""


def _record(event: _StepEvent) -> dict[str, Any]:
    record = msgspec.structs.asdict(event)
    ts = record["ts"]
    if type(ts) is str:
        try:
            ts = record["ts"] = epoch_millis(ts)
        except Exception:  # noqa: BLE001 - whatever it is, the pydantic path reports it
            raise _Refused from None
    if not AVRO_LONG_MIN <= ts <= AVRO_LONG_MAX:
        raise _Refused
    return record


def decode_fast(value: bytes) -> list[dict[str, Any]] | None:
    """The canonical dicts of a JSON record value, or None when msgspec does not accept it
    (the caller then takes the pydantic path)."""
    try:
        first = value[:1]
        if first == b"{":  # the usual case: no copy of the value to strip it
            return [_record(_ONE.decode(value))]
        if first == b"[" or value.lstrip()[:1] == b"[":
            return [_record(event) for event in _MANY.decode(value)]
        return [_record(_ONE.decode(value))]
    except (msgspec.DecodeError, _Refused):
        return None


class FastJsonStepBatchCodec(StepBatchCodec):
    """:class:`~schemas.codec.StepBatchCodec` whose JSON decode tries msgspec first (same
    canonical dicts, same acceptance, same refusal reasons)."""

    @staticmethod
    def _decode_json(value: bytes) -> list[dict[str, Any]]:
        events = decode_fast(value)
        if events is None:
            return StepBatchCodec._decode_json(value)
        return events


def decode_object_rows(values: list[bytes]) -> list[tuple[Any, ...] | None] | None:
    """The events of JSON values that each hold one event object (the worker accepted them,
    so each is one object and nothing else), as rows of their canonical fields in ``StepEvent``
    order: what :func:`decode_fast` gives for each, in one msgspec call over the values joined
    into one array, without a dict per event (the ClickHouse writer's one-event-per-record JSON
    backlog: ~3 us an event against ~7 for a decode, a dict and 30 appends per value). A row
    is None where the value needs the per-value path (an ISO-8601 or out-of-range ``ts``);
    the result is None when msgspec refuses any of them (the pydantic path decides those)."""
    try:
        events = _MANY.decode(b"[" + b",".join(values) + b"]")
    except msgspec.DecodeError:
        return None
    if len(events) != len(values):
        return None
    rows: list[tuple[Any, ...] | None] = list(map(msgspec.structs.astuple, events))
    for i, row in enumerate(rows):
        ts = row[_TS]  # type: ignore[index]
        if type(ts) is not int or not AVRO_LONG_MIN <= ts <= AVRO_LONG_MAX:
            rows[i] = None
    return rows
