"""The generated Avro reader against fastavro as the oracle, and fuzzing of its error paths."""

from __future__ import annotations

import itertools
import struct
import time
import tracemalloc
from collections.abc import Callable, Mapping
from io import BytesIO
from typing import Any

import pytest
from fastavro import parse_schema, schemaless_reader, schemaless_writer
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from tripwire.schemas.avro_decoder import (
    MAX_ZERO_WIDTH_ITEMS,
    AvroDecodeError,
    compile_column_reader,
    compile_reader,
    compile_row_reader,
    generate_source,
)
from tripwire.schemas.codec import (
    HEADER_SIZE,
    DecodeError,
    FramedCodec,
    StepBatchCodec,
    command_codec,
    control_codec,
    detection_codec,
)
from tripwire.simulator.fleet import fleet_events
from tripwire.simulator.scenarios import SCENARIOS

STEPS = StepBatchCodec()
CONTRACT: dict[str, FramedCodec] = {
    "StepBatch": STEPS.batch_codec,
    "StepEvent": STEPS.event_codec,
    "Control": control_codec(),
    "Detection": detection_codec(),
    "Command": command_codec(),
}
PRIMITIVES = ("null", "boolean", "int", "long", "float", "double", "bytes", "string")


# --- oracle and comparison -------------------------------------------------------------------


def fastavro_read(schema: Any, body: bytes) -> tuple[Any, int]:
    fo = BytesIO(body)
    return schemaless_reader(fo, schema, None), fo.tell()


def encode(schema: Any, value: Any) -> bytes:
    fo = BytesIO()
    schemaless_writer(fo, schema, value)
    return fo.getvalue()


