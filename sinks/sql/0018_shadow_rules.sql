-- What shadow rules would have done: policy elements marked `shadow: true`
-- (detectors/shadow.py), judged on live traffic by a state machine of their own and never
-- published as controls. Same columns as `detections` and `mode_changes` plus the shadow
-- element (`shadow_rule`) and, for transitions, the breaker's action, so a team can put a
-- threshold's would-be effect beside the enforced one before promoting it.
--
-- Keys as in the enforced tables, with the shadow element after the agent: detection ids
-- are deterministic and each shadow state machine numbers its own transitions (seq), so
-- re-processing after a crash collapses here exactly as it does there.
CREATE TABLE IF NOT EXISTS shadow_detections
(
    shadow_rule        LowCardinality(String),
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
    ingested_at        DateTime64(3, 'UTC') DEFAULT now64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(ingested_at)
PARTITION BY toYYYYMM(ts)
ORDER BY (agent_id, shadow_rule, ts, detection_id)
TTL toDateTime(ts) + INTERVAL {retention_days} DAY
SETTINGS ttl_only_drop_parts = 1, materialize_ttl_recalculate_only = 1;

CREATE TABLE IF NOT EXISTS shadow_mode_changes
(
    shadow_rule    LowCardinality(String),
    agent_id       LowCardinality(String),
    seq            Int64,
    issued_at      DateTime64(3, 'UTC'),
    action         LowCardinality(String),
    mode           LowCardinality(String),
    previous_mode  LowCardinality(String),
    scope          LowCardinality(String),
    run_id         String,
    reason         String,
    detection_ids  Array(String),
    rule           LowCardinality(String),
    ingested_at    DateTime64(3, 'UTC') DEFAULT now64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(ingested_at)
PARTITION BY toYYYYMM(issued_at)
ORDER BY (agent_id, shadow_rule, seq)
TTL toDateTime(issued_at) + INTERVAL {retention_days} DAY
SETTINGS ttl_only_drop_parts = 1, materialize_ttl_recalculate_only = 1;
