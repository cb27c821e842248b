"""OpenTelemetry GenAI spans -> Tripwire step events: the whole mapping, in one place.

Pure: spans in (``streams/otlp_decoding.py``), canonical StepEvent dicts and refusals out, no
Kafka, no protobuf. The only state is :class:`TraceMemory`, what earlier requests of the same
traces taught (agent identity of ancestors, step counters, open runs), bounded and
deterministic for a given input order.

Which attribute sets are read (first present wins; README "Govern an OpenTelemetry-instrumented
agent" has the same table):

=====================  =============================================================================
step field             span attributes
=====================  =============================================================================
kind                   ``gen_ai.operation.name``: chat / text_completion / generate_content /
                       embeddings -> model_call; execute_tool -> policy_decision + tool_call;
                       invoke_agent -> run boundary (run_start / run_end); create_agent and
                       anything else GenAI -> context only. Without it: OpenInference
                       ``openinference.span.kind`` (LLM, EMBEDDING, TOOL, AGENT), OpenLLMetry
                       ``traceloop.span.kind`` (tool, agent, workflow) or ``llm.request.type``.
agent_id               ``TRIPWIRE_OTLP_AGENT_KEYS`` in order (default ``gen_ai.agent.id``, then
                       ``service.name``; groups such as ``service.name+service.instance.id``
                       join values with '/'): on the span, else inherited from its nearest
                       ancestor seen, else the resource
run_id                 the trace id (``TRIPWIRE_OTLP_RUN_KEY=trace``), or ``gen_ai.conversation.id``
                       / ``session.id`` (``conversation``) falling back to the trace id
step                   order of span start within the run, from 1 (run_start is 0); the
                       events of one span share its step
ts / latency_ms        span end / end - start
model                  ``gen_ai.request.model``, ``gen_ai.response.model``, ``llm.model_name``,
                       ``llm.request.model``
input/output_tokens    ``gen_ai.usage.input_tokens`` / ``output_tokens``,
                       ``gen_ai.usage.prompt_tokens`` / ``completion_tokens``,
                       ``llm.usage.prompt_tokens`` / ``completion_tokens``,
                       ``llm.token_count.prompt`` / ``completion``
cost_usd               ``llm.cost.total``, ``gen_ai.usage.cost``, else tokens x policy
                       ``otlp.model_prices``
tool                   ``gen_ai.tool.name``, ``tool.name``, ``traceloop.entity.name``, span name
params_hash            sha256 of the canonical JSON of ``gen_ai.tool.call.arguments``,
                       ``tool.parameters``, ``traceloop.entity.input``, ``input.value``
action_class           ``tripwire.action_class``, else policy ``otlp.tool_action_classes``,
                       else read
policy_outcome         ``tripwire.policy.outcome``; tool spans: denied when ``error.type`` is in
                       policy ``otlp.denial_error_types``, else allowed
status                 error when span status is ERROR or ``error.type`` is set, else ok
content                tool: ``gen_ai.tool.call.result``, ``output.value``,
                       ``traceloop.entity.output``; model: ``gen_ai.output.messages``,
                       ``gen_ai.completion``, ``output.value``, ``traceloop.entity.output``,
                       ``gen_ai.completion.0.content``, ``llm.output_messages.0.message.content``
agent_version          ``gen_ai.agent.version``, ``service.version``
workflow / owner       ``tripwire.workflow``, ``traceloop.workflow.name`` / ``tripwire.owner``
environment            ``deployment.environment.name`` / ``deployment.environment``
                       (production/prod, staging/test/qa, development/dev/local)
source_trust           ``tripwire.source_trust``
injection_flagged      ``tripwire.injection_flagged``
=====================  =============================================================================

Event ids are name-based UUIDs (v5) of trace id, span id and the step kind, so a span routed
twice (a router restart before its commit) yields the same event ids and the sink stores it
once.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from tripwire.detectors.otlp_policy import ModelPrice, OtlpPolicy
from tripwire.detectors.policy import Policy
from tripwire.schemas.validation import check_event
from tripwire.sdk.steps import blank_event, canonical_params_json
from tripwire.streams.otlp_decoding import STATUS_ERROR, AttributeValue, Span

RunKey = Literal["trace", "conversation"]
EVENT_ID_NAMESPACE = uuid.UUID("5f1c0a6e-7d39-4c54-9e0b-6f1f3f0e4a17")
# Not service.instance.id by default: the OpenTelemetry SDKs generate it as a random UUID per
# process (opentelemetry-sdk 1.45's ServiceInstanceIdResourceDetector), so an agent keyed by
# it would be a new, autonomous agent after every restart.
DEFAULT_AGENT_KEYS: tuple[tuple[str, ...], ...] = (("gen_ai.agent.id",), ("service.name",))
# Tool results and model outputs can be megabytes (a fetched web page); the detectors scan
# the beginning and storage masks what it keeps, so a step carries at most this much.
MAX_CONTENT_CHARS = 32_768
# What the memory keeps (measured with tracemalloc: ~420 bytes a span, ~800 a run with its
# trace entry): 50,000 spans (~21 MB) are the last ~10 s of a router at 5,000 spans/s, longer
# than a BatchSpanProcessor's 5 s export delay, so a span's exported ancestors are still
# there; 20,000 open runs (~16 MB).
MEMORY_SPANS = 50_000
MEMORY_RUNS = 20_000

MODEL_OPERATIONS = frozenset({"chat", "text_completion", "generate_content", "embeddings"})
_OPENINFERENCE_KINDS = {"LLM": "chat", "EMBEDDING": "embeddings", "TOOL": "execute_tool",
                        "AGENT": "invoke_agent"}
_TRACELOOP_KINDS = {"tool": "execute_tool", "agent": "invoke_agent", "workflow": "invoke_agent"}
_LLM_REQUEST_TYPES = {"chat": "chat", "completion": "text_completion",
                      "embedding": "embeddings"}
_ENVIRONMENTS = {"prod": "prod", "production": "prod", "test": "test", "testing": "test",
                 "staging": "test", "qa": "test", "dev": "dev", "development": "dev",
                 "local": "dev"}
_TRUST = frozenset({"internal", "partner", "external"})
_OUTCOMES = frozenset({"allowed", "denied", "approval_required", "escalated"})
_ACTION_CLASSES = frozenset({"read", "write", "external", "money", "destructive"})
_UNKNOWN_SERVICE = "unknown_service"
DECIDED_BY = "otel-span"

_MODEL_KEYS = ("gen_ai.request.model", "gen_ai.response.model", "llm.model_name",
               "llm.request.model")
_INPUT_TOKEN_KEYS = ("gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens",
                     "llm.usage.prompt_tokens", "llm.token_count.prompt")
_OUTPUT_TOKEN_KEYS = ("gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens",
                      "llm.usage.completion_tokens", "llm.token_count.completion")
_COST_KEYS = ("llm.cost.total", "gen_ai.usage.cost")
_TOOL_KEYS = ("gen_ai.tool.name", "tool.name")
_ARGUMENT_KEYS = ("gen_ai.tool.call.arguments", "tool.parameters", "traceloop.entity.input",
                  "input.value")
_TOOL_CONTENT_KEYS = ("gen_ai.tool.call.result", "output.value", "traceloop.entity.output")
_MODEL_CONTENT_KEYS = ("gen_ai.output.messages", "gen_ai.completion", "output.value",
                       "traceloop.entity.output", "gen_ai.completion.0.content",
                       "llm.output_messages.0.message.content")
_CONVERSATION_KEYS = ("gen_ai.conversation.id", "session.id")


@dataclass(frozen=True, slots=True)
class MappingConfig:
    agent_keys: tuple[tuple[str, ...], ...] = DEFAULT_AGENT_KEYS
    """Attribute groups naming an agent, in order; a group's values are joined with '/'."""
    run_key: RunKey = "trace"
    memory_spans: int = MEMORY_SPANS
    memory_runs: int = MEMORY_RUNS


