"""`tripwire bench` end to end at toy scale: every figure is produced and plausible, so the
benchmark cannot silently break between the runs whose figures the README quotes."""

from __future__ import annotations

from pathlib import Path

import pytest

from tripwire.bench.pipeline import PROBE_TIMEOUT_S, run

pytestmark = pytest.mark.integration


def test_bench_produces_every_figure(tmp_path: Path) -> None:
    # Toy scale: (b) falls back to the whole drain when the first commit covers most of it.
    result = run(events=60_000, memory_agents=2_000, probes=10, workdir=tmp_path,
                 backlog_shape="sdk", load_rate=500)
    assert result["ceiling_events_per_s"] > 0 and result["pipeline_events_per_s"] > 0
    assert result["ratio"] == round(result["pipeline_events_per_s"]
                                    / result["ceiling_events_per_s"], 3)
    # Well-formed, whatever the machine's speed today: a probe that timed out counts as the
    # timeout and is counted, so no figure can exceed it.
    assert isinstance(result["probe_timeouts"], int) and result["probe_timeouts"] >= 0
    for key in ("latency_p50_ms", "latency_p99_ms", "guard_refusal_p50_ms",
                "guard_refusal_p99_ms"):
        assert 0 < result[key] <= PROBE_TIMEOUT_S * 1000, (key, result)
    assert result["latency_p50_ms"] <= result["latency_p99_ms"]
    assert result["guard_refusal_p50_ms"] <= result["guard_refusal_p99_ms"]
    assert result["rss_mib_100k_agents"] > 50 and result["writer_rss_mib"] > 50
    assert result["backlog"] == "sdk" and result["load_events_per_s"] == 500
    # Every process of the load phase was found and measured; the broker and the worker
    # both did work while the load played.
    shares = result["load_cpu_percent"]
    assert set(shares) == {"worker", "writer", "broker", "bench"}, shares
    assert shares["worker"] > 0 and shares["broker"] > 0, shares
