"""Only records Tripwire has stored may be acknowledged to Faust.

Faust's stream loop acks a record it *skips* because it was fetched under an older consumer
generation (a rebalance happened in between) or while flow control was paused, without any
agent seeing it. Faust expects to seek back to the committed offset after the rebalance, but
if its next commit includes the skipped offset first, that record is never processed: seen
once in CI as 5 of 12,000 events missing after a SIGKILL and restart. For Tripwire's topics
an ack therefore only counts once the sink buffer has stored the record; a skipped record
stays unacked, so the commit stops before it and the post-rebalance seek re-delivers it.
"""

from __future__ import annotations

from typing import Any

from faust.transport.consumer import Consumer

_original_ack = Consumer.ack
_guarded_topics: frozenset[str] = frozenset()
_stored: set[tuple[Any, int]] = set()


def guard_acks(topics: set[str]) -> None:
    """Install the guard for these topics (idempotent; one app per process)."""
    global _guarded_topics
    _guarded_topics = frozenset(topics)
    Consumer.ack = _ack  # type: ignore[method-assign]


def stored(tp: Any, offset: int) -> None:
    """The record at (tp, offset) is stored: its ack may now reach the commit."""
    _stored.add((tp, offset))


def _ack(self: Consumer, message: Any) -> bool:
    if message.topic in _guarded_topics:
        key = (message.tp, message.offset)
        if key not in _stored:
            return False
        _stored.discard(key)
    return _original_ack(self, message)
