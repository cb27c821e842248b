"""The ClickHouse writer's run decode and pipe packing against its per-record decode as the
reference: the same columns, the same Arrow table (so the same stored rows and rollups), for
any mix of record shapes the stream hands over, refused events and undecodable records left
out, and a re-delivered batch stored once."""

from __future__ import annotations

import json
import pickle
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from test_step_json import events as contract_events

from tripwire.schemas.codec import DecodeError
from tripwire.schemas.step_columns import DecodedSteps, StepColumnDecoder
from tripwire.sinks.clickhouse import Client
from tripwire.sinks.step_sink import StepSink, _arrow_table, _event_keys
from tripwire.streams.clickhouse_writer import _columns_of, _payload, _unpacked
from tripwire.streams.step_decoding import ROUTED_CONTENT_TYPE, is_routed
from tripwire.streams.step_json import FastJsonStepBatchCodec

CODEC = FastJsonStepBatchCodec()
DECODER = StepColumnDecoder(CODEC)
JSON = "application/json"
SHAPES = ("json", "json_spaced", "json_ascii", "json_array", "avro", "batch", "batch_refused",
          "routed", "decoded", "cut_frame", "other_fingerprint")
NOW_MS = int(time.time() * 1000)
VARIANT = next(fp for fp in CODEC.event_codec._writers if fp != CODEC.event_codec.fingerprint)


@st.composite
def canonical_events(draw: st.DrawFn, recent_ms: int | None = None) -> dict[str, Any]:
    """Valid StepEvents (the contract's JSON strategy: unicode, big numbers, ISO or epoch ts,
    absent optional fields) with ids in every form the sink meets, as the JSON they are sent
    as and the canonical dict the stream decodes from it."""
    event = draw(contract_events)
    event["event_id"] = draw(st.one_of(
        st.uuids().map(str), st.uuids().map(lambda u: str(u).upper()),
        st.text(min_size=1, max_size=8)))
    if recent_ms is not None:  # inside the table's retention, for what is stored
        event["ts"] = recent_ms - draw(st.integers(0, 3_600_000))
    try:
        [canonical] = CODEC.decode(json.dumps(event).encode(), JSON)
    except DecodeError:
        assume(False)
    return {"json": event, "canonical": canonical}


@st.composite
def stored_records(draw: st.DrawFn, recent_ms: int | None = None) -> list[Any]:
    """What the stream hands the writer for a batch: (value, content type, partition, offset,
    refused indices) records of every shape, and DecodedSteps."""
    out: list[Any] = []
    offsets = [0, 0, 0]
    for _ in range(draw(st.integers(1, 14))):
        shape = draw(st.sampled_from(SHAPES))
        group = draw(st.lists(canonical_events(recent_ms), min_size=1,
                              max_size=3 if shape.startswith(("batch", "json_array")) else 1))
        partition = draw(st.integers(0, 2))
        offsets[partition] += draw(st.integers(1, 3))
        offset = offsets[partition]
        events = [e["canonical"] for e in group]
        if shape == "json":
            out.append((json.dumps(group[0]["json"], ensure_ascii=False).encode(), JSON,
                        partition, offset, ()))
        elif shape == "json_spaced":
            out.append((json.dumps(group[0]["json"], indent=1).encode() + b"\n",
                        "application/json; charset=utf-8", partition, offset, ()))
        elif shape == "json_ascii":
            out.append((json.dumps(group[0]["json"]).encode(), JSON, partition, offset, ()))
        elif shape == "json_array":
            out.append((json.dumps([e["json"] for e in group]).encode(), JSON, partition,
                        offset, ()))
        elif shape == "avro":
            out.append((CODEC.event_codec.encode(events[0]), None, partition, offset, ()))
        elif shape == "batch":
            out.append((CODEC.encode(events), None, partition, offset, ()))
        elif shape == "batch_refused":
            refused = tuple(sorted(draw(st.sets(st.integers(0, len(events) - 1),
                                                max_size=len(events) - 1))))
            out.append((CODEC.encode(events), None, partition, offset, refused))
        elif shape == "routed":
            out.append((CODEC.encode(events), ROUTED_CONTENT_TYPE, partition, offset, ()))
        elif shape == "decoded":
            out.append(DecodedSteps([tuple(e.get(f) for f in DECODER.fields) for e in events],
                                    [partition] * len(events), [offset] * len(events)))
        elif shape == "cut_frame":
            out.append((CODEC.event_codec.encode(events[0])[:-1], None, partition, offset, ()))
        else:  # the same schema under another fingerprint: the per-record path
            body = CODEC.event_codec.encode(events[0])[10:]
            out.append((b"\xc3\x01" + VARIANT + body, None, partition, offset, ()))
    return out


