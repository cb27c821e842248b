"""OpenTelemetry-instrumented agents governed end to end, on real components.

Spans come from the real OpenTelemetry Python SDK (TracerProvider, GenAI semconv or
OpenInference attributes), encoded by the OTLP exporter's own encoder, written to Kafka as the
Collector's kafka exporter writes them (one ExportTraceServiceRequest per record, keyed by trace
id or not keyed), then consumed by a real `tripwire worker` (which starts its OTLP router)
against the embedded broker and its own chDB.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from chdb_fixtures import client_on, tabsep_reader, tabsep_rows
from tripwire.bench.otlp_agents import InstrumentedAgent, collector_json, requests, trace_key
from tripwire.bench.worker_process import (
    ROOT,
    WorkerProcess,
    committed,
    highwaters,
    read_all,
    wait_caught_up,
    worker_env,
)
from tripwire.schemas import topics
from tripwire.schemas.codec import control_codec
from tripwire.schemas.topics import TopicSpec, ensure_topics, tripwire_topics
from tripwire.sinks.clickhouse import Client
from tripwire.streams import dead_letters
from tripwire.streams.broker import EmbeddedBroker, free_port

pytestmark = pytest.mark.integration
PARTITIONS = 4
OTLP_TOPIC = "otlp_spans"
ROUTER_GROUP = "tripwire-otlp-router"


@pytest.fixture
def fresh_broker(tmp_path: Path) -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker(port=free_port(), log_path=tmp_path / "tansu.log") as b:
        asyncio.run(ensure_topics(b.bootstrap, [*tripwire_topics(PARTITIONS),
                                                TopicSpec(OTLP_TOPIC, PARTITIONS)]))
        yield b


def sql(env: dict[str, str], query: str) -> list[list[str]]:
    out = subprocess.run([sys.executable, "-m", "tripwire.streams.cli", "sql", query],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return [line.split("\t") for line in out.stdout.splitlines()]


async def produce(bootstrap: str, records: list[tuple[bytes | None, bytes]]) -> None:
    """As the Collector's kafka exporter: one request per record, key = trace id or none."""
    p = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await p.start()
    try:
        for key, value in records:
            await p.send_and_wait(OTLP_TOPIC, value, key=key)
    finally:
        await p.stop()


async def wait_routed(bootstrap: str, worker: WorkerProcess, limit_s: float = 600) -> None:
    hw = await highwaters(bootstrap, OTLP_TOPIC, PARTITIONS)
    deadline = time.monotonic() + limit_s
    while True:
        got = await committed(bootstrap, ROUTER_GROUP, OTLP_TOPIC, PARTITIONS)
        if all(got[p] >= hw[p] for p in hw):
            return
        worker.check_progress(deadline, f"router committed {got} never reached {hw}")
        await asyncio.sleep(0.3)


def agents_spans() -> dict[str, list[bytes]]:
    """Serialized requests per scenario agent, produced by the real SDK."""
    out: dict[str, list[bytes]] = {}
    # GenAI semconv agent calling the same tool with the same arguments over and over; its
    # identity is gen_ai.agent.id on the invoke_agent span, inherited by the children.
    looper = InstrumentedAgent(**{"service.name": "support-bot"})
    looper.genai_run("otel-looper", [("search_kb", {"q": "refund policy"}, None)] * 12)
    out["otel-looper"] = list(requests(looper.finished(), 512))
    # Keeps getting refused by the CRM's permission check (error.type), different records each
    # time (so not a loop), on three tools (one refused tool alone would be contained to that
    # tool); identity from the resource's service.name.
    denied = InstrumentedAgent(**{"service.name": "crm-agent", "service.instance.id": "pod-7"})
    crm_tools = ("update_crm", "delete_contact", "merge_accounts")
    for run in range(2):
        calls = [(crm_tools[i % 3], {"record": run * 100 + i}, "PermissionDenied")
                 for i in range(9)]
        calls.insert(3, ("lookup_account", {"account": run}, None))
        denied.genai_run(None, calls)
    # BatchSpanProcessor-sized requests: a run's spans may straddle two records.
    out["crm-agent"] = list(requests(denied.finished(), 10))
    # OpenInference-instrumented agent: tokens but no cost on the span.
    oi = InstrumentedAgent(**{"service.name": "invoice-assistant"})
    for _ in range(3):
        oi.openinference_run("What is the total of invoice INV-7?")
    out["invoice-assistant"] = list(requests(oi.finished(), 512))
    return out


