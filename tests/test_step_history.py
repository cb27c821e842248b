"""The backtest's reader: stored steps come back as the events the detectors were given."""

from __future__ import annotations

import itertools
import time

from hypothesis import given, settings
from hypothesis import strategies as st

from tripwire.simulator.fleet import fleet_events
from tripwire.sinks import step_history
from tripwire.sinks.step_history import KEYS, agent_chunks, count_steps
from tripwire.sinks.step_sink import StepSink

READ = ("event_id", "ts", "run_id", "step", "kind", "tool", "params_hash", "policy_outcome",
        "input_tokens", "output_tokens", "cost_usd", "source_trust", "agent_version",
        "action_class", "approver", "approved")


def test_stored_steps_stream_back_per_agent_in_order_without_duplicates(ch_migrated) -> None:
    end = int(time.time() * 1000) - 60_000
    events = [e for e in itertools.islice(fleet_events(
        seed=4, agents=5, scenarios=["denial_storm", "injection"], start_ms=end - 3600_000),
        6000) if e["ts"] < end]
    sink = StepSink(ch_migrated, check_stored=False)
    sink.insert(events)
    sink.insert(events[100:140])  # a re-delivery the table has not merged away yet
    assert count_steps(ch_migrated, end - 7200_000, end) == len(events) + 40

    chunks = list(agent_chunks(ch_migrated, end - 7200_000, end, block_rows=97))
    agents = [a for a, *_ in chunks]
    # Consecutive per agent: each agent's chunks form one run of the sequence.
    assert [a for a, _ in itertools.groupby(agents)] == sorted(set(agents))
    got: dict[str, list[dict]] = {}
    for agent, workflow, chunk, ts in chunks:
        assert ts == [e["ts"] for e in chunk]
        got.setdefault(agent, []).extend(chunk)
        assert workflow == next(e["workflow"] for e in events if e["agent_id"] == agent)
    for agent, mine in got.items():
        sent = sorted((e for e in events if e["agent_id"] == agent),
                      key=lambda e: (e["ts"], e["step"], e["event_id"]))
        assert [e["event_id"] for e in mine] == [e["event_id"] for e in sent], agent
        for back, orig in zip(mine, sent, strict=True):
            for field in READ:
                want = orig.get(field)
                if field in ("input_tokens", "output_tokens", "cost_usd") and not want:
                    want = None  # stored as 0: read back as "none"
                assert back.get(field) == want, (field, back.get(field), want)
                # Only the fields with a value are keys: the detectors read them with get.
                assert (field in back) == (want is not None), (field, back)
            assert back.get("injection_flagged") is (True if orig.get("injection_flagged")
                                                     else None)
            attributes = {k: v for k, v in (orig.get("attributes") or {}).items()
                          if k in ("decided_by", "decline_reason") and v}
            assert back.get("attributes") == (attributes or None)
            assert set(back) <= set(KEYS)
    assert sum(len(v) for v in got.values()) == len(events)


def test_one_agent_or_one_workflow(ch_migrated) -> None:
    end = int(time.time() * 1000) - 60_000
    events = [e for e in itertools.islice(fleet_events(seed=6, agents=6, start_ms=end - 3600_000),
                                          3000) if e["ts"] < end]
    StepSink(ch_migrated, check_stored=False).insert(events)
    agent = events[0]["agent_id"]
    only = list(agent_chunks(ch_migrated, end - 7200_000, end, agent=agent))
    assert {a for a, *_ in only} == {agent}
    assert sum(len(c) for _, _, c, _ in only) == sum(1 for e in events if e["agent_id"] == agent)
    workflow = events[0]["workflow"]
    flow = list(agent_chunks(ch_migrated, end - 7200_000, end, workflow=workflow))
    assert {w for _, w, _, _ in flow} == {workflow}


def test_only_the_keys_asked_for(ch_migrated) -> None:
    end = int(time.time() * 1000) - 60_000
    events = [e for e in itertools.islice(fleet_events(seed=7, agents=4, start_ms=end - 3600_000),
                                          2000) if e["ts"] < end]
    StepSink(ch_migrated, check_stored=False).insert(events)
    keys = frozenset({"tool", "cost_usd", "agent_version"})
    everything = list(agent_chunks(ch_migrated, end - 7200_000, end))
    some = list(agent_chunks(ch_migrated, end - 7200_000, end, keys=keys))
    assert [(a, w, ts) for a, w, _, ts in some] == [(a, w, ts) for a, w, _, ts in everything]
    for (_, _, mine, _), (_, _, whole, _) in zip(some, everything, strict=True):
        for back, full in zip(mine, whole, strict=True):
            assert back == {k: v for k, v in full.items()
                            if k in keys or k in ("event_id", "ts", "run_id", "step", "kind")}


