"""Turns one agent-steps Kafka record into accepted events and dead letters.

A record is a batch of one agent's events: a framing or schema error refuses the whole record,
a semantically impossible event refuses only that event, and the rest of the batch still lands.
"""

from __future__ import annotations

from tripwire.schemas.codec import HEADER_SIZE, MAGIC, DecodeError, StepBatchCodec, _is_json
from tripwire.schemas.validation import check_batch_key, check_event
from tripwire.streams.dead_letters import CONTENT_TYPE, DeadLetter, header_map
from tripwire.streams.step_json import FastJsonStepBatchCodec, decode_fast

ROUTED_CONTENT_TYPE = "application/avro; source=otlp-router"
"""Content type of the OTLP router's StepBatch records (``streams/otlp_router.py``): Avro
like the SDK's, but a router restart re-sends spans under new offsets, which the sink's
offset-based "already stored?" shortcut cannot recognise, so their ids are always checked."""


def is_routed(ctype: str | None) -> bool:
    """Whether a record (its :func:`content_type`) came from the OTLP router."""
    return ctype is not None and "source=otlp-router" in ctype


def content_type(headers: object) -> str | None:
    """The record's content-type header, normalised, or None."""
    if type(headers) is tuple or type(headers) is list:
        # What Kafka clients hand over: (name, value) pairs. Read in place, the last one
        # winning as in header_map's dict; the dict built for every record was ~7 % of the
        # worker's decode loop (py-spy, one JSON event per record).
        raw = None
        for pair in headers:
            name, value = pair
            if name == CONTENT_TYPE and type(name) is str:
                raw = value
    else:
        raw = header_map(headers).get(CONTENT_TYPE)
    if not raw:
        return None
    if type(raw) is bytes:
        known = _NORMALISED.get(raw)
        if known is not None:
            return known
        if len(_NORMALISED) < _NORMALISED_MAX:
            known = _NORMALISED[raw] = raw.decode("latin-1").strip().lower()
            return known
    return raw.decode("latin-1").strip().lower()


# Raw content-type header values seen -> normalised: a producer sends one or two, so each is
# normalised once; bounded so that a producer inventing values cannot grow it.
_NORMALISED: dict[bytes, str] = {}
_NORMALISED_MAX = 64


class StepRecordDecoder:
    def __init__(self, codec: StepBatchCodec | None = None) -> None:
        # JSON through msgspec where it can (streams/step_json.py: the same dicts and verdicts).
        self.codec = codec or FastJsonStepBatchCodec()
        events = self.codec.event_codec
        self._event_fingerprint = events.fingerprint
        # The entry bare StepEvent frames of the current schema are read with (the codec's own
        # generated reader); registering other writers replaces the entry, never mutates it.
        self._own_event_entry = events._writers.get(events.fingerprint)
        self._json_fast = isinstance(self.codec, FastJsonStepBatchCodec)

    def accept(self, key: bytes | None, value: bytes | None, ctype: str | None,
               now_ms: int) -> list[dict] | None:
        """The events of a record when every one of them is accepted, else None: then
        :meth:`decode` says what is refused and why. ``now_ms``: the clock for ``ts`` checks,
        read once per batch by the caller.

        The worker's shortcut for the records nearly all are (one JSON object, one bare
        StepEvent frame of the current schema, or a batch every event of which is valid): the
        readers :meth:`decode` would reach through the codec's dispatch (content type, framing,
        writer lookup: five or six calls a record), called directly, and the checks of
        ``schemas/validation.py`` with one clock per batch. It was ~2 us an event of the
        worker's interpreter on one-event-per-record backlogs (measured, py-spy). Anything
        unusual (no value, another schema version, a value the reader refuses, a refused event)
        returns None, and the caller decodes the record again on the general path.
        ``tests/test_step_decoding_fast.py`` checks it against :meth:`decode` on generated input.
        """
        if not value or type(value) is not bytes:
            return None
        try:
            if ctype is not None and (ctype == "application/json" or _is_json(ctype)):
                if not self._json_fast:
                    return None
                events = decode_fast(value)
                if not events:
                    return None
            elif value[2:HEADER_SIZE] == self._event_fingerprint and value[:2] == MAGIC:
                entry = self._own_event_entry
                writers = self.codec.event_codec._writers
                if writers.get(self._event_fingerprint) is not entry or entry.fallbacks:
                    return None
                record, end = self.codec.event_codec._read_own(value, HEADER_SIZE)
                if end != len(value):
                    return None
                events = [record]
            else:
                events = self.codec.decode(value, ctype)
                if not events:
                    return None
        except Exception:  # noqa: BLE001 - decode() meets it again and says why
            return None
        if key is not None:
            try:
                agent = key.decode("utf-8")
            except UnicodeDecodeError:
                return None
            for ev in events:
                if ev["agent_id"] != agent:
                    return None
        for ev in events:
            if check_event(ev, now_ms) is not None:
                return None
        return events

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
        if value:
            # A record whose every event is accepted (nearly all): the steps of ``_decode``
            # without its per-record closure and layers. Anything else, from a value the codec
            # refuses to a refused event, goes through ``_decode`` from the start, which
            # decodes it again (a few microseconds, only for records with a dead letter).
            try:
                events = self.codec.decode(value, ctype)
            except DecodeError:
                events = None
            if events and check_batch_key(events, key) is None:
                for ev in events:
                    if check_event(ev) is not None:
                        break
                else:
                    return events, []
        return self._decode(key, value, ctype, topic, partition, offset)

    def _decode(
        self,
        key: bytes | None,
        value: bytes | None,
        ctype: str | None,
        topic: str,
        partition: int,
        offset: int,
    ) -> tuple[list[dict], list[DeadLetter]]:

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
