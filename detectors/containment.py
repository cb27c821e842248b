"""How narrowly the breaker contains first: policy for per-tool restriction and escalation.

A detection that names a tool (the denial-rate detector's per-tool windows do) restricts that
tool for that agent (an agent + tool scope ceiling at the rule's target) instead of lowering
the whole agent: a support agent whose refunds keep getting denied can still answer tickets.
When ``tool_trip_limit`` of its tools are restricted at once, the problem is the agent, and
the breaker escalates to an agent downgrade as before. A restriction lifts after the breaker's
cool-down without new trips of that tool (``tool_cooldown_ms``, default the cool-down).

Hooked into ``BreakerPolicy.containment`` so it resolves per workflow and agent like the rest.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tripwire.schemas.modes import Mode

CLASS_LIMIT_PREFIX = "action_class="
"""A breaker limit on an action class (rate caps) rather than on a tool is keyed this way."""
VERSION_LIMIT_PREFIX = "agent_version="
"""A breaker limit on one version of the agent (a paused canary) is keyed this way."""


class RateCap(BaseModel):
    """At most ``per_minute`` calls by one agent of a tool (name or pattern) or an action
    class; above it, the breaker restricts that tool or class for the agent to ``target``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.:-]+$")
    tool: str | None = Field(None, description="Tool name or pattern (* ? [...]).")
    action_class: Literal["read", "write", "external", "money", "destructive"] | None = None
    per_minute: int = Field(ge=1, le=100_000, description="Most calls in any 60 s.")
    target: Mode = Field(Mode.READ_ONLY, description="Ceiling while over the cap; read_only: "
                         "its side effects stop, reads go on.")

    @model_validator(mode="after")
    def _one(self) -> RateCap:
        if (self.tool is None) == (self.action_class is None):
            raise ValueError(f"rate cap {self.name}: give a tool or an action_class (one)")
        if self.target == Mode.AUTONOMOUS:
            raise ValueError(f"rate cap {self.name}: target autonomous would cap nothing")
        return self

    @property
    def limit_key(self) -> str:
        return self.tool if self.tool is not None else CLASS_LIMIT_PREFIX + str(self.action_class)


class ContainmentPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    narrow_tools: bool = Field(
        True,
        description="A detection naming a tool restricts that tool for the agent before the "
        "agent is downgraded: containment as narrow as possible first (the runbooks' 'disable "
        "one risky tool'). false: every trip lowers the agent, as before scopes.",
    )
    tool_trip_limit: int = Field(
        3,
        ge=1,
        le=64,
        description="Tools restricted at the same time that escalate to an agent downgrade. "
        "3: one or two misbehaving tools are a tool problem (a changed API, a stricter "
        "policy); three at once is the agent itself.",
    )
    rate_caps: tuple[RateCap, ...] = Field(
        (),
        description="Calls-per-minute caps per agent, enforced on the stream by the breaker "
        "(a guard cannot count across an agent's processes). None by default: a sensible rate "
        "depends on the tool. Counts are kept in memory: a worker restart forgets the last "
        "minute.",
    )
    narrow_versions: bool = Field(
        True,
        description="When an agent runs two or more versions (seen within version_window_ms) "
        "and a trip comes from one of them, restrict that agent + version instead of the "
        "agent: pause the canary, keep the healthy release working. When every version it "
        "runs is restricted, the agent is downgraded.",
    )
    version_window_ms: int = Field(
        10 * 60_000,
        gt=0,
        description="How recently a version must have been seen to count as running: 10 min "
        "covers a canary that takes a share of an agent's runs.",
    )
    workflow_trip_agents: int = Field(
        5,
        ge=2,
        le=10_000,
        description="Distinct agents of one workflow downgraded by the same rule within "
        "workflow_window_ms that restrict the whole workflow (a shared workflow ceiling at the "
        "lowest of their modes, for the cool-down). 5: two or three agents tripping together "
        "can be coincidence; five is the workflow (a bad prompt, a broken dependency). "
        "Counted per worker, over the agents of its partitions.",
    )
    workflow_window_ms: int = Field(
        10 * 60_000,
        gt=0,
        description="Window for workflow_trip_agents: 10 min, the span of one incident.",
    )
    tool_cooldown_ms: int | None = Field(
        None,
        gt=0,
        description="Trip-free time before a tool restriction lifts; null: the breaker's "
        "cool-down, so a tool and an agent earn their way back at the same pace.",
    )
