"""What every detector has in common: one agent, one event clock, ``feed(event)``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from tripwire.detectors.detection import Detection
from tripwire.detectors.policy import ResolvedPolicy
from tripwire.detectors.windows import EventClock

Event = Mapping[str, Any]
"""A step event as the stream decodes it: every field of step_event.avsc present."""


class StreamDetector:
    """Base of the detectors. Each is fed one agent's events in arrival order.

    ``feed`` is the standalone entry point: it asks the clock whether the event is on time and
    then ``observe``s it. ``AgentMonitor`` shares one clock between its detectors, admits each
    event once and calls ``observe`` directly, appending to one output list.
    """

    __slots__ = ("agent_id", "clock")

    name: ClassVar[str]

    def __init__(self, agent_id: str, policy: ResolvedPolicy, clock: EventClock | None) -> None:
        self.agent_id = agent_id
        self.clock = clock if clock is not None else EventClock(policy.event_time.grace_ms)

    def feed(self, event: Event) -> list[Detection]:
        out: list[Detection] = []
        self.observe(event, self.clock.admit(event["ts"]), out)
        return out

    def observe(self, event: Event, on_time: bool, out: list[Detection]) -> None:
        """Account for an event the clock has already admitted (or found late)."""
        raise NotImplementedError

    def tick(self, now_ms: int) -> list[Detection]:
        """Time-driven checks (nothing arrives to trigger them); most detectors have none."""
        return []

    def expire(self, now_ms: int) -> None:
        """Forget state that can no longer matter, to keep memory bounded."""

    def to_state(self) -> list[Any]:
        raise NotImplementedError
