"""agent-steps record values decoded straight into columns, for the ClickHouse sink.

The sink wants one list per field; decoding into a dict per event and then pulling each field
back out of every dict cost the ClickHouse writer about as much again as the decode itself
(measured on the bench fleet: ~12 us an event for decode + validation + column building, ~5 us
for the column decode here). Records in the codec's own StepBatch schema (all SDK traffic) take
that path, and bare StepEvent frames in the current schema are read as rows and transposed into
the columns a run at a time; JSON records and other schema versions go through
:class:`~schemas.codec.StepBatchCodec` and are appended field by field, with the same values.

No validation happens here: the stream worker has already refused what is impossible and says
which events of a record it refused, so the sink stores exactly what the detectors saw.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

from tripwire.schemas.avro_decoder import (
    AvroDecodeError,
    compile_column_reader,
    compile_frame_column_reader,
    compile_row_reader,
)
from tripwire.schemas.codec import HEADER_SIZE, MAGIC, DecodeError, StepBatchCodec, _is_json


class DecodedSteps(NamedTuple):
    """Events the stream worker has decoded already, as rows in :class:`StepColumns` field
    order, with the partition and offset of the record each came in. The worker sends these
    for bare StepEvent frames of other schema versions (which the writer could only decode
    field by field): they hold the same canonical values. JSON records and frames in the
    current schema go as they are (see :data:`~streams.step_processor.StoredRecord`)."""

    rows: list[tuple[Any, ...]]
    partitions: list[int]
    offsets: list[int]


class StepColumns:
    """A batch of StepEvents as one list per StepEvent field, plus the Kafka partition and
    offset of the record each event came in (None for events that did not come from Kafka)."""

    def __init__(self, fields: Sequence[str]) -> None:
        self.fields = tuple(fields)
        self.columns: list[list[Any]] = [[] for _ in self.fields]
        self.partitions: list[int | None] = []
        self.offsets: list[int | None] = []

    def __len__(self) -> int:
        return len(self.partitions)

    def column(self, name: str) -> list[Any]:
        return self.columns[self.fields.index(name)]

    def append_events(self, events: Iterable[Mapping[str, Any]], partition: int | None = None,
                      offset: int | None = None) -> None:
        # Row by row: most calls carry one event (a JSON record), and a generator per field
        # per call cost ~3x more than these appends (measured, 30 fields).
        pairs = tuple(zip(self.fields, self.columns, strict=True))
        n = 0
        for e in events:
            get = e.get
            for name, column in pairs:
                column.append(get(name))
            n += 1
        self.add_sources(n, partition, offset)

    def add_rows(self, steps: DecodedSteps) -> None:
        """Append rows already in this batch's field order (see :class:`DecodedSteps`)."""
        if not steps.rows:
            return
        for column, values in zip(self.columns, zip(*steps.rows, strict=True), strict=True):
            column.extend(values)
        self.partitions.extend(steps.partitions)
        self.offsets.extend(steps.offsets)

    def keep(self, rows: Sequence[int]) -> None:
        """Keep only these rows, in this order."""
        self.columns = [[col[i] for i in rows] for col in self.columns]
        self.partitions = [self.partitions[i] for i in rows]
        self.offsets = [self.offsets[i] for i in rows]

    def add_sources(self, n: int, partition: int | None, offset: int | None) -> None:
        """Record the partition and offset of the last ``n`` rows, appended to the columns
        directly."""
        self.partitions.extend([partition] * n)
        self.offsets.extend([offset] * n)

    def truncate(self, n: int) -> None:
        """Drop column values past the first ``n`` rows (a decode that failed half-way)."""
        for col in self.columns:
            del col[n:]


