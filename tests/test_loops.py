"""LoopDetector: step budget, repeated calls, short cycles and runs that never end."""

from __future__ import annotations

import json
import uuid
import zlib
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from tripwire.detectors.loops import LoopDetector
from tripwire.detectors.policy import EventTimePolicy, LoopPolicy, ResolvedPolicy, RunsPolicy

FIELDS = [
    f["name"]
    for f in json.loads((Path(__file__).parents[1] / "schemas/step_event.avsc").read_text())[
        "fields"
    ]
]
ID_SPACE = uuid.UUID("6d9a7e2c-0000-4000-8000-000000000002")
MIN = 60_000
T0 = 1_700_000_000_000


class Run:
    """Builds the events of one run with increasing steps and ids."""

    def __init__(self, run_id: str = "run-1", start: int = T0, step_ms: int = 1_000) -> None:
        self.run_id = run_id
        self.start = start
        self.step_ms = step_ms
        self.step = 0

    def event(self, kind: str, ts: int | None = None, **fields: Any) -> dict[str, Any]:
        event: dict[str, Any] = dict.fromkeys(FIELDS)
        event.update(
            event_id=str(uuid.uuid5(ID_SPACE, f"{self.run_id}/{self.step}")),
            ts=self.start + self.step * self.step_ms if ts is None else ts,
            agent_id="agent-1",
            run_id=self.run_id,
            step=self.step,
            kind=kind,
            attributes={},
        )
        event.update(fields)
        self.step += 1
        return event

    def call(self, tool: str, params: str | None = "p") -> dict[str, Any]:
        return self.event("tool_call", tool=tool, params_hash=params)


def policy(grace_ms: int = 30_000, runs: RunsPolicy | None = None, **loops: Any) -> ResolvedPolicy:
    return ResolvedPolicy(
        event_time=EventTimePolicy(grace_ms=grace_ms),
        loops=LoopPolicy(**loops),
        runs=runs or RunsPolicy(),
    )


def feed_all(detector: LoopDetector, events: list[dict[str, Any]]) -> list:
    return [d for e in events for d in detector.feed(e)]


def metrics(dets: list) -> list[tuple[str, str]]:
    return [(d.metric, d.severity) for d in dets]


# --- step budget --------------------------------------------------------------------------


def test_step_budget_fires_once_per_band() -> None:
    detector = LoopDetector("agent-1", policy())
    run = Run()
    events = [run.event("model_call") for _ in range(49)]
    assert feed_all(detector, events) == []
    [det] = detector.feed(run.event("model_call"))
    assert (det.metric, det.severity, det.value, det.threshold) == ("run_steps", "S3", 50, 50)
    assert det.scope == "run" and det.run_id == "run-1" and det.window_ms is None
    assert feed_all(detector, [run.event("model_call") for _ in range(49)]) == []
    assert metrics(detector.feed(run.event("model_call"))) == [("run_steps", "S2")]
    assert feed_all(detector, [run.event("model_call") for _ in range(100)]) == []


def test_steps_follow_the_agents_step_numbers_not_event_counts() -> None:
    detector = LoopDetector("agent-1", policy(max_steps=5))
    run = Run()
    events = [run.event("model_call") for _ in range(4)]
    assert feed_all(detector, events + events) == []  # redelivered copies change nothing
    assert metrics(detector.feed(run.event("output"))) == [("run_steps", "S3")]


# --- repeats ------------------------------------------------------------------------------


def test_same_call_repeated_k_times_fires_with_those_calls_as_evidence() -> None:
    detector = LoopDetector("agent-1", policy())
    run = Run()
    calls = []
    for _ in range(4):
        calls.append(run.call("search", "q1"))
        assert detector.feed(calls[-1]) == []
        assert detector.feed(run.event("model_call")) == []
    calls.append(run.call("search", "q1"))
    [det] = detector.feed(calls[-1])
    assert (det.metric, det.severity, det.value, det.tool) == ("repeated_calls", "S3", 5, "search")
    assert det.evidence_event_ids == tuple(c["event_id"] for c in calls)


def test_different_params_are_not_repeats() -> None:
    detector = LoopDetector("agent-1", policy())
    run = Run()
    assert feed_all(detector, [run.call("search", f"q{i}") for i in range(30)]) == []