def malformed(sample: bytes) -> tuple[list[tuple[bytes | None, bytes]], int]:
    """Records no router can map, and how many dead letters they make."""
    anonymous = InstrumentedAgent()  # service.name defaults to unknown_service: no identity
    anonymous.genai_run(None, [("search_kb", {"q": "x"}, None)])
    no_identity = next(requests(anonymous.finished(), 512))  # invoke_agent, chat, tool: 3 spans
    records = [
        (None, sample[: len(sample) // 2]),        # truncated protobuf
        (None, collector_json(sample)),            # otlp_json on an otlp_proto topic
        (b"x", b"\x00\x01garbage\xff"),            # not OTLP at all
        (trace_key(no_identity), no_identity),     # GenAI spans without any agent identity
    ]
    return records, 3 + 3


def controls(bootstrap: str) -> list[dict]:
    codec = control_codec()
    return [codec.decode(r.value) for r in asyncio.run(read_all(bootstrap, topics.CONTROLS,
                                                                PARTITIONS))]


def test_otel_agents_are_governed_and_stored_and_bad_records_are_dead_lettered(
        fresh_broker, tmp_path):
    bootstrap = fresh_broker.bootstrap
    spans = agents_spans()
    bad, bad_letters = malformed(spans["otel-looper"][0])
    good = [(trace_key(v) if i % 2 else None, v)
            for values in spans.values() for i, v in enumerate(values)]
    asyncio.run(produce(bootstrap, good + bad))

    env = worker_env(bootstrap, tmp_path / "data", PARTITIONS, TRIPWIRE_OTLP_TOPIC=OTLP_TOPIC)
    worker = WorkerProcess(env, tmp_path / "worker.log").start()
    try:
        asyncio.run(wait_routed(bootstrap, worker))
        asyncio.run(wait_caught_up(bootstrap, "tripwire", topics.STEPS, PARTITIONS, worker,
                                   limit_s=600))
        assert worker.alive(), "bad records do not stop the worker"
    finally:
        assert worker.stop(120) == 0, worker.log()[-3000:]

    # The looping agent's run is stopped; the denied agent is downgraded.
    published = controls(bootstrap)
    looper = [c for c in published if c["agent_id"] == "otel-looper"]
    assert any(c["scope"] == "run" for c in looper), (looper, worker.log()[-3000:])
    # Denials concentrated in one tool restrict that tool first (narrow containment: a
    # scoped agent + tool ceiling), or the agent when several of its tools trip.
    crm = [c for c in published if c["agent_id"] == "crm-agent" and c["scope"] in
           ("agent", "scoped")]
    assert crm and crm[-1]["mode"] in ("suggest_only", "read_only", "halted"), published

    # Every agent is in `steps`; the OpenInference agent with tokens and a priced cost
    # (gpt-4o at 2.50 / 10.00 USD per million tokens: 1200 in + 300 out = 0.006). Read in this
    # process on one client (the worker has exited): six chDB start-ups before, 1.2-2 s each.
    with client_on(env["TRIPWIRE_CLICKHOUSE_URL"]) as client:
        def sql(query: str) -> list[list[str]]:
            return tabsep_rows(client, query)

        counts = dict(sql("SELECT agent_id, count() FROM steps GROUP BY agent_id"))
        assert set(counts) == {"otel-looper", "crm-agent", "invoice-assistant"}, counts
        [[calls, tokens_in, cost]] = sql("SELECT count(), sum(input_tokens), sum(cost_usd) "
                                         "FROM steps WHERE agent_id = 'invoice-assistant' "
                                         "AND kind = 'model_call'")
        assert (int(calls), int(tokens_in)) == (3, 3600)
        assert abs(float(cost) - 0.018) < 1e-9
        [[ends]] = sql("SELECT count() FROM steps WHERE kind = 'run_end' "
                       "AND agent_id = 'invoice-assistant'")
        assert int(ends) == 3
        [[denials]] = sql("SELECT countIf(policy_outcome = 'denied') FROM steps "
                          "WHERE agent_id = 'crm-agent'")
        assert int(denials) == 18
        [[dupes]] = sql("SELECT count() - uniqExact(event_id) FROM steps")
        assert int(dupes) == 0

        # ... and on the safety dashboard's "current mode" panel.
        modes = dashboard(client, "safety_current_modes")
    by_agent = {row["agent_id"]: row["mode"] for row in modes}
    assert set(by_agent) >= {"otel-looper", "crm-agent", "invoice-assistant"}
    assert by_agent["crm-agent"] != "autonomous"

    # Malformed records: dead letters with reasons and where they came from.
    dlq = asyncio.run(read_all(bootstrap, topics.STEPS_DLQ, PARTITIONS))
    assert len(dlq) == bad_letters, [dead_letters.header_map(r.headers) for r in dlq]
    reasons: dict[bytes, list[str]] = {}
    for rec in dlq:
        h = dead_letters.header_map(rec.headers)
        assert h[dead_letters.SOURCE_TOPIC] == OTLP_TOPIC.encode()
        int(h[dead_letters.SOURCE_PARTITION]), int(h[dead_letters.SOURCE_OFFSET])
        assert (rec.key, rec.value) in set(bad), "the original record travels unchanged"
        reasons.setdefault(rec.value, []).append(h[dead_letters.REASON].decode())
    truncated, wrong_encoding, garbage, anonymous = (value for _, value in bad)
    assert "not an OTLP protobuf" in reasons[truncated][0]
    assert "looks like JSON" in reasons[wrong_encoding][0]
    assert "not an OTLP protobuf" in reasons[garbage][0]
    assert len(reasons[anonymous]) == 3
    assert all("no agent identity" in r for r in reasons[anonymous]), reasons[anonymous]


def dashboard(client: Client, name: str) -> list[dict]:
    from tripwire.dashboards.filters import Filters
    from tripwire.dashboards.runner import run_query

    res = run_query(client, name, Filters.last(6 * 3600_000).values())
    # As the dashboard's JSON carries them.
    rows = [dict(zip(res.columns, r, strict=True)) for r in res.rows]
    return json.loads(json.dumps(rows, default=str))


def test_otlp_json_records_from_the_collector_become_steps(fresh_broker, tmp_path):
    bootstrap = fresh_broker.bootstrap
    agent = InstrumentedAgent(**{"service.name": "json-agent"})
    agent.genai_run("json-agent-1", [("search_kb", {"q": "a"}, None), ("send_email",
                                                                      {"to": "x"}, None)])
    values = [collector_json(v) for v in requests(agent.finished(), 512)]
    asyncio.run(produce(bootstrap, [(None, v) for v in values] + [(None, b'{"resourceSpans": [')]))
    env = worker_env(bootstrap, tmp_path / "data", PARTITIONS, TRIPWIRE_OTLP_TOPIC=OTLP_TOPIC,
                     TRIPWIRE_OTLP_ENCODING="otlp_json")
    worker = WorkerProcess(env, tmp_path / "worker.log").start()
    try:
        asyncio.run(wait_routed(bootstrap, worker))
        asyncio.run(wait_caught_up(bootstrap, "tripwire", topics.STEPS, PARTITIONS, worker,
                                   limit_s=600))
    finally:
        assert worker.stop(120) == 0, worker.log()[-3000:]
    rows = sql(env, "SELECT kind, tool, action_class FROM steps WHERE agent_id = 'json-agent-1' "
                    "ORDER BY step, kind")
    kinds = [r[0] for r in rows]
    assert kinds.count("tool_call") == 2 and kinds.count("model_call") == 2, rows
    assert ["tool_call", "send_email", "external"] in rows
    assert kinds[0] == "run_start" and kinds[-1] == "run_end"
    dlq = asyncio.run(read_all(bootstrap, topics.STEPS_DLQ, PARTITIONS))
    assert len(dlq) == 1
    assert b"not OTLP/JSON" in dead_letters.header_map(dlq[0].headers)[dead_letters.REASON]


def test_tripwire_run_honours_the_otlp_topic(tmp_path):
    """`tripwire run` from an empty directory with TRIPWIRE_OTLP_TOPIC set: its embedded
    broker takes the Collector's records and the steps land in its embedded ClickHouse."""
    import os
    import signal

    data, port, partitions = tmp_path / "data", free_port(), 8
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIPWIRE_")}
    env.update(TRIPWIRE_KAFKA_REBALANCE_TIMEOUT_S="2", TRIPWIRE_OTLP_TOPIC=OTLP_TOPIC)
    log_path = tmp_path / "run.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tripwire.streams.cli", "run", "--data-dir", str(data),
             "--broker-port", str(port), "--dashboard-port", "0"],
            cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
    bootstrap = f"127.0.0.1:{port}"

    async def scenario() -> None:
        deadline = time.monotonic() + 600
        while "otlp router" not in log_path.read_text() or \
                "Worker ready" not in log_path.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, log_path.read_text()
            await asyncio.sleep(0.2)
        agent = InstrumentedAgent(**{"service.name": "run-agent"})
        agent.genai_run("run-agent", [("search_kb", {"q": "x"}, None)])
        await produce(bootstrap, [(None, v) for v in requests(agent.finished(), 512)])
        for group, topic in ((ROUTER_GROUP, OTLP_TOPIC), ("tripwire", topics.STEPS)):
            hw = await highwaters(bootstrap, topic, partitions)
            while True:
                got = await committed(bootstrap, group, topic, partitions)
                if all(got[p] >= hw[p] for p in hw):
                    break
                assert proc.poll() is None and time.monotonic() < deadline, \
                    log_path.read_text()[-3000:]
                await asyncio.sleep(0.3)

    try:
        asyncio.run(scenario())
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(180) == 0, log_path.read_text()[-3000:]
    out = subprocess.run(
        [sys.executable, "-m", "tripwire.streams.cli", "sql", "--data-dir", str(data),
         "SELECT kind FROM steps WHERE agent_id = 'run-agent' ORDER BY step, kind"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["run_start", "model_call", "policy_decision", "tool_call",
                                  "run_end"]


def test_router_killed_mid_stream_loses_nothing_and_doubles_nothing(fresh_broker, tmp_path):
    """SIGKILL the router while spans keep arriving; after its restart every mapped event is
    in `steps` exactly once (offsets committed only after acknowledgement; re-routed spans
    carry the same event ids)."""
    import signal

    from tripwire.streams.otlp_decoding import decode_request
    from tripwire.streams.otlp_mapping import SpanMapper

    bootstrap = fresh_broker.bootstrap
    fleet = [InstrumentedAgent(**{"service.name": f"svc-{i}"}) for i in range(10)]
    for t in range(400):
        fleet[t % 10].genai_run(f"killed-agent-{t % 10}",
                                [("search_kb", {"q": t, "i": i}, None) for i in range(4)],
                                agent_attrs_on_children=True)
    values = list(requests([s for a in fleet for s in a.finished()], 64))
    mapper = SpanMapper()
    expected = {ev["event_id"] for v in values
                for ev in mapper.map_request(decode_request(v, "otlp_proto")).events}
    head, tail = values[: len(values) // 3], values[len(values) // 3:]
    asyncio.run(produce(bootstrap, [(None, v) for v in head]))

    env = worker_env(bootstrap, tmp_path / "data", PARTITIONS)  # no OTLP topic: router apart
    router_env = env | {"TRIPWIRE_OTLP_TOPIC": OTLP_TOPIC}
    worker = WorkerProcess(env, tmp_path / "worker.log").start()
    router_log = open(tmp_path / "router.log", "ab")  # noqa: SIM115 - closed below

    def start_router() -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "tripwire.streams.cli", "otlp-router"],
                                cwd=ROOT, env=router_env, stdout=router_log,
                                stderr=subprocess.STDOUT)

    router = start_router()

    async def scenario() -> subprocess.Popen:
        deadline = time.monotonic() + 600
        while not sum((await committed(bootstrap, ROUTER_GROUP, OTLP_TOPIC,
                                       PARTITIONS)).values()):
            assert router.poll() is None and time.monotonic() < deadline
            await asyncio.sleep(0.1)
        producing = asyncio.create_task(produce(bootstrap, [(None, v) for v in tail]))
        await asyncio.sleep(0.5)
        router.send_signal(signal.SIGKILL)
        router.wait(30)
        await producing
        restarted = start_router()
        hw = await highwaters(bootstrap, OTLP_TOPIC, PARTITIONS)
        while True:
            got = await committed(bootstrap, ROUTER_GROUP, OTLP_TOPIC, PARTITIONS)
            if all(got[p] >= hw[p] for p in hw):
                break
            assert restarted.poll() is None and time.monotonic() < deadline, \
                (tmp_path / "router.log").read_text()[-3000:]
            await asyncio.sleep(0.3)
        await wait_caught_up(bootstrap, "tripwire", topics.STEPS, PARTITIONS, worker,
                             limit_s=600)
        return restarted

    restarted = None
    try:
        restarted = asyncio.run(scenario())
    finally:
        for proc in (router, restarted):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(60)
        router_log.close()
        assert worker.stop(120) == 0, worker.log()[-3000:]
    with tabsep_reader(env["TRIPWIRE_CLICKHOUSE_URL"]) as read:
        [[rows, distinct]] = read("SELECT count(), uniqExact(event_id) FROM steps")
        stored = {r[0] for r in read("SELECT toString(event_id) FROM steps")}
    assert stored == expected, (len(stored), len(expected))
    assert int(rows) == int(distinct) == len(expected)