@dataclass
class MappedRequest:
    events: list[dict[str, Any]] = field(default_factory=list)
    """Valid canonical event dicts, per run in step order."""
    refused: list[tuple[int, str]] = field(default_factory=list)
    """(span index in the request, reason) of spans, or their events, that cannot be steps."""
    skipped: int = 0
    """Spans with nothing of an agent step in them (HTTP, database, framework internals)."""


@dataclass(slots=True)
class _RunState:
    next_step: int = 1
    started: bool = False
    ended: bool = False


class TraceMemory:
    """Bounded LRU memory of spans and runs seen in earlier requests."""

    def __init__(self, max_spans: int = MEMORY_SPANS, max_runs: int = MEMORY_RUNS) -> None:
        self.max_spans = max_spans
        self.max_runs = max_runs
        # (trace id, span id) -> (own-or-inherited agent identity, conversation id)
        self.spans: OrderedDict[tuple[str, str], tuple[str | None, str | None]] = OrderedDict()
        # (agent id, run id) -> step counter and boundaries already emitted
        self.runs: OrderedDict[tuple[str, str], _RunState] = OrderedDict()
        # trace id -> the (agent, run) pairs that trace opened (for trace-boundary run_ends)
        self.trace_runs: OrderedDict[str, set[tuple[str, str]]] = OrderedDict()

    def remember_span(self, key: tuple[str, str], ctx: tuple[str | None, str | None]) -> None:
        self.spans[key] = ctx
        if len(self.spans) > self.max_spans:
            self.spans.popitem(last=False)

    def run(self, agent: str, run_id: str) -> _RunState:
        key = (agent, run_id)
        state = self.runs.get(key)
        if state is None:
            state = self.runs[key] = _RunState()
            if len(self.runs) > self.max_runs:
                self.runs.popitem(last=False)
        else:
            self.runs.move_to_end(key)
        return state

    def opened_in_trace(self, trace_id: str, agent: str, run_id: str) -> None:
        runs = self.trace_runs.get(trace_id)
        if runs is None:
            runs = self.trace_runs[trace_id] = set()
            if len(self.trace_runs) > self.max_runs:
                self.trace_runs.popitem(last=False)
        runs.add((agent, run_id))