def test_a_redelivered_call_is_not_a_repeat() -> None:
    detector = LoopDetector("agent-1", policy())
    run = Run()
    calls = [run.call("search", "q1") for _ in range(4)]
    assert feed_all(detector, calls + calls[:2]) == []
    assert metrics(detector.feed(run.call("search", "q1"))) == [("repeated_calls", "S3")]


def test_repeats_count_within_the_horizon_only() -> None:
    detector = LoopDetector("agent-1", policy(repeat_horizon=10))
    run = Run()
    events = []
    for i in range(8):
        events.append(run.call("search", "same"))
        events += [run.call("read", f"doc{i}-{j}") for j in range(3)]  # 4 calls per round
    # At most 3 "same" calls fit in any 10 consecutive calls.
    assert feed_all(detector, events) == []


def test_repeat_fires_exactly_at_the_limit_late_in_a_long_run() -> None:
    detector = LoopDetector("agent-1", policy(max_steps=500))
    run = Run()
    assert feed_all(detector, [run.call("read", f"doc{i}") for i in range(40)]) == []
    assert feed_all(detector, [run.call("retry", "same") for _ in range(4)]) == []
    [det] = detector.feed(run.call("retry", "same"))
    assert (det.metric, det.value) == ("repeated_calls", 5)


def test_repeat_latch_holds_while_calls_alternate_and_rearms_after_they_leave() -> None:
    detector = LoopDetector("agent-1", policy(cycle_periods=(3,)))
    run = Run()
    assert metrics(feed_all(detector, [run.call("x") for _ in range(5)])) == [
        ("repeated_calls", "S3")
    ]
    # y reaching 5 as well is the same band: no new detection.
    assert feed_all(detector, [run.call("y") for _ in range(5)]) == []
    fresh = [run.call("filler", str(i)) for i in range(20)]  # x and y leave the horizon
    assert feed_all(detector, fresh) == []
    assert metrics(feed_all(detector, [run.call("z") for _ in range(5)])) == [
        ("repeated_calls", "S3")
    ]


# --- cycles -------------------------------------------------------------------------------


def test_period_two_cycle_fires_on_its_third_repetition() -> None:
    detector = LoopDetector("agent-1", policy())
    run = Run()
    calls = [run.call("search" if i % 2 == 0 else "read") for i in range(6)]
    dets = feed_all(detector, calls[:5])
    assert dets == []
    [det] = detector.feed(calls[5])
    assert (det.metric, det.severity, det.value) == ("tool_cycle", "S3", 3)
    assert det.evidence_event_ids == tuple(c["event_id"] for c in calls)
    # Six repetitions is the S2 band; by then each call has also repeated 5 times.
    more = [run.call("search" if i % 2 == 0 else "read") for i in range(6)]
    assert metrics(feed_all(detector, more)) == [("repeated_calls", "S3"), ("tool_cycle", "S2")]


def test_period_three_cycle() -> None:
    detector = LoopDetector("agent-1", policy())
    run = Run()
    calls = [run.call(("plan", "act", "check")[i % 3]) for i in range(9)]
    dets = feed_all(detector, calls)
    assert [(d.metric, d.value) for d in dets] == [("tool_cycle", 3)]
    assert dets[0].ts == calls[-1]["ts"]


def test_a_constant_sequence_is_a_repeat_not_a_cycle() -> None:
    detector = LoopDetector("agent-1", policy(repeat_limit=9, repeat_horizon=20))
    run = Run()
    assert feed_all(detector, [run.call("same") for _ in range(8)]) == []


def test_cycles_compare_params_unless_told_to_match_tools_only() -> None:
    browsing = [("search", "q1"), ("read", "d1"), ("search", "q2"), ("read", "d2")] * 2
    browsing += [("search", "q3"), ("read", "d3")]
    run = Run()
    events = [run.call(tool, params) for tool, params in browsing]
    assert feed_all(LoopDetector("agent-1", policy()), events) == []
    dets = feed_all(LoopDetector("agent-1", policy(cycle_match="tool")), events)
    assert ("tool_cycle", "S3") in metrics(dets)


