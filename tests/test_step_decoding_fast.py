"""The worker's shortcuts in ``streams/step_decoding.py`` against the plain steps they skip:
``content_type`` read in place against the header dict it used to build, and the JSON fast path
of ``StepRecordDecoder.decode`` against the general path (``_decode``), on generated input."""

from __future__ import annotations

import json
import time
from types import SimpleNamespace
from typing import Any

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from test_step_json import events, mutated_events

from tripwire.schemas import validation
from tripwire.streams.dead_letters import CONTENT_TYPE, header_map
from tripwire.streams.step_decoding import StepRecordDecoder, content_type


def reference_content_type(headers: object) -> str | None:
    raw = header_map(headers).get(CONTENT_TYPE)
    return raw.decode("latin-1").strip().lower() if raw else None


names = st.one_of(st.sampled_from([CONTENT_TYPE, "Content-Type", "x-other", ""]),
                  st.text(max_size=6), st.just(CONTENT_TYPE.encode()))
values = st.one_of(
    st.sampled_from([b"application/json", b" Application/JSON; charset=utf-8 ", b"",
                     b"application/avro", b"\xff\xfe"]),
    st.binary(max_size=12))
pairs = st.lists(st.tuples(names, values), max_size=4)
header_shapes = st.one_of(st.none(), pairs, pairs.map(tuple),
                          pairs.map(lambda p: {str(k): v for k, v in p}))


@settings(max_examples=500, deadline=None)
@given(header_shapes)
def test_content_type_reads_what_the_header_dict_says(headers: Any) -> None:
    # Twice: the second answer may come from the cache of normalised values.
    assert content_type(headers) == reference_content_type(headers)
    assert content_type(headers) == reference_content_type(headers)


DECODER = StepRecordDecoder()


def _verdict(result: tuple[list[dict], list[Any]]) -> tuple[Any, ...]:
    accepted, dead = result
    return ([[(k, type(v).__name__, repr(v)) for k, v in ev.items()] for ev in accepted],
            [(d.reason, d.event_index, d.value, d.key) for d in dead])


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(mutated_events(), events.map(json.dumps)),
       st.lists(st.one_of(mutated_events(), events.map(json.dumps)), max_size=3),
       st.booleans(), st.one_of(st.none(), st.sampled_from([b"a", b"\xff"]), st.binary(max_size=3)),
       st.sampled_from(["application/json", "application/json; charset=utf-8"]))
def test_json_fast_path_gives_the_general_paths_verdict(
        one: str, many: list[str], as_array: bool, key: bytes | None, ctype: str) -> None:
    value = (f"[{','.join(many)}]" if as_array else one).encode("utf-8", "surrogatepass")
    if key == b"a":  # the key of the events' agent, when they have one
        try:
            parsed = json.loads(value)
            first = parsed[0] if isinstance(parsed, list) and parsed else parsed
            key = str(first["agent_id"]).encode("utf-8", "surrogatepass")
        except Exception:  # noqa: BLE001 - any other value keeps the key it has
            pass
    # One clock for both paths: a refusal for a future ts quotes the time it was judged at.
    now_ns = time.time_ns()
    real, validation.time = validation.time, SimpleNamespace(time_ns=lambda: now_ns)
    try:
        fast = DECODER.decode(key, value, ctype, "agent-steps", 3, 7)
        general = DECODER._decode(key, value, ctype, "agent-steps", 3, 7)
    finally:
        validation.time = real
    assert _verdict(fast) == _verdict(general)


def _judged(key: bytes | None, value: bytes, ctype: str | None) -> tuple[Any, Any]:
    now_ns = time.time_ns()
    real, validation.time = validation.time, SimpleNamespace(time_ns=lambda: now_ns)
    try:
        return (_verdict(DECODER.decode(key, value, ctype, "agent-steps", 3, 7)),
                _verdict(DECODER._decode(key, value, ctype, "agent-steps", 3, 7)))
    finally:
        validation.time = real


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(events, min_size=1, max_size=3), st.booleans(), st.data())
def test_avro_fast_path_gives_the_general_paths_verdict(
        batch: list[dict[str, Any]], bare: bool, data: st.DataObject) -> None:
    codec = DECODER.codec
    try:
        value = codec.event_codec.encode(batch[0]) if bare else codec.encode(batch)
    except Exception:  # noqa: BLE001 - not encodable (an ISO ts, a long out of range): skip
        assume(False)
    mutation = data.draw(st.sampled_from(["none", "cut", "flip", "append"]))
    if mutation == "cut":
        value = value[:data.draw(st.integers(0, len(value) - 1))]
    elif mutation == "flip":
        i = data.draw(st.integers(0, len(value) - 1))
        value = value[:i] + bytes([value[i] ^ data.draw(st.integers(1, 255))]) + value[i + 1:]
    elif mutation == "append":
        value += data.draw(st.binary(min_size=1, max_size=3))
    key = data.draw(st.one_of(st.none(), st.just(batch[0]["agent_id"].encode(
        "utf-8", "surrogatepass")), st.binary(max_size=3)))
    fast, general = _judged(key, value, data.draw(st.sampled_from([None, "application/avro"])))
    assert fast == general


