"""The pydantic models and the codec agree with the .avsc contract and with the reference Avro
implementation (the ``avro`` package), so non-Python consumers read what Tripwire writes."""

from __future__ import annotations

import io
import json
import re
import types
import typing
import uuid
from datetime import UTC, datetime
from enum import Enum
from pathlib import Path
from typing import Any

import avro.io
import avro.schema
import pytest
from annotated_types import Ge, Le
from fastavro import parse_schema
from pydantic import BaseModel, BeforeValidator
from pydantic.fields import FieldInfo

from tripwire.schemas.codec import (
    COMMAND_SCHEMA,
    CONTROL_SCHEMA,
    DETECTION_SCHEMA,
    MAGIC,
    STEP_BATCH_SCHEMA,
    STEP_EVENT_SCHEMA,
    FramedCodec,
    StepBatchCodec,
    command_codec,
    control_codec,
    crc64_avro,
    detection_codec,
    parsing_canonical_form,
)
from tripwire.schemas.models import (
    AVRO_INT_MAX,
    AVRO_INT_MIN,
    AVRO_LONG_MAX,
    AVRO_LONG_MIN,
    Command,
    Control,
    Detection,
    StepBatch,
    StepEvent,
    epoch_millis,
)

# Load order matters: a file may only refer to named types defined in files before it.
CONTRACT: list[tuple[Path, type[BaseModel]]] = [
    (STEP_EVENT_SCHEMA, StepEvent),
    (STEP_BATCH_SCHEMA, StepBatch),
    (CONTROL_SCHEMA, Control),
    (DETECTION_SCHEMA, Detection),
    (COMMAND_SCHEMA, Command),
]
PRIMITIVE_SHAPES = {"string": "str", "double": "float", "boolean": "bool"}


def load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def fullname(name: str, namespace: str | None) -> str:
    return name if "." in name or not namespace else f"{namespace}.{name}"


def collect_named(schema: Any, namespace: str | None, into: dict[str, Any]) -> None:
    """Every named type defined anywhere in ``schema``, by full name."""
    if isinstance(schema, list):
        for branch in schema:
            collect_named(branch, namespace, into)
    elif isinstance(schema, dict):
        if schema.get("type") in ("record", "enum", "fixed"):
            name = fullname(schema["name"], schema.get("namespace", namespace))
            into[name] = schema
            namespace = name.rpartition(".")[0]
        for field in schema.get("fields", ()):
            collect_named(field["type"], namespace, into)
        for key in ("items", "values"):
            if key in schema:
                collect_named(schema[key], namespace, into)


NAMED: dict[str, Any] = {}
for _path, _ in CONTRACT:
    collect_named(load(_path), None, NAMED)


def avro_shape(schema: Any, namespace: str) -> Any:
    """A comparable description of an Avro type, mirrored by ``model_shape``."""
    if isinstance(schema, list):
        branches = [b for b in schema if b != "null"]
        assert "null" in schema and len(branches) == 1, f"only null unions are modelled: {schema}"
        return ("optional", avro_shape(branches[0], namespace))
    if isinstance(schema, str):
        if schema in ("int", "long"):
            return ("int", 32 if schema == "int" else 64)
        if schema in PRIMITIVE_SHAPES:
            return PRIMITIVE_SHAPES[schema]
        return avro_shape(NAMED[fullname(schema, namespace)], namespace)
    kind = schema["type"]
    if kind == "long" and schema.get("logicalType") == "timestamp-millis":
        return ("int", 64, "timestamp-millis")
    if isinstance(kind, str) and kind in ("int", "long", *PRIMITIVE_SHAPES):
        return avro_shape(kind, namespace)
    if kind == "enum":
        return ("enum", schema["name"].rpartition(".")[2], tuple(schema["symbols"]))
    if kind == "record":
        return ("record", schema["name"].rpartition(".")[2])
    if kind == "array":
        return ("list", avro_shape(schema["items"], namespace))
    if kind == "map":
        return ("dict", avro_shape(schema["values"], namespace))
    raise AssertionError(f"unmodelled Avro type {schema}")