def test_a_broken_cycle_rearms() -> None:
    detector = LoopDetector("agent-1", policy())
    run = Run()
    cycle = [run.call("a" if i % 2 == 0 else "b") for i in range(6)]
    assert metrics(feed_all(detector, cycle)) == [("tool_cycle", "S3")]
    assert feed_all(detector, [run.call("c", str(i)) for i in range(3)]) == []
    again = [run.call("d" if i % 2 == 0 else "e") for i in range(6)]
    assert metrics(feed_all(detector, again)) == [("tool_cycle", "S3")]


def reference_loop_detections(
    symbols: list[str], horizon: int, limit: int, min_repeats: int, rearm: float
) -> list[tuple[str, int]]:
    repeat_bands = (limit * 1.0, limit * 2.0)
    cycle_bands = (min_repeats * 1.0, min_repeats * 2.0)
    repeat_level = cycle_level = 0
    fired = []
    for i, sym in enumerate(symbols):
        window = symbols[max(0, i + 1 - horizon) : i + 1]
        count = window.count(sym)
        reached = sum(count >= t for t in repeat_bands)
        if reached > repeat_level:
            fired.append(("repeated_calls", reached))
            repeat_level = reached
        else:
            most = max(window.count(s) for s in window)
            while repeat_level and most < repeat_bands[repeat_level - 1] * rearm:
                repeat_level -= 1
        best = 1
        for period in (2, 3):
            matches = 0
            j = i
            while j >= period and symbols[j] == symbols[j - period]:
                matches += 1
                j -= 1
            constant = len(set(symbols[i - period + 1 : i + 1])) == 1 if i >= period else True
            if matches and not constant:
                best = max(best, matches // period + 1)
        reached = sum(best >= t for t in cycle_bands)
        if reached > cycle_level:
            fired.append(("tool_cycle", reached))
            cycle_level = reached
        else:
            while cycle_level and best < cycle_bands[cycle_level - 1] * rearm:
                cycle_level -= 1
    return fired


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(["ab", "abcd", "abcdefghij"]).flatmap(
        lambda alphabet: st.lists(st.sampled_from(alphabet), max_size=120)
    ),
    st.integers(4, 24),
    st.integers(2, 6),
    st.integers(2, 4),
)
def test_repeats_and_cycles_match_brute_force(
    symbols: list[str], horizon: int, limit: int, min_repeats: int
) -> None:
    if limit * 2 > horizon:
        horizon = limit * 2
    p = policy(repeat_horizon=horizon, repeat_limit=limit, cycle_min_repeats=min_repeats)
    detector = LoopDetector("agent-1", p)
    run = Run()
    got = []
    for sym in symbols:
        for det in detector.feed(run.call(sym)):
            if det.metric != "run_steps":
                band = 1 if det.severity == "S3" else 2
                got.append((det.metric, band))
    assert got == reference_loop_detections(
        symbols, horizon, limit, min_repeats, p.event_time.rearm_ratio
    )


# --- runs that never end ------------------------------------------------------------------


def test_a_run_without_run_end_is_reported_by_tick_at_its_deadline() -> None:
    detector = LoopDetector("agent-1", policy())
    run = Run()
    detector.feed(run.event("run_start"))
    assert detector.tick(T0 + 30 * MIN - 1) == []
    [det] = detector.tick(T0 + 31 * MIN)
    assert (det.metric, det.severity, det.scope, det.run_id) == ("run_age_ms", "S3", "run", "run-1")
    assert det.ts == T0 + 30 * MIN  # the deadline, not the time tick ran
    assert detector.tick(T0 + 60 * MIN) == []
    assert metrics(detector.tick(T0 + 121 * MIN)) == [("run_age_ms", "S2")]


def test_the_never_ending_detection_does_not_depend_on_when_tick_runs() -> None:
    ids = []
    for tick_at in (T0 + 30 * MIN, T0 + 47 * MIN):
        detector = LoopDetector("agent-1", policy())
        detector.feed(Run().event("run_start"))
        ids.append([d.detection_id for d in detector.tick(tick_at)])
    assert ids[0] == ids[1] and len(ids[0]) == 1


