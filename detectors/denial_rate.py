"""Policy-denial rate: denied / decided policy decisions, per agent and per agent+tool.

An agent whose actions keep being refused either misunderstands its permissions or is trying
things it should not. The rate is taken over a sliding event-time window and only once the
window holds a minimum number of decisions (resilience4j's minimumNumberOfCalls), so one
denial out of two decisions does not trip anything.

Latch (see ``detectors/severity.py``): fires on crossing into a higher band, re-arms below
``rearm_ratio`` x threshold. Below the minimum sample the rate is undefined and the latch is
held; a window that has emptied completely forgets its latch.
"""

from __future__ import annotations

import sys

from tripwire.detectors.detection import Detection
from tripwire.detectors.evidence import EvidenceRing
from tripwire.detectors.policy import ResolvedPolicy
from tripwire.detectors.severity import SeverityBands, compile_bands
from tripwire.detectors.stream_detector import Event, StreamDetector
from tripwire.detectors.windows import BucketRing, EventClock


class DenialKey(BucketRing):
    """Window (decided, denied counts), latch level and evidence of one key: the agent, or
    one of its tools. One object per key, as there can be dozens of keys per agent."""

    __slots__ = ("level", "evidence", "latches")

    def __init__(self, window_ms: int, buckets: int) -> None:
        super().__init__(window_ms, buckets, width=2, counts=True)
        self.level = 0
        self.evidence: EvidenceRing | None = None
        # The latch levels of the detector's ``DenialBands`` followers, by their index; None
        # while all are 0.
        self.latches: list[int] | None = None

    def advance(self, now_ms: int) -> bool:
        """``BucketRing.advance`` for a denial key, whose buckets never hold more denials
        than decisions (each decision adds 1, and 1 or 0): a dropped bucket without
        decisions is skipped without reading its denials (a sparse key's usual dropped
        bucket: 620 -> 603 bytecodes an event replayed on the bench dataset)."""
        idx = now_ms // self.bucket_ms
        head = self.head
        if idx <= head:
            return self.cells is None
        self.head = idx
        cells = self.cells
        if cells is None:
            return True
        size = self.size
        if idx - head >= size:
            self.cells, self.total0, self.total1 = None, 0, 0
            return True
        total0 = self.total0
        for bucket in range(head + 1, idx + 1):
            offset = bucket % size * 2
            decided = cells[offset]
            if decided:
                total0 -= decided
                cells[offset] = 0
                denied = cells[offset + 1]
                if denied:
                    self.total1 -= denied
                    cells[offset + 1] = 0
        self.total0 = total0
        if not (total0 or self.total1):
            self.cells, self.total0, self.total1 = None, 0, 0
            return True
        return False

    def forget(self) -> None:
        self.level = 0
        self.evidence = None
        self.latches = None

    def key_state(self) -> list:
        evidence = self.evidence.to_state() if self.evidence is not None else []
        return [self.level, self.to_state(), evidence]

    @classmethod
    def from_key_state(
        cls, state: list, window_ms: int, buckets: int, evidence_max: int
    ) -> DenialKey:
        key = cls(window_ms, buckets)
        ring = BucketRing.from_state(state[1], window_ms, buckets, width=2, counts=True)
        key.head, key.cells, key.total0, key.total1 = (
            ring.head,
            ring.cells,
            ring.total0,
            ring.total1,
        )
        key.level = int(state[0])
        if state[2]:
            key.evidence = EvidenceRing.from_state(state[2], evidence_max)
        return key


GUARD_DECIDER = "tripwire-guard"
"""``attributes.decided_by`` of policy decisions the SDK guard emits (sdk/guard.py)."""