def flat_metadata(metadata: typing.Iterable[Any]) -> list[Any]:
    flat: list[Any] = []
    for item in metadata:
        flat.extend(flat_metadata(item.metadata) if isinstance(item, FieldInfo) else [item])
    return flat


def model_shape(annotation: Any, metadata: list[Any]) -> Any:
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        inner, *extra = typing.get_args(annotation)
        return model_shape(inner, metadata + flat_metadata(extra))
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(annotation)
        branches = [a for a in args if a is not types.NoneType]
        assert types.NoneType in args and len(branches) == 1, f"unmodelled union {annotation}"
        return ("optional", model_shape(branches[0], metadata))
    if origin is list:
        return ("list", model_shape(typing.get_args(annotation)[0], []))
    if origin is dict:
        key, value = typing.get_args(annotation)
        assert key is str, "Avro map keys are strings"
        return ("dict", model_shape(value, []))
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return ("enum", annotation.__name__, tuple(m.value for m in annotation))
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return ("record", annotation.__name__)
    if annotation is int:
        # Bounds decide whether JSON input that passed the model can be Avro-encoded.
        lower = [m.ge for m in metadata if isinstance(m, Ge)]
        upper = [m.le for m in metadata if isinstance(m, Le)]
        bits = {(AVRO_INT_MIN, AVRO_INT_MAX): 32, (AVRO_LONG_MIN, AVRO_LONG_MAX): 64}.get(
            (max(lower, default=None), min(upper, default=None))  # type: ignore[type-var]
        )
        is_ts = any(isinstance(m, BeforeValidator) and m.func is epoch_millis for m in metadata)
        return ("int", bits, "timestamp-millis") if is_ts else ("int", bits)
    return {str: "str", float: "float", bool: "bool"}[annotation]


@pytest.mark.parametrize(("path", "model"), CONTRACT, ids=[p.stem for p, _ in CONTRACT])
def test_model_mirrors_avsc(path: Path, model: type[BaseModel]) -> None:
    schema = load(path)
    assert model.__name__ == schema["name"]
    fields = model.model_fields
    assert list(fields) == [f["name"] for f in schema["fields"]], "field names or order differ"
    for avro_field in schema["fields"]:
        name = avro_field["name"]
        info = fields[name]
        expected = avro_shape(avro_field["type"], schema["namespace"])
        assert model_shape(info.annotation, flat_metadata(info.metadata)) == expected, name
        if "default" in avro_field:
            assert not info.is_required(), f"{name} has an Avro default, model requires it"
            default = info.get_default(call_default_factory=True)
            assert default == avro_field["default"], name
        else:
            assert info.is_required(), f"{name} is required in Avro but optional in the model"


def test_every_nullable_field_defaults_to_null() -> None:
    for path, _ in CONTRACT:
        for field in load(path)["fields"]:
            if isinstance(field["type"], list):
                assert field.get("default", "absent") is None, f"{path.name}:{field['name']}"


def test_to_record_matches_avro_decode() -> None:
    codec = StepBatchCodec()
    event = StepEvent(
        event_id=str(uuid.uuid4()),
        ts="2024-05-01T12:00:00.123+00:00",
        agent_id="a",
        run_id="r",
        step=1,
        kind="approval_decision",
        approved=True,
        environment="prod",
        attributes={"k": "v"},
    )
    record = event.to_record()
    assert record["ts"] == 1_714_564_800_123
    assert codec.decode(codec.encode([record])) == [record]
    assert all(type(v) in (str, int, bool, dict, type(None)) for v in record.values())
    control = Control(agent_id="a", mode="halted", scope="agent", reason="r", seq=1, issued_at=1)
    assert type(control.to_record()["source"]) is str, "enum defaults must dump as plain str"


