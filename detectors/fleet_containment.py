"""Containment wider than one agent: the same trip across many agents of one workflow.

The breaker is per agent; this sees its transitions across the agents a worker holds. When
``workflow_trip_agents`` distinct agents of one workflow are downgraded by the same rule within
``workflow_window_ms``, the workflow itself is restricted (a shared scope ceiling at the lowest
mode they were sent to, for the breaker's cool-down), so its other agents, and new ones, stop
before they trip one by one. Plain data in, plain decisions out.
"""

from __future__ import annotations

from dataclasses import dataclass

from tripwire.detectors.containment import ContainmentPolicy
from tripwire.schemas.modes import Mode

__all__ = ["WorkflowContainment", "WorkflowTrip"]

AGENT_TRIPS = frozenset({"downgrade", "escalate", "probation_failed"})
"""Breaker actions that count as an agent tripping."""


@dataclass(frozen=True, slots=True)
class WorkflowTrip:
    workflow: str
    rule: str
    mode: Mode
    agents: tuple[str, ...]
    at: int
    until: int

    @property
    def reason(self) -> str:
        shown = ", ".join(self.agents[:5]) + (" …" if len(self.agents) > 5 else "")
        return (f"{len(self.agents)} agents of workflow {self.workflow} tripped rule "
                f"{self.rule} within the window ({shown}): workflow restricted to {self.mode}")


class WorkflowContainment:
    def __init__(self) -> None:
        # (workflow, rule) -> agent -> (ts, mode)
        self._trips: dict[tuple[str, str], dict[str, tuple[int, Mode]]] = {}
        self._active: dict[str, int] = {}  # workflow -> restricted until

    def observe(
        self, workflow: str | None, agent_id: str, rule: str | None, mode: Mode, ts: int,
        policy: ContainmentPolicy, cooldown_ms: int,
    ) -> WorkflowTrip | None:
        if not workflow or not rule:
            return None
        seen = self._trips.setdefault((workflow, rule), {})
        seen[agent_id] = (ts, mode)
        horizon = ts - policy.workflow_window_ms
        for agent in [a for a, (at, _) in seen.items() if at <= horizon]:
            del seen[agent]
        if len(seen) < policy.workflow_trip_agents or self._active.get(workflow, 0) > ts:
            return None
        until = ts + cooldown_ms
        self._active[workflow] = until
        lowest = min((m for _, m in seen.values()), key=lambda m: m.rank)
        return WorkflowTrip(workflow, rule, lowest, tuple(sorted(seen)), ts, until)
