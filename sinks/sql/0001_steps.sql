-- One row per agent step (StepEvent), content and attribute values already masked.
--
-- Why this ORDER BY (agent_id, ts, event_id):
--   * agent_id first: dashboards and detectors mostly ask "this agent, this time range".
--     The primary index then reads one contiguous slice per agent, and that slice is
--     sorted by ts, so the time range is cut down to the granules it needs.
--   * ts second: a time range across all agents still skips granules, because each
--     busy agent fills whole granules whose ts bounds the index knows; the daily
--     partitions prune everything outside the range's days first.
--   * event_id last: ReplacingMergeTree collapses rows with an equal sorting key, and
--     a re-delivered event repeats (agent_id, ts, event_id) exactly, so only true
--     duplicates collapse; two different events in the same millisecond never do.
--     The sink's "already stored?" check asks by (agent_id, ts range), a key prefix,
--     so it reads only the granules a re-delivered batch could be in.
--   * run_id is not in the key: a run's steps sit close in time inside its agent's
--     slice, so (agent_id, ts range) already finds them; for a run looked up without
--     its agent the bloom filter below skips the granules that cannot hold it.
--
-- Empty string, not NULL, for absent text and enum fields: GROUP BY and filters on
-- them stay simple, and no dashboard needs "absent" and "empty" told apart. Nullable
-- only where absent is not zero for the aggregates dashboards run: latency_ms and
-- wait_ms feed quantiles and averages that a 0 would drag down, and approved is a
-- real yes/no/not-a-decision. Tokens and cost are only summed, where 0 == absent.
-- Enums are LowCardinality(String), not Enum8, so a producer with a newer schema
-- symbol is stored instead of failing the whole insert.
--
-- Daily partitions with ttl_only_drop_parts: expiry drops whole days instead of
-- rewriting parts, and time-range queries prune by day. materialize_ttl_recalculate_only:
-- when migrate() changes the retention (ALTER ... MODIFY TTL), parts only get their TTL
-- bounds recomputed instead of every part of the table being rewritten.
CREATE TABLE IF NOT EXISTS steps
(
    event_id          UUID,
    ts                DateTime64(3, 'UTC'),
    agent_id          LowCardinality(String),
    agent_version     LowCardinality(String),
    run_id            String,
    step              Int32,
    workflow          LowCardinality(String),
    owner             LowCardinality(String),
    environment       LowCardinality(String),
    kind              LowCardinality(String),
    tool              LowCardinality(String),
    action_class      LowCardinality(String),
    params_hash       String,
    policy_outcome    LowCardinality(String),
    policy_rule       LowCardinality(String),
    model             LowCardinality(String),
    input_tokens      Int64,
    output_tokens     Int64,
    cost_usd          Float64,
    latency_ms        Nullable(Int64),
    status            LowCardinality(String),
    outcome           LowCardinality(String),
    approver          LowCardinality(String),
    approved          Nullable(Bool),
    wait_ms           Nullable(Int64),
    content           String CODEC(ZSTD(3)),
    source_trust      LowCardinality(String),
    injection_flagged Bool,
    attributes        Map(LowCardinality(String), String),
    -- When the sink stored the row; also the ReplacingMergeTree version, so the
    -- latest copy (masked by the newest rules) wins a merge.
    ingested_at       DateTime64(3, 'UTC') DEFAULT now64(3, 'UTC'),
    INDEX run_id_bf run_id TYPE bloom_filter(0.01) GRANULARITY 1
)
ENGINE = ReplacingMergeTree(ingested_at)
PARTITION BY toYYYYMMDD(ts)
ORDER BY (agent_id, ts, event_id)
TTL toDateTime(ts) + INTERVAL {retention_days} DAY
SETTINGS ttl_only_drop_parts = 1, materialize_ttl_recalculate_only = 1;
