"""Agents instrumented with the real OpenTelemetry Python SDK, and their spans as the
Collector's Kafka exporter writes them (used by the OTLP tests and the OTLP benchmark).

Spans come from an ``opentelemetry-sdk`` TracerProvider (GenAI semantic-convention or
OpenInference attributes), are collected by an in-memory exporter and encoded with the OTLP
exporters' own encoder (``encode_spans`` -> ``ExportTraceServiceRequest``). One record value
is one request, as the Collector's exporter writes it:

* ``otlp_proto``: the serialized request;
* ``otlp_json``: the OTLP/JSON form the Collector writes (pdata's JSON marshaler): protobuf's
  JSON mapping with camelCase names and integer enums, and trace/span ids as hex, not base64.

Records are keyed by trace id (the exporter's ``partition_traces_by_id``) or not at all.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator, Sequence
from typing import Any

from google.protobuf.json_format import MessageToDict
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Status, StatusCode


class InstrumentedAgent:
    """One process's tracer provider (its resource names the service) and its finished spans."""

    def __init__(self, **resource: str) -> None:
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider(resource=Resource.create(resource))
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.tracer = self.provider.get_tracer("tripwire.bench.otlp_agents")

    def finished(self) -> list[ReadableSpan]:
        spans = list(self.exporter.get_finished_spans())
        self.exporter.clear()
        return spans

    def genai_run(self, agent_id: str | None, tool_calls: Sequence[tuple[str, dict, str | None]],
                  model: str = "gpt-4o-mini", conversation: str | None = None,
                  agent_attrs_on_children: bool = False) -> None:
        """One invoke_agent span around chat + execute_tool spans (GenAI semconv). Each tool call
        is (tool name, arguments, error.type or None); a chat span precedes each."""
        attrs: dict[str, Any] = {"gen_ai.operation.name": "invoke_agent",
                                 "gen_ai.provider.name": "openai"}
        if agent_id is not None:
            attrs |= {"gen_ai.agent.id": agent_id, "gen_ai.agent.name": agent_id}
        if conversation is not None:
            attrs["gen_ai.conversation.id"] = conversation
        child: dict[str, Any] = {"gen_ai.agent.id": agent_id} \
            if agent_attrs_on_children and agent_id else {}
        with self.tracer.start_as_current_span(f"invoke_agent {agent_id}", attributes=attrs):
            for i, (tool, args, error_type) in enumerate(tool_calls):
                with self.tracer.start_as_current_span(f"chat {model}", attributes=child | {
                    "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai",
                    "gen_ai.request.model": model, "gen_ai.usage.input_tokens": 800 + i,
                    "gen_ai.usage.output_tokens": 60,
                }):
                    pass
                with self.tracer.start_as_current_span(f"execute_tool {tool}", attributes=child | {
                    "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": tool,
                    "gen_ai.tool.call.id": f"call_{i}",
                    "gen_ai.tool.call.arguments": json.dumps(args),
                }) as span:
                    if error_type is not None:
                        span.set_attribute("error.type", error_type)
                        span.set_status(Status(StatusCode.ERROR, f"{tool}: {error_type}"))

    def openinference_run(self, question: str, model: str = "gpt-4o",
                          tokens: tuple[int, int] = (1200, 300)) -> None:
        """An AGENT span around an LLM and a TOOL span, attributes as OpenInference writes them."""
        with self.tracer.start_as_current_span("agent", attributes={
            "openinference.span.kind": "AGENT", "input.value": question,
        }):
            with self.tracer.start_as_current_span("ChatCompletion", attributes={
                "openinference.span.kind": "LLM", "llm.model_name": model,
                "llm.provider": "openai", "llm.token_count.prompt": tokens[0],
                "llm.token_count.completion": tokens[1],
                "llm.token_count.total": tokens[0] + tokens[1],
                "output.value": "The invoice total is 1,200 EUR.",
            }):
                pass
            with self.tracer.start_as_current_span("lookup_invoice", attributes={
                "openinference.span.kind": "TOOL", "tool.name": "lookup_invoice",
                "tool.parameters": json.dumps({"invoice": "INV-7"}),
                "output.value": "INV-7: 1,200 EUR, due 2026-12-31",
            }):
                pass


def requests(spans: Sequence[ReadableSpan], per_request: int) -> Iterator[bytes]:
    """Serialized ExportTraceServiceRequests of up to ``per_request`` spans each, in order
    (what a BatchSpanProcessor + OTLP exporter sends, and the Collector passes on)."""
    for start in range(0, len(spans), per_request):
        yield encode_spans(spans[start:start + per_request]).SerializeToString()


def collector_json(proto_value: bytes) -> bytes:
    """The Collector's otlp_json form of a serialized request."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    doc = MessageToDict(ExportTraceServiceRequest.FromString(proto_value),
                        use_integers_for_enums=True)
    for rs in doc.get("resourceSpans", []):
        for ss in rs.get("scopeSpans", []):
            for sp in ss.get("spans", []):
                for key in ("traceId", "spanId", "parentSpanId"):
                    if sp.get(key):
                        sp[key] = base64.b64decode(sp[key]).hex()
    return json.dumps(doc, separators=(",", ":")).encode()


def trace_key(proto_value: bytes) -> bytes:
    """The exporter's record key with partition_traces_by_id: the (first) trace id's bytes."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    req = ExportTraceServiceRequest.FromString(proto_value)
    return req.resource_spans[0].scope_spans[0].spans[0].trace_id