def _accepted_as_decode_would(key: bytes | None, value: bytes, ctype: str | None) -> None:
    """``accept`` returns events only where ``decode`` accepts every event, and the same ones
    (it may leave an all-accepted record to ``decode``: msgspec refuses what pydantic takes)."""
    now_ns = time.time_ns()
    real, validation.time = validation.time, SimpleNamespace(time_ns=lambda: now_ns)
    try:
        taken = DECODER.accept(key, value, ctype, now_ns // 1_000_000)
        events, dead = DECODER.decode(key, value, ctype, "agent-steps", 3, 7)
    finally:
        validation.time = real
    if taken is not None:
        assert not dead and _verdict((taken, [])) == _verdict((events, dead))


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(mutated_events(), events.map(json.dumps)),
       st.lists(st.one_of(mutated_events(), events.map(json.dumps)), max_size=3),
       st.booleans(), st.one_of(st.none(), st.sampled_from([b"a", b"\xff"]), st.binary(max_size=3)),
       st.sampled_from(["application/json", "application/json; charset=utf-8", None,
                        "application/avro"]))
def test_json_accept_agrees_with_decode(one: str, many: list[str], as_array: bool,
                                        key: bytes | None, ctype: str | None) -> None:
    value = (f"[{','.join(many)}]" if as_array else one).encode("utf-8", "surrogatepass")
    if key == b"a":
        try:
            parsed = json.loads(value)
            first = parsed[0] if isinstance(parsed, list) and parsed else parsed
            key = str(first["agent_id"]).encode("utf-8", "surrogatepass")
        except Exception:  # noqa: BLE001 - any other value keeps the key it has
            pass
    _accepted_as_decode_would(key, value, ctype)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(events, min_size=1, max_size=3), st.booleans(), st.data())
def test_avro_accept_agrees_with_decode(batch: list[dict[str, Any]], bare: bool,
                                        data: st.DataObject) -> None:
    codec = DECODER.codec
    try:
        value = codec.event_codec.encode(batch[0]) if bare else codec.encode(batch)
    except Exception:  # noqa: BLE001 - not encodable (an ISO ts, a long out of range): skip
        assume(False)
    mutation = data.draw(st.sampled_from(["none", "none", "cut", "flip", "append"]))
    if mutation == "cut":
        value = value[:data.draw(st.integers(0, len(value) - 1))]
    elif mutation == "flip":
        i = data.draw(st.integers(0, len(value) - 1))
        value = value[:i] + bytes([value[i] ^ data.draw(st.integers(1, 255))]) + value[i + 1:]
    elif mutation == "append":
        value += data.draw(st.binary(min_size=1, max_size=3))
    key = data.draw(st.one_of(st.none(), st.just(batch[0]["agent_id"].encode(
        "utf-8", "surrogatepass")), st.binary(max_size=3)))
    _accepted_as_decode_would(key, value, data.draw(st.sampled_from(
        [None, "application/avro", "application/json"])))


def test_accept_takes_the_records_nearly_all_are() -> None:
    """Valid one-event JSON and Avro records, and StepBatch records, do take the shortcut."""
    from test_step_processor_fast import EVENTS

    codec = DECODER.codec
    for ev in EVENTS[:50]:
        key, now = ev["agent_id"].encode(), 1_800_000_000_000
        assert DECODER.accept(key, json.dumps(ev).encode(), "application/json", now) == [ev]
        assert DECODER.accept(key, codec.event_codec.encode(ev), None, now) == [ev]
        assert DECODER.accept(key, codec.encode([ev, ev]), None, now) == [ev, ev]
