"""Wire codecs for the Tripwire contract: Avro single-object encoding, plus a JSON ingest path.

Frame layout (Avro spec, "Single-object encoding")::

    C3 01 | 8-byte little-endian CRC-64-AVRO fingerprint of the writer schema | Avro binary body

The fingerprint identifies the writer schema, so a reader can resolve bodies written by older
or newer producers once their schema is registered with ``register_writer``. Each writer is
known by several fingerprints: the spec's canonical form and the variants common libraries
compute for the same schema (``canonical_form_variants``), so a producer that frames with its
library's own fingerprint function lands.

The canonical in-memory record is a plain dict with every field of the reader schema present,
enums as ``str``, timestamps as ``int`` epoch milliseconds and maps as ``dict``. Bodies are
read with copies of the schemas that have ``logicalType`` stripped: the stream worker decodes
tens of thousands of events per second and allocating a ``datetime``/``UUID`` per field would
cost more than the decode itself. Fingerprints are still computed from the contract schema as
written (Parsing Canonical Form ignores logical types, so both give the same value anyway).
"""

from __future__ import annotations

import copy
import functools
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from io import BytesIO
from pathlib import Path
from typing import Any

from fastavro import parse_schema, schemaless_reader, schemaless_writer
from pydantic import TypeAdapter, ValidationError

from tripwire.schemas.avro_decoder import AvroDecodeError, compile_reader
from tripwire.schemas.models import StepEvent

SCHEMA_DIR = Path(__file__).resolve().parent
STEP_EVENT_SCHEMA = SCHEMA_DIR / "step_event.avsc"
STEP_BATCH_SCHEMA = SCHEMA_DIR / "step_batch.avsc"
CONTROL_SCHEMA = SCHEMA_DIR / "control.avsc"
DETECTION_SCHEMA = SCHEMA_DIR / "detection.avsc"
COMMAND_SCHEMA = SCHEMA_DIR / "command.avsc"
CONTROL_ACK_SCHEMA = SCHEMA_DIR / "control_ack.avsc"
APPROVAL_REQUEST_SCHEMA = SCHEMA_DIR / "approval_request.avsc"
APPROVAL_DECISION_SCHEMA = SCHEMA_DIR / "approval_decision.avsc"

MAGIC = b"\xc3\x01"
FINGERPRINT_SIZE = 8
HEADER_SIZE = len(MAGIC) + FINGERPRINT_SIZE

SchemaSource = Path | str | Mapping[str, Any]
"""A schema as a path to an .avsc file or as its already loaded JSON object."""


