-- Guards' acknowledgements of the controls they applied (schemas/control_ack.avsc, topic
-- agent-control-acks), and the scope of every control. Rows come from sinks/control_audit.py
-- (control_ack_row). Numbered 0015 to leave 0011-0014 to work merged alongside it.
--
-- control_acks: one row per ack record. kind 'applied' names the control (its record key,
-- seq and, for operator commands, command_id); kind 'hello' only says the guard is alive
-- (at start and every 30 s), so "obeyed by N of M guards heard from" can be answered here
-- as the CLI answers it from Kafka. apply_ms = applied_at - issued_at (guard's clock minus
-- the issuer's clock). verified: the ack's signature checked against the worker's control
-- keys (0 when the worker has none, or it did not verify).
CREATE TABLE IF NOT EXISTS control_acks
(
    applied_at        DateTime64(3, 'UTC'),
    kind              LowCardinality(String),
    guard_instance    String,
    agent_id          String,
    control_key       String,
    seq               Nullable(Int64),
    mode              LowCardinality(String),
    command_id        String,
    issued_at         Nullable(DateTime64(3, 'UTC')),
    apply_ms          Nullable(Int64),
    verified          UInt8,
    source_partition  Int32,
    source_offset     Int64,
    ingested_at       DateTime64(3, 'UTC') DEFAULT now64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(ingested_at)
PARTITION BY toYYYYMM(applied_at)
ORDER BY (command_id, guard_instance, applied_at, source_partition, source_offset)
TTL toDateTime(applied_at) + INTERVAL {retention_days} DAY
SETTINGS ttl_only_drop_parts = 1, materialize_ttl_recalculate_only = 1;