# --- the reference implementation reads what Tripwire writes ----------------------------------


def without_logical_types(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: without_logical_types(v) for k, v in node.items() if k != "logicalType"}
    if isinstance(node, list):
        return [without_logical_types(n) for n in node]
    return node


def reference_schema(
    path: Path, dependencies: list[Path], *, logical_types: bool = True
) -> avro.schema.Schema:
    """``avro.schema.parse`` of the .avsc text, with types it refers to inlined (the Python
    reference implementation has no cross-file name resolution in ``parse``)."""
    schema = load(path)
    namespace = schema["namespace"]
    defined: dict[str, Any] = {}
    for dependency in dependencies:
        collect_named(load(dependency), None, defined)

    def inline(node: Any) -> Any:
        if isinstance(node, str) and fullname(node, namespace) in defined:
            return defined.pop(fullname(node, namespace))  # first occurrence only
        if isinstance(node, list):
            return [inline(n) for n in node]
        if isinstance(node, dict):
            return {
                k: inline(v) if k in ("type", "items", "values", "fields") else v
                for k, v in node.items()
            }
        return node

    inlined = inline(schema)
    if not logical_types:
        inlined = without_logical_types(inlined)
    return avro.schema.parse(json.dumps(inlined))


def reference_crc64(data: bytes) -> int:
    """CRC-64-AVRO written out from the spec, independent of the codec's implementation."""
    empty = 0xC15D213AA4D7A795
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (empty if fp & 1 else 0)
        table.append(fp)
    fp = empty
    for byte in data:
        fp = (fp >> 8) ^ table[(fp ^ byte) & 0xFF]
    return fp


# The avro package (1.12) leaves {"type":"long"} wrapped when a logical type is stripped from
# the canonical form, where the spec's [PRIMITIVES] rule (and Java, and fastavro) write "long".
_WRAPPED_PRIMITIVE = re.compile(r'\{"type":"(null|boolean|int|long|float|double|bytes|string)"\}')

REFERENCE_CASES = [
    (STEP_EVENT_SCHEMA, [], lambda: StepBatchCodec().event_codec),
    (STEP_BATCH_SCHEMA, [STEP_EVENT_SCHEMA], lambda: StepBatchCodec().batch_codec),
    (CONTROL_SCHEMA, [], control_codec),
    (DETECTION_SCHEMA, [], detection_codec),
    (COMMAND_SCHEMA, [CONTROL_SCHEMA], command_codec),
]


@pytest.mark.parametrize(
    ("path", "dependencies", "make_codec"),
    REFERENCE_CASES,
    ids=[case[0].stem for case in REFERENCE_CASES],
)
def test_fingerprint_and_canonical_form_match_reference(
    path: Path, dependencies: list[Path], make_codec: typing.Callable[[], FramedCodec]
) -> None:
    codec = make_codec()
    reference = reference_schema(path, dependencies)
    # Parsing Canonical Form ignores logical types, so the contract's fingerprint must equal
    # that of the schema without them; that form also sidesteps the avro package's quirk.
    plain = reference_schema(path, dependencies, logical_types=False)
    assert codec.fingerprint == plain.fingerprint("CRC-64-AVRO")
    assert codec.fingerprint == reference_crc64(plain.canonical_form.encode()).to_bytes(8, "little")

    ours = parsing_canonical_form(codec_contract_schema(path, dependencies))
    assert ours == plain.canonical_form
    assert ours == _WRAPPED_PRIMITIVE.sub(r'"\1"', reference.canonical_form)


def codec_contract_schema(path: Path, dependencies: list[Path]) -> dict[str, Any]:
    named: dict[str, Any] = {}
    for dependency in dependencies:
        parse_schema(load(dependency), named)
    return parse_schema(load(path), named)


def test_crc64_avro_spec_values() -> None:
    # From the Avro spec's fingerprint test vectors.
    assert crc64_avro(b'"null"') == 7195948357588979594
    assert crc64_avro(b'"int"') == 8247732601305521295
    for text in (b"", b'"string"', '{"name":"ä"}'.encode()):
        assert crc64_avro(text) == reference_crc64(text)


