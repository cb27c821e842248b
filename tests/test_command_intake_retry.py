"""The operator command intake outlives a broker that fails while it takes up partitions.

Taking up a partition looks up committed offsets on the broker (and, for a group that never
committed, where the Faust group that read commands before had). A worker whose broker went
away right after start used to stop there now and then (exit 1 instead of waiting for the
broker like the stream's own consumer). Real broker; the lookup's failure is injected once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

import pytest
from aiokafka.errors import KafkaConnectionError

from tripwire.schemas.command_signing import CommandVerifier
from tripwire.schemas.topics import ensure_topics, tripwire_topics
from tripwire.streams import command_intake
from tripwire.streams.broker import EmbeddedBroker, free_port
from tripwire.streams.command_intake import CommandIntake
from tripwire.streams.settings import TripwireSettings

pytestmark = pytest.mark.integration


def test_a_failed_lookup_while_taking_up_partitions_is_retried(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    real = command_intake._faust_group_offset
    calls = {"n": 0}

    async def lookup_failing_once(settings: TripwireSettings, tp: Any) -> int | None:
        calls["n"] += 1
        if calls["n"] == 1:
            raise KafkaConnectionError("Unable to bootstrap from [('127.0.0.1', 9)]")
        return await real(settings, tp)

    monkeypatch.setattr(command_intake, "_faust_group_offset", lookup_failing_once)
    caplog.set_level(logging.INFO, logger="tripwire.streams")
    with EmbeddedBroker(free_port(), log_path=tmp_path / "broker.log") as broker:
        asyncio.run(ensure_topics(broker.bootstrap, tripwire_topics(2)))
        settings = TripwireSettings(kafka_bootstrap=broker.bootstrap, kafka_idempotence=False,
                                    partitions=2, data_dir=tmp_path)
        failures: list[BaseException] = []
        intake = CommandIntake(settings, CommandVerifier({"k": "x" * 32}), None,
                               lambda judged: None, failures.append)
        intake.start()
        try:
            intake.assign([0, 1])
            deadline = time.monotonic() + 60
            while "reading partitions [0, 1]" not in caplog.text and not failures:
                assert time.monotonic() < deadline, caplog.text
                time.sleep(0.05)
        finally:
            intake.stop()
    assert not failures
    assert calls["n"] >= 3  # the failed lookup, then one per partition on the retry
    assert "cannot take up partitions [0, 1] yet, retrying" in caplog.text
