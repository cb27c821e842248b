"""Calls per minute per agent, against ``breaker.containment.rate_caps``.

Plain data: one bounded deque of call times per cap (at most ``per_minute + 1`` entries), so
memory per agent is the sum of its caps' limits. Event time, like every other window.
"""

from __future__ import annotations

from collections import deque
from fnmatch import fnmatchcase
from typing import Any

from tripwire.detectors.containment import RateCap

__all__ = ["RateCounter"]

WINDOW_MS = 60_000


class RateCounter:
    __slots__ = ("caps", "_times")

    def __init__(self, caps: tuple[RateCap, ...]) -> None:
        self.caps = caps
        self._times: list[deque[int]] = [deque(maxlen=cap.per_minute + 1) for cap in caps]

    def observe(self, event: dict[str, Any]) -> list[tuple[RateCap, int]]:
        """Count one tool_call; the caps it takes over their limit now, with the count."""
        if not self.caps or event.get("kind") != "tool_call":
            return []
        tool, action_class, ts = event.get("tool"), event.get("action_class"), int(event["ts"])
        over = []
        for cap, times in zip(self.caps, self._times, strict=True):
            if cap.tool is not None:
                if tool is None or not (tool == cap.tool or fnmatchcase(tool, cap.tool)):
                    continue
            elif action_class != cap.action_class:
                continue
            times.append(ts)
            while times and times[0] <= ts - WINDOW_MS:
                times.popleft()
            if len(times) > cap.per_minute:
                over.append((cap, len(times)))
        return over
