"""The demo fleet behind ``tripwire run --demo``: healthy agents plus one of each misbehaviour,
emitting live (wall-clock) traffic from a background thread until stopped."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable

from tripwire.schemas import topics
from tripwire.simulator.fleet import simulate
from tripwire.simulator.scenarios import SCENARIOS

log = logging.getLogger("tripwire.demo")


def demo_fleet(agents: int, rate: float, seed: int = 1) -> Callable[[str], Callable[[], None]]:
    """A starter: given the bootstrap address, starts the fleet and returns its stop function."""

    def start(bootstrap: str) -> Callable[[], None]:
        loop = asyncio.new_event_loop()
        done = threading.Event()

        async def run() -> None:
            try:
                report = await simulate(
                    bootstrap, topics.STEPS, agents=agents, rate=rate, seed=seed,
                    scenarios=SCENARIOS, idempotence=False, clock="wall",
                )
                log.info("demo fleet sent %d events", report.sent)
            except asyncio.CancelledError:
                pass

        task = loop.create_task(run())

        def thread_main() -> None:
            try:
                loop.run_until_complete(task)
            finally:
                loop.close()
                done.set()

        threading.Thread(target=thread_main, name="demo-fleet", daemon=True).start()

        def stop() -> None:
            loop.call_soon_threadsafe(task.cancel)
            done.wait(10)

        return stop

    return start
