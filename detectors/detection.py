"""What a detector emits when a metric crosses a threshold."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, Literal

from tripwire.detectors.severity import Severity

Scope = Literal["agent", "run"]

DETECTION_NAMESPACE = uuid.UUID("5f1c7a52-3b8e-4f0e-9a55-7d2a3c1e9b40")
"""uuid5 namespace of detection ids; fixed forever so replays regenerate the same ids."""


def detection_id(
    agent_id: str,
    detector: str,
    metric: str,
    severity: Severity,
    ts: int,
    run_id: str | None,
    tool: str | None,
    evidence_event_ids: tuple[str, ...],
) -> str:
    """A name-based uuid: re-processing the same events after a crash yields the same id.

    ``ts`` and ``metric`` are part of the name because one evidence list can legitimately back
    two detections (a re-armed key firing again after old events left the window).
    """
    name = "\x1f".join(
        (agent_id, detector, metric, severity, str(ts), run_id or "", tool or "")
        + evidence_event_ids
    )
    return str(uuid.uuid5(DETECTION_NAMESPACE, name))


@dataclass(frozen=True, slots=True, kw_only=True)
class Detection:
    """One detector firing for one agent (``scope="agent"``) or one of its runs (``"run"``).

    Fields follow ``schemas/detection.avsc`` plus ``scope``, which the breaker needs to tell a
    runaway run (stop it) from a misbehaving agent (downgrade it).
    """

    detection_id: str
    detector: str
    agent_id: str
    run_id: str | None
    tool: str | None
    metric: str
    value: float
    threshold: float
    window_ms: int | None
    severity: Severity
    evidence_event_ids: tuple[str, ...]
    ts: int
    message: str
    scope: Scope

    @classmethod
    def build(
        cls,
        *,
        detector: str,
        agent_id: str,
        metric: str,
        value: float,
        threshold: float,
        window_ms: int | None,
        severity: Severity,
        evidence_event_ids: tuple[str, ...],
        ts: int,
        message: str,
        scope: Scope,
        run_id: str | None = None,
        tool: str | None = None,
    ) -> Detection:
        """A detection whose id is derived from what it is about (see ``detection_id``)."""
        return cls(
            detection_id=detection_id(
                agent_id, detector, metric, severity, ts, run_id, tool, evidence_event_ids
            ),
            detector=detector,
            agent_id=agent_id,
            run_id=run_id,
            tool=tool,
            metric=metric,
            value=float(value),
            threshold=float(threshold),
            window_ms=window_ms,
            severity=severity,
            evidence_event_ids=evidence_event_ids,
            ts=ts,
            message=message,
            scope=scope,
        )

    def to_record(self) -> dict[str, Any]:
        """The ``schemas/detection.avsc`` record (``scope`` is implied there by ``run_id``)."""
        return {
            "detection_id": self.detection_id,
            "detector": self.detector,
            "agent_id": self.agent_id,
            "run_id": self.run_id,
            "tool": self.tool,
            "metric": self.metric,
            "value": self.value,
            "threshold": self.threshold,
            "window_ms": self.window_ms,
            "severity": self.severity,
            "evidence_event_ids": list(self.evidence_event_ids),
            "ts": self.ts,
            "message": self.message,
        }