def test_rare_presence_patterns_build_the_same_events(ch_migrated, monkeypatch) -> None:
    """Patterns beyond the generated displays go through the per-key fallback: same events."""
    end = int(time.time() * 1000) - 60_000
    events = [e for e in itertools.islice(fleet_events(
        seed=8, agents=4, scenarios=["injection", "denial_storm"], start_ms=end - 3600_000),
        2000) if e["ts"] < end]
    StepSink(ch_migrated, check_stored=False).insert(events)
    chained = list(agent_chunks(ch_migrated, end - 7200_000, end))
    monkeypatch.setattr(step_history, "CHAINED_PATTERNS", 1)
    assert list(agent_chunks(ch_migrated, end - 7200_000, end)) == chained
    monkeypatch.setattr(step_history, "CHAINED_PATTERNS", 0)
    assert list(agent_chunks(ch_migrated, end - 7200_000, end)) == chained


_OPTIONAL = step_history._optional(None)
_WIDTH = sum(len(exprs) for _, exprs, _ in _OPTIONAL)


@st.composite
def _blocks(draw: st.DrawFn) -> list:
    """A block as the query returns it, with few presence patterns (repeating with any
    period, like the bench dataset's 16-step runs) or many."""
    patterns = draw(st.lists(st.integers(0, (1 << len(_OPTIONAL)) - 1), min_size=1,
                             max_size=20, unique=True))
    rows = draw(st.integers(1, 80))
    period = draw(st.integers(1, 20))
    cycle = draw(st.lists(st.sampled_from(patterns), min_size=period, max_size=period))
    masks = [cycle[i % period] if draw(st.booleans()) else draw(st.sampled_from(patterns))
             for i in range(rows)]
    columns = [["a"] * rows, [""] * rows, masks, [f"e{i}" for i in range(rows)],
               list(range(rows)), ["r"] * rows, list(range(rows)), ["tool_call"] * rows]
    columns += [[f"v{c}.{i}" for i in range(rows)] for c in range(_WIDTH)]
    return columns


@settings(max_examples=300, deadline=None)
@given(_blocks())
def test_decoded_events_match_the_per_row_reference(block: list) -> None:
    """Every row's event is the one the per-key fallback builds, whatever the patterns and
    however they repeat (choosing the displays from a sample once missed periodic ones)."""
    decoder = step_history._Decoder(_OPTIONAL)
    values = list(zip(*block[8:], strict=True)) if block[8:] else [()] * len(block[2])
    want = [decoder.event(m, e, t, r, s, k, v) for m, e, t, r, s, k, v in zip(
        block[2], *block[3:8], values, strict=True)]
    assert decoder.events(block) == want


def test_every_pattern_of_a_periodic_block_gets_a_display() -> None:
    """16-step runs whose every 8th row is a run start or a tool call: the model calls and
    decisions between them still get their dict display, not the per-key fallback."""
    decoder = step_history._Decoder(_OPTIONAL)
    rows = 4096
    cycle = [1024, 1024 + 8 + 16 + 32, 1024 + 7, 1024 + 3, 1024 + 3, 1024 + 8 + 16 + 32,
             1024 + 7, 1024 + 3, 1024 + 3, 1024 + 8 + 16 + 32, 1024 + 7, 1024 + 3, 1024 + 3,
             1024 + 8 + 16 + 32, 1024, 1024]
    masks = [cycle[i % 16] for i in range(rows)]
    block = [["a"] * rows, [""] * rows, masks, [f"e{i}" for i in range(rows)],
             list(range(rows)), ["r"] * rows, list(range(rows)), ["k"] * rows]
    block += [[1] * rows for _ in range(_WIDTH)]
    fallback = 0
    rest = decoder.event

    def counted(*args: object) -> dict:
        nonlocal fallback
        fallback += 1
        return rest(*args)  # type: ignore[arg-type]

    decoder.event = counted  # type: ignore[method-assign]
    assert len(decoder.events(block)) == rows
    assert fallback == 0
