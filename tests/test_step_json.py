"""The worker's msgspec JSON decode (streams/step_json.py) against the contract's pydantic path
as the reference: the same canonical dicts (keys, order, value types) for what is accepted, the
same DecodeError reason for what is refused."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tripwire.schemas.codec import DecodeError, StepBatchCodec
from tripwire.schemas.models import (
    ActionClass,
    Environment,
    PolicyOutcome,
    RunOutcome,
    SourceTrust,
    StepEvent,
    StepKind,
    StepStatus,
)
from tripwire.streams.step_json import FastJsonStepBatchCodec, decode_fast

FIELDS = tuple(StepEvent.model_fields)
EDGE_INTS = [0, -1, 1, 2**31 - 1, 2**31, -(2**31), -(2**31) - 1, 2**63 - 1, 2**63, -(2**63),
             -(2**63) - 1, 2**64, 10**30]

json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.sampled_from(EDGE_INTS),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
    st.sampled_from(["", "dev", "prod", "tool_call", "denied", "ok", "2026-01-01T00:00:00",
                     "2026-01-01T00:00:00+02:00", "not a date", "123", "true"]))
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(st.text(max_size=5), inner, max_size=3)),
    max_leaves=8)


def _opt(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(st.none(), strategy)


def _enum(enum: Any) -> st.SearchStrategy[str]:
    return st.sampled_from([m.value for m in enum])


longs = st.integers(-(2**63), 2**63 - 1)
timestamps = st.one_of(
    st.integers(946_684_800_000, 2_000_000_000_000), longs,
    # ISO-8601, aware and naive, with and without fractions.
    st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2100, 1, 1),
                 timezones=st.one_of(st.none(), st.just(UTC),
                                     st.builds(lambda m: timezone(timedelta(minutes=m)),
                                               st.integers(-900, 900)))
                 ).map(lambda d: d.isoformat()))

events = st.fixed_dictionaries(
    {"event_id": st.uuids().map(str), "ts": timestamps, "agent_id": st.text(min_size=1),
     "run_id": st.text(min_size=1), "step": st.integers(-(2**31), 2**31 - 1),
     "kind": _enum(StepKind)},
    optional={
        "agent_version": _opt(st.text(max_size=8)), "workflow": _opt(st.text(max_size=8)),
        "owner": _opt(st.text(max_size=8)), "environment": _opt(_enum(Environment)),
        "tool": _opt(st.text(max_size=8)), "action_class": _opt(_enum(ActionClass)),
        "params_hash": _opt(st.text(max_size=8)), "policy_outcome": _opt(_enum(PolicyOutcome)),
        "policy_rule": _opt(st.text(max_size=8)), "model": _opt(st.text(max_size=8)),
        "input_tokens": _opt(longs), "output_tokens": _opt(longs),
        "cost_usd": _opt(st.one_of(st.floats(allow_nan=False, allow_infinity=False),
                                   st.integers(-(10**6), 10**6))),
        "latency_ms": _opt(longs), "status": _opt(_enum(StepStatus)),
        "outcome": _opt(_enum(RunOutcome)), "approver": _opt(st.text(max_size=8)),
        "approved": _opt(st.booleans()), "wait_ms": _opt(longs),
        "content": _opt(st.text(max_size=40)), "source_trust": _opt(_enum(SourceTrust)),
        "injection_flagged": _opt(st.booleans()),
        "attributes": st.dictionaries(st.text(max_size=6), st.text(max_size=6), max_size=4),
    })


def _pairs_json(pairs: list[tuple[str, Any]], ensure_ascii: bool) -> str:
    """An object from key/value pairs, keys possibly repeated (json.dumps cannot say that)."""
    return "{" + ",".join(f"{json.dumps(k, ensure_ascii=ensure_ascii)}:"
                          f"{json.dumps(v, ensure_ascii=ensure_ascii)}" for k, v in pairs) + "}"


@st.composite
def mutated_events(draw: st.DrawFn) -> str:
    """A valid event's JSON, then near-valid mutations of it."""
    pairs = list(draw(events).items())
    for _ in range(draw(st.integers(0, 3))):
        action = draw(st.sampled_from(["retype", "drop", "extra", "duplicate", "null"]))
        if action == "retype" and pairs:
            i = draw(st.integers(0, len(pairs) - 1))
            pairs[i] = (pairs[i][0], draw(json_values))
        elif action == "drop" and pairs:
            pairs.pop(draw(st.integers(0, len(pairs) - 1)))
        elif action == "extra":
            pairs.insert(draw(st.integers(0, len(pairs))),
                         (draw(st.text(max_size=8)), draw(json_values)))
        elif action == "duplicate":
            pairs.append((draw(st.sampled_from(FIELDS)), draw(json_values)))
        elif action == "null":
            pairs.append((draw(st.sampled_from(FIELDS)), None))
    return _pairs_json(pairs, draw(st.booleans()))


