"""examples/guarded_agent.py runs against a real broker and visibly loses its write tools."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest

from tripwire.bench.worker_process import ROOT, read_all
from tripwire.schemas.codec import StepBatchCodec
from tripwire.schemas.topics import STEPS, ensure_topics, tripwire_topics
from tripwire.streams.broker import EmbeddedBroker, free_port

pytestmark = pytest.mark.integration

PARTITIONS = 2


def test_the_example_agent_loses_its_write_tools_when_it_trips(tmp_path):
    with EmbeddedBroker(port=free_port(), log_path=tmp_path / "tansu.log") as broker:
        asyncio.run(ensure_topics(broker.bootstrap, tripwire_topics(PARTITIONS)))
        done = subprocess.run(
            [sys.executable, "examples/guarded_agent.py", "--bootstrap", broker.bootstrap,
             "--agent-id", "support-1", "--tickets", "3", "--pause", "0",
             "--simulate-trip-after", "1"],
            cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 0, done.stderr[-3000:]
        out = done.stdout
        before, _, after = out.partition("mode: read_only")
        assert "ok C-0001 marked refund-handled" in before and "REFUSED" not in before
        assert after.count("REFUSED crm.update_contact [read_only]") == 2
        assert after.count("REFUSED email.send [read_only]") == 2

        records = asyncio.run(read_all(broker.bootstrap, STEPS, PARTITIONS))
    codec = StepBatchCodec()
    events = [e for r in records for e in codec.decode(r.value)]
    guard_decisions = [e for e in events if e["kind"] == "policy_decision"
                       and e["attributes"].get("decided_by") == "tripwire-guard"]
    assert len(guard_decisions) == 4
    assert {e["policy_rule"] for e in guard_decisions} == {"guard.mode.read_only"}
    assert {e["policy_outcome"] for e in guard_decisions} == {"denied"}
    assert sum(e["kind"] == "run_end" for e in events) == 3
