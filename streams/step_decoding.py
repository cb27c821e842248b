"""Turns one agent-steps Kafka record into accepted events and dead letters.

A record is a batch of one agent's events: a framing or schema error refuses the whole record,
a semantically impossible event refuses only that event, and the rest of the batch still lands.
"""

from __future__ import annotations

from tripwire.schemas.codec import DecodeError, StepBatchCodec
from tripwire.schemas.validation import check_batch_key, check_event
from tripwire.streams.dead_letters import CONTENT_TYPE, DeadLetter, header_map
from tripwire.streams.step_json import FastJsonStepBatchCodec

ROUTED_CONTENT_TYPE = "application/avro; source=otlp-router"
"""Content type of the OTLP router's StepBatch records (``streams/otlp_router.py``): Avro
like the SDK's, but a router restart re-sends spans under new offsets, which the sink's
offset-based "already stored?" shortcut cannot recognise, so their ids are always checked."""


def is_routed(ctype: str | None) -> bool:
    """Whether a record (its :func:`content_type`) came from the OTLP router."""
    return ctype is not None and "source=otlp-router" in ctype


def content_type(headers: object) -> str | None:
    """The record's content-type header, normalised, or None."""
    raw = header_map(headers).get(CONTENT_TYPE)
    return raw.decode("latin-1").strip().lower() if raw else None


class StepRecordDecoder:
    def __init__(self, codec: StepBatchCodec | None = None) -> None:
        # JSON through msgspec where it can (streams/step_json.py: the same dicts and verdicts).
        self.codec = codec or FastJsonStepBatchCodec()

    def decode(
        self,
        key: bytes | None,
        value: bytes | None,
        ctype: str | None,
        topic: str,
        partition: int,
        offset: int,
    ) -> tuple[list[dict], list[DeadLetter]]:
        """Accepted events and dead letters of one record; ``ctype`` from
        :func:`content_type` of its headers."""

        def dead(reason: str, index: int | None = None) -> DeadLetter:
            return DeadLetter(reason, key, value, topic, partition, offset, index, ctype)

        if not value:
            return [], [dead("empty record value")]
        try:
            events = self.codec.decode(value, ctype)
        except DecodeError as exc:
            return [], [dead(exc.reason)]
        if not events:
            return [], [dead("batch holds no events")]
        key_problem = check_batch_key(events, key)
        if key_problem:
            return [], [dead(key_problem)]
        accepted: list[dict] = []
        refused: list[DeadLetter] = []
        for i, ev in enumerate(events):
            problem = check_event(ev)
            if problem is None:
                accepted.append(ev)
            else:
                refused.append(dead(problem, i))
        return accepted, refused