def test_an_ended_run_is_not_reported() -> None:
    detector = LoopDetector("agent-1", policy())
    run = Run()
    feed_all(detector, [run.event("run_start"), run.event("run_end")])
    assert detector.tick(T0 + 10 * 60 * MIN) == []


def test_events_of_other_runs_reveal_a_hung_run_without_tick() -> None:
    detector = LoopDetector("agent-1", policy())
    detector.feed(Run("hung").event("run_start"))
    other = Run("busy", start=T0 + 29 * MIN)
    assert detector.feed(other.event("run_start")) == []
    dets = detector.feed(other.event("model_call", ts=T0 + 30 * MIN + 5))
    assert [(d.metric, d.run_id) for d in dets] == [("run_age_ms", "hung")]


# --- bounded state ------------------------------------------------------------------------


def test_ended_runs_expire_after_the_ttl_on_event_time() -> None:
    detector = LoopDetector("agent-1", policy())
    run = Run()
    feed_all(detector, [run.event("run_start"), run.event("run_end")])
    end = T0 + 1_000
    detector.feed(Run("later", start=end + 1 * MIN - 1).event("run_start"))
    assert "run-1" in detector.runs.entries
    detector.expire(end + 1 * MIN)  # the caller's clock alone does not expire it
    assert "run-1" in detector.runs.entries
    detector.feed(Run("later2", start=end + 1 * MIN).event("run_start"))
    detector.expire(0)
    assert "run-1" not in detector.runs.entries


def test_idle_runs_expire_and_open_runs_are_capped() -> None:
    detector = LoopDetector("agent-1", policy(runs=RunsPolicy(max_open_runs=3)))
    for i in range(5):
        detector.feed(Run(f"r{i}", start=T0 + i).event("run_start"))
    assert list(detector.runs.entries) == ["r2", "r3", "r4"]
    assert detector.runs.evicted == 2
    detector.tick(T0 + 3 * 60 * MIN + 10)
    assert len(detector.runs) == 0


def test_late_events_of_a_known_run_still_count_but_forgotten_runs_are_not_revived() -> None:
    detector = LoopDetector("agent-1", policy(grace_ms=1_000, max_steps=5))
    run = Run(step_ms=10_000)
    events = [run.event("model_call") for _ in range(4)]
    feed_all(detector, events[1:])
    [det] = detector.feed(run.event("model_call", ts=T0))  # step 4, far behind the watermark
    assert det.metric == "run_steps" and detector.clock.late_events == 1
    assert detector.feed(Run("ghost").event("model_call", ts=T0)) == []
    assert "ghost" not in detector.runs.entries


def test_state_round_trip_resumes_identically() -> None:
    events = []
    for r in range(4):
        run = Run(f"r{r}", start=T0 + r * 20_000)
        events.append(run.event("run_start"))
        events += [run.call(("a", "b")[i % 2] if r % 2 else "a") for i in range(12)]
        if r != 2:
            events.append(run.event("run_end"))
    events.sort(key=lambda e: e["ts"])
    straight = LoopDetector("agent-1", policy())
    expected = feed_all(straight, events) + straight.tick(T0 + 40 * MIN)
    resumed = LoopDetector("agent-1", policy())
    got = feed_all(resumed, events[:20])
    state = json.loads(json.dumps(resumed.to_state()))
    resumed = LoopDetector.from_state(state, "agent-1", policy(), resumed.clock)
    got += feed_all(resumed, events[20:]) + resumed.tick(T0 + 40 * MIN)
    assert got == expected and len(expected) > 3
    assert resumed.to_state() == straight.to_state()


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=12), st.text(min_size=1, max_size=24))
def test_a_calls_symbol_is_the_crc_of_tool_and_params(tool: str, params: str) -> None:
    """The symbol is continued from the tool's cached CRC: the same as the CRC of the whole
    "tool\\x1fparams" text it replaces, for any tool and params."""
    detector = LoopDetector("agent-1", policy(repeat_horizon=4, repeat_limit=2))
    run = Run()
    detector.feed(run.call(tool, params))
    state = detector.runs.entries["run-1"]
    assert state.symbols is not None
    assert list(state.symbols) == [zlib.crc32(f"{tool}\x1f{params}".encode())]
