"""Write tests/data/agent_states_v1.json.gz: a changelog as release 1 (commit 1eee097, positional
JSON state behind STATE_VERSION = 1) wrote it, for the rolling-upgrade test.

Run once, on the release that wrote the format; the committed output is the fixture. Kept for
the record of how the bytes were made (rerunning it on a later release makes that release's
format, not release 1's).
"""

from __future__ import annotations

import gzip
import itertools
import json
import subprocess
from pathlib import Path
from typing import Any

from tripwire.detectors.policy import Policy
from tripwire.schemas.codec import StepBatchCodec
from tripwire.simulator.fleet import fleet_events
from tripwire.simulator.scenarios import SCENARIOS
from tripwire.streams.agent_states import AgentStates
from tripwire.streams.step_processor import StepProcessor

OUT = Path(__file__).resolve().parents[1] / "tests" / "data" / "agent_states_v1.json.gz"
HEAD, TAIL = 1500, 1500


def keyword_scanner(text: str, source_trust: str | None) -> tuple[float, list[str]]:
    """Stands in for the injection scanner, whose scores change between releases."""
    hit = "ignore" in text.lower() or "instructions" in text.lower()
    return (0.9 if hit else 0.0), (["keyword"] if hit else [])


class ChangelogTable:
    def __init__(self) -> None:
        self.data: dict[str, Any] = {}
        self.changelog: list[tuple[int, str, Any]] = []

    def send_changelog(self, partition: int, key: str, value: Any, **_: Any) -> None:
        self.changelog.append((partition, key, value))


def main() -> None:
    events = list(itertools.islice(fleet_events(seed=21, agents=3, scenarios=SCENARIOS),
                                   HEAD + TAIL))
    codec = StepBatchCodec()
    records = [(e["agent_id"].encode(), codec.encode([e]), [], "agent-steps", 0, i)
               for i, e in enumerate(events[:HEAD])]
    table = ChangelogTable()
    states = AgentStates(table, Policy(), keyword_scanner)
    StepProcessor(states).process(records)
    states.checkpoint()
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                            cwd=OUT.parents[2]).stdout.strip()
    modes = {agent: states.monitor(agent).mode for agent in sorted(table.data)}
    OUT.write_bytes(gzip.compress(json.dumps({
        "written_by": f"scripts/make_state_v1_fixture.py at commit {commit}",
        "changelog": [[p, k, v.decode()] for p, k, v in table.changelog],
        "modes": modes,
        "deadlines": dict(sorted(states.deadlines.items())),
        "events": events,
        "head": HEAD,
    }, sort_keys=True, default=str).encode(), mtime=0))
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes, {len(table.changelog)} records)")


if __name__ == "__main__":
    main()
