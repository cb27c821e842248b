"""Producers and consumers on different schema versions interoperate via ``register_writer``.

"v0" is the current StepEvent minus some optional fields (an older producer/consumer), "v2"
the current one plus a new optional field (a newer producer/consumer).
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from tripwire.schemas.codec import (
    CONTROL_SCHEMA,
    STEP_EVENT_SCHEMA,
    DecodeError,
    FramedCodec,
    StepBatchCodec,
    control_codec,
    load_schema,
)

DROPPED_IN_V0 = ("workflow", "source_trust", "injection_flagged", "attributes")


def current_event_schema() -> dict[str, Any]:
    return json.loads(STEP_EVENT_SCHEMA.read_text())


def v0_event_schema() -> dict[str, Any]:
    schema = current_event_schema()
    schema["fields"] = [f for f in schema["fields"] if f["name"] not in DROPPED_IN_V0]
    return schema


def v2_event_schema() -> dict[str, Any]:
    schema = current_event_schema()
    schema["fields"].append(
        {"name": "sandbox_id", "type": ["null", "string"], "default": None, "doc": "Added in v2."}
    )
    return schema


def event(step: int, **extra: Any) -> dict[str, Any]:
    return {
        "event_id": str(uuid.uuid4()),
        "ts": 1_750_000_000_000 + step,
        "agent_id": "agent-1",
        "run_id": "run-1",
        "step": step,
        "kind": "tool_call",
        "tool": "http.get",
        "cost_usd": 0.5,
        **extra,
    }


def field_names(schema: dict[str, Any]) -> list[str]:
    return [f["name"] for f in schema["fields"]]


def test_versions_have_distinct_fingerprints() -> None:
    fingerprints = {
        StepBatchCodec(event_schema=s).batch_codec.fingerprint
        for s in (v0_event_schema(), current_event_schema(), v2_event_schema())
    }
    assert len(fingerprints) == 3


def test_unregistered_old_writer_is_unknown_fingerprint() -> None:
    old = StepBatchCodec(event_schema=v0_event_schema())
    with pytest.raises(DecodeError, match="unknown schema fingerprint"):
        StepBatchCodec().decode(old.encode([event(0)]))


# --- old writer -> new reader ---------------------------------------------------------------


def test_v0_writer_current_reader_batch() -> None:
    old = StepBatchCodec(event_schema=v0_event_schema())
    reader = StepBatchCodec()
    reader.register_writer(v0_event_schema())

    decoded = reader.decode(old.encode([event(0), event(1)]))

    assert [list(d) for d in decoded] == [field_names(current_event_schema())] * 2
    for d in decoded:
        assert d["workflow"] is None and d["source_trust"] is None
        assert d["injection_flagged"] is None and d["attributes"] == {}
    assert [d["step"] for d in decoded] == [0, 1]
    assert decoded[0]["cost_usd"] == 0.5


def test_v0_writer_current_reader_bare_event() -> None:
    old = StepBatchCodec(event_schema=v0_event_schema())
    reader = StepBatchCodec()
    reader.register_writer(v0_event_schema())
    (decoded,) = reader.decode(old.event_codec.encode(event(7)))
    assert decoded["step"] == 7 and decoded["attributes"] == {}


def test_defaults_filled_for_old_writers_are_not_shared_between_events() -> None:
    old = StepBatchCodec(event_schema=v0_event_schema())
    reader = StepBatchCodec()
    reader.register_writer(v0_event_schema())
    frame = old.encode([event(0), event(1)])

    first, second = reader.decode(frame)
    first["attributes"]["mutated"] = "yes"
    assert second["attributes"] == {}
    assert reader.decode(frame)[0]["attributes"] == {}


# --- new writer -> old reader ---------------------------------------------------------------


def test_current_writer_v0_reader() -> None:
    old_reader = StepBatchCodec(event_schema=v0_event_schema())
    old_reader.register_writer(STEP_EVENT_SCHEMA)
    written = event(3, workflow="wf", source_trust="external", attributes={"k": "v"})

    (decoded,) = old_reader.decode(StepBatchCodec().encode([written]))

    assert list(decoded) == field_names(v0_event_schema())
    assert decoded["step"] == 3 and decoded["tool"] == "http.get"


def test_v2_writer_current_reader() -> None:
    new = StepBatchCodec(event_schema=v2_event_schema())
    reader = StepBatchCodec()
    reader.register_writer(v2_event_schema())
    written = event(1, sandbox_id="sbx-9", attributes={"k": "v"})

    (from_batch,) = reader.decode(new.encode([written]))
    (from_bare,) = reader.decode(new.event_codec.encode(written))

    assert from_batch == from_bare
    assert "sandbox_id" not in from_batch
    assert list(from_batch) == field_names(current_event_schema())
    assert from_batch["attributes"] == {"k": "v"}


def test_current_writer_v2_reader() -> None:
    new_reader = StepBatchCodec(event_schema=v2_event_schema())
    new_reader.register_writer(STEP_EVENT_SCHEMA)

    (decoded,) = new_reader.decode(StepBatchCodec().encode([event(2)]))

    assert decoded["sandbox_id"] is None
    assert list(decoded) == field_names(v2_event_schema())


def test_v0_writer_v2_reader_and_back() -> None:
    v0 = StepBatchCodec(event_schema=v0_event_schema())
    v2 = StepBatchCodec(event_schema=v2_event_schema())
    v0.register_writer(v2_event_schema())
    v2.register_writer(v0_event_schema())

    (up,) = v2.decode(v0.encode([event(0)]))
    (down,) = v0.decode(v2.encode([event(0, sandbox_id="s", attributes={"a": "b"})]))

    assert up["sandbox_id"] is None and up["attributes"] == {}
    assert list(up) == field_names(v2_event_schema())
    assert list(down) == field_names(v0_event_schema())


# --- resolution failures and registration rules --------------------------------------------


def test_new_enum_symbol_unknown_to_reader_is_decode_error() -> None:
    schema = v2_event_schema()
    kind = next(f for f in schema["fields"] if f["name"] == "kind")
    kind["type"]["symbols"].append("handoff")
    new = StepBatchCodec(event_schema=schema)
    reader = StepBatchCodec()
    reader.register_writer(schema)

    assert reader.decode(new.encode([event(0)]))[0]["kind"] == "tool_call"
    with pytest.raises(DecodeError, match="avro body does not match StepBatch"):
        reader.decode(new.encode([event(1, kind="handoff")]))


def test_incompatible_writer_is_decode_error() -> None:
    schema = current_event_schema()
    step = next(f for f in schema["fields"] if f["name"] == "step")
    step["type"] = "string"
    writer = StepBatchCodec(event_schema=schema)
    reader = StepBatchCodec()
    reader.register_writer(schema)
    with pytest.raises(DecodeError, match="avro body does not match StepBatch"):
        reader.decode(writer.encode([{**event(0), "step": "zero"}]))


def test_registering_another_record_is_refused() -> None:
    with pytest.raises(ValueError, match="cannot be read as dev.tripwire.StepEvent"):
        StepBatchCodec().event_codec.register_writer(CONTROL_SCHEMA)


def test_registering_the_current_schema_is_a_no_op() -> None:
    codec = StepBatchCodec()
    fingerprints = codec.register_writer(STEP_EVENT_SCHEMA)
    assert fingerprints == (codec.event_codec.fingerprint, codec.batch_codec.fingerprint)
    assert codec.decode(codec.encode([event(0)]))[0]["step"] == 0


def test_control_old_writer_gets_enum_and_array_defaults() -> None:
    v0 = load_schema(CONTROL_SCHEMA)
    v0["fields"] = [f for f in v0["fields"] if f["name"] not in ("source", "detection_ids")]
    old = FramedCodec(v0)
    reader = control_codec()
    reader.register_writer(v0)
    record = {
        "agent_id": "a",
        "mode": "halted",
        "scope": "agent",
        "reason": "loop",
        "seq": 4,
        "issued_at": 1_750_000_000_000,
    }

    first = reader.decode(old.encode(record))
    second = reader.decode(old.encode(record))

    assert first["source"] == "breaker" and first["detection_ids"] == []
    first["detection_ids"].append("d-1")
    assert second["detection_ids"] == []
