"""The OTLP decoding and span -> step mapping, without Kafka: table tests per convention and
properties against brute-force references."""

from __future__ import annotations

import json
import random
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from tripwire.bench.otlp_agents import InstrumentedAgent, collector_json, requests
from tripwire.detectors.policy import Policy
from tripwire.schemas.codec import StepBatchCodec
from tripwire.streams.otlp_decoding import STATUS_ERROR, Span, decode_request
from tripwire.streams.otlp_mapping import (
    EVENT_ID_NAMESPACE,
    MappingConfig,
    SpanMapper,
    arguments_hash,
    event_id,
    operation,
)
from tripwire.streams.otlp_router import SpanRouter

NOW_NS = 1_790_000_000_000_000_000
TRACE = "0af7651916cd43dd8448eb211c80319c"


def span(span_id: str, parent: str = "", start: int = 0, end: int = 1, trace: str = TRACE,
         status: int = 0, resource: dict | None = None, **attrs: object) -> Span:
    return Span(trace_id=trace, span_id=span_id, parent_span_id=parent, name=f"s{span_id}",
                start_ns=NOW_NS + start * 1_000_000, end_ns=NOW_NS + end * 1_000_000,
                status_code=status, status_message="", attributes=dict(attrs),
                resource=resource if resource is not None else {"service.name": "svc"})


def dotted(**attrs: object) -> dict[str, object]:
    return {k.replace("__", "."): v for k, v in attrs.items()}