class DecodeError(Exception):
    """A record value that cannot be turned into contract records.

    ``reason`` is short and human readable; it goes into dead-letter headers and logs.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# --- fingerprints -------------------------------------------------------------------------

_RABIN_EMPTY = 0xC15D213AA4D7A795


def _rabin_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        fp = byte
        for _ in range(8):
            fp = (fp >> 1) ^ (_RABIN_EMPTY & -(fp & 1))
        table.append(fp)
    return tuple(table)


_RABIN_TABLE = _rabin_table()


def crc64_avro(data: bytes) -> int:
    """CRC-64-AVRO (Rabin) fingerprint of ``data``, as specified in the Avro spec."""
    fp = _RABIN_EMPTY
    for byte in data:
        fp = (fp >> 8) ^ _RABIN_TABLE[(fp ^ byte) & 0xFF]
    return fp


_PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})
_NAMED_KINDS = frozenset({"record", "error", "enum", "fixed"})


def _json_str(value: str) -> str:
    # [STRINGS]: the canonical form carries UTF-8, not \u escapes.
    return json.dumps(value, ensure_ascii=False)


def parsing_canonical_form(
    parsed: Mapping[str, Any], *, inline_references: bool = True, primitive_objects: bool = False
) -> str:
    """Parsing Canonical Form of a schema parsed by ``fastavro.parse_schema``.

    Written here rather than taken from fastavro because fastavro emits a bare name for a type
    that was defined in another file (StepBatch -> StepEvent, Command -> Mode); the spec
    requires the first occurrence of every named type to be inlined.

    The keyword arguments reproduce what common libraries compute instead of the spec's form,
    so that frames from their producers are recognised (see ``canonical_form_variants``):
    ``inline_references=False`` leaves a type defined in another file as its full name (fastavro
    1.x ``to_parsing_canonical_form`` on a schema parsed with ``named_schemas``);
    ``primitive_objects=True`` keeps a primitive that carries a logical type as an object,
    ``{"type":"long"}`` (the reference ``avro`` package 1.12 for Python).
    """
    named: Mapping[str, Any] = parsed.get("__named_schemas", {})
    seen: set[str] = set()

    def form(schema: Any) -> str:
        if isinstance(schema, list):
            return "[" + ",".join(form(branch) for branch in schema) + "]"
        if isinstance(schema, str):
            if schema in _PRIMITIVES or schema in seen or not inline_references:
                return _json_str(schema)
            return form(named[schema])
        kind = schema["type"]
        if kind in _NAMED_KINDS:
            name = schema["name"]
            if name in seen:
                return _json_str(name)
            seen.add(name)
            head = '{"name":' + _json_str(name) + ',"type":' + _json_str(kind)
            if kind == "enum":
                symbols = ",".join(_json_str(s) for s in schema["symbols"])
                return head + ',"symbols":[' + symbols + "]}"
            if kind == "fixed":
                return head + ',"size":' + str(int(schema["size"])) + "}"
            fields = ",".join(
                '{"name":' + _json_str(f["name"]) + ',"type":' + form(f["type"]) + "}"
                for f in schema["fields"]
            )
            return head + ',"fields":[' + fields + "]}"
        if kind == "array":
            return '{"type":"array","items":' + form(schema["items"]) + "}"
        if kind == "map":
            return '{"type":"map","values":' + form(schema["values"]) + "}"
        # A primitive written as an object, e.g. {"type": "long", "logicalType": ...}.
        if primitive_objects and isinstance(kind, str) and kind in _PRIMITIVES:
            return '{"type":' + _json_str(kind) + "}"
        return form(kind)

    return form(parsed)


def canonical_form_variants(parsed: Mapping[str, Any]) -> tuple[str, ...]:
    """The spec's Parsing Canonical Form first, then the forms other libraries compute for the
    same schema (duplicates removed).

    Measured on the contract schemas (tests/test_producers.py): fastavro on a self-contained
    schema gives the spec's form (which Java's SchemaNormalization implements; no JVM here to
    measure it); fastavro on StepBatch parsed with StepEvent in ``named_schemas`` leaves
    ``"dev.tripwire.StepEvent"`` bare; the ``avro`` package writes ``event_id``/``ts`` as
    ``{"type":"string"}``/``{"type":"long"}``. Each is a
    different CRC-64-AVRO, and a producer framing with any of them means the same writer.
    """
    forms: list[str] = []
    for inline in (True, False):
        for objects in (False, True):
            form = parsing_canonical_form(
                parsed, inline_references=inline, primitive_objects=objects
            )
            if form not in forms:
                forms.append(form)
    return tuple(forms)


@functools.lru_cache(maxsize=256)
def _form_fingerprint(form: str) -> bytes:
    # Cached: codecs are built per process and per test, and the CRC is pure Python (~0.5 ms
    # for StepEvent's form); the same few forms come back every time.
    return crc64_avro(form.encode("utf-8")).to_bytes(FINGERPRINT_SIZE, "little")


def schema_fingerprint(parsed: Mapping[str, Any]) -> bytes:
    """The 8 fingerprint bytes as they appear in a single-object frame (little-endian)."""
    return _form_fingerprint(parsing_canonical_form(parsed))


def schema_fingerprints(parsed: Mapping[str, Any]) -> tuple[bytes, ...]:
    """Frame fingerprints of every canonical form variant, the spec's first."""
    return tuple(_form_fingerprint(form) for form in canonical_form_variants(parsed))


def fingerprint_hex(fingerprint: bytes) -> str:
    """Display form of frame fingerprint bytes: the 64-bit value in hex, as Avro tools show it."""
    return f"0x{int.from_bytes(fingerprint, 'little'):016x}"


# --- schema loading -----------------------------------------------------------------------


def load_schema(source: SchemaSource) -> dict[str, Any]:
    """A private deep copy of a schema, from a file path or a JSON object."""
    if isinstance(source, Mapping):
        # Round-trip through JSON so later parsing can never alias the caller's object.
        return json.loads(json.dumps(source))
    return json.loads(Path(source).read_text(encoding="utf-8"))


