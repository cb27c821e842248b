"""Round trips, the JSON ingest path, framing errors and semantic checks of step events."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tripwire.schemas.codec import (
    COMMAND_SCHEMA,
    CONTROL_SCHEMA,
    DETECTION_SCHEMA,
    MAGIC,
    STEP_EVENT_SCHEMA,
    DecodeError,
    FramedCodec,
    StepBatchCodec,
    command_codec,
    control_codec,
    detection_codec,
)
from tripwire.schemas.models import (
    AVRO_INT_MAX,
    AVRO_INT_MIN,
    AVRO_LONG_MAX,
    AVRO_LONG_MIN,
    AvroRecord,
    Command,
    Control,
    Detection,
    StepEvent,
)
from tripwire.schemas.validation import check_batch_key, check_event

CODEC = StepBatchCodec()
NOW_MS = 1_750_000_000_000


# --- strategies derived from the .avsc files, so new fields are exercised automatically -----


def load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def named_types(*paths: Path) -> dict[str, Any]:
    found: dict[str, Any] = {}

    def walk(node: Any) -> None:
        if isinstance(node, list):
            for n in node:
                walk(n)
        elif isinstance(node, dict):
            if node.get("type") in ("enum", "record"):
                found[node["name"]] = node
            for f in node.get("fields", ()):
                walk(f["type"])
            for key in ("items", "values"):
                walk(node.get(key))

    for path in paths:
        walk(load(path))
    return found


NAMED = named_types(STEP_EVENT_SCHEMA, CONTROL_SCHEMA, DETECTION_SCHEMA, COMMAND_SCHEMA)


def value_strategy(schema: Any, *, finite: bool = False) -> st.SearchStrategy[Any]:
    """Values of an Avro type in canonical form (timestamps as int ms, enums as str)."""
    if isinstance(schema, list):
        return st.one_of([value_strategy(branch, finite=finite) for branch in schema])
    if isinstance(schema, str):
        if schema in NAMED or schema.rpartition(".")[2] in NAMED:
            return value_strategy(NAMED[schema.rpartition(".")[2]], finite=finite)
        schema = {"type": schema}
    kind = schema["type"]
    if schema.get("logicalType") == "uuid":
        return st.uuids().map(str)
    if kind == "null":
        return st.none()
    if kind == "string":
        return st.text(max_size=12)
    if kind == "int":
        return st.integers(AVRO_INT_MIN, AVRO_INT_MAX)
    if kind == "long":
        return st.integers(AVRO_LONG_MIN, AVRO_LONG_MAX)
    if kind == "double":
        return st.floats(allow_nan=False, allow_infinity=not finite)
    if kind == "boolean":
        return st.booleans()
    if kind == "enum":
        return st.sampled_from(schema["symbols"])
    if kind == "map":
        return st.dictionaries(st.text(max_size=6), value_strategy(schema["values"]), max_size=3)
    if kind == "array":
        return st.lists(value_strategy(schema["items"]), max_size=3)
    raise AssertionError(f"no strategy for {schema}")


def record_strategy(path: Path, *, finite: bool = False) -> st.SearchStrategy[dict[str, Any]]:
    """Records with every required field and a random subset of defaulted fields."""
    fields = load(path)["fields"]
    required = {
        f["name"]: value_strategy(f["type"], finite=finite) for f in fields if "default" not in f
    }
    optional = {
        f["name"]: value_strategy(f["type"], finite=finite) for f in fields if "default" in f
    }
    return st.fixed_dictionaries(required, optional=optional)


def canonical(path: Path, record: dict[str, Any]) -> dict[str, Any]:
    """What decoding must return for ``record``: all fields, defaults filled, schema order."""
    return {
        f["name"]: record[f["name"]] if f["name"] in record else f["default"]
        for f in load(path)["fields"]
    }


events = record_strategy(STEP_EVENT_SCHEMA)


def valid_event(**overrides: Any) -> dict[str, Any]:
    event = StepEvent(
        event_id=str(uuid.uuid4()),
        ts=NOW_MS,
        agent_id="agent-1",
        run_id="run-1",
        step=3,
        kind="model_call",
        model="m",
        input_tokens=10,
        output_tokens=5,
        cost_usd=0.01,
        latency_ms=200,
    ).to_record()
    event.update(overrides)
    return event


# --- Avro round trips ----------------------------------------------------------------------


@given(st.lists(events, max_size=5))
def test_batch_round_trip(batch: list[dict[str, Any]]) -> None:
    decoded = CODEC.decode(CODEC.encode(batch))
    assert decoded == [canonical(STEP_EVENT_SCHEMA, e) for e in batch]
    assert all(list(d) == list(StepEvent.model_fields) for d in decoded)


@given(events)
def test_bare_event_round_trip(event: dict[str, Any]) -> None:
    framed = CODEC.event_codec.encode(event)
    assert framed[2:10] == CODEC.event_codec.fingerprint != CODEC.batch_codec.fingerprint
    assert CODEC.decode(framed) == [canonical(STEP_EVENT_SCHEMA, event)]
    assert CODEC.event_codec.decode(framed) == canonical(STEP_EVENT_SCHEMA, event)


@pytest.mark.parametrize(
    ("path", "make_codec", "model"),
    [
        (CONTROL_SCHEMA, control_codec, Control),
        (DETECTION_SCHEMA, detection_codec, Detection),
        (COMMAND_SCHEMA, command_codec, Command),
    ],
    ids=["control", "detection", "command"],
)
@given(data=st.data())
def test_contract_record_round_trip(
    path: Path, make_codec: Callable[[], FramedCodec], model: type[AvroRecord], data: st.DataObject
) -> None:
    codec = make_codec()
    record = data.draw(record_strategy(path))
    decoded = codec.decode(codec.encode(record))
    assert decoded == canonical(path, record)
    assert model.model_validate(decoded).to_record() == decoded


def test_decoded_event_has_plain_types() -> None:
    event = valid_event(environment="prod", attributes={"a": "b"})
    (decoded,) = CODEC.decode(CODEC.encode([event]))
    assert type(decoded["ts"]) is int
    assert type(decoded["event_id"]) is str
    assert type(decoded["kind"]) is str and type(decoded["environment"]) is str
    assert type(decoded["attributes"]) is dict


def test_model_instances_encode_via_to_record() -> None:
    model = StepEvent.model_validate(valid_event())
    assert CODEC.decode(CODEC.encode([model.to_record()])) == [model.to_record()]


def test_encode_rejects_unknown_and_missing_required_fields() -> None:
    with pytest.raises(ValueError):
        CODEC.encode([{**valid_event(), "costusd": 1.0}])
    incomplete = valid_event()
    del incomplete["run_id"]
    with pytest.raises(ValueError):
        CODEC.encode([incomplete])


def test_empty_batch_decodes_to_empty_list() -> None:
    assert CODEC.decode(CODEC.encode([])) == []


# --- JSON ingest ----------------------------------------------------------------------------

JSON = "application/json"


@given(st.lists(record_strategy(STEP_EVENT_SCHEMA, finite=True), min_size=1, max_size=4))
def test_json_array_matches_avro_path(batch: list[dict[str, Any]]) -> None:
    from_json = CODEC.decode(json.dumps(batch).encode(), JSON)
    assert from_json == CODEC.decode(CODEC.encode(batch))


@given(record_strategy(STEP_EVENT_SCHEMA, finite=True))
def test_json_object_matches_avro_path(event: dict[str, Any]) -> None:
    assert CODEC.decode(json.dumps(event).encode(), JSON) == CODEC.decode(CODEC.encode([event]))


@given(
    st.datetimes(
        min_value=datetime(1970, 1, 2), max_value=datetime(9998, 1, 1), timezones=st.timezones()
    )
)
def test_json_iso_timestamp_equals_epoch_millis(moment: datetime) -> None:
    event = valid_event()
    event["ts"] = moment.isoformat()
    (decoded,) = CODEC.decode(json.dumps(event).encode(), JSON)
    assert decoded["ts"] == (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)


@pytest.mark.parametrize(
    ("ts", "expected"),
    [
        ("2024-01-01T00:00:00Z", 1_704_067_200_000),
        ("2024-01-01T00:00:00.250+00:00", 1_704_067_200_250),
        ("2024-01-01T02:00:00+02:00", 1_704_067_200_000),
        ("2024-01-01T00:00:00", 1_704_067_200_000),  # naive means UTC
        (1_704_067_200_000, 1_704_067_200_000),
    ],
)
def test_json_ts_forms(ts: Any, expected: int) -> None:
    event = {
        "event_id": str(uuid.uuid4()),
        "ts": ts,
        "agent_id": "a",
        "run_id": "r",
        "step": 0,
        "kind": "run_start",
    }
    (decoded,) = CODEC.decode(json.dumps(event).encode(), "application/json; charset=utf-8")
    assert decoded["ts"] == expected


def test_json_missing_optionals_are_none_and_shape_is_canonical() -> None:
    minimal = {
        "event_id": str(uuid.uuid4()),
        "ts": 1,
        "agent_id": "a",
        "run_id": "r",
        "step": 0,
        "kind": "output",
    }
    (decoded,) = CODEC.decode(json.dumps(minimal).encode(), JSON)
    assert list(decoded) == list(StepEvent.model_fields)
    assert decoded["tool"] is None and decoded["attributes"] == {}
    assert decoded == CODEC.decode(CODEC.encode([minimal]))[0]


def test_json_empty_array_is_empty_batch() -> None:
    assert CODEC.decode(b" [ ] ", JSON) == []


@pytest.mark.parametrize(
    ("override", "reason_part"),
    [
        ({"ts": 1.5}, "ts"),
        ({"ts": "yesterday"}, "ts"),
        ({"ts": True}, "ts"),
        ({"step": "3"}, "step"),
        ({"step": 2**31}, "step"),
        ({"input_tokens": 2**63}, "input_tokens"),
        ({"kind": "teleport"}, "kind"),
        ({"approved": 1}, "approved"),
        ({"attributes": {"k": 1}}, "attributes"),
        ({"attributes": None}, "attributes"),
        ({"agent_id": None}, "agent_id"),
        ({"cost_usd": "0.1"}, "cost_usd"),
    ],
)
def test_json_wrong_types_raise_decode_error(override: dict[str, Any], reason_part: str) -> None:
    event = {**valid_event(), **override}
    with pytest.raises(DecodeError) as info:
        CODEC.decode(json.dumps(event).encode(), JSON)
    assert info.value.reason.startswith("JSON does not match StepEvent")
    assert reason_part in info.value.reason


def test_json_reason_points_at_array_element_and_missing_field() -> None:
    broken = valid_event()
    del broken["run_id"]
    with pytest.raises(DecodeError) as info:
        CODEC.decode(json.dumps([valid_event(), broken]).encode(), JSON)
    assert "[1].run_id: Field required" in info.value.reason


@pytest.mark.parametrize("value", [b"", b"{", b"[{}", b"\xff\xfe", b"not json", b"{'a': 1}"])
def test_invalid_json_raises_decode_error(value: bytes) -> None:
    with pytest.raises(DecodeError) as info:
        CODEC.decode(value, JSON)
    assert info.value.reason.startswith("invalid JSON")


@pytest.mark.parametrize("value", [b"5", b"null", b'"x"', b"[1]", b"[[]]"])
def test_json_non_objects_raise_decode_error(value: bytes) -> None:
    with pytest.raises(DecodeError, match="JSON does not match StepEvent"):
        CODEC.decode(value, JSON)


def test_json_value_without_json_content_type_is_bad_framing() -> None:
    with pytest.raises(DecodeError, match="missing C3 01 marker"):
        CODEC.decode(json.dumps(valid_event()).encode())


# --- framing errors -------------------------------------------------------------------------

GOOD = CODEC.encode([valid_event(), valid_event(step=4)])


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"", "bad framing: empty value"),
        (None, "bad framing: null value (tombstone)"),
        (5, "bad framing: value is int, not bytes"),
        ("\xc3\x01", "bad framing: value is str, not bytes"),
        (b"\xc3", "bad framing: truncated header (1 of 10 bytes)"),
        (GOOD[:7], "bad framing: truncated header (7 of 10 bytes)"),
        (b"\x00" + GOOD[1:], "bad framing: missing C3 01 marker (got 00 01)"),
        (b"\xc3\x00" + GOOD[2:], "bad framing: missing C3 01 marker (got c3 00)"),
        (b"\x01", "bad framing: missing C3 01 marker"),
        (MAGIC + b"\x01" * 8 + GOOD[10:], "unknown schema fingerprint 0x0101010101010101"),
        (GOOD[:10], "avro body does not match StepBatch: truncated"),
        (GOOD[:-5], "avro body does not match StepBatch: truncated"),
        (GOOD + b"\x00\x00", "avro body does not match StepBatch: 2 trailing bytes"),
        (GOOD[:10] + b"\x02\x01", "avro body does not match StepBatch"),
        (GOOD[:10] + b"\xff" * 40, "avro body does not match StepBatch"),
    ],
)
def test_bad_frames_raise_decode_error_with_reason(value: Any, reason: str) -> None:
    with pytest.raises(DecodeError) as info:
        CODEC.decode(value)
    assert info.value.reason.startswith(reason)
    assert str(info.value) == info.value.reason


def test_garbage_bare_event_body_names_step_event() -> None:
    with pytest.raises(DecodeError, match="avro body does not match StepEvent"):
        CODEC.decode(MAGIC + CODEC.event_codec.fingerprint + b"\x02")


def test_unknown_fingerprint_reason_is_the_64_bit_value() -> None:
    fingerprint = (0x1234).to_bytes(8, "little")
    with pytest.raises(DecodeError, match="unknown schema fingerprint 0x0000000000001234"):
        CODEC.decode(MAGIC + fingerprint + b"\x00")


def test_framed_codec_rejects_other_records_fingerprint() -> None:
    with pytest.raises(DecodeError, match="unknown schema fingerprint"):
        control_codec().decode(GOOD)


@settings(max_examples=400)
@given(st.binary(max_size=64))
def test_arbitrary_bytes_only_raise_decode_error(value: bytes) -> None:
    for content_type in (None, JSON):
        try:
            CODEC.decode(value, content_type)
        except DecodeError as exc:
            assert exc.reason


@settings(max_examples=400)
@given(
    st.sampled_from([CODEC.batch_codec.fingerprint, CODEC.event_codec.fingerprint]),
    st.binary(max_size=200),
)
def test_garbage_bodies_behind_valid_header_only_raise_decode_error(
    fingerprint: bytes, body: bytes
) -> None:
    try:
        decoded = CODEC.decode(MAGIC + fingerprint + body)
    except DecodeError:
        return
    assert isinstance(decoded, list)


@settings(max_examples=300)
@given(st.integers(10, len(GOOD) - 1), st.integers(0, 255), st.integers(0, len(GOOD)))
def test_corrupted_real_frames_only_raise_decode_error(index: int, byte: int, cut: int) -> None:
    corrupted = (GOOD[:index] + bytes([byte]) + GOOD[index + 1 :])[:cut]
    try:
        CODEC.decode(corrupted)
    except DecodeError:
        pass


def test_accepts_bytearray_and_memoryview() -> None:
    assert CODEC.decode(bytearray(GOOD)) == CODEC.decode(memoryview(GOOD)) == CODEC.decode(GOOD)


# --- semantic checks -------------------------------------------------------------------------


def test_valid_event_passes_check() -> None:
    assert check_event(valid_event(), now_ms=NOW_MS) is None


@pytest.mark.parametrize(
    ("override", "reason_part"),
    [
        ({"event_id": "not-a-uuid"}, "event_id is not a UUID"),
        ({"event_id": "{" + str(uuid.uuid4()) + "}"}, "event_id is not a UUID"),
        ({"event_id": uuid.uuid4().hex}, "event_id is not a UUID"),
        ({"agent_id": ""}, "empty agent_id"),
        ({"agent_id": "  "}, "empty agent_id"),
        ({"run_id": ""}, "empty run_id"),
        ({"ts": 946_684_799_999}, "before 2000-01-01"),
        ({"ts": NOW_MS // 1000}, "before 2000-01-01"),  # seconds instead of millis
        ({"ts": NOW_MS + 86_400_001}, "more than a day in the future"),
        ({"step": -1}, "negative step"),
        ({"input_tokens": -1}, "negative input_tokens"),
        ({"output_tokens": -5}, "negative output_tokens"),
        ({"latency_ms": -1}, "negative latency_ms"),
        ({"wait_ms": -1}, "negative wait_ms"),
        ({"cost_usd": -0.01}, "invalid cost_usd"),
        ({"cost_usd": float("nan")}, "invalid cost_usd"),
        ({"cost_usd": float("inf")}, "invalid cost_usd"),
        ({"kind": "approval_decision", "approved": None}, "approval_decision without approved"),
        ({"kind": "tool_call", "tool": None}, "tool_call without tool"),
        ({"kind": "policy_decision"}, "policy_decision without policy_outcome"),
    ],
)
def test_check_event_rejects_impossible_events(override: dict[str, Any], reason_part: str) -> None:
    reason = check_event(valid_event(**override), now_ms=NOW_MS)
    assert reason is not None and reason_part in reason


@pytest.mark.parametrize(
    "override",
    [
        {"ts": 946_684_800_000},
        {"ts": NOW_MS + 86_400_000},
        {"event_id": str(uuid.uuid4()).upper()},
        {"kind": "run_end", "outcome": None},
        {"kind": "approval_decision", "approved": False, "tool": "pay"},
        {"kind": "tool_call", "tool": "http.get", "approved": True},
        {"cost_usd": 0.0, "input_tokens": 0, "wait_ms": 0, "step": 0},
        {"cost_usd": None, "input_tokens": None, "latency_ms": None},
    ],
)
def test_check_event_accepts_plausible_events(override: dict[str, Any]) -> None:
    assert check_event(valid_event(**override), now_ms=NOW_MS) is None


def test_check_event_defaults_to_current_time() -> None:
    now = datetime.now(tz=UTC)
    assert check_event(valid_event(ts=int(now.timestamp() * 1000))) is None
    future = now + timedelta(days=2)
    assert "future" in (check_event(valid_event(ts=int(future.timestamp() * 1000))) or "")


def test_check_event_works_on_decoded_json_with_non_utc_ts() -> None:
    event = {**valid_event(), "ts": datetime(2024, 1, 1, tzinfo=timezone(timedelta(hours=5)))}
    (decoded,) = CODEC.decode(json.dumps(event, default=str).encode(), JSON)
    assert check_event(decoded, now_ms=NOW_MS) is None


def test_check_batch_key() -> None:
    batch = [valid_event(), valid_event(step=4)]
    assert check_batch_key(batch, b"agent-1") is None
    assert check_batch_key(batch, None) is None
    assert check_batch_key([], b"agent-1") is None
    reason = check_batch_key([*batch, valid_event(agent_id="agent-2")], b"agent-1")
    assert reason == "event 2 has agent_id 'agent-2', record key is 'agent-1'"
    assert check_batch_key(batch, b"\xff") == "record key is not UTF-8: b'\\xff'"