class DenialRateDetector(StreamDetector):
    name = "denial_rate"

    __slots__ = ("policy", "bands", "evidence_max", "agent", "tools", "followers")

    def __init__(
        self, agent_id: str, policy: ResolvedPolicy, clock: EventClock | None = None
    ) -> None:
        super().__init__(agent_id, policy, clock)
        self.policy = policy.denial_rate
        self.bands: SeverityBands = policy.compiled("denial_rate", _bands)
        self.evidence_max = policy.event_time.evidence_max
        self.agent = DenialKey(self.policy.window_ms, self.policy.buckets)
        self.tools: dict[str, DenialKey] = {}
        self.followers: list[DenialBands] = []

    def observe(self, event: Event, on_time: bool, out: list[Detection]) -> None:
        if not on_time or event["kind"] != "policy_decision":
            return
        attributes = event.get("attributes")
        if attributes and attributes.get("decided_by") == GUARD_DECIDER:
            # The guard's own refusals enforce a downgrade; counting them as the agent's
            # denials would push it down again for obeying.
            return
        policy = self.policy
        now = self.clock.watermark
        denied = event.get("policy_outcome") == "denied"
        event_id: str = event["event_id"]
        ts: int = event["ts"]
        self._count(self.agent, None, ts, now, denied, event_id, policy.min_decisions, out)
        tool = event.get("tool")
        if tool is not None and policy.per_tool:
            key = self.tools.get(tool)
            if key is None:
                key = self._new_tool_key(tool, now)
            self._count(key, tool, ts, now, denied, event_id, policy.min_decisions_per_tool, out)

    def _count(
        self,
        key: DenialKey,
        tool: str | None,
        ts: int,
        now: int,
        denied: bool,
        event_id: str,
        min_decisions: int,
        out: list[Detection],
    ) -> None:
        # Everything that fired has left an emptied window. (advance, inlined when the newest
        # bucket has not changed: the usual case.)
        if key.advance(now) if now // key.bucket_ms > key.head else key.cells is None:
            key.forget()
        # add2(ts, 1, denied), inlined for its usual case: the event lands in the newest
        # bucket of a window that holds something (with the count rings' cheaper crossing:
        # denial rate 0.66 -> 0.57 us an event on the bench dataset's first 20 agents).
        cells = key.cells
        bucket = ts // key.bucket_ms
        if bucket == key.head and cells is not None:
            offset = bucket % key.size * 2
            cells[offset] += 1
            key.total0 += 1
            if denied:
                cells[offset + 1] += 1
                key.total1 += 1
        elif not key.add2(ts, 1, 1 if denied else 0):
            return
        if denied:
            evidence = key.evidence
            if evidence is None:
                evidence = key.evidence = EvidenceRing(self.evidence_max)
            evidence.add(event_id)
        decided = key.total0
        if decided < min_decisions:
            return
        rate = key.total1 / decided
        if self.followers:
            for follower in self.followers:
                follower.latch(key, tool, rate, now)
        bands = self.bands
        level = key.level
        if not level and rate < bands.thresholds[0]:
            return  # the common case, decided without a call
        new_level = bands.rise(rate, level)
        if new_level > level:
            key.level = new_level
            out.append(self._detection(key, tool, rate, new_level, now, bands))
        elif level:
            key.level = bands.fall(rate, level)

    def _detection(
        self,
        key: DenialKey,
        tool: str | None,
        rate: float,
        level: int,
        now: int,
        bands: SeverityBands,
    ) -> Detection:
        threshold = bands.threshold(level)
        severity = bands.severity(level)
        where = f" for tool {tool}" if tool is not None else ""
        evidence = key.evidence.last(self.evidence_max) if key.evidence is not None else ()
        return Detection.build(
            detector=self.name,
            agent_id=self.agent_id,
            metric="denial_rate",
            value=rate,
            threshold=threshold,
            window_ms=self.policy.window_ms,
            severity=severity,
            evidence_event_ids=evidence,
            ts=now,
            message=f"{key.total1} of {key.total0} policy decisions denied "
            f"({rate:.0%}){where} within {self.policy.window_ms // 1000} s "
            f"(band {threshold:.0%} -> {severity})",
            scope="agent",
            tool=tool,
        )

    def _new_tool_key(self, tool: str, now: int) -> DenialKey:
        tools = self.tools
        if len(tools) >= self.policy.max_tools:
            self._expire_tools(now)
        if len(tools) >= self.policy.max_tools:
            # Least recently used: its newest bucket is the oldest.
            del tools[min(tools, key=lambda t: tools[t].head)]
        # Interned: a fleet uses a small vocabulary of tool names, so each name is stored once
        # per process rather than once per agent.
        key = tools[sys.intern(tool)] = DenialKey(self.policy.window_ms, self.policy.buckets)
        return key

    def _expire_tools(self, now: int) -> None:
        # A loop calling ``DenialKey.advance`` directly, not a comprehension through a helper:
        # this runs at every maintenance sweep (each 5 min of an agent's event time) for each
        # of its tools, and a comprehension is a call of its own in CPython 3.11.
        tools = self.tools
        dead: list[str] | None = None
        for tool, key in tools.items():
            if key.advance(now):
                if dead is None:
                    dead = [tool]
                else:
                    dead.append(tool)
        if dead is not None:
            for tool in dead:
                del tools[tool]

    def expire(self, now_ms: int) -> None:
        if self.agent.advance(now_ms):
            self.agent.forget()
        if self.tools:
            self._expire_tools(now_ms)

    def to_state(self) -> list:
        tools: list = []
        for tool, key in self.tools.items():
            tools += [tool, key.key_state()]
        return [self.agent.key_state(), tools]

    @classmethod
    def from_state(
        cls, state: list, agent_id: str, policy: ResolvedPolicy, clock: EventClock | None = None
    ) -> DenialRateDetector:
        detector = cls(agent_id, policy, clock)
        p = detector.policy
        detector.agent = DenialKey.from_key_state(
            state[0], p.window_ms, p.buckets, detector.evidence_max
        )
        tools = state[1]
        for i in range(0, len(tools), 2):
            detector.tools[sys.intern(tools[i])] = DenialKey.from_key_state(
                tools[i + 1], p.window_ms, p.buckets, detector.evidence_max
            )
        return detector