def _without_logical_types(schema: Any) -> Any:
    if isinstance(schema, dict):
        return {
            # Defaults are data, not schema; a map default may legitimately hold any key.
            key: value if key == "default" else _without_logical_types(value)
            for key, value in schema.items()
            if key != "logicalType"
        }
    if isinstance(schema, list):
        return [_without_logical_types(item) for item in schema]
    return schema


@dataclass(frozen=True, slots=True)
class _ParsedPair:
    contract: dict[str, Any]
    """Parsed as written, logical types included: the source of the fingerprint."""
    plain: dict[str, Any]
    """Parsed with logical types stripped: what the hot path reads and writes with."""


def _parse_pair(schema: SchemaSource, dependencies: Sequence[SchemaSource]) -> _ParsedPair:
    contract_named: dict[str, Any] = {}
    plain_named: dict[str, Any] = {}
    for dependency in dependencies:
        raw = load_schema(dependency)
        parse_schema(raw, contract_named)
        parse_schema(_without_logical_types(raw), plain_named)
    raw = load_schema(schema)
    return _ParsedPair(
        contract=parse_schema(raw, contract_named),
        plain=parse_schema(_without_logical_types(raw), plain_named),
    )


# --- schema resolution helpers ------------------------------------------------------------

Fixup = Callable[[Any], Any]


def _follow(schema: Any, named: Mapping[str, Any]) -> Any:
    while isinstance(schema, str) and schema in named:
        schema = named[schema]
    return schema


def _resolution_fixup(
    reader: Any, writer: Any, reader_named: Mapping[str, Any], writer_named: Mapping[str, Any]
) -> Fixup | None:
    """Post-processing that makes a record resolved from another writer canonical.

    fastavro's resolution differs from a same-schema read in two ways that matter downstream:

    * a reader field the writer lacks, with a ``{}``/``[]`` default, is filled with the very
      default object held in the reader schema, so every decoded record would share one
      dict/list and a consumer mutating one event's ``attributes`` would change all later ones;
    * fields come out in writer order with defaulted fields appended, not in reader order.

    The returned function (None when the pair needs nothing) fixes both and returns the
    record. Records reached through unions are not walked (no contract schema has one).
    """
    reader = _follow(reader, reader_named)
    writer = _follow(writer, writer_named)
    if not isinstance(reader, dict) or not isinstance(writer, dict):
        return None
    kind = reader.get("type")
    if kind != writer.get("type"):
        return None
    if kind in ("array", "map"):
        key = "items" if kind == "array" else "values"
        inner = _resolution_fixup(reader[key], writer[key], reader_named, writer_named)
        if inner is None:
            return None
        if kind == "array":

            def fix_items(items: list[Any]) -> list[Any]:
                return [inner(item) for item in items]

            return fix_items

        def fix_values(values: dict[str, Any]) -> dict[str, Any]:
            return {k: inner(v) for k, v in values.items()}

        return fix_values
    if kind != "record":
        return None

    writer_fields = {f["name"]: f for f in writer["fields"]}
    fresh: list[tuple[str, Any]] = []
    nested: list[tuple[str, Fixup]] = []
    in_writer: dict[str, int] = {}
    for field in reader["fields"]:
        names = (field["name"], *field.get("aliases", ()))
        match = next((writer_fields[n] for n in names if n in writer_fields), None)
        if match is None:
            if isinstance(field.get("default"), dict | list):
                fresh.append((field["name"], field["default"]))
            continue
        in_writer[field["name"]] = list(writer_fields).index(match["name"])
        inner = _resolution_fixup(field["type"], match["type"], reader_named, writer_named)
        if inner is not None:
            nested.append((field["name"], inner))
    reader_order = [f["name"] for f in reader["fields"]]
    # The order fastavro produces: writer's fields (those the reader knows), then defaults.
    resolved_order = sorted(in_writer, key=in_writer.__getitem__) + [
        name for name in reader_order if name not in in_writer
    ]
    order = reader_order if resolved_order != reader_order else None
    if not fresh and not nested and order is None:
        return None

    def fix_record(record: dict[str, Any]) -> dict[str, Any]:
        for name, default in fresh:
            record[name] = copy.deepcopy(default)
        for name, inner in nested:
            record[name] = inner(record[name])
        if order is not None:
            record = {name: record[name] for name in order}
        return record

    return fix_record


