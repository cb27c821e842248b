"""Thresholds mapped to severities, and the rule that decides when a detection fires.

Every detector compares its metrics here and nowhere else, so ``SeverityBands`` is where a
threshold is decided; the policy (``detectors/policy.py``) is where its value comes from.

The fire / re-arm rule (hysteresis), per watched key (an agent, an agent+tool, a run):

* The key holds a *level*: 0 when quiet, n when band n (1-based, ascending thresholds) has
  fired.
* **Fire**: when the value reaches the threshold of a band above the level, one detection is
  emitted for the highest band reached and the level jumps to it. Further values in the same
  band fire nothing, however many events arrive.
* **Re-arm**: the level drops below band n only when the value falls under
  ``rearm_ratio`` x (threshold of band n). A later climb back into band n fires again.

The gap between the threshold and its re-arm point keeps a value that hovers around a
threshold from firing on every other event.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Literal, Protocol

Severity = Literal["S1", "S2", "S3"]


class BandSpec(Protocol):
    """One configured band: the policy's ``Band`` models satisfy this."""

    @property
    def at(self) -> float: ...

    @property
    def severity(self) -> Severity: ...


class SeverityBands:
    """Ascending thresholds, each with the severity a detection gets when it is crossed."""

    __slots__ = ("thresholds", "severities", "rearm_below", "count")

    def __init__(
        self, thresholds: tuple[float, ...], severities: tuple[Severity, ...], rearm_ratio: float
    ) -> None:
        if len(thresholds) != len(severities) or not thresholds:
            raise ValueError("bands need one severity per threshold and at least one band")
        if any(b <= a for a, b in zip(thresholds, thresholds[1:], strict=False)):
            raise ValueError(f"band thresholds must increase strictly, got {thresholds}")
        self.thresholds = thresholds
        self.severities = severities
        self.rearm_below = tuple(t * rearm_ratio for t in thresholds)
        self.count = len(thresholds)

    def rise(self, value: float, level: int) -> int:
        """The level after ``value``, counting only climbs: a result above ``level`` fires."""
        thresholds = self.thresholds
        while level < self.count and value >= thresholds[level]:
            level += 1
        return level

    def fall(self, value: float, level: int) -> int:
        """The level after ``value``, counting only re-arms (drops under the re-arm point)."""
        rearm_below = self.rearm_below
        while level > 0 and value < rearm_below[level - 1]:
            level -= 1
        return level

    def severity(self, level: int) -> Severity:
        return self.severities[level - 1]

    def threshold(self, level: int) -> float:
        return self.thresholds[level - 1]


@lru_cache(maxsize=1024)
def compile_bands(bands: tuple[BandSpec, ...], scale: float, rearm_ratio: float) -> SeverityBands:
    """Bands from the policy, thresholds multiplied by ``scale`` (a budget or limit).

    Cached: every agent with the same policy shares one instance, which keeps per-agent
    memory down to a reference.
    """
    return SeverityBands(
        tuple(b.at * scale for b in bands), tuple(b.severity for b in bands), rearm_ratio
    )