def by_kind(events: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for ev in events:
        out.setdefault(ev["kind"], []).append(ev)
    return out


# --- which operation a span is ---------------------------------------------------------------

@pytest.mark.parametrize(("attrs", "expected"), [
    ({"gen_ai.operation.name": "chat"}, "chat"),
    ({"gen_ai.operation.name": "execute_tool"}, "execute_tool"),
    ({"gen_ai.operation.name": "invoke_agent"}, "invoke_agent"),
    ({"openinference.span.kind": "LLM"}, "chat"),
    ({"openinference.span.kind": "TOOL"}, "execute_tool"),
    ({"openinference.span.kind": "AGENT"}, "invoke_agent"),
    ({"openinference.span.kind": "RETRIEVER"}, "other"),
    ({"traceloop.span.kind": "tool"}, "execute_tool"),
    ({"traceloop.span.kind": "workflow"}, "invoke_agent"),
    ({"traceloop.span.kind": "task"}, "other"),
    ({"llm.request.type": "chat"}, "chat"),
    ({"llm.request.type": "completion"}, "text_completion"),
    ({"gen_ai.system": "openai"}, "chat"),
    ({"http.request.method": "GET"}, None),
    ({}, None),
])
def test_operation_from_each_convention(attrs: dict, expected: str | None) -> None:
    assert operation(attrs) == expected


# --- field mapping per convention ------------------------------------------------------------

def test_semconv_chat_and_tool_spans() -> None:
    spans = [
        span("a" * 16, start=0, end=100, **dotted(gen_ai__operation__name="invoke_agent",
                                                  gen_ai__agent__id="agent-1")),
        span("b" * 16, "a" * 16, 1, 11, **dotted(
            gen_ai__operation__name="chat", gen_ai__request__model="gpt-4o-2024-08-06",
            gen_ai__usage__input_tokens=1000, gen_ai__usage__output_tokens=100)),
        span("c" * 16, "a" * 16, 20, 30, **dotted(
            gen_ai__operation__name="execute_tool", gen_ai__tool__name="delete_user",
            gen_ai__tool__call__arguments='{"id": 7, "hard": true}',
            gen_ai__tool__call__result="deleted")),
    ]
    out = SpanMapper().map_request(spans)
    assert out.refused == [] and out.skipped == 0
    kinds = by_kind(out.events)
    assert [e["kind"] for e in out.events] == [
        "run_start", "model_call", "policy_decision", "tool_call", "run_end"]
    assert {e["agent_id"] for e in out.events} == {"agent-1"}, "children inherit the agent"
    assert {e["run_id"] for e in out.events} == {TRACE}
    call = kinds["model_call"][0]
    assert (call["model"], call["input_tokens"], call["output_tokens"]) == (
        "gpt-4o-2024-08-06", 1000, 100)
    assert call["cost_usd"] == pytest.approx((1000 * 2.50 + 100 * 10.0) / 1e6)
    assert call["latency_ms"] == 10 and call["ts"] == (NOW_NS // 1_000_000) + 11
    tool = kinds["tool_call"][0]
    assert (tool["tool"], tool["action_class"], tool["content"]) == (
        "delete_user", "destructive", "deleted")
    assert tool["params_hash"] == arguments_hash('{"hard": true, "id": 7}')
    assert kinds["policy_decision"][0]["policy_outcome"] == "allowed"
    assert kinds["policy_decision"][0]["step"] == tool["step"], "one step per span"
    assert [e["step"] for e in out.events] == [0, 1, 2, 2, 3]
    assert kinds["run_end"][0]["outcome"] == "success"


def test_openinference_spans() -> None:
    root = span("a" * 16, start=0, end=50, resource={"service.name": "rag"},
                **{"openinference.span.kind": "AGENT"})
    llm = span("b" * 16, "a" * 16, 1, 9, resource=root.resource, **{
        "openinference.span.kind": "LLM", "llm.model_name": "claude-sonnet-4-20250514",
        "llm.token_count.prompt": 2000, "llm.token_count.completion": 500,
        "output.value": "answer"})
    tool = span("c" * 16, "a" * 16, 10, 12, resource=root.resource, **{
        "openinference.span.kind": "TOOL", "tool.name": "search_docs",
        "tool.parameters": '{"q": "x"}', "output.value": "doc"})
    out = SpanMapper().map_request([tool, llm, root])
    kinds = by_kind(out.events)
    assert {e["agent_id"] for e in out.events} == {"rag"}
    model = kinds["model_call"][0]
    assert (model["input_tokens"], model["output_tokens"], model["content"]) == (2000, 500,
                                                                                 "answer")
    assert model["cost_usd"] == pytest.approx((2000 * 3.0 + 500 * 15.0) / 1e6)
    assert kinds["tool_call"][0]["tool"] == "search_docs"
    assert kinds["tool_call"][0]["action_class"] == "read"


def test_openllmetry_spans_and_reported_cost() -> None:
    s = span("a" * 16, **{"llm.request.type": "chat", "gen_ai.system": "openai",
                          "gen_ai.request.model": "gpt-4o-mini",
                          "gen_ai.usage.prompt_tokens": 10, "gen_ai.usage.completion_tokens": 5,
                          "gen_ai.completion.0.content": "hi", "llm.cost.total": 0.25,
                          "traceloop.workflow.name": "billing"})
    [start, call, end] = SpanMapper().map_request([s]).events
    assert (start["kind"], end["kind"]) == ("run_start", "run_end"), "a root span ends its trace"
    assert (call["input_tokens"], call["output_tokens"], call["cost_usd"]) == (10, 5, 0.25)
    assert (call["content"], call["workflow"]) == ("hi", "billing")


@pytest.mark.parametrize(("error_type", "outcome", "kinds"), [
    (None, "allowed", ["policy_decision", "tool_call"]),
    ("PermissionDenied", "denied", ["policy_decision"]),
    ("403", "denied", ["policy_decision"]),
    ("TimeoutError", "allowed", ["policy_decision", "tool_call"]),
])
def test_tool_errors_that_mean_refused(error_type: str | None, outcome: str,
                                       kinds: list[str]) -> None:
    attrs = dotted(gen_ai__operation__name="execute_tool", gen_ai__tool__name="update_crm",
                   gen_ai__agent__id="a")
    if error_type is not None:
        attrs["error.type"] = error_type
    s = span("a" * 16, "f" * 16, status=STATUS_ERROR if error_type else 0, **attrs)
    events = SpanMapper().map_request([s]).events
    assert [e["kind"] for e in events[1:]] == kinds
    assert events[1]["policy_outcome"] == outcome
    if len(events) > 2:
        assert events[2]["status"] == ("error" if error_type else "ok")


def test_no_identity_is_refused_and_plain_spans_are_skipped() -> None:
    anonymous = span("a" * 16, resource={"service.name": "unknown_service:python"},
                     **{"gen_ai.operation.name": "chat"})
    http = span("b" * 16, resource={}, **{"http.request.method": "GET"})
    out = SpanMapper().map_request([anonymous, http])
    assert out.events == [] and out.skipped == 1
    [(index, reason)] = out.refused
    assert index == anonymous.index and "no agent identity" in reason


def test_configured_agent_keys_and_conversation_runs() -> None:
    resource = {"service.name": "svc", "service.instance.id": "pod-3"}
    s = span("a" * 16, "9" * 16, resource=resource, **{"gen_ai.operation.name": "chat",
                                                        "gen_ai.conversation.id": "conv-1"})
    mapper = SpanMapper(config=MappingConfig(
        agent_keys=(("service.name", "service.instance.id"),), run_key="conversation"))
    events = mapper.map_request([s]).events
    assert {(e["agent_id"], e["run_id"]) for e in events} == {("svc/pod-3", "conv-1")}


def test_identity_inherited_across_requests_from_memory() -> None:
    mapper = SpanMapper()
    parent = span("a" * 16, "e" * 16, **{"gen_ai.operation.name": "create_agent",
                                         "gen_ai.agent.id": "remembered"})
    assert mapper.map_request([parent]).skipped == 1
    child = span("b" * 16, "a" * 16, **{"gen_ai.operation.name": "chat"})
    assert {e["agent_id"] for e in mapper.map_request([child]).events} == {"remembered"}


def test_policy_file_overrides_prices_and_tool_classes() -> None:
    policy = Policy.model_validate({"agents": {"a": {"otlp": {
        "model_prices": [{"model": "my-llm", "input_usd_per_mtok": 1, "output_usd_per_mtok": 2}],
        "tool_action_classes": [{"pattern": "lookup_*", "action_class": "money"}]}}}})
    spans = [span("a" * 16, "f" * 16, **{"gen_ai.agent.id": "a", "gen_ai.operation.name": "chat",
                                         "gen_ai.request.model": "my-llm-v2",
                                         "gen_ai.usage.input_tokens": 1_000_000}),
             span("b" * 16, "f" * 16, start=2, end=3, **{
                 "gen_ai.agent.id": "a", "gen_ai.operation.name": "execute_tool",
                 "gen_ai.tool.name": "lookup_price"})]
    kinds = by_kind(SpanMapper(policy).map_request(spans).events)
    assert kinds["model_call"][0]["cost_usd"] == pytest.approx(1.0)
    assert kinds["tool_call"][0]["action_class"] == "money"


def test_impossible_values_are_refused_per_event() -> None:
    s = span("a" * 16, "f" * 16, **{"gen_ai.agent.id": "a", "gen_ai.operation.name": "chat",
                                    "gen_ai.usage.input_tokens": -3})
    out = SpanMapper().map_request([s])
    assert [e["kind"] for e in out.events] == ["run_start"]
    assert "negative input_tokens" in out.refused[0][1]


_utf8 = st.text(alphabet=st.characters(exclude_categories=("Cs",)))


@settings(deadline=None)
@given(_utf8, _utf8, _utf8)
def test_event_id_is_uuid5(trace: str, span_id: str, kind: str) -> None:
    expected = uuid.uuid5(EVENT_ID_NAMESPACE, f"{trace}/{span_id}/{kind}")
    assert event_id(trace, span_id, kind) == str(expected)


def test_arguments_hash_is_canonical() -> None:
    assert arguments_hash('{"a": 1, "b": [1, 2]}') == arguments_hash('{"b":[1,2],"a":1}')
    assert arguments_hash('{"a": 1}') != arguments_hash('{"a": 2}')
    assert arguments_hash("not json") == arguments_hash("not json")
    assert arguments_hash(None) is None and arguments_hash("") is None


# --- the real SDK's encodings decode to the same spans ---------------------------------------

def test_real_sdk_proto_and_collector_json_decode_alike() -> None:
    agent = InstrumentedAgent(**{"service.name": "svc"})
    agent.genai_run("a-1", [("search", {"q": "x"}, None), ("delete_x", {"id": 1}, "403")],
                    conversation="c-9")
    agent.openinference_run("q")
    [value] = list(requests(agent.finished(), 512))
    proto = decode_request(value, "otlp_proto")
    as_json = decode_request(collector_json(value), "otlp_json")
    assert proto == as_json
    assert len(proto) == 8 and all(len(s.trace_id) == 32 for s in proto)
    doc = json.loads(collector_json(value))
    first = doc["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    assert len(first["traceId"]) == 32 and isinstance(first["kind"], int), "Collector form"


def _any(value: object) -> AnyValue:
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    if isinstance(value, list):
        out = AnyValue()
        out.array_value.values.extend(_any(v) for v in value)
        return out
    return AnyValue(string_value=str(value))


scalars = st.one_of(st.text(max_size=20), st.integers(-(2**63), 2**63 - 1), st.booleans(),
                    st.floats(allow_nan=False, allow_infinity=False))
attribute_values = st.one_of(scalars, st.lists(scalars, max_size=4))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.dictionaries(st.text(min_size=1, max_size=12), attribute_values,
                                max_size=6), min_size=1, max_size=6),
       st.randoms(use_true_random=False))
def test_proto_and_json_decode_to_the_same_spans(attr_sets: list[dict], rnd: random.Random
                                                 ) -> None:
    """Reference: the protobuf request itself; its Collector-JSON form must decode equal."""
    request = ExportTraceServiceRequest()
    rs = request.resource_spans.add()
    rs.resource.attributes.append(KeyValue(key="service.name", value=_any("svc")))
    ss = rs.scope_spans.add()
    for attrs in attr_sets:
        sp = ss.spans.add()
        sp.trace_id, sp.span_id = rnd.randbytes(16), rnd.randbytes(8)
        sp.parent_span_id = rnd.choice([b"", rnd.randbytes(8)])
        sp.start_time_unix_nano = rnd.randrange(1, 2**62)
        sp.end_time_unix_nano = sp.start_time_unix_nano + rnd.randrange(0, 10**9)
        sp.status.code = rnd.choice([0, 1, 2])
        sp.attributes.extend(KeyValue(key=k, value=_any(v)) for k, v in attrs.items())
    value = request.SerializeToString()
    proto = decode_request(value, "otlp_proto")
    assert proto == decode_request(collector_json(value), "otlp_json")
    assert [s.attributes for s in proto] == [
        {k: (v if not isinstance(v, float) else pytest.approx(v)) for k, v in a.items()}
        for a in attr_sets]


# --- properties of the mapping ---------------------------------------------------------------

@st.composite
def traces(draw: st.DrawFn) -> list[Span]:
    """A random span tree: each span's parent is an earlier span (or none for the root);
    some spans carry gen_ai.agent.id, every span a GenAI operation."""
    n = draw(st.integers(1, 25))
    ops = ["chat", "execute_tool", "invoke_agent", "create_agent", "embeddings"]
    spans: list[Span] = []
    for i in range(n):
        parent = "" if i == 0 else spans[draw(st.integers(0, i - 1))].span_id
        attrs: dict[str, object] = {"gen_ai.operation.name": draw(st.sampled_from(ops)),
                                    "gen_ai.tool.name": f"tool{draw(st.integers(0, 2))}",
                                    "gen_ai.tool.call.arguments": json.dumps(
                                        {"x": draw(st.integers(0, 2))})}
        if draw(st.booleans()) and draw(st.booleans()):
            attrs["gen_ai.agent.id"] = f"agent{draw(st.integers(0, 2))}"
        start = draw(st.integers(0, 1000))
        spans.append(span(f"{i + 1:016x}", parent, start, start + draw(st.integers(0, 50)),
                          **attrs))
    return spans


def reference_agent(spans: list[Span], s: Span) -> str:
    """Brute force: walk up the tree to the nearest gen_ai.agent.id, else the resource."""
    by_id = {x.span_id: x for x in spans}
    node: Span | None = s
    while node is not None:
        if "gen_ai.agent.id" in node.attributes:
            return str(node.attributes["gen_ai.agent.id"])
        node = by_id.get(node.parent_span_id)
    return "svc"


@settings(max_examples=150, deadline=None)
@given(traces(), st.randoms(use_true_random=False))
def test_mapping_properties(spans: list[Span], rnd: random.Random) -> None:
    for i, s in enumerate(spans):
        s.index = i
    shuffled = spans[:]
    rnd.shuffle(shuffled)  # request order must not matter within a request
    out = SpanMapper().map_request(shuffled)
    again = SpanMapper().map_request(spans)
    assert out.refused == []
    # Deterministic: same spans, same events (ids included) whatever their order.
    assert sorted(e["event_id"] for e in out.events) == sorted(e["event_id"]
                                                               for e in again.events)
    assert len({e["event_id"] for e in out.events}) == len(out.events), "ids are unique"
    owner = {s.span_id: reference_agent(spans, s) for s in spans}
    for ev in out.events:
        # A run_start / trace-boundary run_end names the span that opened / closed the run,
        # which may belong to another agent (the root); every other step is its span's agent.
        if ev["kind"] not in ("run_start", "run_end"):
            assert ev["agent_id"] == owner[ev["attributes"]["otel.span_id"]]
    # Per run: one run_start at step 0, then steps by span start, one step per span, and at
    # most one run_end for the trace boundary.
    runs: dict[tuple[str, str], list[dict]] = {}
    for ev in out.events:
        runs.setdefault((ev["agent_id"], ev["run_id"]), []).append(ev)
    for events in runs.values():
        assert events[0]["kind"] == "run_start" and events[0]["step"] == 0
        assert sum(e["kind"] == "run_start" for e in events) == 1
        steps = [e["step"] for e in events]
        assert steps == sorted(steps)
        per_span: dict[str, set[int]] = {}
        for e in events[1:]:
            per_span.setdefault(e["attributes"]["otel.span_id"] + e["kind"][:3], set()).add(
                e["step"])
        assert all(len(v) == 1 for v in per_span.values())
    # Nothing is lost: every span is skipped (not a step), refused, or has a step of its own.
    with_steps = {e["attributes"]["otel.span_id"] for e in out.events
                  if e["kind"] != "run_start"}
    refused = {spans[i].span_id for i, _ in out.refused}
    steppable = [s for s in spans if operation(s.attributes) not in ("create_agent", "other")]
    assert out.skipped == len(spans) - len(steppable)
    assert all(s.span_id in with_steps or s.span_id in refused for s in steppable)
    # Every event is a valid contract record.
    StepBatchCodec().encode(out.events)


def test_router_core_dead_letters_refused_spans_with_their_index() -> None:
    agent = InstrumentedAgent()
    agent.genai_run(None, [("search", {}, None)])
    [value] = list(requests(agent.finished(), 512))
    router = SpanRouter("otlp_proto", SpanMapper())
    routed = router.route([(None, value, "otlp_spans", 2, 41), (b"k", b"\x01", "otlp_spans", 2,
                                                                 42)])
    assert routed.steps == []
    assert sorted(d.event_index for d in routed.dead if d.event_index is not None) == [0, 1, 2]
    assert all(d.value in (value, b"\x01") and d.source_partition == 2 for d in routed.dead)
    assert {d.source_offset for d in routed.dead} == {41, 42}


@pytest.mark.integration
def test_otlp_bench_produces_every_figure(tmp_path) -> None:
    """`python -m tripwire.bench.otlp` at toy scale, so it cannot break between real runs."""
    from tripwire.bench.otlp import run

    f = run(traces=20, tools=3, agents=4, workdir=tmp_path)
    assert f["spans"] == 20 * (1 + 2 * 3) and f["events"] > f["spans"]
    for key in ("decode_proto_spans_per_s", "decode_json_spans_per_s", "route_proto_spans_per_s",
                "route_json_spans_per_s", "e2e_otlp_events_per_s",
                "e2e_agent_steps_events_per_s", "e2e_ratio", "e2e_router_spans_per_s"):
        assert f[key] > 0, (key, f)


@pytest.mark.parametrize(("field", "value"), [
    ("otlp_agent_keys", "gen_ai.agent.id,,service.name"),
    ("otlp_agent_keys", "service.name+"),
    ("otlp_topic", "agent-steps"),
    ("otlp_encoding", "otlp_avro"),
])
def test_bad_otlp_settings_fail_naming_the_field(field: str, value: str) -> None:
    from pydantic import ValidationError

    from tripwire.streams.settings import TripwireSettings

    with pytest.raises(ValidationError, match=field):
        TripwireSettings(**{field: value})


def test_router_mapping_config_from_settings() -> None:
    from tripwire.streams.otlp_router import mapping_config
    from tripwire.streams.settings import TripwireSettings

    cfg = mapping_config(TripwireSettings(otlp_agent_keys="gen_ai.agent.id, service.name + "
                                          "service.instance.id", otlp_run_key="conversation"))
    assert cfg.agent_keys == (("gen_ai.agent.id",), ("service.name", "service.instance.id"))
    assert cfg.run_key == "conversation"


async def test_acks_commit_in_fetch_order_and_only_once_acknowledged() -> None:
    """The router's at-least-once rule: a batch's offsets are committed only after all its
    sends are acknowledged, and never before an earlier batch's."""
    import asyncio

    from tripwire.streams.otlp_router import _Acks

    class Consumer:
        def __init__(self) -> None:
            self.commits: list[dict] = []

        async def commit(self, offsets: dict) -> None:
            self.commits.append(offsets)

    loop = asyncio.get_running_loop()
    consumer = Consumer()
    acks = _Acks(consumer)  # type: ignore[arg-type]
    first, second = loop.create_future(), loop.create_future()
    acks.add([first], {"p0": 10})
    acks.add([second], {"p0": 20})
    second.set_result(None)
    await asyncio.sleep(0)  # gather learns of its futures' results through the loop
    await acks.commit_acknowledged(4)
    assert consumer.commits == [], "the second batch is done, the first is not"
    first.set_result(None)
    await asyncio.sleep(0)
    await acks.commit_acknowledged(4)
    assert consumer.commits == [{"p0": 10}, {"p0": 20}]
    third = loop.create_future()
    acks.add([third], {"p0": 30})
    loop.call_later(0.01, third.set_result, None)
    await acks.commit_acknowledged(0)  # waits: nothing may stay pending
    assert consumer.commits[-1] == {"p0": 30} and not acks.pending
    failed = loop.create_future()
    acks.add([failed], {"p0": 40})
    failed.set_exception(RuntimeError("broker refused"))
    with pytest.raises(RuntimeError):
        await acks.commit_acknowledged(0)
    assert consumer.commits[-1] == {"p0": 30}, "a failed send never commits its offsets"
