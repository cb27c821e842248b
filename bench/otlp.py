"""Benchmark of the OTLP span source: ``python -m tripwire.bench.otlp [--traces N]``.

Prints, in one run on the same spans:

* per core: spans/s decoded (``otlp_proto`` and ``otlp_json``), and decoded + mapped +
  encoded as the router does it (its whole CPU cost per span), from process CPU time;
* end to end, each on a fresh embedded broker with a fresh ``tripwire worker``: the OTLP
  backlog through router + worker, against the router's own output records (the same events
  as StepBatch records keyed by agent) produced straight to ``agent-steps``, i.e. the SDK path.
  Both are timed from the worker being ready to the last record committed, so both include
  the same start-up and commit delays (~2 s); compare the ratio, and use enough traces.

Spans come from the real OpenTelemetry SDK (``bench/otlp_agents.py``): agents running
GenAI-semconv runs of ``--tools`` tool calls each (1 invoke_agent + a chat and an execute_tool
span per call), exported in requests of 512 spans (the BatchSpanProcessor's default batch).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import time
from pathlib import Path

from aiokafka import AIOKafkaProducer

from tripwire.bench.otlp_agents import InstrumentedAgent, collector_json, requests
from tripwire.bench.worker_process import (
    WorkerProcess,
    committed,
    highwaters,
    wait_caught_up,
    worker_env,
)
from tripwire.schemas import topics
from tripwire.schemas.topics import TopicSpec, ensure_topics, tripwire_topics
from tripwire.streams.broker import EmbeddedBroker, free_port
from tripwire.streams.otlp_decoding import decode_request
from tripwire.streams.otlp_mapping import SpanMapper
from tripwire.streams.otlp_router import SpanRouter

PARTITIONS = 8
OTLP_TOPIC = "otlp_spans"
SPANS_PER_REQUEST = 512


def workload(traces: int, tools: int, agents: int, seed: int = 3) -> list[bytes]:
    rnd = random.Random(seed)
    fleet = [InstrumentedAgent(**{"service.name": f"svc-{i % 4}"}) for i in range(agents)]
    for t in range(traces):
        i = t % agents
        calls = [(rnd.choice(["search_kb", "get_order", "update_ticket", "send_email"]),
                  {"id": rnd.randrange(10_000)}, None) for _ in range(tools)]
        fleet[i].genai_run(f"otel-agent-{i}", calls)
    spans = [s for agent in fleet for s in agent.finished()]
    return list(requests(spans, SPANS_PER_REQUEST))


def per_core(values: list[bytes]) -> dict[str, float]:
    json_values = [collector_json(v) for v in values]
    out: dict[str, float] = {}
    spans = sum(len(decode_request(v, "otlp_proto")) for v in values)
    for name, encoding, data in (("decode_proto", "otlp_proto", values),
                                 ("decode_json", "otlp_json", json_values)):
        t0 = time.process_time()
        for v in data:
            decode_request(v, encoding)  # type: ignore[arg-type]
        out[f"{name}_spans_per_s"] = spans / (time.process_time() - t0)
    for name, encoding, data in (("route_proto", "otlp_proto", values),
                                 ("route_json", "otlp_json", json_values)):
        router = SpanRouter(encoding, SpanMapper())  # type: ignore[arg-type]
        records = [(None, v, OTLP_TOPIC, 0, i) for i, v in enumerate(data)]
        t0 = time.process_time()
        for start in range(0, len(records), 500):
            router.route(records[start:start + 500])
        out[f"{name}_spans_per_s"] = spans / (time.process_time() - t0)
        out["events_per_span"] = router.counters.events / spans
    out["spans"] = spans
    return out


async def _produce(bootstrap: str, topic: str, records: list[tuple[bytes | None, bytes]]) -> None:
    p = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5,
                         max_request_size=8 * 1024 * 1024)
    await p.start()
    try:
        futures = [await p.send(topic, v, key=k) for k, v in records]
        await asyncio.gather(*futures)
    finally:
        await p.stop()


async def _until_committed(bootstrap: str, group: str, topic: str, worker: WorkerProcess,
                           limit_s: float = 900) -> None:
    hw = await highwaters(bootstrap, topic, PARTITIONS)
    deadline = time.monotonic() + limit_s
    while True:
        got = await committed(bootstrap, group, topic, PARTITIONS)
        if all(got[p] >= hw[p] for p in hw):
            return
        worker.check_progress(deadline, f"{group} on {topic}: {got} never reached {hw}")
        await asyncio.sleep(0.05)


def end_to_end(records: list[tuple[bytes | None, bytes]], topic: str, workdir: Path,
               otlp: bool) -> tuple[float, float]:
    """Seconds from the worker being ready to every record (and, for OTLP, every routed
    record) committed, and (OTLP) to the router having committed the whole OTLP topic."""
    with EmbeddedBroker(port=free_port(), log_path=workdir / "tansu.log") as broker:
        asyncio.run(ensure_topics(broker.bootstrap, [*tripwire_topics(PARTITIONS),
                                                     TopicSpec(OTLP_TOPIC, PARTITIONS)]))
        asyncio.run(_produce(broker.bootstrap, topic, records))
        extra = {"TRIPWIRE_OTLP_TOPIC": OTLP_TOPIC} if otlp else {}
        env = worker_env(broker.bootstrap, workdir / "data", PARTITIONS,
                         TRIPWIRE_SINK_FLUSH_SECONDS="1.0", **extra)
        worker = WorkerProcess(env, workdir / "worker.log").start().wait_ready()
        try:
            t0 = time.perf_counter()
            routed_s = 0.0
            if otlp:
                asyncio.run(_until_committed(broker.bootstrap, "tripwire-otlp-router",
                                             OTLP_TOPIC, worker))
                routed_s = time.perf_counter() - t0
            asyncio.run(wait_caught_up(broker.bootstrap, "tripwire", topics.STEPS, PARTITIONS,
                                       worker))
            return time.perf_counter() - t0, routed_s
        finally:
            # The figure is taken; a worker slow to stop on a loaded machine does not void it.
            try:
                worker.stop(timeout=120)
            except AssertionError as exc:
                print(f"(worker was slow to stop: {str(exc)[:200]})", file=sys.stderr)


def run(traces: int, tools: int, agents: int, workdir: Path) -> dict[str, float]:
    values = workload(traces, tools, agents)
    figures = per_core(values)
    router = SpanRouter("otlp_proto", SpanMapper())
    routed = router.route([(None, v, OTLP_TOPIC, 0, i) for i, v in enumerate(values)])
    events = router.counters.events
    figures["events"] = events
    (workdir / "otlp").mkdir(parents=True, exist_ok=True)
    (workdir / "steps").mkdir(parents=True, exist_ok=True)
    otlp_s, routed_s = end_to_end([(None, v) for v in values], OTLP_TOPIC, workdir / "otlp",
                                  otlp=True)
    steps_s, _ = end_to_end([(k, v) for k, v in routed.steps], topics.STEPS, workdir / "steps",
                            otlp=False)
    figures["e2e_router_spans_per_s"] = figures["spans"] / routed_s
    figures["e2e_otlp_events_per_s"] = events / otlp_s
    figures["e2e_otlp_spans_per_s"] = figures["spans"] / otlp_s
    figures["e2e_agent_steps_events_per_s"] = events / steps_s
    figures["e2e_ratio"] = steps_s / otlp_s
    return figures


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tripwire.bench.otlp", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--traces", type=int, default=3000, help="agent runs (traces)")
    ap.add_argument("--tools", type=int, default=8, help="tool calls per run")
    ap.add_argument("--agents", type=int, default=50)
    ap.add_argument("--json", action="store_true", help="one JSON object")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="tripwire-otlp-bench-") as tmp:
        f = run(args.traces, args.tools, args.agents, Path(tmp))
    if args.json:
        print(json.dumps({k: round(v, 3) for k, v in f.items()}))
        return 0
    print(f"OTLP source, {int(f['spans'])} spans -> {int(f['events'])} events "
          f"({f['events_per_span']:.2f} per span)")
    print(f"  per core, decode only:        proto {f['decode_proto_spans_per_s']:>9,.0f} spans/s"
          f"   json {f['decode_json_spans_per_s']:>9,.0f} spans/s")
    print(f"  per core, decode+map+encode:  proto {f['route_proto_spans_per_s']:>9,.0f} spans/s"
          f"   json {f['route_json_spans_per_s']:>9,.0f} spans/s"
          f"   ({1e6 / f['route_proto_spans_per_s']:.1f} / "
          f"{1e6 / f['route_json_spans_per_s']:.1f} us a span)")
    print(f"  end to end, router + worker:  {f['e2e_otlp_events_per_s']:>9,.0f} events/s "
          f"({f['e2e_otlp_spans_per_s']:,.0f} spans/s; the router alone had committed the "
          f"OTLP topic at {f['e2e_router_spans_per_s']:,.0f} spans/s)")
    print(f"  end to end, agent-steps path: {f['e2e_agent_steps_events_per_s']:>9,.0f} events/s "
          f"(same events; OTLP / agent-steps = {f['e2e_ratio']:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
