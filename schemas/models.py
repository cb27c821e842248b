"""Pydantic mirrors of the Avro contract in ``schemas/*.avsc``.

Field names, order, optionality, enum symbols and defaults match the .avsc files one to one;
``tests/test_schema_contract.py`` walks the .avsc JSON and fails when either side drifts.

The Avro path (``schemas.codec``) never builds these models: it is the hot path and works on
plain dicts. The models validate the JSON ingest path and give producers a typed way to build
events (``StepEvent(...).to_record()`` yields the canonical dict the codec encodes).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

# Bounds of the Avro primitives, so anything a model accepts is also encodable as Avro
# (Python ints are unbounded, Avro int/long are not).
AVRO_INT_MIN, AVRO_INT_MAX = -(2**31), 2**31 - 1
AVRO_LONG_MIN, AVRO_LONG_MAX = -(2**63), 2**63 - 1

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS = timedelta(milliseconds=1)


def epoch_millis(value: Any) -> Any:
    """Turn an ISO-8601 string or a datetime into epoch milliseconds; naive times mean UTC.

    Anything else is passed through untouched so the int validation after it reports the
    type error (a bool or float is not silently accepted as a timestamp).
    """
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError as exc:
            raise ValueError(f"not an ISO-8601 timestamp: {value!r}") from exc
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        # Integer timedelta division: float seconds would lose sub-ms precision far from 1970.
        return (value - _EPOCH) // _ONE_MS
    return value


AvroInt = Annotated[int, Field(ge=AVRO_INT_MIN, le=AVRO_INT_MAX)]
AvroLong = Annotated[int, Field(ge=AVRO_LONG_MIN, le=AVRO_LONG_MAX)]
# Avro ``long`` with logicalType ``timestamp-millis``; kept as int so the hot path never
# allocates datetimes.
EpochMillis = Annotated[
    int, BeforeValidator(epoch_millis), Field(ge=AVRO_LONG_MIN, le=AVRO_LONG_MAX)
]


class Environment(StrEnum):
    dev = "dev"
    test = "test"
    prod = "prod"


class StepKind(StrEnum):
    run_start = "run_start"
    model_call = "model_call"
    tool_call = "tool_call"
    policy_decision = "policy_decision"
    approval_request = "approval_request"
    approval_decision = "approval_decision"
    output = "output"
    run_end = "run_end"


class ActionClass(StrEnum):
    read = "read"
    write = "write"
    external = "external"
    money = "money"
    destructive = "destructive"


class PolicyOutcome(StrEnum):
    allowed = "allowed"
    denied = "denied"
    approval_required = "approval_required"
    escalated = "escalated"


class StepStatus(StrEnum):
    ok = "ok"
    error = "error"
    timeout = "timeout"


class RunOutcome(StrEnum):
    success = "success"
    failure = "failure"
    abandoned = "abandoned"


class SourceTrust(StrEnum):
    internal = "internal"
    partner = "partner"
    external = "external"


class Mode(StrEnum):
    autonomous = "autonomous"
    approve_to_act = "approve_to_act"
    suggest_only = "suggest_only"
    read_only = "read_only"
    halted = "halted"


class ControlScope(StrEnum):
    agent = "agent"
    run = "run"
    scoped = "scoped"


class ControlSource(StrEnum):
    breaker = "breaker"
    operator = "operator"


class Severity(StrEnum):
    S1 = "S1"
    S2 = "S2"
    S3 = "S3"


class CommandAction(StrEnum):
    kill = "kill"
    kill_all = "kill_all"
    pin = "pin"
    release = "release"
    restrict = "restrict"
    release_all = "release_all"


class AvroRecord(BaseModel):
    """Base of the contract models.

    ``use_enum_values`` stores enum fields as plain ``str`` so ``to_record()`` yields exactly
    what the Avro decoder produces. Unknown fields are ignored, mirroring Avro schema
    resolution (a newer writer's extra fields are dropped by an older reader).
    """

    model_config = ConfigDict(use_enum_values=True, extra="ignore")

    def to_record(self) -> dict[str, Any]:
        """The canonical dict: every field present, enums as str, timestamps as epoch ms."""
        return self.model_dump()


class StepEvent(AvroRecord):
    event_id: str
    ts: EpochMillis
    agent_id: str
    agent_version: str | None = None
    run_id: str
    step: AvroInt
    workflow: str | None = None
    owner: str | None = None
    environment: Environment | None = None
    kind: StepKind
    tool: str | None = None
    action_class: ActionClass | None = None
    params_hash: str | None = None
    policy_outcome: PolicyOutcome | None = None
    policy_rule: str | None = None
    model: str | None = None
    input_tokens: AvroLong | None = None
    output_tokens: AvroLong | None = None
    cost_usd: float | None = None
    latency_ms: AvroLong | None = None
    status: StepStatus | None = None
    outcome: RunOutcome | None = None
    approver: str | None = None
    approved: bool | None = None
    wait_ms: AvroLong | None = None
    content: str | None = None
    source_trust: SourceTrust | None = None
    injection_flagged: bool | None = None
    attributes: dict[str, str] = Field(default_factory=dict)


class StepBatch(AvroRecord):
    events: list[StepEvent]


class Control(AvroRecord):
    agent_id: str
    mode: Mode
    previous_mode: Mode | None = None
    scope: ControlScope
    run_id: str | None = None
    reason: str
    detection_ids: list[str] = Field(default_factory=list)
    seq: AvroLong
    issued_at: EpochMillis
    rule: str | None = None
    expires_at: EpochMillis | None = None
    # validate_default turns the member into a plain str like every other enum value.
    source: ControlSource = Field(default=ControlSource.breaker, validate_default=True)
    agent_version: str | None = None
    environment: str | None = None
    workflow: str | None = None
    tool: str | None = None
    action_class: str | None = None
    condition: str | None = None
    command_id: str | None = None


class Detection(AvroRecord):
    detection_id: str
    detector: str
    agent_id: str
    run_id: str | None = None
    tool: str | None = None
    metric: str
    value: float
    threshold: float
    window_ms: AvroLong | None = None
    severity: Severity
    evidence_event_ids: list[str]
    ts: EpochMillis
    message: str


class Command(AvroRecord):
    command_id: str
    action: CommandAction
    agent_id: str | None = None
    mode: Mode | None = None
    duration_ms: AvroLong | None = None
    reason: str
    operator: str
    issued_at: EpochMillis
    key_id: str | None = None
    nonce: str | None = None
    signature: str | None = None
    agent_version: str | None = None
    environment: str | None = None
    workflow: str | None = None
    tool: str | None = None
    action_class: str | None = None
