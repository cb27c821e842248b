"""The worker's CPU per event on a backlog drain: what issue 14's one-event-per-record
throughput is bound by once the worker is the busiest process.

A fresh embedded broker holds ``--events`` of the bench's fleet in records of ``--shape``
(``bench/backlogs.py``); a real ``tripwire worker`` drains it as in ``tripwire bench`` (b).
Printed: the worker's CPU seconds (all its threads) from ready to the commit that covers the
last event, per event, and the same net of its idle rate (measured for 3 s after the drain:
fetch polls of every topic, timers), which the rate of the drain does not scale with.
``--py-spy FILE`` samples the worker meanwhile (raw collapsed stacks, only the thread holding
the GIL: the interpreter's CPU).

    flock /work/runs/bench.lock python -m tripwire.bench.worker_cpu --shape json
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tripwire.bench import pipeline
from tripwire.schemas.topics import ensure_topics, tripwire_topics
from tripwire.streams.broker import EmbeddedBroker, free_port

IDLE_S = 3.0


def measure(shape: str, events: int, workdir: Path, py_spy: Path | None) -> dict[str, float]:
    with EmbeddedBroker(free_port(), log_path=workdir / "tansu.log") as broker:
        bootstrap = broker.bootstrap
        asyncio.run(ensure_topics(bootstrap, tripwire_topics(pipeline.PARTITIONS)))
        # Dated as `tripwire bench` dates its backlog (3 hours ago): events from 2023 were
        # past the 90-day retention, so their parts were due for ClickHouse's TTL drops
        # while the drain was measured, which no real drain has.
        pipeline.write_backlog(bootstrap, shape, events,
                               int(time.time() * 1000) - 3 * 3600 * 1000)
        _, index = asyncio.run(pipeline.ceiling(bootstrap, events))
        worker = pipeline.start_worker(bootstrap, workdir / shape / "data")
        with pipeline.stopped_on_exit(worker):
            pipeline.writer_at_full_priority(worker)
            pid = worker.proc.pid  # type: ignore[union-attr]
            spy = None
            if py_spy is not None:
                exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
                spy = subprocess.Popen(
                    [exe, "record", "--pid", str(pid), "--format", "raw", "--gil",
                     "--rate", "200", "-o", str(py_spy)],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            cpu0, wall0 = pipeline._cpu_seconds(pid), time.monotonic()
            rate = asyncio.run(pipeline.drain_rate(bootstrap, index, events, worker))
            cpu1, wall1 = pipeline._cpu_seconds(pid), time.monotonic()
            if spy is not None:
                spy.send_signal(2)
                spy.wait(30)
            time.sleep(IDLE_S)
            idle = (pipeline._cpu_seconds(pid) - cpu1) / (time.monotonic() - wall1)
    busy = cpu1 - cpu0
    return {"events_per_s": rate, "cpu_s": busy, "wall_s": wall1 - wall0,
            "idle_share": idle, "us_per_event": busy / events * 1e6,
            "us_per_event_net_of_idle": (busy - idle * (wall1 - wall0)) / events * 1e6}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tripwire.bench.worker_cpu",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--shape", choices=pipeline.SHAPES, default="json")
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--py-spy", type=Path, default=None, metavar="FILE")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="tripwire-worker-cpu-") as tmp:
        r = measure(args.shape, args.events, Path(tmp), args.py_spy)
    print(f"[{args.shape}] worker {r['cpu_s']:.2f} CPU s over {r['wall_s']:.2f} s for "
          f"{args.events} events ({r['events_per_s']:.0f} events/s): "
          f"{r['us_per_event']:.1f} us an event, {r['us_per_event_net_of_idle']:.1f} net of "
          f"its idle {r['idle_share'] * 100:.0f} % of a core")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