class StepColumnDecoder:
    """Appends the events of agent-steps record values to a :class:`StepColumns`."""

    def __init__(self, codec: StepBatchCodec | None = None) -> None:
        self.codec = codec or StepBatchCodec()
        event_schema = self.codec.event_codec._schema
        self.fields = tuple(f["name"] for f in event_schema["fields"])
        batch_fields = [f["name"] for f in self.codec.batch_codec._schema["fields"]]
        # The fast path reads the body as the bare events array, which is what a StepBatch
        # body is as long as ``events`` is its only field.
        self._fast = batch_fields == ["events"]
        self._header = MAGIC + self.codec.batch_codec.fingerprint
        self._read = compile_column_reader(event_schema, event_schema.get("__named_schemas"))
        # A bare StepEvent frame in the current schema (one event per record, from producers
        # other than the SDK) is read as a row: a run of them is transposed into the columns
        # at once (see add_bare_events).
        self.event_header = event_header(self.codec)
        self._read_row = compile_row_reader(event_schema, event_schema.get("__named_schemas"))
        self._read_frames = compile_frame_column_reader(event_schema,
                                                        event_schema.get("__named_schemas"))

    def new_batch(self) -> StepColumns:
        return StepColumns(self.fields)

    def add(self, out: StepColumns, value: bytes, content_type: str | None = None,
            partition: int | None = None, offset: int | None = None,
            refused: Sequence[int] = ()) -> int:
        """Append the record's events except those at the ``refused`` indices; how many were
        appended. DecodeError (and nothing appended) if the value cannot be decoded."""
        before = len(out)
        header = value[:HEADER_SIZE]
        if header == self.event_header and not (content_type and _is_json(content_type)):
            out.add_rows(DecodedSteps([self._row(value)], [partition], [offset]))
        elif self._fast and header == self._header and not (
                content_type and _is_json(content_type)):
            try:
                end = self._read(value, HEADER_SIZE, out.columns)
            except AvroDecodeError as exc:
                out.truncate(before)
                raise DecodeError(f"avro body does not match StepBatch: {exc.reason}") from exc
            if end != len(value):
                out.truncate(before)
                raise DecodeError(f"avro body does not match StepBatch: {len(value) - end} "
                                  "trailing bytes")
            out.add_sources(len(out.columns[0]) - before, partition, offset)
        else:
            out.append_events(self.codec.decode(value, content_type), partition, offset)
        if refused:
            dropped = {before + i for i in refused}
            out.keep([i for i in range(len(out)) if i not in dropped])
        return len(out) - before

    def add_bare_events(self, out: StepColumns, values: Sequence[bytes],
                        partitions: Sequence[int | None], offsets: Sequence[int | None]) -> None:
        """Append the events of bare StepEvent frames that start with :attr:`event_header`,
        one per value, as :meth:`add` would, but read straight into the columns in one call:
        a call, a row tuple and a transposition per one-event record cost the writer ~8.4 us
        an event against ~4.6 for this (bench fleet, 50,000 frames). DecodeError (and nothing
        appended) if one cannot be decoded."""
        before = len(out)
        try:
            self._read_frames(values, HEADER_SIZE, out.columns)
        except AvroDecodeError as exc:
            out.truncate(before)
            raise DecodeError(f"avro body does not match StepEvent: {exc.reason}") from exc
        out.partitions.extend(partitions)
        out.offsets.extend(offsets)

    def _row(self, value: bytes) -> tuple[Any, ...]:
        try:
            row, end = self._read_row(value, HEADER_SIZE)
        except AvroDecodeError as exc:
            raise DecodeError(f"avro body does not match StepEvent: {exc.reason}") from exc
        if end != len(value):
            raise DecodeError(f"avro body does not match StepEvent: {len(value) - end} "
                              "trailing bytes")
        return row  # type: ignore[no-any-return]


def event_header(codec: StepBatchCodec) -> bytes:
    """The frame header of a bare StepEvent in ``codec``'s current schema: records starting
    with it are read straight into columns, so the stream hands them to the ClickHouse writer
    as they are (see :data:`~streams.step_processor.StoredRecord`)."""
    return MAGIC + codec.event_codec.fingerprint