@dataclass(frozen=True, slots=True)
class _WriterEntry:
    writer: dict[str, Any]
    reader: dict[str, Any] | None
    """None when the writer is the reader schema itself: fastavro then skips resolution."""
    fixup: Fixup | None
    fallbacks: tuple[_WriterEntry, ...] = ()
    """Other writers whose frames carry the same fingerprint, tried in turn when this one
    cannot read a body. Only a variant form can be shared: fastavro's bare-name form of
    StepBatch names StepEvent without its fields, so it is the same for every StepEvent
    version."""


# --- framed codec -------------------------------------------------------------------------


def _frame_fingerprint(value: bytes) -> bytes:
    """Validate the single-object header and return its fingerprint bytes."""
    if len(value) < HEADER_SIZE:
        if not value:
            raise DecodeError("bad framing: empty value")
        if value[:2] != MAGIC[: len(value)]:
            raise DecodeError("bad framing: missing C3 01 marker")
        raise DecodeError(f"bad framing: truncated header ({len(value)} of {HEADER_SIZE} bytes)")
    if value[:2] != MAGIC:
        reason = f"bad framing: missing C3 01 marker (got {value[:2].hex(' ')})"
        if value[0] == 0:
            # Most Kafka shops' Avro serializers write this; say so instead of only "bad".
            schema_id = int.from_bytes(value[1:5], "big")
            reason += (f"; 00 + schema id {schema_id} is the Confluent wire format, which"
                       " this worker does not read: frame with Avro single-object encoding")
        raise DecodeError(reason)
    return value[2:HEADER_SIZE]


def _as_bytes(value: Any) -> bytes:
    if type(value) is bytes:
        return value
    if value is None:
        raise DecodeError("bad framing: null value (tombstone)")
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    raise DecodeError(f"bad framing: value is {type(value).__name__}, not bytes")


