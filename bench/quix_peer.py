"""The peer job of `tripwire bench`: what a user would write in Quix Streams instead.

A hopping-window denial rate per agent (5 minutes, stepping by 1 minute, the share of policy
decisions denied, updated on every decision) over the agent-steps backlog, with Quix's
defaults: RocksDB state with changelog topics, at-least-once. Records keyed by agent are
windowed by their key; SDK-shaped records (many agents a record, no key) are split into
events and regrouped by agent first (``group_by``, a repartition topic), as Quix requires.

Run by the bench in its own virtualenv (``scripts/setup-quix.sh``): quixstreams 3.28 pins
pydantic < 2.14, pydantic-settings < 2.16 and confluent-kafka < 2.13, below the versions the
server is pinned to. It imports only the contract (``tripwire.schemas``, the SDK
distribution) to read Avro frames; JSON goes through Quix's own deserializer (orjson).

Prints one JSON object: events processed and the seconds from the first to the last.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from quixstreams import Application
from quixstreams.models.serializers import Deserializer

from tripwire.schemas.codec import StepBatchCodec

WINDOW_MS = 300_000
STEP_MS = 60_000


class StepEvents(Deserializer):
    """Framed StepBatch or StepEvent values, one row per event."""

    def __init__(self) -> None:
        super().__init__()
        self.codec = StepBatchCodec()

    @property
    def split_values(self) -> bool:
        return True

    def __call__(self, value: bytes, ctx: Any) -> list[dict[str, Any]]:
        return self.codec.decode(value)


class Progress:
    """Counts events; stops the app at the last one (one comparison a message)."""

    def __init__(self, expected: int, stop: Any) -> None:
        self.expected = expected
        self.stop = stop
        self.seen = 0
        self.first: float | None = None
        self.last = 0.0

    def count(self, _: Any) -> None:
        now = time.perf_counter()
        if self.first is None:
            self.first = now
        self.seen += 1
        self.last = now
        if self.seen >= self.expected:
            self.stop()


def denied(ev: dict[str, Any]) -> float:
    return 1.0 if ev.get("policy_outcome") == "denied" else 0.0


def run(bootstrap: str, topic_name: str, shape: str, expected: int, state_dir: str,
        timeout_s: float) -> dict[str, Any]:
    app = Application(broker_address=bootstrap, consumer_group=f"quix-peer-{shape}",
                      auto_offset_reset="earliest", state_dir=state_dir, loglevel="WARNING",
                      producer_extra_config={"enable.idempotence": False})
    value_deserializer: Any = "json" if shape == "json" else StepEvents()
    topic = app.topic(topic_name, key_deserializer="str",
                      value_deserializer=value_deserializer)
    # The embedded broker's DescribeConfigs leaves retention.ms out, which Quix needs to
    # derive its changelog topics' config: the backlog topic keeps records forever.
    topic.broker_config.extra_config.setdefault("retention.ms", "-1")
    progress = Progress(expected, app.stop)
    sdf = app.dataframe(topic)
    if shape == "sdk":
        sdf = sdf.group_by("agent_id")
    sdf = sdf.update(progress.count)
    sdf = sdf.filter(lambda ev: ev.get("kind") == "policy_decision")
    sdf = sdf.apply(denied)
    sdf = sdf.hopping_window(duration_ms=WINDOW_MS, step_ms=STEP_MS).mean().current()
    app.run(timeout=timeout_s)
    elapsed = (progress.last - progress.first) if progress.first is not None else 0.0
    return {"events": progress.seen, "seconds": round(elapsed, 3),
            "events_per_s": round(progress.seen / elapsed) if elapsed > 0 else 0}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--shape", choices=("json", "avro", "sdk"), required=True)
    ap.add_argument("--events", type=int, required=True)
    ap.add_argument("--state-dir", required=True)
    ap.add_argument("--timeout", type=float, default=30.0,
                    help="stop after this many seconds without a new message")
    args = ap.parse_args()
    print(json.dumps(run(args.bootstrap, args.topic, args.shape, args.events, args.state_dir,
                         args.timeout)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