def sample_events() -> list[dict[str, Any]]:
    base = dict.fromkeys(StepEvent.model_fields)
    full = {
        **base,
        "event_id": str(uuid.uuid4()),
        "ts": 1_714_564_800_123,
        "agent_id": "agent-ä",
        "agent_version": "1.2",
        "run_id": "run-1",
        "step": 7,
        "workflow": "wf",
        "owner": "team",
        "environment": "prod",
        "kind": "tool_call",
        "tool": "http.get",
        "action_class": "money",
        "params_hash": "abc",
        "policy_outcome": "denied",
        "policy_rule": "rule-1",
        "model": "m",
        "input_tokens": 2**40,
        "output_tokens": 0,
        "cost_usd": 0.25,
        "latency_ms": 12,
        "status": "timeout",
        "outcome": "failure",
        "approver": "bob",
        "approved": False,
        "wait_ms": 99,
        "content": "text 🙂",
        "source_trust": "partner",
        "injection_flagged": True,
        "attributes": {"k": "v", "": "empty key"},
    }
    sparse = {
        **base,
        "event_id": str(uuid.uuid4()),
        "ts": 946_684_800_000,
        "agent_id": "agent-ä",
        "run_id": "run-2",
        "step": 0,
        "kind": "run_start",
        "attributes": {},
    }
    return [full, sparse]


def reference_value(value: Any) -> Any:
    """The reference reader applies logical types; map them back to the canonical form."""
    if isinstance(value, datetime):
        return epoch_millis(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    return value


def test_reference_reads_tripwire_batch() -> None:
    codec = StepBatchCodec()
    events = sample_events()
    framed = codec.encode(events)
    reference = reference_schema(STEP_BATCH_SCHEMA, [STEP_EVENT_SCHEMA])

    assert framed[:2] == MAGIC
    plain = reference_schema(STEP_BATCH_SCHEMA, [STEP_EVENT_SCHEMA], logical_types=False)
    assert framed[2:10] == plain.fingerprint("CRC-64-AVRO")
    body = io.BytesIO(framed[10:])
    datum = avro.io.DatumReader(reference).read(avro.io.BinaryDecoder(body))
    assert body.tell() == len(framed) - 10, "reference reader left bytes unread"
    decoded = [{k: reference_value(v) for k, v in event.items()} for event in datum["events"]]
    assert decoded == events


def test_tripwire_reads_reference_batch() -> None:
    events = sample_events()
    reference = reference_schema(STEP_BATCH_SCHEMA, [STEP_EVENT_SCHEMA])
    datum = {
        "events": [{**e, "ts": datetime.fromtimestamp(e["ts"] / 1000, tz=UTC)} for e in events]
    }
    body = io.BytesIO()
    avro.io.DatumWriter(reference).write(datum, avro.io.BinaryEncoder(body))
    plain = reference_schema(STEP_BATCH_SCHEMA, [STEP_EVENT_SCHEMA], logical_types=False)
    framed = MAGIC + plain.fingerprint("CRC-64-AVRO") + body.getvalue()
    assert StepBatchCodec().decode(framed) == events


def test_tripwire_reads_reference_bare_event() -> None:
    event = sample_events()[0]
    reference = reference_schema(STEP_EVENT_SCHEMA, [])
    body = io.BytesIO()
    datum = {**event, "ts": datetime.fromtimestamp(event["ts"] / 1000, tz=UTC)}
    avro.io.DatumWriter(reference).write(datum, avro.io.BinaryEncoder(body))
    plain = reference_schema(STEP_EVENT_SCHEMA, [], logical_types=False)
    framed = MAGIC + plain.fingerprint("CRC-64-AVRO") + body.getvalue()
    assert StepBatchCodec().decode(framed) == [event]
