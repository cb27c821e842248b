"""SinkBuffer: batches sealed while the writer is busy go into one insert, acked in seal order
only after it; nothing is acked before its rows are stored."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

from tripwire.streams import sink_buffer
from tripwire.streams.sink_buffer import SinkBuffer


class HeldStore:
    """Records each insert; the first one blocks until released (a busy writer)."""

    def __init__(self) -> None:
        self.inserts: list[list[tuple]] = []
        self.breaker: list[tuple[list, list]] = []
        self.release = threading.Event()
        self.entered = threading.Event()

    def insert_steps(self, records: Sequence[tuple]) -> int:
        self.entered.set()
        self.release.wait(30)
        self.inserts.append(list(records))
        return len(records)

    def recheck(self) -> None:
        pass

    def insert_breaker(self, detections: Sequence[Mapping[str, Any]],
                       controls: Sequence[Mapping[str, Any]]) -> None:
        self.breaker.append((list(detections), list(controls)))

    def insert_audit(self, table: str, rows: Sequence[Mapping[str, Any]]) -> int:
        return len(rows)

    def applied_nonces(self, since_ms: int) -> list[dict[str, Any]]:
        return []


def test_batches_queued_behind_a_busy_insert_go_in_one_and_ack_in_order() -> None:
    async def scenario() -> tuple[HeldStore, list[int], list[int]]:
        store = HeldStore()
        buf = SinkBuffer(store, max_rows=2, flush_seconds=60)
        acked: list[int] = []
        acked_when_stored: list[int] = []

        def ack_of(n: int) -> Any:
            async def ack() -> None:
                acked_when_stored.append(len(store.inserts))
                acked.append(n)
            return ack

        # Batch 0 is sealed and its insert holds the writer; 1-3 are sealed meanwhile.
        await buf.add([("r", 0), ("r", 1)], 2, [{"d": 0}], [], [ack_of(0)])
        await asyncio.get_running_loop().run_in_executor(None, store.entered.wait, 30)
        for n in (1, 2, 3):
            await buf.add([("r", 2 * n), ("r", 2 * n + 1)], 2, [{"d": n}], [], [ack_of(n)])
        assert acked == []
        store.release.set()
        await buf.flush()
        buf.close()
        return store, acked, acked_when_stored

    store, acked, acked_when_stored = asyncio.run(scenario())
    assert [len(i) for i in store.inserts] == [2, 6]
    assert [r[1] for r in store.inserts[1]] == [2, 3, 4, 5, 6, 7]  # seal order kept
    assert [d for ds, _ in store.breaker for d in ds] == [{"d": n} for n in range(4)]
    assert acked == [0, 1, 2, 3]
    # Each ack only after the insert holding its rows (batch 0 in the first, 1-3 in the
    # second); the thread may have stored more by the time the loop gets to acking.
    assert all(seen >= held for seen, held in zip(acked_when_stored, [1, 2, 2, 2], strict=True))


def test_an_insert_starts_while_the_stream_keeps_the_loop_busy() -> None:
    """A sealed batch's insert does not wait for the event loop: a stream working through a
    backlog without yielding still has its rows stored meanwhile, on another core."""

    async def scenario() -> tuple[bool, list[int]]:
        store = HeldStore()
        store.release.set()
        buf = SinkBuffer(store, max_rows=2, flush_seconds=60)
        acked: list[int] = []

        async def ack() -> None:
            acked.append(len(store.inserts))

        await buf.add([("r", 0), ("r", 1)], 2, [], [], [ack])
        entered = store.entered.wait(30)  # blocks the loop, as a busy stream does
        await buf.flush()
        buf.close()
        return entered, acked

    entered, acked = asyncio.run(scenario())
    assert entered
    assert acked == [1]


def test_a_coalesced_insert_stays_under_its_row_cap(monkeypatch) -> None:
    monkeypatch.setattr(sink_buffer, "MAX_COALESCED_ROWS", 4)

    async def scenario() -> HeldStore:
        store = HeldStore()
        buf = SinkBuffer(store, max_rows=2, flush_seconds=60)
        await buf.add([("r", 0), ("r", 1)], 2, [], [], [])
        await asyncio.get_running_loop().run_in_executor(None, store.entered.wait, 30)
        for n in (1, 2, 3):
            await buf.add([("r", 2 * n), ("r", 2 * n + 1)], 2, [], [], [])
        store.release.set()
        await buf.flush()
        buf.close()
        return store

    store = asyncio.run(scenario())
    assert [len(i) for i in store.inserts] == [2, 4, 2]
    assert [r[1] for i in store.inserts for r in i] == list(range(8))


def test_the_commit_hook_runs_after_each_stored_groups_acks() -> None:
    async def scenario() -> list[str]:
        store = HeldStore()
        store.release.set()
        seen: list[str] = []

        async def commit() -> None:
            seen.append(f"commit after {len(store.inserts)} inserts")

        buf = SinkBuffer(store, max_rows=2, flush_seconds=60, after_acks=commit)

        async def ack() -> None:
            seen.append("ack")

        await buf.add([("r", 0), ("r", 1)], 2, [], [], [ack])
        await buf.flush()
        await buf.add([("r", 2), ("r", 3)], 2, [], [], [ack])
        await buf.flush()
        buf.close()
        return seen

    assert asyncio.run(scenario()) == ["ack", "commit after 1 inserts",
                                       "ack", "commit after 2 inserts"]


class FakeClock:
    """The sink's clock, moved by hand (it starts at the real one, which a new batch's
    ``since`` is taken from)."""

    def __init__(self) -> None:
        self.now = time.monotonic()

    def monotonic(self) -> float:
        return self.now


def test_a_batch_is_sealed_when_the_stream_stops_not_only_when_it_is_old(monkeypatch) -> None:
    """A partial batch of at least IDLE_SEAL_ROWS goes to the writer once nothing has been
    added for IDLE_SEAL_S (a backlog's or a burst's end); a smaller one, or one still being
    added to, waits for ``flush_seconds`` as before."""
    clock = FakeClock()
    monkeypatch.setattr(sink_buffer, "time", clock)
    monkeypatch.setattr(sink_buffer, "IDLE_SEAL_ROWS", 3)
    idle = sink_buffer.IDLE_SEAL_S

    async def scenario() -> list[tuple[str, int]]:
        store = HeldStore()
        store.release.set()
        buf = SinkBuffer(store, max_rows=100, flush_seconds=10)
        seen: list[tuple[str, int]] = []

        async def check(label: str) -> None:
            await buf.flush_if_due()
            seen.append((label, buf._pending.rows))  # rows still waiting to be sealed

        await buf.add([("r", 0), ("r", 1)], 2, [], [], [])
        clock.now += idle * 2
        await check("2 rows, idle")  # below IDLE_SEAL_ROWS: waits for its age
        await buf.add([("r", 2)], 1, [], [], [])
        clock.now += idle / 2
        await check("3 rows, still being added to")
        clock.now += idle
        await check("3 rows, idle")
        await buf.flush()
        await buf.add([("r", 3)], 1, [], [], [])
        clock.now += 10
        await check("1 row, flush_seconds old")
        await buf.flush()
        buf.close()
        return seen

    assert asyncio.run(scenario()) == [
        ("2 rows, idle", 2), ("3 rows, still being added to", 3), ("3 rows, idle", 0),
        ("1 row, flush_seconds old", 0)]
