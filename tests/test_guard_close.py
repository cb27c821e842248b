"""A guard's close ends every task it started, even one that swallows a cancellation.

Python 3.11's ``asyncio.wait_for`` drops a cancellation that arrives as the awaited item does,
and the ack sender waited on its queue with it: the task then looped on, ``close`` waited out
its timeout (an AsyncGuard's forever), and the task was destroyed pending with its closed loop
(the suite's two "Exception ignored in: <coroutine AckPublisher.run>" / "Queue.get"
warnings)."""

from __future__ import annotations

import asyncio
import gc
import sys
import threading
import uuid
import warnings

from conftest import until

from tripwire.schemas.topics import TopicSpec, ensure_topics
from tripwire.sdk.control_acks import AckPublisher
from tripwire.sdk.guard import Guard, _cancelled, _finish_tasks
from tripwire.streams.broker import free_port


async def _stubborn(swallow: int, ended: list[str]) -> None:
    """Ignores its first ``swallow`` cancellations, as a lost one in wait_for does."""
    while True:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            if swallow == 0:
                ended.append("cancelled")
                raise
            swallow -= 1


def test_cancelled_ends_a_task_that_swallows_cancellations() -> None:
    async def main() -> list[str]:
        ended: list[str] = []
        task = asyncio.create_task(_stubborn(2, ended))
        await asyncio.sleep(0)
        await _cancelled(task)
        assert task.done() and task.cancelled()
        return ended

    assert asyncio.run(main()) == ["cancelled"]


def test_finish_tasks_leaves_nothing_pending_on_a_stopped_loop() -> None:
    loop = asyncio.new_event_loop()
    ended: list[str] = []
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(_spawn(loop, ended), loop).result(5)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    _finish_tasks(loop, 5)
    assert not asyncio.all_tasks(loop)
    assert ended == ["cancelled"]
    loop.close()


async def _spawn(loop: asyncio.AbstractEventLoop, ended: list[str]) -> None:
    loop.create_task(_stubborn(0, ended))


def test_a_guard_closed_with_no_broker_leaves_no_task_behind() -> None:
    """The follower and ack sender retry an unreachable broker; close still ends both, and
    nothing is reported destroyed pending when the loop is collected."""
    guard = Guard(f"127.0.0.1:{free_port()}", "close-test-agent")
    guard.start(timeout_s=0.2)
    loop = guard._loop
    assert loop is not None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        unraisable: list[object] = []
        previous = sys.unraisablehook
        sys.unraisablehook = unraisable.append
        try:
            guard.close()
            assert loop.is_closed()
            del loop
            gc.collect()
        finally:
            sys.unraisablehook = previous
    assert not unraisable, unraisable
    assert not [w for w in caught if "never awaited" in str(w.message)]


def test_the_ack_sender_ends_on_a_cancellation_that_arrives_with_an_ack(broker) -> None:
    """The exact race: an ack queued and the sender cancelled in the same turn of the loop
    (a guard closed right after its first hello). One cancellation must end it."""

    async def main() -> bool:
        await ensure_topics(broker.bootstrap, [TopicSpec(topic, 1)])
        acks = AckPublisher(broker.bootstrap, "race-agent", topic=topic)
        task = asyncio.create_task(acks.run())
        await until(lambda: acks.sent >= 1, 20)  # connected; the first hello is out
        acks.hello()
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=10)
        return bool(done)

    topic = f"acks-{uuid.uuid4().hex[:8]}"
    assert asyncio.run(main())
