"""OTLP trace records as the OpenTelemetry Collector's Kafka exporter writes them -> plain spans.

One record value is one ``ExportTraceServiceRequest``:

* ``otlp_proto`` (the exporter's default): the protobuf bytes, decoded with the generated
  classes of the ``opentelemetry-proto`` package (upb, C);
* ``otlp_json``: the OTLP/JSON encoding (OTLP spec, "JSON Protobuf Encoding"): camelCase keys,
  trace and span ids as hex strings (not protobuf-JSON base64), 64-bit integers as decimal
  strings, enums as integers. Receivers also see snake_case keys, enum names and base64 ids
  from producers that used a generic protobuf-JSON printer; those are accepted too.

Both produce the same :class:`Span` objects, so the mapping (``streams/otlp_mapping.py``) is
written once and never sees protobuf. Anything that is not a request raises
:class:`OtlpDecodeError` with a reason for the dead-letter header.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from google.protobuf.message import DecodeError as ProtobufDecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

OtlpEncoding = Literal["otlp_proto", "otlp_json"]
ENCODINGS: tuple[str, ...] = ("otlp_proto", "otlp_json")

STATUS_UNSET, STATUS_OK, STATUS_ERROR = 0, 1, 2
_STATUS_NAMES = {"STATUS_CODE_UNSET": 0, "STATUS_CODE_OK": 1, "STATUS_CODE_ERROR": 2}

AttributeValue = str | bool | int | float | bytes | list | dict | None


class OtlpDecodeError(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(slots=True)
class Span:
    """One span with its resource, in plain Python types. Ids are lowercase hex."""

    trace_id: str
    span_id: str
    parent_span_id: str
    """Empty for a root span."""
    name: str
    start_ns: int
    end_ns: int
    status_code: int
    status_message: str
    attributes: dict[str, AttributeValue]
    resource: dict[str, AttributeValue]
    """Shared by every span of the same ResourceSpans; never mutated."""
    index: int = 0
    """Position in the request (resource, scope and span order), for dead-letter headers."""
    events: list[tuple[str, dict[str, AttributeValue]]] = field(default_factory=list)


def decode_request(value: bytes | None, encoding: OtlpEncoding) -> list[Span]:
    """The spans of one record value, in request order; OtlpDecodeError when it is not one."""
    if not value:
        raise OtlpDecodeError("empty record value")
    if encoding == "otlp_json":
        return _decode_json(value)
    return _decode_proto(value)


# --- protobuf --------------------------------------------------------------------------------


def _decode_proto(value: bytes) -> list[Span]:
    try:
        request = ExportTraceServiceRequest.FromString(value)
    except ProtobufDecodeError as exc:
        hint = " (the value looks like JSON: is the exporter's encoding otlp_json?)" \
            if value.lstrip()[:1] in (b"{", b"[") else ""
        detail = str(exc).rpartition(": ")[2] or "undecodable"  # drop the type name
        raise OtlpDecodeError(f"not an OTLP protobuf ExportTraceServiceRequest: {detail}{hint}") \
            from None
    spans: list[Span] = []
    index = 0
    for rs in request.resource_spans:
        resource = _proto_attributes(rs.resource.attributes)
        for ss in rs.scope_spans:
            for sp in ss.spans:
                events = [(e.name, _proto_attributes(e.attributes)) for e in sp.events] \
                    if sp.events else []
                spans.append(Span(
                    trace_id=sp.trace_id.hex(), span_id=sp.span_id.hex(),
                    parent_span_id=sp.parent_span_id.hex(), name=sp.name,
                    start_ns=sp.start_time_unix_nano, end_ns=sp.end_time_unix_nano,
                    status_code=sp.status.code, status_message=sp.status.message,
                    attributes=_proto_attributes(sp.attributes), resource=resource,
                    index=index, events=events))
                index += 1
    if not spans:
        # Protobuf parses many byte strings as a message made only of unknown fields, and the
        # Collector never exports an empty request: either way nothing here is a span.
        raise OtlpDecodeError("OTLP protobuf request holds no spans (not an "
                              "ExportTraceServiceRequest?)")
    return spans


def _proto_attributes(kvs: Any) -> dict[str, AttributeValue]:
    return {kv.key: _proto_value(kv.value) for kv in kvs}


def _proto_value(v: Any) -> AttributeValue:
    which = v.WhichOneof("value")
    if which is None:
        return None
    if which == "array_value":
        return [_proto_value(x) for x in v.array_value.values]
    if which == "kvlist_value":
        return {kv.key: _proto_value(kv.value) for kv in v.kvlist_value.values}
    return getattr(v, which)


# --- OTLP/JSON -------------------------------------------------------------------------------


def _decode_json(value: bytes) -> list[Span]:
    try:
        doc = json.loads(value)
    except (ValueError, UnicodeDecodeError) as exc:
        hint = "" if value.lstrip()[:1] in (b"{", b"[") else \
            " (is the exporter's encoding otlp_proto?)"
        raise OtlpDecodeError(f"not OTLP/JSON: {exc}{hint}") from None
    if not isinstance(doc, dict):
        raise OtlpDecodeError(f"not OTLP/JSON: top level is {type(doc).__name__}, not an object")
    resource_spans = _get(doc, "resourceSpans", "resource_spans")
    if resource_spans is None:
        raise OtlpDecodeError("not an OTLP/JSON ExportTraceServiceRequest: no resourceSpans")
    spans: list[Span] = []
    index = 0
    try:
        for rs in _list(resource_spans, "resourceSpans"):
            resource = _json_attributes(_get(_get(rs, "resource") or {}, "attributes"))
            for ss in _list(_get(rs, "scopeSpans", "scope_spans") or [], "scopeSpans"):
                for sp in _list(_get(ss, "spans") or [], "spans"):
                    spans.append(_json_span(sp, resource, index))
                    index += 1
    except (TypeError, ValueError, AttributeError) as exc:
        raise OtlpDecodeError(f"malformed OTLP/JSON span {index}: {exc}") from None
    if not spans:
        raise OtlpDecodeError("OTLP/JSON request holds no spans")
    return spans


def _json_span(sp: Mapping[str, Any], resource: dict[str, AttributeValue], index: int) -> Span:
    status = _get(sp, "status") or {}
    code = _get(status, "code") or 0
    if isinstance(code, str):
        code = _STATUS_NAMES.get(code, 0) if not code.isdigit() else int(code)
    events = [(_get(e, "name") or "", _json_attributes(_get(e, "attributes")))
              for e in _get(sp, "events") or []]
    return Span(
        trace_id=_json_id(_get(sp, "traceId", "trace_id"), 16, "traceId"),
        span_id=_json_id(_get(sp, "spanId", "span_id"), 8, "spanId"),
        parent_span_id=_json_id(_get(sp, "parentSpanId", "parent_span_id"), 8, "parentSpanId",
                                optional=True),
        name=str(_get(sp, "name") or ""),
        start_ns=int(_get(sp, "startTimeUnixNano", "start_time_unix_nano") or 0),
        end_ns=int(_get(sp, "endTimeUnixNano", "end_time_unix_nano") or 0),
        status_code=int(code), status_message=str(_get(status, "message") or ""),
        attributes=_json_attributes(_get(sp, "attributes")), resource=resource, index=index,
        events=events)


def _json_id(raw: Any, size: int, name: str, optional: bool = False) -> str:
    if raw is None or raw == "":
        if optional:
            return ""
        raise ValueError(f"{name} missing")
    if not isinstance(raw, str):
        raise ValueError(f"{name} is {type(raw).__name__}, not a string")
    if len(raw) == 2 * size:
        try:
            bytes.fromhex(raw)
            return raw.lower()
        except ValueError:
            pass
    try:  # protobuf-JSON printers write bytes as base64
        decoded = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        decoded = b""
    if len(decoded) == size:
        return decoded.hex()
    raise ValueError(f"{name} {raw!r} is neither {2 * size} hex digits nor base64 of {size} bytes")


def _json_attributes(kvs: Any) -> dict[str, AttributeValue]:
    if not kvs:
        return {}
    return {kv["key"]: _json_value(kv.get("value")) for kv in kvs}


def _json_value(v: Any) -> AttributeValue:
    if not v:
        return None
    for key, convert in _JSON_SCALARS:
        if key in v:
            return convert(v[key])
    if "arrayValue" in v or "array_value" in v:
        arr = _get(v, "arrayValue", "array_value") or {}
        return [_json_value(x) for x in arr.get("values") or []]
    if "kvlistValue" in v or "kvlist_value" in v:
        kv = _get(v, "kvlistValue", "kvlist_value") or {}
        return _json_attributes(kv.get("values"))
    return None


_JSON_SCALARS = (
    ("stringValue", str), ("intValue", int), ("doubleValue", float), ("boolValue", bool),
    ("string_value", str), ("int_value", int), ("double_value", float), ("bool_value", bool),
    ("bytesValue", base64.b64decode), ("bytes_value", base64.b64decode),
)


def _get(d: Any, camel: str, snake: str | None = None) -> Any:
    if not isinstance(d, dict):
        raise TypeError(f"expected an object, got {type(d).__name__}")
    value = d.get(camel)
    if value is None and snake is not None:
        value = d.get(snake)
    return value


def _list(value: Any, name: str) -> list:
    if not isinstance(value, list):
        raise TypeError(f"{name} is {type(value).__name__}, not an array")
    return value
