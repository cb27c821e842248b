"""The ClickHouse writer's insert in isolation: CPU microseconds per stored step row.

``python -m tripwire.bench.writer_insert --shapes json,avro,sdk [--rows N]`` measures the
whole writer per record shape instead: the records the stream hands over (one JSON event per
record, one bare Avro StepEvent per record, SDK-shaped StepBatch records, as ``tripwire
bench`` writes them) go through a real :class:`~streams.clickhouse_writer.ClickHouseWriter`
child in inserts of ``--insert-rows`` (50,000: what a writer draining a backlog coalesces),
and it prints the child's CPU per stored row, the parent's (pickling the records), and the
child's work split into its stages, run in this process with the collector off as the child
runs them: the pipe (pickle out and in), the decode into columns, ids and Arrow columns, and
the insert (the "already stored?" check included).

Issue 14's writer pass, 100,000 events a shape, two runs each of the writer before (main
502e987's) and after, alternated on the shared 2-core machine (load 1.5-3): child CPU us a
stored row json 20.1 / 21.9 -> 15.8 / 14.3, avro 15.1 / 18.3 -> 13.7 / 16.3, sdk 17.4 / 17.0
-> 14.5 / 14.3. What is left is mostly chDB's: the insert into ``steps`` and its five rollup
views (~3.4 us a row in 50,000-row inserts), their background merges (~1.8), and the first
batch's "already stored?" check.

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
import gc
import itertools
import os
import pickle
import tempfile
import time
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
SHAPES = ("json", "avro", "sdk")


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


def shape_records(shape: str, rows: int, start_ms: int) -> list[tuple]:
    """The agent-steps records of ``rows`` bench-fleet events in ``shape``, as the stream
    hands them to the writer: (value, content type, partition, offset, refused indices)."""
    from aiokafka.partitioner import DefaultPartitioner

    from tripwire.bench.backlogs import single_event_records
    from tripwire.bench.pipeline import PARTITIONS, SDK_BACKLOG_RATE, steady_load

    offsets = [0] * PARTITIONS
    out: list[tuple] = []

    def add(value: bytes, ctype: str | None, partition: int) -> None:
        out.append((value, ctype, partition, offsets[partition], ()))
        offsets[partition] += 1

    if shape == "sdk":
        for _, partition, value in steady_load(SDK_BACKLOG_RATE, rows / SDK_BACKLOG_RATE,
                                               start_ms):
            add(value, None, partition)
        return out
    partitioner = DefaultPartitioner()
    partitions = list(range(PARTITIONS))
    fleet = itertools.islice(
        fleet_events(seed=42, agents=200, scenarios=SCENARIOS, start_ms=start_ms), rows)
    ctype = "application/json" if shape == "json" else None
    for key, value in single_event_records(fleet, shape):
        add(value, ctype, partitioner(key, partitions, partitions))
    return out


def _chunks(records: list[tuple], rows: int, per_insert: int) -> list[list[tuple]]:
    """The records in inserts of about ``per_insert`` rows (records of SDK shape hold many)."""
    per_record = max(1, rows // len(records))
    step = max(1, per_insert // per_record)
    return [records[i:i + step] for i in range(0, len(records), step)]


def _proc_cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _stages(records: list[list[tuple]], rows: int) -> dict[str, float]:
    """CPU us a row of each stage of the child's work, run here as the child runs it."""
    from tripwire.schemas.step_columns import StepColumnDecoder
    from tripwire.sinks.step_sink import StepSink
    from tripwire.streams.clickhouse_writer import _columns_of, _payload
    from tripwire.streams.step_json import FastJsonStepBatchCodec

    decoder = StepColumnDecoder(FastJsonStepBatchCodec())
    spent = dict.fromkeys(("pipe out", "pipe in", "decode", "ids+arrow", "insert"), 0.0)
    with tempfile.TemporaryDirectory(prefix="tripwire-writer-bench-") as d:
        client = connect(f"chdb://{d}")
        try:
            migrate(client, 3650)
            sink = StepSink(client)
            gc.disable()
            for chunk in records:
                t0 = _cpu_s()
                sent = pickle.dumps(("steps", (_payload(chunk), False)), protocol=5)
                t1 = _cpu_s()
                _, (payload, _recheck) = pickle.loads(sent)
                t2 = _cpu_s()
                batch = _columns_of(decoder, payload)
                t3 = _cpu_s()
                _arrow_table(batch, list(map(_event_key, batch.column("event_id"))))
                t4 = _cpu_s()
                sink.insert_columns(batch)
                t5 = _cpu_s()
                gc.enable()
                gc.collect()
                gc.disable()
                for name, took in zip(spent, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4),
                                      strict=True):
                    spent[name] += took
            gc.enable()
        finally:
            client.close()
    # The insert call builds the ids and Arrow columns again: its stage is net of them.
    spent["insert"] -= spent["ids+arrow"]
    return {name: took / rows * 1e6 for name, took in spent.items()}


def measure_shapes(shapes: Sequence[str], rows: int, per_insert: int) -> None:
    from tripwire.streams.clickhouse_writer import ClickHouseWriter

    start_ms = int(time.time() * 1000) - 3_600_000  # inside the table's retention
    print(f"writer CPU us a stored row, {rows:,} bench-fleet events a shape, inserts of "
          f"~{per_insert:,} rows")
    for shape in shapes:
        records = shape_records(shape, rows, start_ms)
        chunks = _chunks(records, rows, per_insert)
        with tempfile.TemporaryDirectory(prefix="tripwire-writer-bench-") as d:
            writer = ClickHouseWriter(f"chdb://{d}", retention_days=3650).start()
            try:
                # Warm-up on other partitions (masking rules, first parts): not counted.
                warm = shape_records(shape, 2_000, start_ms - 7_200_000)
                writer.insert_steps([(*r[:2], r[2] + 100, *r[3:]) for r in warm])
                pid = writer._proc.pid  # noqa: SLF001 - the child's CPU is what is measured
                child0, parent0 = _proc_cpu_s(pid), _cpu_s()
                stored = sum(writer.insert_steps(chunk) for chunk in chunks)
                child, parent = _proc_cpu_s(pid) - child0, _cpu_s() - parent0
            finally:
                writer.close()
        stages = _stages(chunks, rows)
        print(f"  {shape:4}: child {child / stored * 1e6:5.1f}, parent (pickling) "
              f"{parent / stored * 1e6:4.1f}  [{stored:,} rows stored]; stages: "
              + ", ".join(f"{k} {v:.1f}" for k, v in stages.items()))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tripwire.bench.writer_insert",
                                 description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--shapes", default=None, metavar="SHAPE[,SHAPE...]",
                    help=f"measure the whole writer on records of these shapes "
                    f"({', '.join(SHAPES)}) instead of the insert alone")
    ap.add_argument("--insert-rows", type=int, default=50_000,
                    help="rows a writer insert holds, with --shapes (default 50,000)")
    args = ap.parse_args(argv)
    if args.shapes:
        shapes = [s.strip() for s in args.shapes.split(",") if s.strip()]
        if unknown := set(shapes) - set(SHAPES):
            ap.error(f"--shapes: unknown {', '.join(sorted(unknown))} (known: {SHAPES})")
        measure_shapes(shapes, args.rows, args.insert_rows)
        return 0
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
