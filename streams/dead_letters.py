"""Dead letters: records (or single events inside a batch record) that Tripwire cannot accept.

The original bytes travel unchanged as the DLQ record's value, so a fixed record can be replayed
as-is; why it was refused and where it came from travel in headers.
"""

from __future__ import annotations

from dataclasses import dataclass

REASON = "tripwire-dlq-reason"
SOURCE_TOPIC = "tripwire-dlq-source-topic"
SOURCE_PARTITION = "tripwire-dlq-source-partition"
SOURCE_OFFSET = "tripwire-dlq-source-offset"
EVENT_INDEX = "tripwire-dlq-event-index"
CONTENT_TYPE = "content-type"


@dataclass(frozen=True, slots=True)
class DeadLetter:
    reason: str
    key: bytes | None
    value: bytes | None
    source_topic: str
    source_partition: int
    source_offset: int
    # Index of the refused event inside a batch record; None when the whole record was refused.
    event_index: int | None = None
    content_type: str | None = None

    def headers(self) -> list[tuple[str, bytes]]:
        h = [
            (REASON, self.reason.encode()),
            (SOURCE_TOPIC, self.source_topic.encode()),
            (SOURCE_PARTITION, str(self.source_partition).encode()),
            (SOURCE_OFFSET, str(self.source_offset).encode()),
        ]
        if self.event_index is not None:
            h.append((EVENT_INDEX, str(self.event_index).encode()))
        if self.content_type is not None:
            h.append((CONTENT_TYPE, self.content_type.encode()))
        return h


def header_map(headers: object) -> dict[str, bytes]:
    """Kafka headers as a dict, whichever shape the client handed them over in."""
    if not headers:
        return {}
    if isinstance(headers, dict):
        return {str(k): v for k, v in headers.items()}
    return {str(k): v for k, v in headers}  # type: ignore[union-attr]