class FramedCodec:
    """Single-object encoding of one record schema.

    ``dependencies`` are schema files parsed first because ``schema`` refers to their named
    types (StepBatch -> StepEvent, Command -> Mode in control.avsc).
    """

    def __init__(self, schema: SchemaSource, dependencies: Sequence[SchemaSource] = ()) -> None:
        pair = _parse_pair(schema, dependencies)
        self.name: str = pair.contract["name"]
        """Full name of the record, e.g. ``dev.tripwire.StepBatch``."""
        fingerprints = schema_fingerprints(pair.contract)
        self.fingerprint: bytes = fingerprints[0]
        self._schema = pair.plain
        self._header = MAGIC + self.fingerprint
        self._short_name = self.name.rpartition(".")[2]
        # Bodies in the codec's own schema (nearly all traffic) skip fastavro, which is several
        # times slower; fastavro still resolves other writer versions and does all encoding.
        self._read_own = compile_reader(pair.plain)
        own = _WriterEntry(writer=pair.plain, reader=None, fixup=None)
        self._writers: dict[bytes, _WriterEntry] = {
            fingerprint: own for fingerprint in fingerprints
        }

    def register_writer(
        self, schema: SchemaSource, dependencies: Sequence[SchemaSource] = ()
    ) -> bytes:
        """Accept frames written with another version of this record's schema.

        Bodies carrying that schema's fingerprint are resolved to this codec's schema with
        Avro schema resolution. Returns the writer's fingerprint. Incompatibilities that only
        show on data (e.g. an enum symbol the reader lacks) surface as DecodeError at decode.
        """
        pair = _parse_pair(schema, dependencies)
        writer_name = pair.plain["name"]
        aliases = self._schema.get("aliases", ())
        if writer_name != self.name and writer_name not in aliases:
            raise ValueError(f"writer schema {writer_name} cannot be read as {self.name}")
        fingerprints = schema_fingerprints(pair.contract)
        fingerprint = fingerprints[0]
        if fingerprint in self._writers:
            return fingerprint
        fixup = _resolution_fixup(
            self._schema,
            pair.plain,
            self._schema.get("__named_schemas", {}),
            pair.plain.get("__named_schemas", {}),
        )
        entry = _WriterEntry(writer=pair.plain, reader=self._schema, fixup=fixup)
        for variant in fingerprints:
            known = self._writers.get(variant)
            if known is None or variant == fingerprint:
                self._writers[variant] = entry
            elif entry not in known.fallbacks:
                self._writers[variant] = replace(known, fallbacks=(*known.fallbacks, entry))
        return fingerprint

    def encode(self, record: Mapping[str, Any]) -> bytes:
        """Frame one record. Timestamps must be int epoch ms, enums str (the canonical dict).

        Missing fields that have a default are written with it; missing required fields and
        unknown field names raise ValueError, so a typo cannot silently drop data.
        """
        buf = BytesIO()
        buf.write(self._header)
        schemaless_writer(buf, self._schema, record, strict_allow_default=True)
        return buf.getvalue()

    def decode(self, value: bytes) -> dict[str, Any]:
        """One framed record as a canonical dict; DecodeError for anything else."""
        value = _as_bytes(value)
        fingerprint = _frame_fingerprint(value)
        entry = self._writers.get(fingerprint)
        if entry is None:
            raise DecodeError(f"unknown schema fingerprint {fingerprint_hex(fingerprint)}")
        return self._read_body(value, entry)

    def _read_body(self, value: bytes, entry: _WriterEntry) -> dict[str, Any]:
        if entry.fallbacks:
            try:
                return self._read_one(value, entry)
            except DecodeError:
                for fallback in entry.fallbacks:
                    try:
                        return self._read_one(value, fallback)
                    except DecodeError:
                        continue
                raise
        return self._read_one(value, entry)

    def _read_one(self, value: bytes, entry: _WriterEntry) -> dict[str, Any]:
        if entry.reader is None:
            try:
                record, end = self._read_own(value, HEADER_SIZE)
            except AvroDecodeError as exc:
                raise DecodeError(
                    f"avro body does not match {self._short_name}: {exc.reason}"
                ) from exc
        else:
            record, end = self._read_resolved(value, entry)
        trailing = len(value) - end
        if trailing:
            raise DecodeError(
                f"avro body does not match {self._short_name}: {trailing} trailing bytes"
            )
        if entry.fixup is not None:
            record = entry.fixup(record)
        return record

    def _read_resolved(self, value: bytes, entry: _WriterEntry) -> tuple[dict[str, Any], int]:
        fo = BytesIO(value)
        fo.seek(HEADER_SIZE)
        try:
            record = schemaless_reader(fo, entry.writer, entry.reader)
        except EOFError as exc:
            raise DecodeError(f"avro body does not match {self._short_name}: truncated") from exc
        except Exception as exc:
            # fastavro signals corrupt input with many exception types (IndexError, ValueError,
            # UnicodeDecodeError, SchemaResolutionError, ...); callers must only see one.
            raise DecodeError(
                f"avro body does not match {self._short_name}: {type(exc).__name__}: {exc}"
            ) from exc
        return record, fo.tell()


# --- step batches -------------------------------------------------------------------------

_EVENT_LIST = TypeAdapter(list[StepEvent])
_MAX_REPORTED_ERRORS = 3


def _is_json(content_type: str) -> bool:
    if content_type == "application/json":
        return True
    return content_type.partition(";")[0].strip().lower() == "application/json"


def _json_reason(exc: ValidationError) -> str:
    errors = exc.errors(include_url=False, include_context=False, include_input=False)
    for error in errors:
        if error["type"] == "json_invalid":
            return f"invalid JSON: {error['msg']}"
    parts = []
    for error in errors[:_MAX_REPORTED_ERRORS]:
        loc = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error["loc"])
        parts.append(f"{loc.lstrip('.') or '(value)'}: {error['msg']}")
    more = len(errors) - _MAX_REPORTED_ERRORS
    suffix = f" (+{more} more)" if more > 0 else ""
    return "JSON does not match StepEvent: " + "; ".join(parts) + suffix