def _bytes_variants(text: str) -> st.SearchStrategy[bytes]:
    raw = text.encode("utf-8", "surrogatepass")
    return st.one_of(
        st.just(raw),
        st.sampled_from([b" ", b"\n\t", b"\xef\xbb\xbf", b"\x0c"]).map(lambda p: p + raw),
        st.sampled_from([b" ", b"x", b"\x00", b"}", b",{}"]).map(lambda s: raw + s),
        st.integers(0, max(len(raw) - 1, 0)).map(lambda n: raw[:n]),
    )


def _outcome(codec: StepBatchCodec, value: bytes) -> tuple[str, Any]:
    try:
        decoded = codec._decode_json(value)
    except DecodeError as exc:
        return "refused", exc.reason
    # Keys, their order and each value's type and repr (nan == nan, 1 != 1.0, True != 1).
    return "accepted", [[(k, type(v).__name__, repr(v)) for k, v in ev.items()]
                        for ev in decoded]


REFERENCE, FAST = StepBatchCodec(), FastJsonStepBatchCodec()


def _same(value: bytes) -> None:
    assert _outcome(FAST, value) == _outcome(REFERENCE, value)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events)
def test_valid_events_take_the_fast_path_with_the_same_dicts(event: dict[str, Any]) -> None:
    value = json.dumps(event).encode()
    fast = decode_fast(value)
    assert fast is not None
    _same(value)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_near_valid_events_get_the_same_verdict(data: st.DataObject) -> None:
    _same(data.draw(mutated_events().flatmap(_bytes_variants)))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(mutated_events(), events.map(json.dumps)), max_size=5),
       st.sampled_from(["", " ", "\n"]))
def test_arrays_of_events_get_the_same_verdict(items: list[str], pad: str) -> None:
    _same(f"{pad}[{','.join(items)}]".encode())


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=60))
def test_arbitrary_bytes_get_the_same_verdict(value: bytes) -> None:
    _same(value)


VALID = json.dumps({"event_id": str(uuid.UUID(int=1)), "ts": 1_767_225_600_000,
                    "agent_id": "a", "run_id": "r", "step": 1, "kind": "tool_call"})


@pytest.mark.parametrize("extra", [
    '"cost_usd": NaN', '"cost_usd": Infinity', '"cost_usd": 1e400', '"cost_usd": 1',
    '"step": 1.0', '"step": true', '"step": 2147483648', '"input_tokens": 9223372036854775808',
    '"ts": "2026-01-01T00:00:00"', '"ts": "2026-01-01T00:00:00.5+01:00"', '"ts": "soon"',
    '"ts": 1.5e12', '"ts": null', '"ts": "9999-12-31T23:59:59-23:59"', '"step": "x", "step": 3',
    '"step": 3, "step": "x"', '"agent_id": "\\ud800"', '"attributes": null',
    '"attributes": {"k": 1}', '"attributes": {"k": "a", "k": "b"}', '"environment": "Dev"',
    '"approved": 1', '"\\u0073tep": 7', '"x": ' + "[" * 199 + "]" * 199,
    '"x": ' + "[" * 200 + "]" * 200, '"x": ' + "[" * 1200 + "]" * 1200, '"x": 1e99999',
])
def test_edge_cases_get_the_same_verdict(extra: str) -> None:
    value = (VALID[:-1] + ", " + extra + "}").encode()
    _same(value)
    _same(b"[" + value + b"," + value + b"]")


def test_the_canonical_dict_is_the_models() -> None:
    value = VALID.encode()
    fast = FAST._decode_json(value)
    assert fast == REFERENCE._decode_json(value)
    assert list(fast[0]) == list(FIELDS)
    assert type(fast[0]["ts"]) is int
