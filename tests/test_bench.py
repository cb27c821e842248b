"""`tripwire bench` end to end at toy scale: every figure is produced and plausible, so the
benchmark cannot silently break between the runs whose figures the README quotes."""

from __future__ import annotations

from pathlib import Path

import pytest

from tripwire.bench.pipeline import PROBE_TIMEOUT_S, QUIX_PYTHON, run

pytestmark = pytest.mark.integration


def test_bench_produces_every_figure(tmp_path: Path) -> None:
    # Toy scale: (b) falls back to the whole drain when the first commit covers most of it.
    # The peer job needs its own virtualenv (scripts/setup-quix.sh); without it the rest runs.
    peer = QUIX_PYTHON.exists()
    # 5,000 events and 500 agents: every figure is asserted for its form, not its size, and
    # the run's time is mostly its six worker start-ups. 20,000 and 2,000 cost ~10 s more
    # (estimated from one timed run at load 3: producing, reading twice and draining 20,000
    # events took 3-4 s of each of the four backlog phases, the 2,000 agents ~2 s).
    result = run(events=5_000, memory_agents=500, probes=10, workdir=tmp_path,
                 shapes=("json", "sdk"), load_rate=500, peer=peer, scale_out=True)
    assert set(result["shapes"]) == {"json", "sdk"}
    for shape, r in result["shapes"].items():
        assert r["ceiling_events_per_s"] > 0 and r["pipeline_events_per_s"] > 0, shape
        assert r["ceiling_spread"] >= 0, shape
        # Avro shapes print Tripwire's own reader's rate beside fastavro's ceiling
        own = r["ceiling_own_reader_events_per_s"]
        assert (own > 0) if shape == "sdk" else (own is None), (shape, own)
        assert r["ratio_to_ceiling"] == round(r["pipeline_events_per_s"]
                                              / r["ceiling_events_per_s"], 3)
        if peer:
            assert r["quix_events_per_s"] > 0, shape
            assert r["ratio_to_quix"] == round(r["pipeline_events_per_s"]
                                               / r["quix_events_per_s"], 2)
        else:
            assert r["quix_events_per_s"] is None and r["ratio_to_quix"] is None
    scaled = result["scale_out"]
    assert scaled["shape"] == "json" and scaled["two_workers_events_per_s"] > 0
    assert scaled["one_worker_events_per_s"] > 0
    assert scaled["ratio"] == round(scaled["two_workers_events_per_s"]
                                    / scaled["one_worker_events_per_s"], 2)
    # Well-formed, whatever the machine's speed today: a probe that timed out counts as the
    # timeout and is counted, so no figure can exceed it.
    assert isinstance(result["probe_timeouts"], int) and result["probe_timeouts"] >= 0
    for key in ("latency_p50_ms", "latency_p99_ms", "guard_refusal_p50_ms",
                "guard_refusal_p99_ms"):
        assert 0 < result[key] <= PROBE_TIMEOUT_S * 1000, (key, result)
    assert result["latency_p50_ms"] <= result["latency_p99_ms"]
    assert result["guard_refusal_p50_ms"] <= result["guard_refusal_p99_ms"]
    assert result["rss_mib_100k_agents"] > 50 and result["writer_rss_mib"] > 50
    assert result["load_events_per_s"] == 500
    # Every process of the load phase was found and measured; the broker and the worker
    # both did work while the load played.
    shares = result["load_cpu_percent"]
    assert set(shares) == {"worker", "writer", "broker", "bench"}, shares
    assert shares["worker"] > 0 and shares["broker"] > 0, shares


def test_the_ceiling_reads_avro_with_fastavro_as_its_docs_show() -> None:
    from tripwire.bench.pipeline import _fastavro_events, framed_schemas
    from tripwire.schemas.codec import StepBatchCodec

    codec = StepBatchCodec()
    schemas = framed_schemas(codec)
    event = {"event_id": "e", "ts": 1, "agent_id": "a", "run_id": "r", "step": 0,
             "kind": "run_start"}
    batch = codec.encode([event, {**event, "event_id": "f"}, {**event, "event_id": "g"}])
    assert _fastavro_events(batch, schemas) == 3
    assert _fastavro_events(codec.event_codec.encode(event), schemas) == 1