def operation(attrs: Mapping[str, AttributeValue]) -> str | None:
    """The GenAI operation a span performs, from whichever convention it follows; None for
    spans that are not GenAI at all."""
    op = attrs.get("gen_ai.operation.name")
    if isinstance(op, str) and op:
        return op
    kind = attrs.get("openinference.span.kind")
    if isinstance(kind, str):
        return _OPENINFERENCE_KINDS.get(kind.upper(), "other")
    kind = attrs.get("traceloop.span.kind")
    if isinstance(kind, str):
        return _TRACELOOP_KINDS.get(kind, "other")
    kind = attrs.get("llm.request.type")
    if isinstance(kind, str):
        return _LLM_REQUEST_TYPES.get(kind, "other")
    if "gen_ai.system" in attrs or "gen_ai.provider.name" in attrs or \
            "gen_ai.request.model" in attrs:
        return "chat"
    return None


_NAMESPACE_BYTES = EVENT_ID_NAMESPACE.bytes


def event_id(trace_id: str, span_id: str, kind: str) -> str:
    """``str(uuid.uuid5(EVENT_ID_NAMESPACE, f"{trace_id}/{span_id}/{kind}"))``, written out:
    the uuid module's objects cost ~5 us of the ~35 us a span's mapping takes."""
    digest = bytearray(hashlib.sha1(_NAMESPACE_BYTES + f"{trace_id}/{span_id}/{kind}".encode(),
                                    usedforsecurity=False).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def arguments_hash(value: AttributeValue) -> str | None:
    """``params_hash`` of a tool call's arguments as a span carries them (JSON text usually):
    the SDK's canonical JSON when it parses, else the text itself, so equal calls hash equal."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            parsed: Any = json.loads(value)
        except ValueError:
            return hashlib.sha256(value.encode("utf-8")).hexdigest()
    else:
        parsed = value
    try:
        text = canonical_params_json(parsed)
    except (TypeError, ValueError):
        text = str(value)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class SpanMapper:
    """Maps the spans of one OTLP request at a time; keep one per router (its memory is what
    lets later requests of a trace find their ancestors)."""

    def __init__(self, policy: Policy | None = None, config: MappingConfig | None = None,
                 now_ms: Callable[[], int] | None = None) -> None:
        self.policy = policy or Policy()
        self.config = config or MappingConfig()
        self.memory = TraceMemory(self.config.memory_spans, self.config.memory_runs)
        self._now_ms = now_ms
        # Per (policy section, name) lookups: glob and prefix scans cost ~20 us each.
        self._action_classes: dict[tuple[int, str], str] = {}
        self._prices: dict[tuple[int, str], ModelPrice | None] = {}
        self._resource_fields: dict[int, tuple[dict, tuple]] = {}

    # --- identity ----------------------------------------------------------------------------

    def _own_agent(self, attrs: Mapping[str, AttributeValue]) -> str | None:
        for keys in self.config.agent_keys:
            value = _joined(attrs, keys)
            if value is not None:
                return value
        return None

    def _resource_agent(self, span: Span) -> str | None:
        for keys in self.config.agent_keys:
            values = []
            for key in keys:
                v = span.attributes.get(key)
                if v is None or v == "":
                    v = span.resource.get(key)
                if v is None or v == "" or (key == "service.name" and
                                            str(v).startswith(_UNKNOWN_SERVICE)):
                    break
                values.append(str(v))
            else:
                return "/".join(values)
        return None

    def _contexts(self, spans: list[Span]) -> list[tuple[str | None, str | None]]:
        """(span-level agent identity, conversation id) of each span, own or inherited from
        the nearest ancestor in this request or in memory."""
        by_id = {(s.trace_id, s.span_id): s for s in spans}
        memo: dict[tuple[str, str], tuple[str | None, str | None]] = {}
        memory = self.memory.spans

        def ctx(span: Span, depth: int = 0) -> tuple[str | None, str | None]:
            key = (span.trace_id, span.span_id)
            done = memo.get(key)
            if done is not None:
                return done
            agent = self._own_agent(span.attributes)
            conversation = _first_str(span.attributes, _CONVERSATION_KEYS)
            if (agent is None or conversation is None) and span.parent_span_id and depth < 64:
                parent_key = (span.trace_id, span.parent_span_id)
                parent = by_id.get(parent_key)
                inherited = ctx(parent, depth + 1) if parent is not None \
                    else memory.get(parent_key, (None, None))
                agent = agent or inherited[0]
                conversation = conversation or inherited[1]
            memo[key] = result = (agent, conversation)
            return result

        out = [ctx(s) for s in spans]
        for s, c in zip(spans, out, strict=True):
            if c != (None, None):
                self.memory.remember_span((s.trace_id, s.span_id), c)
        return out

    # --- the mapping -------------------------------------------------------------------------

    def map_request(self, spans: list[Span]) -> MappedRequest:
        out = MappedRequest()
        contexts = self._contexts(spans)
        # Per run, the spans that make steps, in start order (the step order).
        planned: dict[tuple[str, str], list[tuple[Span, str, str | None]]] = {}
        roots: list[Span] = []
        for span, (own_agent, conversation) in zip(spans, contexts, strict=True):
            if not span.parent_span_id:
                roots.append(span)
            op = operation(span.attributes)
            explicit_outcome = span.attributes.get("tripwire.policy.outcome")
            if op is None and explicit_outcome is None:
                out.skipped += 1
                continue
            if op in ("create_agent", "other") and explicit_outcome is None:
                out.skipped += 1
                continue
            agent = own_agent or self._resource_agent(span)
            if agent is None:
                names = ", ".join("+".join(k) for k in self.config.agent_keys)
                out.refused.append((span.index, f"span {span.span_id} ({op}) has no agent "
                                    f"identity: none of {names} on the span, its ancestors or "
                                    "its resource"))
                continue
            problem = _time_problem(span)
            if problem is not None:
                out.refused.append((span.index, problem))
                continue
            run_id = span.trace_id
            if self.config.run_key == "conversation" and conversation:
                run_id = conversation
            planned.setdefault((agent, run_id), []).append((span, op or "other", conversation))
        for (agent, run_id), items in planned.items():
            # Step order is span start, except that an invoke_agent span (a run_end) is placed
            # by its end: it starts before its children but closes the run after them.
            items.sort(key=lambda item: (item[0].end_ns if item[1] == "invoke_agent"
                                         else item[0].start_ns, item[0].span_id))
            self._map_run(agent, run_id, items, out)
        for root in roots:
            self._close_trace(root, out)
        return out

    def _map_run(self, agent: str, run_id: str, items: list[tuple[Span, str, str | None]],
                 out: MappedRequest) -> None:
        memory = self.memory
        state = memory.run(agent, run_id)
        first = items[0][0]
        policy = self.policy.for_agent(agent, _str(first.attributes.get("tripwire.workflow")))
        otlp = policy.otlp
        if not state.started:
            state.started = True
            start = self._base(first, agent, run_id, "run_start", first.start_ns, items[0][2])
            # Named after the run, not a span: whichever span opens it, the id is the same.
            start["event_id"] = event_id(first.trace_id, f"{agent}/{run_id}", "run_start")
            start["step"] = 0
            self._emit(start, first.index, out)
        for span, op, conversation in items:
            memory.opened_in_trace(span.trace_id, agent, run_id)
            events = self._span_events(span, op, agent, run_id, conversation, otlp)
            if not events:
                continue
            # One step per span: a tool span's decision and call are one action, so
            # loops.max_steps counts actions, not the two events a tool span becomes.
            step = state.next_step
            state.next_step += 1
            for ev in events:
                ev["step"] = step
                if ev["kind"] == "run_end":
                    state.ended = True
                self._emit(ev, span.index, out)

    def _span_events(self, span: Span, op: str, agent: str, run_id: str,
                     conversation: str | None, otlp: OtlpPolicy) -> list[dict[str, Any]]:
        attrs = span.attributes
        error_type = _str(attrs.get("error.type"))
        failed = span.status_code == STATUS_ERROR or error_type is not None
        events: list[dict[str, Any]] = []
        explicit = _str(attrs.get("tripwire.policy.outcome"))
        if op in MODEL_OPERATIONS:
            ev = self._base(span, agent, run_id, "model_call", span.end_ns, conversation)
            model = _first_str(attrs, _MODEL_KEYS)
            ev["model"] = model
            tokens_in = _first_int(attrs, _INPUT_TOKEN_KEYS)
            tokens_out = _first_int(attrs, _OUTPUT_TOKEN_KEYS)
            ev["input_tokens"], ev["output_tokens"] = tokens_in, tokens_out
            ev["cost_usd"] = self._cost(attrs, model, tokens_in, tokens_out, otlp)
            ev["content"] = _content(attrs, _MODEL_CONTENT_KEYS)
            events.append(ev)
        elif op == "execute_tool":
            tool = _first_str(attrs, _TOOL_KEYS) or (
                _str(attrs.get("traceloop.entity.name"))) or span.name or None
            if tool is None:
                return []
            action_class = _str(attrs.get("tripwire.action_class"))
            if action_class not in _ACTION_CLASSES:
                action_class = self._action_class(otlp, tool)
            params = arguments_hash(_first(attrs, _ARGUMENT_KEYS))
            denied = error_type is not None and error_type.lower() in \
                _lower_set(otlp.denial_error_types)
            outcome = explicit if explicit in _OUTCOMES else ("denied" if denied else "allowed")
            decision = self._base(span, agent, run_id, "policy_decision", span.start_ns,
                                  conversation)
            decision.update(tool=tool, action_class=action_class, params_hash=params,
                            policy_outcome=outcome)
            decision["policy_rule"] = _str(attrs.get("tripwire.policy.rule")) or (
                f"otel:error.type={error_type}" if denied else None)
            decision["attributes"]["decided_by"] = DECIDED_BY
            events.append(decision)
            explicit = None  # used by the decision above
            if outcome == "allowed":
                call = self._base(span, agent, run_id, "tool_call", span.end_ns, conversation)
                call.update(tool=tool, action_class=action_class, params_hash=params)
                call["content"] = _content(attrs, _TOOL_CONTENT_KEYS)
                events.append(call)
        elif op == "invoke_agent":
            end = self._base(span, agent, run_id, "run_end", span.end_ns, conversation)
            end["outcome"] = "failure" if failed else "success"
            events.append(end)
        if explicit in _OUTCOMES:
            decision = self._base(span, agent, run_id, "policy_decision", span.end_ns,
                                  conversation)
            decision["event_id"] = event_id(span.trace_id, span.span_id, "explicit_decision")
            decision.update(tool=_first_str(attrs, _TOOL_KEYS) or span.name,
                            policy_outcome=explicit,
                            policy_rule=_str(attrs.get("tripwire.policy.rule")))
            events.append(decision)
        latency = (span.end_ns - span.start_ns) // 1_000_000
        status = "error" if failed else "ok"
        for ev in events:
            if ev["kind"] in ("model_call", "tool_call"):
                ev["latency_ms"] = latency
            if ev["kind"] != "policy_decision" or ev["policy_outcome"] != "denied":
                ev["status"] = status
        if failed:
            for ev in events:
                if error_type is not None:
                    ev["attributes"]["error.type"] = error_type
                if span.status_message:
                    ev["attributes"]["otel.status_message"] = span.status_message[:512]
        return events

    def _close_trace(self, root: Span, out: MappedRequest) -> None:
        """The root span ended, so the trace is complete: end every run it opened that no
        invoke_agent span has ended (trace-boundary run_end)."""
        runs = self.memory.trace_runs.pop(root.trace_id, None)
        if not runs:
            return
        failed = root.status_code == STATUS_ERROR
        for agent, run_id in sorted(runs):
            if run_id != root.trace_id:
                continue  # a conversation outlives its traces
            state = self.memory.run(agent, run_id)
            if state.ended:
                continue
            state.ended = True
            ev = self._base(root, agent, run_id, "run_end", root.end_ns, None)
            ev["event_id"] = event_id(root.trace_id, f"{agent}/{run_id}", "run_end")
            ev["outcome"] = "failure" if failed else "success"
            ev["step"] = state.next_step
            state.next_step += 1
            self._emit(ev, root.index, out)

    # --- building events ---------------------------------------------------------------------

    def _base(self, span: Span, agent: str, run_id: str, kind: str, ts_ns: int,
              conversation: str | None) -> dict[str, Any]:
        attrs, resource = span.attributes, span.resource
        ev = blank_event()
        ev["event_id"] = event_id(span.trace_id, span.span_id, kind)
        ev["ts"] = ts_ns // 1_000_000
        ev["agent_id"] = agent
        version, workflow, owner, environment = self._from_resource(resource)
        ev["agent_version"] = _str(attrs.get("gen_ai.agent.version")) or version
        ev["run_id"] = run_id
        ev["workflow"] = _str(attrs.get("tripwire.workflow")) or _str(
            attrs.get("traceloop.workflow.name")) or workflow
        ev["owner"] = _str(attrs.get("tripwire.owner")) or owner
        ev["environment"] = environment
        ev["kind"] = kind
        trust = _str(attrs.get("tripwire.source_trust"))
        ev["source_trust"] = trust if trust in _TRUST else None
        flagged = attrs.get("tripwire.injection_flagged")
        ev["injection_flagged"] = flagged if isinstance(flagged, bool) else None
        extra = {"otel.trace_id": span.trace_id, "otel.span_id": span.span_id}
        for key in ("gen_ai.agent.name", "gen_ai.provider.name", "gen_ai.system",
                    "gen_ai.tool.call.id", "gen_ai.operation.name"):
            value = attrs.get(key)
            if value is not None:
                extra[key] = str(value)
        if conversation:
            extra["gen_ai.conversation.id"] = conversation
        ev["attributes"] = extra
        return ev

    def _from_resource(self, resource: dict[str, AttributeValue]) -> tuple:
        """(agent_version, workflow, owner, environment) a resource gives every span of it;
        computed once per resource (all spans of a ResourceSpans share the dict)."""
        cached = self._resource_fields.get(id(resource))
        if cached is not None and cached[0] is resource:
            return cached[1]
        env = _str(resource.get("deployment.environment.name")) or _str(
            resource.get("deployment.environment"))
        fields = (_str(resource.get("service.version")), _str(resource.get("tripwire.workflow")),
                  _str(resource.get("tripwire.owner")),
                  _ENVIRONMENTS.get(env.lower()) if env else None)
        if len(self._resource_fields) > 1_000:
            self._resource_fields.clear()
        self._resource_fields[id(resource)] = (resource, fields)
        return fields

    def _emit(self, ev: dict[str, Any], index: int, out: MappedRequest) -> None:
        now = self._now_ms() if self._now_ms is not None else None
        problem = check_event(ev, now)
        if problem is None:
            out.events.append(ev)
        else:
            out.refused.append((index, f"{ev['kind']} of span {ev['attributes']['otel.span_id']}:"
                                       f" {problem}"))

    def _cost(self, attrs: Mapping[str, AttributeValue], model: str | None,
              tokens_in: int | None, tokens_out: int | None, otlp: OtlpPolicy) -> float | None:
        reported = _first(attrs, _COST_KEYS)
        if isinstance(reported, int | float) and not isinstance(reported, bool):
            return float(reported)
        if model is None or (tokens_in is None and tokens_out is None):
            return None
        key = (id(otlp), model)
        if key in self._prices:
            price = self._prices[key]
        else:
            if len(self._prices) > 10_000:
                self._prices.clear()
            price = self._prices[key] = otlp.price(model)
        if price is None:
            return None
        return round(((tokens_in or 0) * price.input_usd_per_mtok
                      + (tokens_out or 0) * price.output_usd_per_mtok) / 1_000_000, 9)

    def _action_class(self, otlp: OtlpPolicy, tool: str) -> str:
        key = (id(otlp), tool)
        cls = self._action_classes.get(key)
        if cls is None:
            if len(self._action_classes) > 100_000:
                self._action_classes.clear()
            cls = self._action_classes[key] = otlp.action_class(tool)
        return cls


# --- attribute helpers -----------------------------------------------------------------------


def _str(value: AttributeValue) -> str | None:
    if value is None or value == "":
        return None
    return value if isinstance(value, str) else str(value)


def _first(attrs: Mapping[str, AttributeValue], keys: Iterable[str]) -> AttributeValue:
    for key in keys:
        value = attrs.get(key)
        if value is not None and value != "":
            return value
    return None


def _first_str(attrs: Mapping[str, AttributeValue], keys: Iterable[str]) -> str | None:
    return _str(_first(attrs, keys))


def _first_int(attrs: Mapping[str, AttributeValue], keys: Iterable[str]) -> int | None:
    value = _first(attrs, keys)
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return value
    try:
        return int(float(value))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def _joined(attrs: Mapping[str, AttributeValue], keys: tuple[str, ...]) -> str | None:
    values = []
    for key in keys:
        v = attrs.get(key)
        if v is None or v == "" or (key == "service.name" and str(v).startswith(_UNKNOWN_SERVICE)):
            return None
        values.append(str(v))
    return "/".join(values)


def _content(attrs: Mapping[str, AttributeValue], keys: Iterable[str]) -> str | None:
    value = _first(attrs, keys)
    if value is None:
        return None
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False,
                                                           default=str)
    return text[:MAX_CONTENT_CHARS]


_LOWER_SETS: dict[int, tuple[tuple[str, ...], frozenset[str]]] = {}


def _lower_set(values: tuple[str, ...]) -> frozenset[str]:
    found = _LOWER_SETS.get(id(values))
    if found is None or found[0] is not values:  # an id can be reused after its tuple died
        found = _LOWER_SETS[id(values)] = (values, frozenset(v.lower() for v in values))
    return found[1]


def _time_problem(span: Span) -> str | None:
    if span.start_ns <= 0 or span.end_ns <= 0:
        return f"span {span.span_id} has no start or end time"
    if span.end_ns < span.start_ns:
        return f"span {span.span_id} ends before it starts"
    return None