class DenialBands:
    """Another policy's denial-rate bands judged on a :class:`DenialRateDetector`'s counts
    (its ``leader``): for a variant whose denial-rate section differs only in its bands (a
    shadow band, a backtest candidate with other bands). Its windows, minimums, tool keys and
    evidence would be the leader's exactly, so it keeps only what differs: a latch level per
    key (``DenialKey.latches``, forgotten with the key's window) and its detections. It
    decides what a DenialRateDetector of its policy fed the same events would
    (tests/test_denial_bands.py), without counting each decision a second time: that second
    count and its sweeps were 13 % of a band-change backtest's replay samples (pure Python,
    README, "Backtest").

    The leader latches it as it counts an event; :meth:`observe`, called for the same event
    after the leader's, hands over what that found."""

    name = "denial_rate"

    __slots__ = ("agent_id", "leader", "index", "bands", "found")

    def __init__(self, leader: DenialRateDetector, policy: ResolvedPolicy) -> None:
        self.agent_id = leader.agent_id
        self.leader = leader
        self.index = len(leader.followers)
        self.bands: SeverityBands = policy.compiled("denial_rate", _bands)
        self.found: list[Detection] = []
        leader.followers.append(self)

    def latch(self, key: DenialKey, tool: str | None, rate: float, now: int) -> None:
        """The leader's latch step, with these bands (``DenialRateDetector._count``)."""
        level = self.level(key)
        bands = self.bands
        if not level and rate < bands.thresholds[0]:
            return
        new_level = bands.rise(rate, level)
        if new_level > level:
            self._levels(key)[self.index] = new_level
            self.found.append(self.leader._detection(key, tool, rate, new_level, now, bands))
        elif level:
            self._levels(key)[self.index] = bands.fall(rate, level)

    def observe(self, event: Event, on_time: bool, out: list[Detection]) -> None:
        """What the leader's count of this event latched (it counted it first)."""
        if self.found:
            out += self.found
            self.found = []

    def expire(self, now_ms: int) -> None:
        """Nothing of its own: the leader's expiry forgets a key's latches with its window."""

    def level(self, key: DenialKey) -> int:
        """Its latch level on ``key`` (0 if it never latched there or the window emptied)."""
        levels = key.latches
        return levels[self.index] if levels is not None and self.index < len(levels) else 0

    def to_state(self) -> list:
        """What a DenialRateDetector of its policy would save: the leader's windows and
        evidence with these latch levels (so a saved state reads the same either way)."""
        leader = self.leader
        state = leader.to_state()
        state[0][0] = self.level(leader.agent)
        tools = state[1]
        for i in range(0, len(tools), 2):
            tools[i + 1][0] = self.level(leader.tools[tools[i]])
        return state

    def restore(self, state: list) -> None:
        """The latch levels of a saved state (``to_state``'s, or a DenialRateDetector's of
        this policy); windows and evidence are the leader's, already restored."""
        leader = self.leader
        self._set_level(leader.agent, int(state[0][0]))
        tools = state[1]
        for i in range(0, len(tools), 2):
            key = leader.tools.get(tools[i])
            if key is not None:
                self._set_level(key, int(tools[i + 1][0]))

    def _set_level(self, key: DenialKey, level: int) -> None:
        if level or key.latches is not None:
            self._levels(key)[self.index] = level

    def _levels(self, key: DenialKey) -> list[int]:
        """The key's latch levels, one for each follower of the leader."""
        followers = len(self.leader.followers)
        levels = key.latches
        if levels is None:
            levels = key.latches = [0] * followers
        elif len(levels) < followers:
            levels += [0] * (followers - len(levels))
        return levels


def bands_only(a: ResolvedPolicy, b: ResolvedPolicy) -> bool:
    """Whether two policies' denial-rate sections differ in their bands alone (the rest of
    what the detector reads, ``event_time``, is a section every variant shares)."""
    return a.denial_rate.model_copy(update={"bands": b.denial_rate.bands}) == b.denial_rate


def _bands(policy: ResolvedPolicy) -> SeverityBands:
    return compile_bands(policy.denial_rate.bands, 1.0, policy.event_time.rearm_ratio)
