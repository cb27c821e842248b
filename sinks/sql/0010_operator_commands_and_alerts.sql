-- The control plane's audit trail: every operator command, accepted or not, and every
-- owner alert with its delivery outcome. Rows come from sinks/control_audit.py.
--
-- operator_commands: one row per record read from agent-commands (who, what, why, when,
-- outcome). Rejected commands are here too, with the reason (schemas/command_signing.py
-- REJECTIONS, or 'undecodable'), and their claimed fields as sent: an unsigned command's
-- operator and issued_at are whatever its writer put there, so time is the Kafka record's.
-- A worker re-reading a record after a crash writes the same (topic, partition, offset)
-- again and ReplacingMergeTree keeps one.
CREATE TABLE IF NOT EXISTS operator_commands
(
    record_ts         DateTime64(3, 'UTC'),
    source_topic      LowCardinality(String),
    source_partition  Int32,
    source_offset     Int64,
    record_key        String,
    judged_at         DateTime64(3, 'UTC'),
    outcome           LowCardinality(String),
    rejection         LowCardinality(String),
    detail            String,
    command_id        String,
    action            LowCardinality(String),
    agent_id          String,
    mode              LowCardinality(String),
    duration_ms       Nullable(Int64),
    reason            String,
    operator          String,
    issued_at         Nullable(DateTime64(3, 'UTC')),
    key_id            LowCardinality(String),
    nonce             String,
    ingested_at       DateTime64(3, 'UTC') DEFAULT now64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(ingested_at)
PARTITION BY toYYYYMM(record_ts)
ORDER BY (agent_id, record_ts, source_topic, source_partition, source_offset)
TTL toDateTime(record_ts) + INTERVAL {retention_days} DAY
SETTINGS ttl_only_drop_parts = 1, materialize_ttl_recalculate_only = 1;

-- alert_deliveries: one row per alert and route with its final outcome: delivered,
-- failed (after retries), dropped (queue full / shutdown), suppressed (deduplicated) or
-- unrouted (no webhook for the owner). Routes are names (owner:x, workflow:y, default),
-- never URLs: a webhook URL is a credential. Every row is an event, so no deduplication.
CREATE TABLE IF NOT EXISTS alert_deliveries
(
    ts             DateTime64(3, 'UTC'),
    alert_id       UUID,
    kind           LowCardinality(String),
    agent_id       LowCardinality(String),
    mode           LowCardinality(String),
    previous_mode  LowCardinality(String),
    scope          LowCardinality(String),
    run_id         String,
    seq            Nullable(Int64),
    owner          LowCardinality(String),
    workflow       LowCardinality(String),
    route          LowCardinality(String),
    outcome        LowCardinality(String),
    attempts       UInt16,
    status_code    Nullable(UInt16),
    error          String,
    latency_ms     Nullable(Int64),
    suppressed     UInt32,
    ingested_at    DateTime64(3, 'UTC') DEFAULT now64(3, 'UTC')
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(ts)
ORDER BY (agent_id, ts)
TTL toDateTime(ts) + INTERVAL {retention_days} DAY
SETTINGS ttl_only_drop_parts = 1, materialize_ttl_recalculate_only = 1;
