"""Faust's table manager without its fixed one-second nap at start.

``faust.tables.TableManager.on_start`` sleeps 1.0 s before it subscribes the tables'
changelogs and starts recovery, to give tables declared late (after the app started) a chance
to be included. Tripwire declares its one table (``agent-state``) in ``TripwireApp.__init__``,
before the app starts, so the second only delayed the consumer group's join: measured, a
worker was ready 1.0-1.3 s sooner without it (4 paired starts), and every start of the worker
(and of each test's) paid it.

Pinned to faust-streaming 0.15.x: ``tests/test_faust_contract.py`` checks that the method
replaced here is still the nap followed by these two steps.
"""

from __future__ import annotations

import logging

from faust.tables import TableManager


class PromptTableManager(TableManager):
    # mode names a service's logger after its class's module, which here is under "tripwire"
    # and so reached the worker's console ("[^--PromptTableManager]: Starting..."); Faust's
    # service chatter belongs in the log file with the rest of Faust's.
    logger = logging.getLogger("faust.tables.manager.prompt")

    async def on_start(self) -> None:
        """Faust's ``on_start`` minus ``await self.sleep(1.0)``."""
        if not self.should_stop:
            await self._update_channels()
            await self.recovery.start()
