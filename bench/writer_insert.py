"""The ClickHouse writer's insert in isolation: CPU microseconds per stored step row.

``python -m tripwire.bench.writer_insert [--rows N]`` fills a fresh chDB with the bench fleet's
steps through :class:`~sinks.step_sink.StepSink`'s column path and prints the CPU this process
spent per row (chDB runs in-process, so its threads are counted too):

* the Python column build (masking, ids) and the insert call, per insert size, with and
  without ``optimize_on_insert`` (what the writer sets);
* a Null-engine copy of ``steps`` (the driver's serialisation and ClickHouse's parsing only),
  ``steps`` without any rollup view, and ``steps`` without each view in turn.

An insert costs a fixed amount (the steps part, then each view's part, ~65 ms here) plus a
per-row amount: this is what `streams/sink_buffer.py`'s coalescing and the sink's insert
settings were measured with. The sink inserts Arrow (``insert_arrow``); with the driver's
Native format (before) the same 100,000 rows took 2.3 us a row to build and 5.3 us a row to
insert in 50,000-row inserts (7.0 in 20,000-row ones), against 2.6 and 3.6 (5.5) in Arrow.
"""

from __future__ import annotations

import argparse
import itertools
import os
import tempfile
from collections.abc import Sequence
from typing import Any

import pyarrow as pa

from tripwire.schemas.step_columns import StepColumns
from tripwire.simulator.fleet import fleet_events
from tripwire.simulator.scenarios import SCENARIOS
from tripwire.sinks.clickhouse import Client, connect
from tripwire.sinks.migrations import migrate
from tripwire.sinks.step_sink import _arrow_table, _event_key

REPEATS = 3


def _cpu_s() -> float:
    t = os.times()
    return t.user + t.system


def _built(events: list[dict[str, Any]], size: int) -> tuple[list[pa.Table], float]:
    """Insert-ready Arrow tables of ``events`` in inserts of ``size`` rows, and the CPU seconds
    building them took."""
    start = _cpu_s()
    out = []
    for i in range(0, len(events), size):
        batch = StepColumns(list(events[0]))
        batch.append_events(events[i:i + size])
        out.append(_arrow_table(batch, list(map(_event_key, batch.column("event_id")))))
    return out, _cpu_s() - start


def _insert_us(client: Client, table: str, inserts: Sequence[pa.Table], rows: int,
               settings: dict[str, Any]) -> float:
    """Best of REPEATS: CPU microseconds per row of inserting everything into ``table``."""
    best = float("inf")
    for _ in range(REPEATS):
        if table == "steps":
            client.command("TRUNCATE TABLE steps")
        start = _cpu_s()
        for columns in inserts:
            client.insert_arrow(table, columns, settings={"max_partitions_per_insert_block": 0,
                                                          **settings})
        best = min(best, (_cpu_s() - start) / rows * 1e6)
    return best


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tripwire.bench.writer_insert",
                                 description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=100_000)
    args = ap.parse_args(argv)
    events = list(itertools.islice(
        fleet_events(seed=42, agents=200, scenarios=SCENARIOS), args.rows))
    n = len(events)
    with tempfile.TemporaryDirectory(prefix="tripwire-writer-bench-") as d:
        client = connect(f"chdb://{d}")
        try:
            # Ten years: the fleet's events are dated 2026-01-01, and rows past the TTL are
            # dropped at insert, which would measure an insert that stores nothing.
            migrate(client, 3650)
            client.command("CREATE TABLE steps_null AS steps ENGINE = Null")
            print(f"{n} bench-fleet steps, CPU us a row (best of {REPEATS})")
            for size in (5_000, 20_000, 50_000, 100_000):
                inserts, build_s = _built(events, size)
                default = _insert_us(client, "steps", inserts, n, {})
                skipped = _insert_us(client, "steps", inserts, n, {"optimize_on_insert": 0})
                print(f"  inserts of {size:>7,} rows: columns {build_s / n * 1e6:4.1f}, insert "
                      f"{default:5.1f}, with optimize_on_insert=0 {skipped:5.1f}")
            inserts, _ = _built(events, 20_000)
            print("  inserts of  20,000 rows, optimize_on_insert=0:")
            settings = {"optimize_on_insert": 0}
            print(f"    Null table (driver + parsing)  "
                  f"{_insert_us(client, 'steps_null', inserts, n, settings):5.1f}")
            views = [row[0] for row in client.query(
                "SELECT name FROM system.tables WHERE database = currentDatabase()"
                " AND engine = 'MaterializedView' ORDER BY name").result_rows]
            print(f"    steps and every view           "
                  f"{_insert_us(client, 'steps', inserts, n, settings):5.1f}")
            for view in views:
                client.command(f"DETACH TABLE {view}")
                print(f"    without {view:22} "
                      f"{_insert_us(client, 'steps', inserts, n, settings):5.1f}")
                client.command(f"ATTACH TABLE {view}")
            for view in views:
                client.command(f"DETACH TABLE {view}")
            print(f"    steps, no view                 "
                  f"{_insert_us(client, 'steps', inserts, n, settings):5.1f}")
        finally:
            client.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
