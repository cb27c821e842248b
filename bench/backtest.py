"""How fast ``tripwire backtest`` replays stored steps, and in how much memory.

    .venv/bin/python -m tripwire.bench.backtest [--steps 10000000] [--agents 500] [--days 2]
                                        [--change breaker|detectors|none]
                                        [--data-dir DIR] [--limit EVENTS]

Generates the dashboard benchmark's dataset (``bench/dashboard_queries.py``: 10M steps of
500 agents over 2 days by default) in a temporary chDB dir, then runs the backtest exactly as
the command does (ClickHouse block stream -> event dicts -> the worker's AgentMonitor under
the built-in policy and a candidate) and prints:

* events/s of the whole replay (wall clock and per CPU second of this process: the box is
  shared, and CPU time is what "one core" means);
* the ceiling measured in the same run: the same stream read and decoded into events with no
  replay, so the ratio says what share the detectors take;
* the replay alone: the backtest's CPU per event minus the ceiling's, i.e. what the
  detectors, breaker and report cost;
* peak memory (ru_maxrss) before the replay and after it: the replay must stay bounded.

``--change`` picks the candidate: ``breaker`` (a stricter cool-down and an extra rule, the
detectors run once), ``detectors`` (other denial-rate bands: the candidate latches its own
bands on the shared denial counts) or ``none`` (the same policy: each agent replayed once).
Target: >= 200,000 events/s on one core.

The first line printed says which detector modules ran: compiled (``compile_detectors.py``:
every wheel, and the checkout after scripts/setup.sh) or pure Python, and why;
``TRIPWIRE_PURE_DETECTORS=1`` runs the pure-Python ones for comparison.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import tempfile
import time
from typing import Any

from tripwire import detectors
from tripwire.bench.dashboard_queries import generate, settle
from tripwire.dashboards.change_commands import replay_collector
from tripwire.detectors.backtest import Backtest, event_keys
from tripwire.detectors.injection import scan_text
from tripwire.detectors.policy import Policy
from tripwire.sinks.clickhouse import connect
from tripwire.sinks.migrations import migrate
from tripwire.sinks.step_history import agent_chunks

TARGET_EVENTS_S = 200_000

CANDIDATES = {
    "none": {},
    "breaker": {"defaults": {"breaker": {
        "cooldown_ms": 1_800_000,
        "rules": [
            {"name": "runaway_run", "scope": "run", "target": "stop_run"},
            {"name": "denials_halt", "detector": "denial_rate", "severity": "S2",
             "target": "read_only"},
            {"name": "spend_warning", "detector": "spend", "severity": "S3", "target": "none"},
            {"name": "harmful", "severity": "S1", "target": "read_only"},
            {"name": "repeated_or_costly", "severity": "S2", "target": "suggest_only"},
            {"name": "local_quality", "severity": "S3", "target": "approve_to_act"},
        ]}}},
    "detectors": {"defaults": {"denial_rate": {"bands": [
        {"at": 0.05, "severity": "S3"}, {"at": 0.5, "severity": "S2"},
        {"at": 0.8, "severity": "S1"}]}}},
}


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=10_000_000)
    p.add_argument("--agents", type=int, default=500)
    p.add_argument("--days", type=float, default=2.0)
    p.add_argument("--change", choices=sorted(CANDIDATES), default="breaker")
    p.add_argument("--data-dir", help="keep the generated dataset in this chDB dir and reuse "
                   "it on later runs (generating 10M steps takes minutes); default: a "
                   "temporary dir, removed at the end")
    p.add_argument("--limit", type=int, help="replay only the first agents' steps, up to "
                   "about this many events (whole chunks), for a quick run while developing; "
                   "default: the whole dataset")
    args = p.parse_args(argv)

    data = args.data_dir or tempfile.mkdtemp(prefix="tripwire-bench-backtest-")
    client = connect(f"chdb://{data}")
    try:
        migrate(client, 90)
        stored = client.query("SELECT count() FROM steps").result_rows[0][0]
        if stored and args.data_dir:
            print(f"reusing {stored:,} steps in {data}")
        else:
            elapsed = generate(client, args.steps, args.agents, args.days)
            print(f"generated {args.steps:,} steps of {args.agents} agents over "
                  f"{args.days:g} days in {elapsed:.0f} s; merges settled after "
                  f"{settle(client):.0f} s")
        # The whole dataset, however long ago it was generated.
        first, last = client.query("SELECT toUnixTimestamp64Milli(min(ts)), "
                                   "toUnixTimestamp64Milli(max(ts)) FROM steps").result_rows[0]
        start, end = int(first), int(last) + 1
        current = Policy()
        candidate = Policy.model_validate(CANDIDATES[args.change])

        keys = event_keys(current, candidate, scanner=scan_text)
        with replay_collector():  # as `tripwire backtest` runs: both passes alike
            return _measure(client, start, end, current, candidate, keys, args)
    finally:
        client.close()
        if not args.data_dir:
            shutil.rmtree(data, ignore_errors=True)


def _measure(client: Any, start: int, end: int, current: Policy, candidate: Policy,
             keys: frozenset[str], args: argparse.Namespace) -> int:
    print(f"detectors: {detectors.RUNNING}")
    t0, c0 = time.perf_counter(), time.process_time()
    events = 0
    for _, _, chunk, _ in agent_chunks(client, start, end, keys=keys):
        events += len(chunk)
        if args.limit is not None and events >= args.limit:
            break
    read_s, read_cpu = time.perf_counter() - t0, time.process_time() - c0
    print(f"ceiling (read + decode only): {events:,} events in {read_s:.1f} s = "
          f"{events / read_s:,.0f} events/s wall, {events / read_cpu:,.0f} per CPU s; "
          f"peak memory {peak_mb():,.0f} MB")

    before = peak_mb()
    bt = Backtest(current, candidate, scanner=scan_text, from_ms=start, to_ms=end)
    t0, c0 = time.perf_counter(), time.process_time()
    for agent, workflow, chunk, ts in agent_chunks(client, start, end, keys=keys):
        bt.feed(agent, workflow, chunk, ts)
        if args.limit is not None and bt.events >= args.limit:
            break
    report = bt.finish()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    rate_cpu = report.events / cpu
    print(f"backtest ({args.change} change): {report.events:,} events in {wall:.1f} s = "
          f"{report.events / wall:,.0f} events/s wall, {rate_cpu:,.0f} per CPU s "
          f"({rate_cpu / (events / read_cpu):.0%} of the read ceiling)")
    # The replay's own share: the backtest's CPU per event minus the read ceiling's
    # (the read and decode cost the same in both passes).
    replay_s = cpu / report.events - read_cpu / events
    print(f"replay alone (backtest minus the read ceiling): {1 / replay_s:,.0f} "
          f"events/s per CPU s ({replay_s * 1e6:.2f} us an event; read + decode "
          f"{read_cpu / events * 1e6:.2f} us)" if replay_s > 0 else
          "replay alone: not measurable (the backtest took no more CPU than the read)")
    print(f"peak memory {peak_mb():,.0f} MB (before the replay {before:,.0f} MB)")
    totals = report.totals("current"), report.totals("candidate")
    print(f"agents downgraded: current {totals[0]['agents_downgraded']}, candidate "
          f"{totals[1]['agents_downgraded']}; newly downgraded "
          f"{len(report.newly_downgraded())}")
    verdict = "OK" if rate_cpu >= TARGET_EVENTS_S else "UNDER"
    print(f"target >= {TARGET_EVENTS_S:,} events/s per core: {verdict}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
