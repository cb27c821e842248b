"""Prompt-injection hits per agent over a rolling window.

A hit is a step whose content the agent's own filter flagged (``injection_flagged``), or
whose content the injected scanner scores at or above ``injection.min_score``. The scanner is
any callable ``scan(text, source_trust)`` returning ``(score, signals)`` or an object with
``score`` and ``signals`` attributes (``detectors.injection.scan_text``'s ``ScanResult``);
its own hit flag is ignored so that the policy alone decides the threshold.

Latch (``detectors/severity.py``) on the hit count; a window that has emptied forgets it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from tripwire.detectors.detection import Detection
from tripwire.detectors.evidence import EvidenceRing
from tripwire.detectors.policy import ResolvedPolicy
from tripwire.detectors.severity import SeverityBands, compile_bands
from tripwire.detectors.stream_detector import Event, StreamDetector
from tripwire.detectors.windows import BucketRing, EventClock

Scanner = Callable[[str, str | None], Any]
"""``scan(text, source_trust) -> (score, signals)`` or an object with .score and .signals."""

AGENT_FLAG = "agent_filter"


def read_scan(result: Any) -> tuple[float, Sequence[str]]:
    """Score and signals from either accepted scanner result shape."""
    score = getattr(result, "score", None)
    if score is None:
        return float(result[0]), result[-1]
    return float(score), getattr(result, "signals", ())


class InjectionHitRate(StreamDetector):
    name = "injection"

    __slots__ = ("policy", "scanner", "bands", "evidence_max", "ring", "level", "ids")

    def __init__(
        self,
        agent_id: str,
        policy: ResolvedPolicy,
        scanner: Scanner | None = None,
        clock: EventClock | None = None,
    ) -> None:
        super().__init__(agent_id, policy, clock)
        self.policy = policy.injection
        self.scanner = scanner
        self.bands: SeverityBands = policy.compiled("injection", _bands)
        self.evidence_max = policy.event_time.evidence_max
        self.ring = BucketRing(self.policy.window_ms, self.policy.buckets, counts=True)
        self.level = 0
        self.ids: EvidenceRing | None = None

    def observe(self, event: Event, on_time: bool, out: list[Detection]) -> None:
        if not on_time:
            return
        if event.get("injection_flagged") is True:
            signals: Sequence[str] = (AGENT_FLAG,)
        else:
            scanner = self.scanner
            content = event.get("content")
            if scanner is None or not content:
                return
            score, signals = read_scan(scanner(content, event.get("source_trust")))
            if score < self.policy.min_score:
                return
        now = self.clock.watermark
        ring = self.ring
        if ring.advance(now):
            self.level = 0  # every hit that fired has left the window
            self.ids = None
        if not ring.add(event["ts"], 0, 1):
            return
        ids = self.ids
        if ids is None:
            ids = self.ids = EvidenceRing(self.evidence_max)
        ids.add(event["event_id"])
        hits = ring.total0
        bands = self.bands
        level = self.level
        new_level = bands.rise(hits, level)
        if new_level > level:
            self.level = new_level
            source = event.get("source_trust") or "unknown"
            via = f" via tool {event['tool']}" if event.get("tool") else ""
            out.append(
                Detection.build(
                    detector=self.name,
                    agent_id=self.agent_id,
                    metric="injection_hits",
                    value=hits,
                    threshold=bands.threshold(new_level),
                    window_ms=self.policy.window_ms,
                    severity=bands.severity(new_level),
                    evidence_event_ids=ids.last(self.evidence_max),
                    ts=now,
                    message=f"{hits:.0f} prompt-injection hits within "
                    f"{self.policy.window_ms // 1000} s; latest from {source} content "
                    f"in a {event['kind']} step{via}, signals: {', '.join(signals) or 'none'}",
                    scope="agent",
                )
            )
        elif level:
            self.level = bands.fall(hits, level)

    def expire(self, now_ms: int) -> None:
        if self.ring.advance(now_ms):
            self.level = 0
            self.ids = None

    def to_state(self) -> list:
        ids = self.ids.to_state() if self.ids is not None else []
        return [self.level, self.ring.to_state(), ids]

    @classmethod
    def from_state(
        cls,
        state: list,
        agent_id: str,
        policy: ResolvedPolicy,
        scanner: Scanner | None = None,
        clock: EventClock | None = None,
    ) -> InjectionHitRate:
        detector = cls(agent_id, policy, scanner, clock)
        detector.level = int(state[0])
        detector.ring = BucketRing.from_state(
            state[1], policy.injection.window_ms, policy.injection.buckets, counts=True
        )
        if state[2]:
            detector.ids = EvidenceRing.from_state(state[2], detector.evidence_max)
        return detector


def _bands(policy: ResolvedPolicy) -> SeverityBands:
    return compile_bands(policy.injection.bands, 1.0, policy.event_time.rearm_ratio)
