"""Contract of the Faust and aiokafka internals Tripwire patches (streams/ack_guard.py,
streams/consumer_fetch.py): an upgrade that renames or re-signs any of them fails here, naming
what moved, instead of silently dropping the guarantee the patch gives.

setup.py pins faust-streaming and aiokafka to the minors these checks passed on.
"""

from __future__ import annotations

import inspect
from importlib.metadata import version

import aiokafka
import pytest
from faust.transport.consumer import Consumer
from faust.transport.drivers import aiokafka as faust_aiokafka

from tripwire.streams import ack_guard, consumer_fetch

TESTED = {"faust-streaming": "0.15.", "aiokafka": "0.14.", "mode-streaming": "0.7."}


def _source(obj: object) -> str:
    return inspect.getsource(obj)  # type: ignore[arg-type]


@pytest.mark.parametrize("dist", sorted(TESTED))
def test_installed_minor_is_the_tested_one(dist: str) -> None:
    assert version(dist).startswith(TESTED[dist]), (
        f"{dist} {version(dist)} is not the tested {TESTED[dist]}x: re-run "
        "tests/test_ack_guard.py and this file, then widen the pin in setup.py")


# Faust's own methods, as kept by the patches (another test may have installed them already).
FAUST_ACK = ack_guard._original_ack
FAUST_NEW_OFFSET = ack_guard._original_new_offset
FAUST_WORKER_CONSUMER = consumer_fetch._original


def test_consumer_ack_signature_and_bookkeeping() -> None:
    assert list(inspect.signature(FAUST_ACK).parameters) == ["self", "message"], (
        "Consumer.ack(self, message) changed: streams/ack_guard.py wraps it")
    src = _source(FAUST_ACK)
    for name in ("message.acked", "_committed_offset", "_acked_index", "_acked",
                 "_unacked_messages", "_n_acked", "_waiting_for_ack", "acks_enabled_for"):
        assert name in src, f"Consumer.ack no longer uses {name}: re-check ack_guard._ack"


def test_consumer_new_offset_signature_and_gap_rule() -> None:
    assert list(inspect.signature(FAUST_NEW_OFFSET).parameters) == ["self", "tp"], (
        "Consumer._new_offset(self, tp) changed: streams/ack_guard.py replaces it")
    assert "_gap" in _source(FAUST_NEW_OFFSET), (
        "Consumer._new_offset no longer merges _gap: re-check ack_guard._never_arriving")
    init = _source(Consumer.__init__)
    for name in ("_acked", "_acked_index", "_committed_offset", "_gap", "_unacked_messages"):
        assert f"self.{name} =" in init, f"Consumer no longer keeps self.{name}"


def test_gap_is_recorded_as_ack_guard_expects() -> None:
    # ack_guard._never_arriving reads Faust's intervals as [last read + 1, offset + 1), and
    # clamped to start at committed + 1.
    add_gap = _source(Consumer._add_gap)
    assert "max(offset_from, committed + 1)" in add_gap, "Consumer._add_gap's clamp changed"
    assert "addi(offset_from, offset_to + 1)" in add_gap, "Consumer._add_gap's interval changed"
    assert "_add_gap(tp, r_offset + 1, offset)" in _source(Consumer._drain_messages), (
        "Faust's fetch loop records gaps differently now")


def test_consumer_methods_the_gap_healer_calls() -> None:
    for name in ("earliest_offsets", "seek"):
        assert inspect.iscoroutinefunction(getattr(Consumer, name)), (
            f"Consumer.{name} is no longer a coroutine: re-check ack_guard.CommitGapHealer")


def test_worker_consumer_factory_and_fetch_wait() -> None:
    factory = FAUST_WORKER_CONSUMER
    assert hasattr(faust_aiokafka.AIOKafkaConsumerThread, "_create_worker_consumer")
    assert list(inspect.signature(factory).parameters) == ["self", "transport"], (
        "AIOKafkaConsumerThread._create_worker_consumer changed: consumer_fetch.py wraps it")
    assert "fetch_max_wait_ms" in _source(factory)
    assert "self._fetch_max_wait_ms" in _source(aiokafka.AIOKafkaConsumer.start), (
        "AIOKafkaConsumer.start no longer reads _fetch_max_wait_ms: consumer_fetch.py sets it")
