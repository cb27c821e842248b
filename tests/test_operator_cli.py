"""The operator CLI against the real embedded broker: commands land signed and verifiable."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from tripwire.bench.worker_process import read_all
from tripwire.schemas.codec import command_codec, control_codec, detection_codec
from tripwire.schemas.command_signing import CommandVerifier, derive_agent_key, sign_control
from tripwire.sdk.control_follower import key_partition
from tripwire.sdk.operator import (
    KILL_ALL_KEY,
    AgentStatus,
    format_status,
    new_command,
    parse_duration,
)
from tripwire.streams import cli

pytestmark = pytest.mark.integration

PARTITIONS = 4
KEY_ID, SECRET = "ops-2026", "operator-secret"


@pytest.fixture
def tripwire(monkeypatch, broker, make_topics):
    """Runs ``tripwire ARGS`` in-process with the operator module registered, against test
    topics; returns (run, topics)."""
    topics = make_topics(("commands", PARTITIONS), ("controls", PARTITIONS),
                         ("detections", PARTITIONS))
    monkeypatch.setattr(cli, "COMMAND_MODULES", ["tripwire.sdk.operator_cli"])
    for var in ("TRIPWIRE_KAFKA_BOOTSTRAP", "TRIPWIRE_OPERATOR_KEY_ID", "TRIPWIRE_OPERATOR_KEY",
                "TRIPWIRE_OPERATOR", "TRIPWIRE_CONTROL_KEYS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("TRIPWIRE_KAFKA_IDEMPOTENCE", "false")
    monkeypatch.setenv("TRIPWIRE_OPERATOR_KEY_ID", KEY_ID)
    monkeypatch.setenv("TRIPWIRE_OPERATOR_KEY", SECRET)
    monkeypatch.setenv("TRIPWIRE_OPERATOR", "alice")

    def run(*argv: str) -> int:
        signed_cmd = argv[0] in ("kill", "pin", "release")
        extra = ["--topic", topics["commands"]] if signed_cmd else [
            "--controls-topic", topics["controls"], "--detections-topic", topics["detections"]]
        return cli.main([*argv, "--bootstrap", broker.bootstrap, *extra])

    return run, topics


def landed(broker, topic: str) -> list[tuple[bytes, int, dict[str, Any]]]:
    codec = command_codec()
    records = asyncio.run(read_all(broker.bootstrap, topic, PARTITIONS))
    return [(r.key, r.partition, codec.decode(r.value)) for r in records]


def test_kill_lands_signed_on_the_agents_partition(tripwire, broker):
    run, topics = tripwire
    started = int(time.time() * 1000)
    assert run("kill", "agent-7", "--reason", "sending duplicate refunds") == 0
    [(key, partition, cmd)] = landed(broker, topics["commands"])
    assert key == b"agent-7" and partition == key_partition(b"agent-7", PARTITIONS)
    assert cmd["action"] == "kill" and cmd["agent_id"] == "agent-7"
    assert cmd["reason"] == "sending duplicate refunds" and cmd["operator"] == "alice"
    assert cmd["key_id"] == KEY_ID and started <= cmd["issued_at"] <= started + 10_000
    verifier = CommandVerifier({KEY_ID: SECRET})
    assert verifier.verify(cmd, int(time.time() * 1000)) is None
    assert verifier.verify(cmd, int(time.time() * 1000)) == "replayed"


def test_pin_and_release(tripwire, broker):
    run, topics = tripwire
    assert run("pin", "agent-7", "read_only", "--for", "15m", "--reason", "audit") == 0
    assert run("release", "agent-7", "--reason", "audit done", "--operator", "bob") == 0
    [(_, _, pin), (_, _, release)] = sorted(
        (r for r in landed(broker, topics["commands"])), key=lambda r: r[2]["issued_at"])
    assert (pin["action"], pin["mode"], pin["duration_ms"]) == ("pin", "read_only", 900_000)
    assert (release["action"], release["operator"], release["mode"]) == ("release", "bob", None)
    verifier = CommandVerifier({KEY_ID: SECRET})
    assert [verifier.verify(c, int(time.time() * 1000)) for c in (pin, release)] == [None, None]


def test_kill_all_reaches_every_partition(tripwire, broker):
    run, topics = tripwire
    assert run("kill", "--all", "--reason", "incident 42") == 0
    copies = landed(broker, topics["commands"])
    assert sorted(p for _, p, _ in copies) == list(range(PARTITIONS))
    assert {k for k, _, _ in copies} == {KILL_ALL_KEY.encode()}
    assert len({c["command_id"] for _, _, c in copies}) == 1
    assert len({c["nonce"] for _, _, c in copies}) == PARTITIONS
    verifier = CommandVerifier({KEY_ID: SECRET})
    now = int(time.time() * 1000)
    assert all(verifier.verify(c, now) is None and c["agent_id"] is None for _, _, c in copies)


@pytest.mark.parametrize(
    "argv",
    [
        ("kill", "agent-7"),
        ("pin", "agent-7", "halted", "--for", "1h"),
        ("release", "agent-7"),
    ],
)
def test_reason_is_required(tripwire, broker, capsys, argv):
    run, topics = tripwire
    with pytest.raises(SystemExit) as exc:
        run(*argv)
    assert exc.value.code == 2
    assert "--reason" in capsys.readouterr().err
    assert landed(broker, topics["commands"]) == []


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("kill", "agent-7", "--reason", "   "), "reason is required"),
        (("kill", "--reason", "x"), "AGENT or --all"),
        (("kill", "agent-7", "--all", "--reason", "x"), "AGENT or --all"),
        (("pin", "agent-7", "read_only", "--for", "soon", "--reason", "x"), "duration"),
    ],
)
def test_invalid_commands_are_refused_before_sending(tripwire, broker, capsys, argv, message):
    run, topics = tripwire
    assert run(*argv) == 2
    assert message in capsys.readouterr().err
    assert landed(broker, topics["commands"]) == []


def test_no_operator_key_no_command(tripwire, broker, monkeypatch, capsys):
    run, topics = tripwire
    monkeypatch.delenv("TRIPWIRE_OPERATOR_KEY")
    assert run("kill", "agent-7", "--reason", "x") == 2
    assert "must be signed" in capsys.readouterr().err
    assert landed(broker, topics["commands"]) == []


def test_key_file(tripwire, broker, monkeypatch, tmp_path):
    run, topics = tripwire
    monkeypatch.delenv("TRIPWIRE_OPERATOR_KEY")
    key_file = tmp_path / "operator.key"
    key_file.write_text("from-a-file\n")
    assert run("kill", "agent-7", "--reason", "x", "--key-file", str(key_file)) == 0
    [(_, _, cmd)] = landed(broker, topics["commands"])
    assert CommandVerifier({KEY_ID: "from-a-file"}).verify(cmd, int(time.time() * 1000)) is None


# -- status --------------------------------------------------------------------------------


async def _produce(bootstrap: str, topic: str, key: str, value: bytes,
                   headers: list[tuple[str, bytes]] | None = None) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=False)
    await producer.start()
    try:
        await producer.send_and_wait(topic, value, key=key.encode(), headers=headers)
    finally:
        await producer.stop()


def _control(agent: str, seq: int, mode: str, at: int, **kw: Any) -> dict[str, Any]:
    return {"agent_id": agent, "mode": mode, "previous_mode": None, "scope": "agent",
            "run_id": None, "reason": f"reason {seq}", "detection_ids": [], "seq": seq,
            "issued_at": at, "rule": "r", "expires_at": None, "source": "breaker"} | kw


def _detection(agent: str, ts: int, detector: str) -> dict[str, Any]:
    return {"detection_id": f"00000000-0000-4000-8000-{ts % 10**12:012d}", "detector": detector,
            "agent_id": agent, "run_id": "run-1", "tool": None, "metric": "denied_ratio",
            "value": 0.6, "threshold": 0.5, "window_ms": 60_000, "severity": "S2",
            "evidence_event_ids": [], "ts": ts, "message": f"{detector} fired"}


@pytest.fixture
def fleet(tripwire, broker):
    run, topics = tripwire
    now = int(time.time() * 1000)
    controls = [
        _control("agent-1", 1, "read_only", now - 600_000),
        _control("agent-1", 2, "read_only", now - 300_000, reason="still misbehaving"),
        _control("agent-1", 3, "halted", now - 60_000, scope="run", run_id="run-9",
                 previous_mode="read_only", reason="loop"),
        _control("agent-2", 1, "approve_to_act", now - 1_000),
    ]
    ccodec, dcodec = control_codec(), detection_codec()

    async def publish() -> None:
        for c in controls:
            await _produce(broker.bootstrap, topics["controls"], c["agent_id"], ccodec.encode(c))
        for i, det in enumerate(["denial_rate", "loops", "spend"]):
            d = _detection("agent-1", now - 500_000 + i * 1000, det)
            await _produce(broker.bootstrap, topics["detections"], "agent-1", dcodec.encode(d))

    asyncio.run(publish())
    return run, topics, now


def test_status_of_one_agent(fleet, capsys):
    run, _, now = fleet
    assert run("status", "agent-1") == 0
    out = capsys.readouterr().out
    assert "mode     read_only" in out
    assert "(10m ago)" in out  # since the first of the same-mode controls
    assert "run-9" in out and "loop" in out
    assert out.index("spend") < out.index("loops") < out.index("denial_rate")  # latest first


def test_status_of_the_fleet_as_json(fleet, capsys):
    run, _, _ = fleet
    assert run("status", "--json") == 0
    rows = {r["agent_id"]: r for r in map(json.loads, capsys.readouterr().out.splitlines())}
    assert rows["agent-1"]["mode"] == "read_only" and len(rows["agent-1"]["detections"]) == 1
    assert rows["agent-2"]["mode"] == "approve_to_act" and rows["agent-2"]["detections"] == []
    assert rows["agent-1"]["stopped_runs"][0]["run_id"] == "run-9"


def test_status_of_an_unknown_agent(fleet, capsys):
    run, _, _ = fleet
    assert run("status", "agent-404") == 0
    out = capsys.readouterr().out
    assert "autonomous" in out and "no mode change recorded" in out


def test_status_skips_forged_controls_when_it_can_verify(fleet, broker, monkeypatch, capsys):
    run, topics, now = fleet
    master = "worker-master"
    monkeypatch.setenv("TRIPWIRE_CONTROL_KEYS", json.dumps({"w1": master}))
    real = _control("agent-3", 1, "halted", now)
    forged = _control("agent-3", 2, "autonomous", now)
    asyncio.run(_produce(broker.bootstrap, topics["controls"], "agent-3",
                         control_codec().encode(real), sign_control(real, "w1", master)))
    asyncio.run(_produce(broker.bootstrap, topics["controls"], "agent-3",
                         control_codec().encode(forged)))
    assert derive_agent_key(master, "agent-3")  # what the agent would be provisioned with
    assert run("status", "agent-3") == 0
    out = capsys.readouterr().out
    assert "mode     halted" in out and "1 unauthenticated control record(s)" in out


def test_format_status_without_agents():
    assert "no agents" in format_status([])
    one = AgentStatus("a", "autonomous", None, "no mode change recorded")
    assert "agent    a" in format_status([one], 0)


@pytest.mark.parametrize(("text", "ms"), [("90s", 90_000), ("15m", 900_000), ("2h", 7_200_000),
                                          ("1d", 86_400_000), ("1.5h", 5_400_000),
                                          ("indefinite", None)])
def test_parse_duration(text, ms):
    assert parse_duration(text) == ms


def test_new_command_validates():
    with pytest.raises(ValueError, match="needs a mode"):
        new_command("pin", agent_id="a", reason="r", operator="o")
    with pytest.raises(ValueError, match="names no agent"):
        new_command("kill_all", agent_id="a", reason="r", operator="o")
    with pytest.raises(ValueError, match="unknown action"):
        new_command("raise", agent_id="a", reason="r", operator="o")
    with pytest.raises(ValueError, match="takes no mode"):
        new_command("kill", agent_id="a", mode="halted", reason="r", operator="o")
