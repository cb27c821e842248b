"""How fast the safety dashboard's "Controls obeyed by guards" panel answers on many guards.

    .venv/bin/python -m tripwire.bench.control_acks_panel [--guards 1000] [--hours 6]
                                                     [--controls 200] [--runs 5]

Fills ``control_acks`` of a temporary chDB dir inside ClickHouse (``INSERT ... SELECT FROM
numbers()``, the columns ``sinks.control_audit.control_ack_row`` writes): every guard says
hello every 30 s for ``--hours``, and ``--controls`` workflow kills spread over the range are
acknowledged by every guard (every guard reads the shared topic and acks each control it
applies). A quarter of the guards never state their workflow. Then it times the panel query
(p50 of ``--runs`` after a warm-up) for the last hour and the whole range, beside a ceiling
measured in the same run: one plain read of the range's acks (``uniqExact(guard_instance)``
and ``count()``), the least any answer needs.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time

from tripwire.dashboards.filters import now_ms
from tripwire.dashboards.runner import run_query
from tripwire.sinks.clickhouse import Client, connect
from tripwire.sinks.migrations import migrate

_COLUMNS = ("applied_at, kind, guard_instance, agent_id, control_key, seq, mode, command_id, "
            "issued_at, apply_ms, verified, source_partition, source_offset, agent_version, "
            "workflow, environment, scope_key, scope_workflow")
_WORKFLOW = "[NULL, 'billing', 'support', 'payroll'][{g} % 4 + 1]"
_HELLOS = f"""
INSERT INTO control_acks ({_COLUMNS})
SELECT fromUnixTimestamp64Milli({{start:Int64}} + intDiv(number, {{guards:UInt64}}) * 30000
                                + (number % {{guards:UInt64}}) * 7 % 30000, 'UTC'),
       'hello', concat('g', toString(number % {{guards:UInt64}})),
       concat('agent-', toString(number % {{guards:UInt64}} % 500)), '', NULL, '', '', NULL,
       NULL, 1, 0, number, '1.0', {_WORKFLOW.format(g="number % {guards:UInt64}")}, 'prod',
       '', NULL
FROM numbers({{rows:UInt64}})
"""
_APPLIED = f"""
INSERT INTO control_acks ({_COLUMNS})
SELECT fromUnixTimestamp64Milli(issued + 20 + g % 400, 'UTC'), 'applied', concat('g', toString(g)),
       concat('agent-', toString(g % 500)), concat('workflow=', wf), issued, 'halted',
       concat('cmd-', toString(i)), fromUnixTimestamp64Milli(issued, 'UTC'), 20 + g % 400, 1, 0,
       number, '1.0', {_WORKFLOW.format(g="g")}, 'prod', concat('workflow=', wf), wf
FROM (SELECT number, intDiv(number, {{guards:UInt64}}) AS i, number % {{guards:UInt64}} AS g,
             toInt64({{start:Int64}} + (i + 1) * {{span:Int64}} / ({{controls:UInt64}} + 1))
                 AS issued,
             ['billing', 'support', 'payroll'][i % 3 + 1] AS wf
      FROM numbers({{rows:UInt64}}))
"""


def fill(client: Client, guards: int, hours: float, controls: int, end_ms: int) -> int:
    span = int(hours * 3600_000)
    start = end_ms - span
    client.command(_HELLOS, parameters={"start": start, "guards": guards,
                                        "rows": guards * (span // 30_000)})
    client.command(_APPLIED, parameters={"start": start, "span": span, "guards": guards,
                                         "controls": controls, "rows": guards * controls})
    client.command("OPTIMIZE TABLE control_acks FINAL")
    return int(client.query("SELECT count() FROM control_acks").result_rows[0][0])


def _p50_ms(run: object, runs: int) -> float:
    run()  # type: ignore[operator]
    took = []
    for _ in range(runs):
        t = time.perf_counter()
        run()  # type: ignore[operator]
        took.append((time.perf_counter() - t) * 1000)
    return statistics.median(took)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--guards", type=int, default=1000)
    p.add_argument("--hours", type=float, default=6.0)
    p.add_argument("--controls", type=int, default=200)
    p.add_argument("--runs", type=int, default=5)
    args = p.parse_args(argv)
    tmp = tempfile.mkdtemp(prefix="tripwire-acks-bench-")
    client = connect(f"chdb://{tmp}")
    try:
        migrate(client, 30)
        end = now_ms() - 60_000
        rows = fill(client, args.guards, args.hours, args.controls, end)
        print(f"control_acks: {rows:,} rows ({args.guards} guards, {args.hours:g} h of hellos, "
              f"{args.controls} workflow kills each acked by every guard)")
        for label, hours in (("last hour", 1.0), (f"{args.hours:g} h", args.hours)):
            values = {"from_ms": int(end - hours * 3600_000), "to_ms": end + 60_000,
                      "agents": []}
            result = run_query(client, "safety_control_acks", values)
            panel = _p50_ms(lambda v=values: run_query(client, "safety_control_acks", v),
                            args.runs)
            ceiling = _p50_ms(lambda v=values: client.query(
                "SELECT uniqExact(guard_instance), count() FROM control_acks "
                "WHERE applied_at >= fromUnixTimestamp64Milli({f:Int64}, 'UTC') "
                "AND applied_at < fromUnixTimestamp64Milli({t:Int64}, 'UTC')",
                parameters={"f": v["from_ms"], "t": v["to_ms"]}), args.runs)
            first = result.records()[0] if result.rows else {}
            print(f"{label:>10}: panel p50 {panel:7.1f} ms, one plain read of the range "
                  f"{ceiling:6.1f} ms (x{panel / max(ceiling, 1e-9):.1f}); {len(result.rows)} "
                  f"controls; latest: {first.get('scope')} obeyed {first.get('obeyed')} of "
                  f"{first.get('heard_from')}, unknown {first.get('unknown_scope')}")
        print(f"load average {os.getloadavg()[0]:.2f}")
    finally:
        client.close()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
