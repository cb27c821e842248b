-- What the detectors found and what the breaker (or an operator) did about it.
--
-- detections: one row per Detection (schemas/detection.avsc). Dashboards ask "which
-- detections for this agent in this time range" and "by detector/severity over time",
-- so the key is (agent_id, ts, detection_id). detection_id is deterministic (derived from
-- the evidence), so a worker that re-processes events after a crash re-emits the same id
-- and ReplacingMergeTree keeps one.
CREATE TABLE IF NOT EXISTS detections
(
    detection_id       UUID,
    ts                 DateTime64(3, 'UTC'),
    agent_id           LowCardinality(String),
    run_id             String,
    tool               LowCardinality(String),
    detector           LowCardinality(String),
    metric             LowCardinality(String),
    value              Float64,
    threshold          Float64,
    window_ms          Nullable(Int64),
    severity           LowCardinality(String),
    evidence_event_ids Array(String),
    message            String,
    ingested_at        DateTime64(3, 'UTC') DEFAULT now64(3, 'UTC'),
    INDEX run_id_bf run_id TYPE bloom_filter(0.01) GRANULARITY 1
)
ENGINE = ReplacingMergeTree(ingested_at)
PARTITION BY toYYYYMM(ts)
ORDER BY (agent_id, ts, detection_id)
TTL toDateTime(ts) + INTERVAL {retention_days} DAY
SETTINGS ttl_only_drop_parts = 1, materialize_ttl_recalculate_only = 1;

-- mode_changes: one row per Control record (schemas/control.avsc). seq is per agent and
-- strictly increasing, so (agent_id, seq) identifies a change and re-publishing after a
-- crash collapses. "Current mode of every agent" is argMax(mode, seq) per agent.
CREATE TABLE IF NOT EXISTS mode_changes
(
    agent_id       LowCardinality(String),
    seq            Int64,
    issued_at      DateTime64(3, 'UTC'),
    mode           LowCardinality(String),
    previous_mode  LowCardinality(String),
    scope          LowCardinality(String),
    run_id         String,
    reason         String,
    detection_ids  Array(String),
    rule           LowCardinality(String),
    expires_at     Nullable(DateTime64(3, 'UTC')),
    source         LowCardinality(String),
    ingested_at    DateTime64(3, 'UTC') DEFAULT now64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(ingested_at)
PARTITION BY toYYYYMM(issued_at)
ORDER BY (agent_id, seq)
TTL toDateTime(issued_at) + INTERVAL {retention_days} DAY
SETTINGS ttl_only_drop_parts = 1, materialize_ttl_recalculate_only = 1;