def same(a: Any, b: Any) -> bool:
    """Equality that also checks types and dict key order, and compares floats bit for bit
    (NaN != NaN would otherwise make every NaN example fail)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return struct.pack("<d", a) == struct.pack("<d", b)
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(map(same, a, b))
    return bool(a == b)


def check_matches_fastavro(schema: Any, body: bytes) -> Any:
    expected, expected_end = fastavro_read(schema, body)
    value, end = compile_reader(schema)(body, 0)
    assert same(value, expected), (value, expected)
    assert end == expected_end
    return value


# --- value strategies from a parsed schema ----------------------------------------------------


def values(schema: Any, named: Mapping[str, Any]) -> st.SearchStrategy[Any]:
    """Values fastavro can write for ``schema`` (as parsed by ``fastavro.parse_schema``)."""
    if isinstance(schema, list):
        return st.one_of([values(branch, named) for branch in schema])
    if isinstance(schema, str) and schema not in PRIMITIVES:
        return st.deferred(lambda: values(named[schema], named))
    kind = schema if isinstance(schema, str) else schema["type"]
    simple: dict[str, st.SearchStrategy[Any]] = {
        "null": st.none(),
        "boolean": st.booleans(),
        "int": st.integers(-(2**31), 2**31 - 1),
        "long": st.integers(-(2**63), 2**63 - 1),
        "float": st.floats(width=32),
        "double": st.floats(),
        "bytes": st.binary(max_size=20),
        "string": st.text(max_size=20),
    }
    if kind in simple:
        return simple[kind]
    if kind == "enum":
        return st.sampled_from(schema["symbols"])
    if kind == "fixed":
        return st.binary(min_size=schema["size"], max_size=schema["size"])
    if kind == "array":
        return st.lists(values(schema["items"], named), max_size=4)
    if kind == "map":
        return st.dictionaries(st.text(max_size=6), values(schema["values"], named), max_size=4)
    assert kind == "record", schema
    return st.fixed_dictionaries({f["name"]: values(f["type"], named) for f in schema["fields"]})


def contract_values(name: str) -> st.SearchStrategy[Any]:
    schema = CONTRACT[name]._schema
    return values(schema, schema["__named_schemas"])


# --- random schemas ----------------------------------------------------------------------------

NAMES = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,6}", fullmatch=True)


@st.composite
def avro_schemas(draw: st.DrawFn, depth: int = 3) -> Any:
    """JSON schemas of every Avro type, nested up to ``depth``; named types get unique names
    later (see ``with_unique_names``), so their names here are placeholders."""
    kinds = ["primitive", "enum", "fixed"]
    if depth > 0:
        kinds += ["record", "array", "map", "union"]
    kind = draw(st.sampled_from(kinds))
    if kind == "primitive":
        return draw(st.sampled_from(PRIMITIVES))
    if kind == "enum":
        # Up to 70 symbols: past 64 the one-byte lookup table cannot hold every index.
        symbols = draw(st.lists(NAMES, min_size=1, max_size=70, unique=True))
        return {"type": "enum", "name": "?", "symbols": symbols}
    if kind == "fixed":
        return {"type": "fixed", "name": "?", "size": draw(st.integers(0, 9))}
    if kind == "array":
        return {"type": "array", "items": draw(avro_schemas(depth - 1))}
    if kind == "map":
        return {"type": "map", "values": draw(avro_schemas(depth - 1))}
    if kind == "record":
        names = draw(st.lists(NAMES, max_size=5, unique=True))
        fields = [{"name": n, "type": draw(avro_schemas(depth - 1))} for n in names]
        return {"type": "record", "name": "?", "fields": fields}
    # A union may hold each unnamed type once and no directly nested union; float and double
    # together would let fastavro's writer pick float for a double it cannot represent.
    picks = draw(
        st.lists(
            st.sampled_from([*PRIMITIVES, "array", "map", "record", "enum", "fixed"]),
            min_size=1,
            max_size=5,
            unique=True,
        ).filter(lambda p: not {"float", "double"} <= set(p))
    )
    branches = []
    for pick in picks:
        if pick in PRIMITIVES:
            branches.append(pick)
            continue
        branch = draw(avro_schemas(depth - 1).filter(lambda s, p=pick: kind_of(s) == p))
        branches.append(branch)
    return branches


def kind_of(schema: Any) -> str:
    if isinstance(schema, list):
        return "union"
    return schema if isinstance(schema, str) else schema["type"]


def with_unique_names(schema: Any) -> Any:
    counter = itertools.count()

    def walk(node: Any) -> Any:
        if isinstance(node, list):
            return [walk(n) for n in node]
        if isinstance(node, str):
            return node
        node = dict(node)
        if "name" in node:
            node["name"] = f"N{next(counter)}"
        if node["type"] == "record":
            node["fields"] = [{**f, "type": walk(f["type"])} for f in node["fields"]]
        for key in ("items", "values"):
            if key in node:
                node[key] = walk(node[key])
        return node

    return walk(schema)


# --- identical output --------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(CONTRACT))
@given(data=st.data())
def test_contract_records_decode_like_fastavro(name: str, data: st.DataObject) -> None:
    schema = CONTRACT[name]._schema
    check_matches_fastavro(schema, encode(schema, data.draw(contract_values(name))))


@settings(max_examples=50)
@given(st.lists(contract_values("StepEvent"), max_size=60))
def test_large_step_batches_decode_like_fastavro(events: list[dict[str, Any]]) -> None:
    schema = CONTRACT["StepBatch"]._schema
    check_matches_fastavro(schema, encode(schema, {"events": events}))


def test_simulated_fleet_batches_decode_like_fastavro() -> None:
    schema = CONTRACT["StepBatch"]._schema
    events = list(itertools.islice(fleet_events(seed=42, agents=50, scenarios=SCENARIOS), 1000))
    for start in range(0, len(events), 50):
        check_matches_fastavro(schema, encode(schema, {"events": events[start : start + 50]}))


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_random_schemas_decode_like_fastavro(data: st.DataObject) -> None:
    schema = parse_schema(with_unique_names(data.draw(avro_schemas())))
    named = schema.get("__named_schemas", {}) if isinstance(schema, dict) else {}
    value = data.draw(values(schema, named))
    check_matches_fastavro(schema, encode(schema, value))


def test_recursive_named_type() -> None:
    schema = parse_schema(
        {
            "type": "record",
            "name": "Node",
            "fields": [
                {"name": "label", "type": "string"},
                {"name": "children", "type": {"type": "array", "items": "Node"}},
                {"name": "next", "type": ["null", "Node"]},
            ],
        }
    )
    leaf = {"label": "leaf", "children": [], "next": None}
    tree = {"label": "root", "children": [leaf, {**leaf, "next": leaf}], "next": leaf}
    for _ in range(6):
        tree = {"label": "up", "children": [tree, tree], "next": tree}
    assert check_matches_fastavro(schema, encode(schema, tree)) == tree


def test_union_with_more_branches_than_the_one_byte_fast_path() -> None:
    schema = parse_schema([{"type": "fixed", "name": f"F{i}", "size": 1} for i in range(70)])
    for i in (0, 63, 64, 69):
        body = encode(schema, (f"F{i}", bytes([i])))
        assert check_matches_fastavro(schema, body) == bytes([i])


@pytest.mark.parametrize(
    ("schema", "body"),
    [
        # Negative block counts are followed by the block's byte size.
        ({"type": "array", "items": "long"}, b"\x03\x04\x02\x04\x02\x06\x00"),
        ({"type": "map", "values": "int"}, b"\x01\x06\x02k\x02\x02\x02j\x04\x00"),
        ({"type": "map", "values": "string"}, b"\x04\x02k\x02v\x02k\x02w\x00"),  # duplicate key
        # Non-minimal varints are still valid encodings of small numbers.
        (["null", "string"], b"\x82\x00\x02a"),
        ({"type": "enum", "name": "E", "symbols": ["a", "b"]}, b"\x82\x00"),
        ("long", b"\x80\x80\x00"),
        ("long", b"\xfe\xff\xff\xff\xff\xff\xff\xff\xff\x01"),  # max long
        ("long", b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01"),  # min long
        ("int", b"\xfe\xff\xff\xff\x0f"),  # max int
        ("int", b"\xff\xff\xff\xff\x0f"),  # min int
        ("float", b"\x01\x00\xc0\x7f"),  # NaN with a payload
        ("double", b"\x00\x00\x00\x00\x00\x00\xf0\xff"),
        ({"type": "array", "items": "null"}, b"\x14\x00"),
        ({"type": "record", "name": "Empty", "fields": []}, b""),
        ({"type": "fixed", "name": "Z", "size": 0}, b""),
        ("string", "ünïcødé ✓".encode().join([b"\x1e", b""])),
    ],
)
def test_hand_made_encodings_decode_like_fastavro(schema: Any, body: bytes) -> None:
    check_matches_fastavro(parse_schema(schema), body)


@pytest.mark.parametrize(("kind", "bits"), [("int", 32), ("long", 64)])
def test_every_varint_length_decodes_like_fastavro(kind: str, bits: int) -> None:
    # The reader unrolls varints byte by byte; hit each length and both signs at its edges.
    edges = {0, 2 ** (bits - 1) - 1, -(2 ** (bits - 1))}
    for k in range(1, bits // 7 + 1):
        edge = 2 ** (7 * k - 1)  # the smallest magnitude that needs k + 1 bytes
        edges |= {edge - 1, edge, -edge, -edge - 1}
    numbers = sorted(n for n in edges if -(2 ** (bits - 1)) <= n < 2 ** (bits - 1))
    schema = parse_schema({"type": "array", "items": kind})
    assert check_matches_fastavro(schema, encode(schema, numbers)) == numbers


def test_reads_from_an_offset_and_reports_where_the_value_ends() -> None:
    reader = compile_reader(parse_schema(["null", "string"]))
    assert reader(b"junk\x02\x06abcrest", 4) == ("abc", 9)


def test_same_schema_compiles_once() -> None:
    assert compile_reader(control_codec()._schema) is compile_reader(control_codec()._schema)


def test_generated_source_is_readable_python() -> None:
    source = generate_source(CONTRACT["Control"]._schema)
    compile(source, "<test>", "exec")
    assert "'autonomous'" in source and "['issued_at'] = " in source


def test_unknown_named_type_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="unknown named type"):
        compile_reader({"type": "array", "items": "dev.tripwire.Missing"})


# --- malformed input -------------------------------------------------------------------------

ENUM_AB = {"type": "enum", "name": "E", "symbols": ["a", "b"]}


@pytest.mark.parametrize(
    ("schema", "body", "reason"),
    [
        ("long", b"", "truncated"),
        ("long", b"\x80", "truncated"),
        ("string", b"\x08ab", "truncated: 4 bytes needed at offset 1, 2 left"),
        ("string", b"\x80", "truncated"),
        ("double", b"\x00" * 7, "truncated"),
        ("float", b"\x00", "truncated"),
        ({"type": "fixed", "name": "F", "size": 3}, b"ab", "truncated"),
        ("string", b"\x01abc", "negative length -1 at offset 0"),
        ("bytes", b"\x81\x01", "negative length -65"),
        ("string", b"\x04\xff\xfe", "invalid UTF-8"),
        ("string", b"\x06\xed\xa0\x80", "invalid UTF-8"),  # an encoded surrogate
        (ENUM_AB, b"\x04", "enum E index 2 out of range 0..1 at offset 0"),
        (ENUM_AB, b"\x01", "enum E index -1 out of range"),  # fastavro would say "b"
        (["null", "string"], b"\x04", "union index 2 out of range 0..1"),
        (["null", "string"], b"\x01\x02a", "union index -1 out of range"),
        ("boolean", b"\x02", "boolean byte 0x02 at offset 0 is neither 0 nor 1"),
        ("long", b"\xff" * 10 + b"\x01", "varint longer than 10 bytes at offset 0"),
        ("long", b"\xff" * 9 + b"\x7f", "does not fit in 64 bits"),
        ("int", b"\xff\xff\xff\xff\x7f", "does not fit in 32 bits"),
        ("int", b"\x80\x80\x80\x80\x80\x00", "varint longer than 5 bytes"),
        ({"type": "array", "items": "long"}, b"\x0a\x02", "truncated: block of 5 items"),
        ({"type": "array", "items": "double"}, b"\x04" + b"\x00" * 15, "needs at least 16 bytes"),
        ({"type": "map", "values": "string"}, b"\x02\x02k", "truncated"),
        ({"type": "map", "values": "long"}, b"\x03\x02\x02k", "truncated"),  # count -2, size 1
    ],
)
def test_malformed_bodies_raise_with_reason(schema: Any, body: bytes, reason: str) -> None:
    with pytest.raises(AvroDecodeError) as info:
        compile_reader(parse_schema(schema))(body, 0)
    assert info.value.reason.startswith(reason) or reason in info.value.reason
    assert str(info.value) == info.value.reason


def test_deep_nesting_is_an_error_not_a_crash() -> None:
    schema = parse_schema(
        {"type": "record", "name": "L", "fields": [{"name": "next", "type": ["null", "L"]}]}
    )
    with pytest.raises(AvroDecodeError, match="nested too deeply"):
        compile_reader(schema)(b"\x02" * 100_000 + b"\x00", 0)


ABSURD = [
    ("string", b"\xfe\xff\xff\xff\xff\xff\xff\xff\x7f"),
    ({"type": "array", "items": "string"}, b"\xfe\xff\xff\xff\xff\xff\xff\xff\x7f\x00"),
    ({"type": "array", "items": "long"}, b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01\x02\x00"),
    ({"type": "map", "values": "null"}, b"\xfe\xff\xff\xff\x0f" + b"\x02k" * 3),
    ({"type": "array", "items": "null"}, b"\xfe\xff\xff\xff\xff\xff\xff\xff\x7f\x00"),
    # Zero-width items in many blocks, each under the cap but together over it.
    ({"type": "array", "items": "null"}, b"\xfe\xff\x03" * 100 + b"\x00"),
    # ... or in many arrays, which a per-array cap would multiply: 1000 x 32767 Nones.
    (
        {"type": "array", "items": {"type": "array", "items": "null"}},
        b"\xd0\x0f" + b"\xfe\xff\x03\x00" * 1000 + b"\x00",
    ),
    (
        {"type": "array", "items": {"type": "record", "name": "R", "fields": []}},
        b"\xfe\xff\xff\x01\x00",
    ),
]


@pytest.mark.parametrize(("schema", "body"), ABSURD)
def test_absurd_lengths_fail_fast_without_allocating(schema: Any, body: bytes) -> None:
    reader = compile_reader(parse_schema(schema))
    tracemalloc.start()
    started = time.perf_counter()
    try:
        with pytest.raises(AvroDecodeError):
            reader(body, 0)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - started < 1.0
    assert peak < 8 * MAX_ZERO_WIDTH_ITEMS * 4


def test_zero_width_items_up_to_the_cap_are_fine() -> None:
    count = MAX_ZERO_WIDTH_ITEMS
    body = encode(parse_schema({"type": "array", "items": "null"}), [None] * count)
    value, _ = compile_reader(parse_schema({"type": "array", "items": "null"}))(body, 0)
    assert value == [None] * count


def decode_or_error(reader: Callable[[bytes, int], tuple[Any, int]], body: bytes) -> Any:
    """The value, or None when the reader rejected ``body``; any other exception fails."""
    try:
        return reader(body, 0)
    except AvroDecodeError as exc:
        assert exc.reason
        return None


@pytest.mark.parametrize("name", list(CONTRACT))
@settings(max_examples=300)
@given(body=st.binary(max_size=300))
def test_arbitrary_bytes_only_raise_avro_decode_error(name: str, body: bytes) -> None:
    result = decode_or_error(compile_reader(CONTRACT[name]._schema), body)
    if result is not None:
        assert result[1] <= len(body)


def mutate(body: bytes, edits: list[tuple[int, int, int]], cut: int) -> bytes:
    """Apply (op, index, byte) edits: 0 replaces, 1 inserts, 2 deletes; then truncate."""
    data = bytearray(body)
    for op, index, byte in edits:
        index %= len(data) + 1
        if op == 0 and index < len(data):
            data[index] = byte
        elif op == 1:
            data.insert(index, byte)
        elif index < len(data):
            del data[index]
    return bytes(data[: cut % (len(data) + 1)] if cut >= 0 else data)


# Arguments of ``mutate``: what edits to make, and where to cut.
EDITS = st.lists(st.tuples(st.integers(0, 2), st.integers(0, 10_000), st.integers(0, 255)))
CUTS = st.integers(-(10**6), 10_000)


@pytest.mark.parametrize("name", list(CONTRACT))
@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), edits=EDITS, cut=CUTS)
def test_corrupted_bodies_fail_cleanly_or_decode_like_fastavro(
    name: str, data: st.DataObject, edits: list[tuple[int, int, int]], cut: int
) -> None:
    schema = CONTRACT[name]._schema
    body = encode(schema, data.draw(contract_values(name)))
    corrupted = mutate(body, edits, cut)
    assume(corrupted != body)
    result = decode_or_error(compile_reader(schema), corrupted)
    if result is not None:
        # Whatever the reader accepts must be a valid encoding: fastavro reads the same.
        value, end = result
        expected, expected_end = fastavro_read(schema, corrupted)
        assert same(value, expected) and end == expected_end


# --- through the codec -------------------------------------------------------------------------


def frame(codec: FramedCodec, body: bytes) -> bytes:
    return codec._header + body


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        # One event, then less than the 29 bytes any StepEvent takes.
        (b"\x02" + b"\x02\x00", "truncated: block of 1 items at offset 10 needs at least 29"),
        # Padded so the block passes the size check and the first field is reached.
        (b"\x02\x01" + bytes(40), "negative length -1 at offset 11"),
        (b"\x02\x02\xff" + bytes(40), "invalid UTF-8"),
        (b"\x00\x00", "1 trailing bytes"),
    ],
)
def test_codec_reports_reader_errors_as_decode_error(body: bytes, reason: str) -> None:
    with pytest.raises(DecodeError) as info:
        STEPS.decode(frame(STEPS.batch_codec, body))
    assert info.value.reason.startswith("avro body does not match StepBatch: ")
    assert reason in info.value.reason


def test_codec_reports_bad_enum_index() -> None:
    control = CONTRACT["Control"]
    body = encode(
        control._schema,
        {
            "agent_id": "a",
            "mode": "halted",
            "scope": "agent",
            "reason": "r",
            "seq": 1,
            "issued_at": 1,
        },
    )
    # The mode index follows agent_id (length byte + 1 char) and is the body's third byte.
    assert body[2] == 8
    with pytest.raises(DecodeError, match=r"Control: enum dev\.tripwire\.Mode index 5 out of"):
        control.decode(frame(control, body[:2] + b"\x0a" + body[3:]))


def test_codec_fast_path_equals_fastavro_path() -> None:
    events = list(itertools.islice(fleet_events(seed=7, agents=20, scenarios=SCENARIOS), 200))
    value = STEPS.encode(events)
    schema = CONTRACT["StepBatch"]._schema
    assert same(STEPS.decode(value), fastavro_read(schema, value[HEADER_SIZE:])[0]["events"])


# --- column readers ----------------------------------------------------------------------------


def columns_or_error(schema: Any, body: bytes) -> tuple[list[list[Any]], int] | None:
    """What the column reader appends to fresh columns, or None when it rejects ``body``."""
    columns: list[list[Any]] = [[] for _ in schema["fields"]]
    try:
        end = compile_column_reader(schema)(body, 0, columns)
    except AvroDecodeError as exc:
        assert exc.reason
        return None
    return columns, end


def as_columns(schema: Any, records: list[dict[str, Any]]) -> list[list[Any]]:
    return [[r[f["name"]] for r in records] for f in schema["fields"]]


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_column_reader_gives_the_record_readers_values_by_field(data: st.DataObject) -> None:
    fields = data.draw(st.lists(avro_schemas(), max_size=6))
    top = {"type": "record", "name": "?",
           "fields": [{"name": f"f{i}", "type": t} for i, t in enumerate(fields)]}
    schema = parse_schema(with_unique_names(top))
    records = data.draw(st.lists(values(schema, schema.get("__named_schemas", {})), max_size=5))
    body = encode(parse_schema({"type": "array", "items": schema}), records)
    expected, end = compile_reader(parse_schema({"type": "array", "items": schema}))(body, 0)
    got = columns_or_error(schema, body)
    assert got is not None
    assert same(got[0], as_columns(schema, expected))
    assert got[1] == end == len(body)


def test_column_reader_appends_to_what_the_columns_already_hold() -> None:
    schema = CONTRACT["StepEvent"]._schema
    events = list(itertools.islice(fleet_events(seed=3, agents=5, scenarios=SCENARIOS), 120))
    columns: list[list[Any]] = [[] for _ in schema["fields"]]
    read = compile_column_reader(schema)
    for start in range(0, 120, 40):
        body = encode(CONTRACT["StepBatch"]._schema, {"events": events[start:start + 40]})
        assert read(body, 0, columns) == len(body)
    assert columns == as_columns(schema, events)


@settings(max_examples=300)
@given(body=st.binary(max_size=300))
def test_column_reader_rejects_what_the_record_reader_rejects(body: bytes) -> None:
    schema = CONTRACT["StepEvent"]._schema
    whole = decode_or_error(compile_reader(CONTRACT["StepBatch"]._schema), body)
    got = columns_or_error(schema, body)
    if whole is None:
        assert got is None
    else:
        assert got is not None
        assert got == (as_columns(schema, whole[0]["events"]), whole[1])


def row_or_error(schema: Any, body: bytes) -> tuple[tuple[Any, ...], int] | None:
    """What the row reader reads from ``body``, or None when it rejects it."""
    try:
        return compile_row_reader(schema)(body, 0)  # type: ignore[return-value]
    except AvroDecodeError as exc:
        assert exc.reason
        return None


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_row_reader_gives_the_record_readers_values_in_field_order(data: st.DataObject) -> None:
    fields = data.draw(st.lists(avro_schemas(), max_size=6))
    top = {"type": "record", "name": "?",
           "fields": [{"name": f"f{i}", "type": t} for i, t in enumerate(fields)]}
    schema = parse_schema(with_unique_names(top))
    record = data.draw(values(schema, schema.get("__named_schemas", {})))
    body = encode(schema, record) + b"tail"
    expected, end = compile_reader(schema)(body, 0)
    got = row_or_error(schema, body)
    assert got is not None
    assert same(list(got[0]), [expected[f["name"]] for f in schema["fields"]])
    assert got[1] == end == len(body) - 4


@settings(max_examples=200)
@given(events=st.lists(contract_values("StepEvent"), min_size=1, max_size=8))
def test_step_event_rows_transposed_are_the_batch_readers_columns(
        events: list[dict[str, Any]]) -> None:
    schema = CONTRACT["StepEvent"]._schema
    read = compile_row_reader(schema)
    rows = []
    for event in events:
        body = encode(schema, event)
        row, end = read(body, 0)
        assert end == len(body)
        rows.append(row)
    batch = encode(CONTRACT["StepBatch"]._schema, {"events": events})
    got = columns_or_error(schema, batch)
    assert got is not None
    assert same([list(c) for c in zip(*rows, strict=True)], got[0])  # NaN costs compare equal
    assert got[1] == len(batch)


@settings(max_examples=300)
@given(body=st.binary(max_size=300))
def test_row_reader_rejects_what_the_record_reader_rejects(body: bytes) -> None:
    schema = CONTRACT["StepEvent"]._schema
    whole = decode_or_error(compile_reader(schema), body)
    got = row_or_error(schema, body)
    if whole is None:
        assert got is None
    else:
        assert got is not None
        assert same(list(got[0]), [whole[0][f["name"]] for f in schema["fields"]])
        assert got[1] == whole[1]


def test_column_reader_needs_a_record_schema() -> None:
    with pytest.raises(ValueError, match="record schema"):
        compile_column_reader(parse_schema({"type": "array", "items": "long"}))