def reference(records: list[Any]) -> Any:
    """Each record decoded on its own (what the writer did before runs), bad ones skipped."""
    batch = DECODER.new_batch()
    for record in records:
        if isinstance(record, DecodedSteps):
            batch.add_rows(record)
            continue
        value, ctype, partition, offset, refused = record
        try:
            DECODER.add(batch, value, ctype, None if is_routed(ctype) else partition, offset,
                        refused)
        except DecodeError:
            pass
    return batch


def through_the_pipe(records: list[Any]) -> Any:
    return _columns_of(DECODER, pickle.loads(pickle.dumps(_payload(records), protocol=5)))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(records=stored_records())
def test_runs_and_the_pipe_give_the_columns_of_each_record_on_its_own(records: list[Any]) -> None:
    expected = reference(records)
    assert list(_unpacked(pickle.loads(pickle.dumps(_payload(records))))) == records
    for batch in (through_the_pipe(records), _columns_of(DECODER, records)):
        assert batch.columns == expected.columns
        assert batch.partitions == expected.partitions
        assert batch.offsets == expected.offsets
        if len(expected):
            ids = _event_keys(expected.column("event_id"))
            assert _arrow_table(batch, _event_keys(batch.column("event_id"))).equals(
                _arrow_table(expected, ids))


def test_records_that_do_not_pack_go_as_they_are() -> None:
    frame = CODEC.event_codec.encode(CODEC.decode(json.dumps(
        {"event_id": "e", "ts": 1, "agent_id": "a", "run_id": "r", "step": 0,
         "kind": "output"}).encode(), JSON)[0])
    records = [(frame, None, 0, 2**70, ()), (frame, None, 1, 5, ())]
    payload = pickle.loads(pickle.dumps(_payload(records)))
    assert list(_unpacked(payload)) == records
    assert _columns_of(DECODER, payload).offsets == [2**70, 5]


@settings(max_examples=200, deadline=None)
@given(ids=st.lists(st.one_of(st.uuids().map(str), st.uuids().map(lambda u: str(u).upper()),
                              st.text(max_size=8), st.none(), st.uuids()), min_size=1))
def test_event_keys_are_each_ids_key(ids: list[Any]) -> None:
    from tripwire.sinks.step_sink import _event_key

    assert _event_keys(ids) == [_event_key(i) for i in ids]


_ROLLUPS = {
    "agent_stats": "resolution, bucket, agent_id, workflow, environment",
    "block_stats": "resolution, bucket, agent_id, workflow, environment, tool, action_class,"
                   " kind, outcome, rule",
    "run_hour_stats": "hour, agent_id, run_key, workflow, environment, agent_version",
}


def _stored(client: Client) -> dict[str, bytes]:
    out = {"steps": client.raw_query(
        "SELECT * EXCEPT ingested_at FROM steps ORDER BY event_id FORMAT TabSeparated")}
    for table, key in _ROLLUPS.items():
        out[table] = client.raw_query(
            f"SELECT * FROM {table} FINAL ORDER BY {key} FORMAT TabSeparated")
    return out


def _truncate(client: Client) -> None:
    for table in ("steps", *_ROLLUPS):
        client.command(f"TRUNCATE TABLE {table}")


@pytest.mark.integration
@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(records=stored_records(recent_ms=NOW_MS))
def test_the_writer_stores_what_the_per_record_decode_and_arrow_file_stored(ch_migrated: Client,
                                                              records: list[Any]) -> None:
    expected_batch = reference(records)
    _truncate(ch_migrated)
    old_insert = StepSink(ch_migrated)
    old_insert._in_process = False  # noqa: SLF001 - the driver's insert_arrow, as before
    before = old_insert.insert_columns(expected_batch)
    expected = _stored(ch_migrated)
    _truncate(ch_migrated)
    sink = StepSink(ch_migrated)
    assert sink.insert_columns(through_the_pipe(records)) == before
    assert _stored(ch_migrated) == expected
    # Re-delivered, whole: nothing is stored twice, rollups included.
    sink.recheck()
    assert sink.insert_columns(through_the_pipe(records)) == 0
    assert _stored(ch_migrated) == expected


@pytest.mark.integration
def test_a_chdb_that_cannot_read_the_table_in_place_gets_it_through_the_driver(
        ch_migrated: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    event = {"event_id": "00000000-0000-4000-8000-000000000001", "ts": NOW_MS,
             "agent_id": "a", "run_id": "r", "step": 0, "kind": "output"}
    sink = StepSink(ch_migrated)
    command = ch_migrated.command

    def without_python_table_function(sql: str, *args: Any, **kwargs: Any) -> Any:
        if "Python(" in sql:
            raise RuntimeError("no Python() here")
        return command(sql, *args, **kwargs)

    monkeypatch.setattr(ch_migrated, "command", without_python_table_function)
    with pytest.raises(RuntimeError, match="no Python"):
        sink.insert([event])
    assert sink.insert([event]) == 1  # the sink buffer's retry
    assert ch_migrated.query("SELECT count() FROM steps").result_rows == [(1,)]
