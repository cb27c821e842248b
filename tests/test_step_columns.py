"""Record values to columns: the same values StepBatchCodec gives, whichever path a value takes."""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest

from tripwire.schemas.codec import DecodeError, StepBatchCodec
from tripwire.schemas.step_columns import StepColumnDecoder
from tripwire.simulator.fleet import fleet_events
from tripwire.simulator.scenarios import SCENARIOS

CODEC = StepBatchCodec()
EVENTS = list(itertools.islice(fleet_events(seed=11, agents=6, scenarios=SCENARIOS), 90))


def rows(decoder: StepColumnDecoder, batch: Any) -> list[dict[str, Any]]:
    by_row = zip(*batch.columns, strict=True)
    return [dict(zip(decoder.fields, values, strict=True)) for values in by_row]


def test_batches_decode_to_the_codecs_events_in_order() -> None:
    decoder = StepColumnDecoder(CODEC)
    batch = decoder.new_batch()
    for i, start in enumerate(range(0, 90, 30)):
        assert decoder.add(batch, CODEC.encode(EVENTS[start:start + 30]), None, 3, 100 + i) == 30
    assert rows(decoder, batch) == EVENTS
    assert batch.partitions == [3] * 90
    assert batch.offsets == [100] * 30 + [101] * 30 + [102] * 30


def test_json_and_bare_event_frames_give_the_codecs_values() -> None:
    decoder = StepColumnDecoder(CODEC)
    batch = decoder.new_batch()
    decoder.add(batch, json.dumps(EVENTS[:2]).encode(), "application/json", 0, 1)
    for i in range(2, 40):  # read straight into columns, like a batch
        assert decoder.add(batch, CODEC.event_codec.encode(EVENTS[i]), None, 1, i) == 1
    assert rows(decoder, batch) == EVENTS[:40]
    assert batch.partitions == [0, 0] + [1] * 38
    assert batch.offsets == [1, 1] + list(range(2, 40))


def test_bare_event_frames_under_another_fingerprint_take_the_codec_path() -> None:
    decoder = StepColumnDecoder(CODEC)
    batch = decoder.new_batch()
    variant = next(fp for fp in CODEC.event_codec._writers if fp != CODEC.event_codec.fingerprint)
    body = CODEC.event_codec.encode(EVENTS[0])[10:]
    assert decoder.add(batch, b"\xc3\x01" + variant + body, None, 0, 1) == 1
    assert rows(decoder, batch) == EVENTS[:1]


def test_refused_events_are_left_out() -> None:
    decoder = StepColumnDecoder(CODEC)
    batch = decoder.new_batch()
    decoder.add(batch, CODEC.encode(EVENTS[:5]), None, 0, 1)
    assert decoder.add(batch, CODEC.encode(EVENTS[5:10]), None, 0, 2, refused=(0, 3)) == 3
    assert rows(decoder, batch) == EVENTS[:5] + [EVENTS[6], EVENTS[7], EVENTS[9]]
    assert batch.offsets == [1] * 5 + [2] * 3


@pytest.mark.parametrize(("value", "reason"), [
    (CODEC.encode(EVENTS[:4])[:-7], "truncated"),
    (CODEC.encode(EVENTS[:4]) + b"\x00", "trailing bytes"),
    (b"\xc3\x01" + b"\x00" * 8, "unknown schema fingerprint"),
    (CODEC.event_codec.encode(EVENTS[0])[:-3], "StepEvent: truncated"),
    (CODEC.event_codec.encode(EVENTS[0]) + b"\x00", "StepEvent: 1 trailing bytes"),
])
def test_a_bad_value_raises_and_leaves_the_batch_as_it_was(value: bytes, reason: str) -> None:
    decoder = StepColumnDecoder(CODEC)
    batch = decoder.new_batch()
    decoder.add(batch, CODEC.encode(EVENTS[:2]), None, 0, 1)
    with pytest.raises(DecodeError, match=reason):
        decoder.add(batch, value, None, 0, 2)
    assert rows(decoder, batch) == EVENTS[:2]
    assert len(batch) == 2 and all(len(c) == 2 for c in batch.columns)


def test_a_run_of_bare_event_frames_gives_what_adding_each_gives() -> None:
    decoder = StepColumnDecoder(CODEC)
    one_by_one, at_once = decoder.new_batch(), decoder.new_batch()
    frames = [CODEC.event_codec.encode(e) for e in EVENTS[:30]]
    for i, frame in enumerate(frames):
        decoder.add(one_by_one, frame, None, i % 3, 50 + i)
    decoder.add_bare_events(at_once, frames, [i % 3 for i in range(30)], range(50, 80))
    assert at_once.columns == one_by_one.columns
    assert at_once.partitions == one_by_one.partitions
    assert at_once.offsets == one_by_one.offsets
    with pytest.raises(DecodeError, match="StepEvent: 1 trailing bytes"):
        decoder.add_bare_events(at_once, [frames[0], frames[1] + b"\x00"], [0, 0], [1, 2])
    assert rows(decoder, at_once) == EVENTS[:30]


def test_the_writer_stores_the_rest_of_a_run_around_a_frame_it_cannot_decode() -> None:
    from tripwire.schemas.step_columns import DecodedSteps
    from tripwire.streams.clickhouse_writer import _columns_of

    decoder = StepColumnDecoder(CODEC)
    frames = [CODEC.event_codec.encode(e) for e in EVENTS[:10]]
    records: list[Any] = [(f, None, 0, i, ()) for i, f in enumerate(frames[:5])]
    records.append((frames[5][:-2], None, 0, 5, ()))  # accepted by the stream, cut here
    records += [(f, None, 0, 6 + i, ()) for i, f in enumerate(frames[6:8])]
    records.append((CODEC.encode(EVENTS[10:12]), None, 1, 0, (1,)))
    fields = decoder.fields
    records.append(DecodedSteps([tuple(EVENTS[12][f] for f in fields)], [2], [0]))
    records += [(f, None, 0, 8 + i, ()) for i, f in enumerate(frames[8:])]
    batch = _columns_of(decoder, records)
    assert rows(decoder, batch) == [*EVENTS[:5], *EVENTS[6:8], EVENTS[10], EVENTS[12],
                                    *EVENTS[8:10]]
    assert batch.offsets == [0, 1, 2, 3, 4, 6, 7, 0, 0, 8, 9]