class StepBatchCodec:
    """Codec for agent-steps record values.

    Decodes framed StepBatch records, framed bare StepEvent records (returned as a one-event
    list) and, with ``content_type="application/json"``, a JSON object or array of objects.
    Every path returns the same canonical event dicts. The JSON path always validates against
    the current ``schemas.models.StepEvent``, whatever Avro schemas this codec was built with.
    """

    def __init__(
        self,
        event_schema: SchemaSource = STEP_EVENT_SCHEMA,
        batch_schema: SchemaSource = STEP_BATCH_SCHEMA,
    ) -> None:
        self._batch_source = load_schema(batch_schema)
        self.event_codec = FramedCodec(event_schema)
        self.batch_codec = FramedCodec(self._batch_source, dependencies=[event_schema])

    def register_writer(
        self, schema: SchemaSource, dependencies: Sequence[SchemaSource] = ()
    ) -> tuple[bytes, ...]:
        """Accept frames from another StepEvent (or StepBatch) schema version.

        A StepEvent schema registers both framings an old/new producer may send: the bare
        event and a StepBatch of such events. Returns the registered fingerprints.
        """
        raw = load_schema(schema)
        name = _parse_pair(raw, dependencies).plain["name"]
        if name == self.event_codec.name:
            return (
                self.event_codec.register_writer(raw, dependencies),
                self.batch_codec.register_writer(self._batch_source, [*dependencies, raw]),
            )
        return (self.batch_codec.register_writer(raw, dependencies),)

    def encode(self, events: Sequence[Mapping[str, Any]]) -> bytes:
        """One framed StepBatch holding ``events`` (canonical dicts)."""
        return self.batch_codec.encode({"events": events})

    def decode(self, value: bytes, content_type: str | None = None) -> list[dict[str, Any]]:
        """Canonical event dicts of one record value; DecodeError with a reason otherwise.

        An empty batch (valid Avro, or JSON ``[]``) decodes to an empty list.
        """
        value = _as_bytes(value)
        if content_type is not None and _is_json(content_type):
            return self._decode_json(value)
        fingerprint = _frame_fingerprint(value)
        entry = self.batch_codec._writers.get(fingerprint)
        if entry is not None:
            return self.batch_codec._read_body(value, entry)["events"]
        entry = self.event_codec._writers.get(fingerprint)
        if entry is not None:
            return [self.event_codec._read_body(value, entry)]
        raise DecodeError(f"unknown schema fingerprint {fingerprint_hex(fingerprint)}")

    @staticmethod
    def _decode_json(value: bytes) -> list[dict[str, Any]]:
        try:
            if value.lstrip()[:1] == b"[":
                events = _EVENT_LIST.validate_json(value, strict=True)
            else:
                events = [StepEvent.model_validate_json(value, strict=True)]
        except ValidationError as exc:
            raise DecodeError(_json_reason(exc)) from exc
        return [event.to_record() for event in events]


def control_codec() -> FramedCodec:
    """A new codec for dev.tripwire.Control (each caller owns its registered writers)."""
    return FramedCodec(CONTROL_SCHEMA)


def detection_codec() -> FramedCodec:
    """A new codec for dev.tripwire.Detection."""
    return FramedCodec(DETECTION_SCHEMA)


def command_codec() -> FramedCodec:
    """A new codec for dev.tripwire.Command; control.avsc defines the Mode it refers to."""
    return FramedCodec(COMMAND_SCHEMA, dependencies=[CONTROL_SCHEMA])


ACK_IDENTITY_FIELDS = ("agent_version", "workflow", "environment")
"""Fields ControlAck gained after its first version: the guard's identity, so an operator's
command can count the guards its scope covers."""


def control_ack_codec() -> FramedCodec:
    """A new codec for dev.tripwire.ControlAck; reads acks of guards from before
    :data:`ACK_IDENTITY_FIELDS` too (those fields then None)."""
    codec = FramedCodec(CONTROL_ACK_SCHEMA)
    schema = json.loads(CONTROL_ACK_SCHEMA.read_text(encoding="utf-8"))
    schema["fields"] = [f for f in schema["fields"] if f["name"] not in ACK_IDENTITY_FIELDS]
    codec.register_writer(schema)
    return codec


def approval_request_codec() -> FramedCodec:
    """A new codec for dev.tripwire.ApprovalRequest (defines the ApprovalKind enum)."""
    return FramedCodec(APPROVAL_REQUEST_SCHEMA)


def approval_decision_codec() -> FramedCodec:
    """A new codec for dev.tripwire.ApprovalDecision; approval_request.avsc defines its
    ApprovalKind."""
    return FramedCodec(APPROVAL_DECISION_SCHEMA, dependencies=[APPROVAL_REQUEST_SCHEMA])
