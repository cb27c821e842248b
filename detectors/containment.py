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

from pydantic import BaseModel, ConfigDict, Field


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
    tool_cooldown_ms: int | None = Field(
        None,
        gt=0,
        description="Trip-free time before a tool restriction lifts; null: the breaker's "
        "cool-down, so a tool and an agent earn their way back at the same pace.",
    )
