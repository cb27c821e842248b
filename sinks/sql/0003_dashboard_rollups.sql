-- Rollups for the dashboards (dashboards/queries/*.sql), kept fresh by ClickHouse itself:
-- each materialized view below aggregates every block inserted into `steps` and appends
-- the partial aggregates to its AggregatingMergeTree, whose merges fold them together.
-- Dashboard queries then read minutes (or runs), never raw events.
--
-- Counting is exact because the step sink never inserts an event_id twice (see
-- sinks/step_sink.py): an MV sees each insert block once, and ReplacingMergeTree
-- de-duplication on `steps` would not reach the rollups anyway.
--
-- An MV only sees rows inserted AFTER it was created: on an existing database these
-- rollups start empty and fill from then on (no backfill; fresh installs need none).
--
-- Two resolutions in one table: minute rows (resolution = 60) for short ranges and hour
-- rows (resolution = 3600) for long ones, each filled by its own view. A dashboard query
-- picks one with its interval parameter (resolution first in the key, so the other is
-- never read): a day of a busy fleet is ~24 rows per agent instead of ~1,440.
--
-- Columns are SimpleAggregateFunction where a plain sum/min/max/any folds correctly
-- (readable without -Merge), AggregateFunction where a state is needed (quantiles,
-- distinct counts). Queries must still re-aggregate (sum(), sumMap(), uniqMerge(), ...)
-- with GROUP BY: parts are merged eventually, never at read time.

-- Per agent and minute (and hour): what the agents did, what it cost, how fast it was.
CREATE TABLE IF NOT EXISTS agent_stats
(
    resolution        UInt32,
    bucket            DateTime('UTC'),
    agent_id          LowCardinality(String),
    workflow          LowCardinality(String),
    environment       LowCardinality(String),
    steps             SimpleAggregateFunction(sum, UInt64),
    runs_started      SimpleAggregateFunction(sum, UInt64),
    runs_succeeded    SimpleAggregateFunction(sum, UInt64),
    runs_failed       SimpleAggregateFunction(sum, UInt64),
    runs_abandoned    SimpleAggregateFunction(sum, UInt64),
    -- Steps of the runs that ended in this bucket (run_end.step + 1): average loop length.
    finished_run_steps SimpleAggregateFunction(sum, UInt64),
    model_calls       SimpleAggregateFunction(sum, UInt64),
    tool_calls        SimpleAggregateFunction(sum, UInt64),
    tool_errors       SimpleAggregateFunction(sum, UInt64),
    -- Tool calls that actually ran with a side effect (write, external, money, destructive).
    side_effects      SimpleAggregateFunction(sum, UInt64),
    input_tokens      SimpleAggregateFunction(sum, Int64),
    output_tokens     SimpleAggregateFunction(sum, Int64),
    cost_usd          SimpleAggregateFunction(sum, Float64),
    -- Latency of model and tool calls: a log-scale histogram, plus counts under fixed bounds
    -- (ms) so that SLA adherence ("share under N ms") is exact for N among the bounds.
    -- Histogram bucket b counts the calls with latency in (2^((b-1)/4), 2^(b/4)] ms (bucket 0:
    -- up to 1 ms; the last, 96, everything above ~4.7 h): quarter-octaves, ~19% wide. Summed
    -- with sumMap() and read as quantiles by interpolating within the bucket (within a few
    -- percent); far cheaper to merge over many rows than quantile states.
    latency_hist      SimpleAggregateFunction(sumMap, Map(UInt8, UInt64)),
    model_timed       SimpleAggregateFunction(sum, UInt64),
    model_le_500      SimpleAggregateFunction(sum, UInt64),
    model_le_1000     SimpleAggregateFunction(sum, UInt64),
    model_le_2000     SimpleAggregateFunction(sum, UInt64),
    model_le_5000     SimpleAggregateFunction(sum, UInt64),
    model_le_10000    SimpleAggregateFunction(sum, UInt64),
    model_le_30000    SimpleAggregateFunction(sum, UInt64),
    tool_timed        SimpleAggregateFunction(sum, UInt64),
    tool_le_500       SimpleAggregateFunction(sum, UInt64),
    tool_le_1000      SimpleAggregateFunction(sum, UInt64),
    tool_le_2000      SimpleAggregateFunction(sum, UInt64),
    tool_le_5000      SimpleAggregateFunction(sum, UInt64),
    tool_le_10000     SimpleAggregateFunction(sum, UInt64),
    tool_le_30000     SimpleAggregateFunction(sum, UInt64),
    injection_flagged SimpleAggregateFunction(sum, UInt64),
    -- Policy and approval decisions, by outcome as columns: one row per agent and minute
    -- however many kinds of decision it saw.
    policy_decisions  SimpleAggregateFunction(sum, UInt64),
    policy_allowed    SimpleAggregateFunction(sum, UInt64),
    policy_approval_required SimpleAggregateFunction(sum, UInt64),
    policy_denied     SimpleAggregateFunction(sum, UInt64),
    policy_escalated  SimpleAggregateFunction(sum, UInt64),
    approvals_granted SimpleAggregateFunction(sum, UInt64),
    approvals_rejected SimpleAggregateFunction(sum, UInt64),
    approval_wait_ms  SimpleAggregateFunction(sum, Int64),
    approval_wait_quantiles AggregateFunction(quantilesTDigest(0.5, 0.9), Int64),
    -- Runs with a blocked action (denied, escalated, or rejected by the approver).
    blocked_runs      AggregateFunction(uniq, String)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMMDD(bucket)
ORDER BY (resolution, bucket, agent_id, workflow, environment)
TTL bucket + INTERVAL {retention_days} DAY
SETTINGS ttl_only_drop_parts = 1, materialize_ttl_recalculate_only = 1;

CREATE MATERIALIZED VIEW IF NOT EXISTS agent_stats_minute_mv TO agent_stats AS
SELECT
    toUInt32(60) AS resolution,
    toStartOfMinute(s.ts) AS bucket,
    s.agent_id AS agent_id,
    s.workflow AS workflow,
    s.environment AS environment,
    count() AS steps,
    countIf(s.kind = 'run_start') AS runs_started,
    countIf(s.kind = 'run_end' AND s.outcome = 'success') AS runs_succeeded,
    countIf(s.kind = 'run_end' AND s.outcome = 'failure') AS runs_failed,
    countIf(s.kind = 'run_end' AND s.outcome = 'abandoned') AS runs_abandoned,
    sumIf(toUInt64(greatest(s.step, 0) + 1), s.kind = 'run_end') AS finished_run_steps,
    countIf(s.kind = 'model_call') AS model_calls,
    countIf(s.kind = 'tool_call') AS tool_calls,
    countIf(s.kind = 'tool_call' AND s.status IN ('error', 'timeout')) AS tool_errors,
    countIf(s.kind = 'tool_call' AND s.action_class IN ('write', 'external', 'money', 'destructive'))
        AS side_effects,
    sum(s.input_tokens) AS input_tokens,
    sum(s.output_tokens) AS output_tokens,
    sum(s.cost_usd) AS cost_usd,
    sumMapIf(map(toUInt8(if(assumeNotNull(s.latency_ms) <= 1, 0,
                            least(96, ceil(log2(assumeNotNull(s.latency_ms)) * 4)))),
                 toUInt64(1)),
             s.latency_ms IS NOT NULL) AS latency_hist,
    countIf(s.kind = 'model_call' AND s.latency_ms IS NOT NULL) AS model_timed,
    countIf(s.kind = 'model_call' AND s.latency_ms <= 500) AS model_le_500,
    countIf(s.kind = 'model_call' AND s.latency_ms <= 1000) AS model_le_1000,
    countIf(s.kind = 'model_call' AND s.latency_ms <= 2000) AS model_le_2000,
    countIf(s.kind = 'model_call' AND s.latency_ms <= 5000) AS model_le_5000,
    countIf(s.kind = 'model_call' AND s.latency_ms <= 10000) AS model_le_10000,
    countIf(s.kind = 'model_call' AND s.latency_ms <= 30000) AS model_le_30000,
    countIf(s.kind = 'tool_call' AND s.latency_ms IS NOT NULL) AS tool_timed,
    countIf(s.kind = 'tool_call' AND s.latency_ms <= 500) AS tool_le_500,
    countIf(s.kind = 'tool_call' AND s.latency_ms <= 1000) AS tool_le_1000,
    countIf(s.kind = 'tool_call' AND s.latency_ms <= 2000) AS tool_le_2000,
    countIf(s.kind = 'tool_call' AND s.latency_ms <= 5000) AS tool_le_5000,
    countIf(s.kind = 'tool_call' AND s.latency_ms <= 10000) AS tool_le_10000,
    countIf(s.kind = 'tool_call' AND s.latency_ms <= 30000) AS tool_le_30000,
    countIf(s.injection_flagged) AS injection_flagged,
    countIf(s.kind = 'policy_decision') AS policy_decisions,
    countIf(s.kind = 'policy_decision' AND s.policy_outcome = 'allowed') AS policy_allowed,
    countIf(s.kind = 'policy_decision' AND s.policy_outcome = 'approval_required')
        AS policy_approval_required,
    countIf(s.kind = 'policy_decision' AND s.policy_outcome = 'denied') AS policy_denied,
    countIf(s.kind = 'policy_decision' AND s.policy_outcome = 'escalated') AS policy_escalated,
    countIf(s.kind = 'approval_decision' AND s.approved = true) AS approvals_granted,
    countIf(s.kind = 'approval_decision' AND s.approved = false) AS approvals_rejected,
    sumIf(ifNull(s.wait_ms, 0), s.kind = 'approval_decision') AS approval_wait_ms,
    quantilesTDigestStateIf(0.5, 0.9)(assumeNotNull(s.wait_ms),
                                      s.kind = 'approval_decision' AND s.wait_ms IS NOT NULL)
        AS approval_wait_quantiles,
    uniqStateIf(s.run_id, (s.kind = 'policy_decision'
                           AND s.policy_outcome IN ('denied', 'escalated'))
                          OR (s.kind = 'approval_decision' AND s.approved = false))
        AS blocked_runs
FROM steps AS s
GROUP BY resolution, bucket, agent_id, workflow, environment;

CREATE MATERIALIZED VIEW IF NOT EXISTS agent_stats_hour_mv TO agent_stats AS
SELECT
    toUInt32(3600) AS resolution,
    toStartOfHour(s.ts) AS bucket,
    s.agent_id AS agent_id,
    s.workflow AS workflow,
    s.environment AS environment,
    count() AS steps,
    countIf(s.kind = 'run_start') AS runs_started,
    countIf(s.kind = 'run_end' AND s.outcome = 'success') AS runs_succeeded,
    countIf(s.kind = 'run_end' AND s.outcome = 'failure') AS runs_failed,
    countIf(s.kind = 'run_end' AND s.outcome = 'abandoned') AS runs_abandoned,
    sumIf(toUInt64(greatest(s.step, 0) + 1), s.kind = 'run_end') AS finished_run_steps,
    countIf(s.kind = 'model_call') AS model_calls,
    countIf(s.kind = 'tool_call') AS tool_calls,
    countIf(s.kind = 'tool_call' AND s.status IN ('error', 'timeout')) AS tool_errors,
    countIf(s.kind = 'tool_call' AND s.action_class IN ('write', 'external', 'money', 'destructive'))
        AS side_effects,
    sum(s.input_tokens) AS input_tokens,
    sum(s.output_tokens) AS output_tokens,
    sum(s.cost_usd) AS cost_usd,
    sumMapIf(map(toUInt8(if(assumeNotNull(s.latency_ms) <= 1, 0,
                            least(96, ceil(log2(assumeNotNull(s.latency_ms)) * 4)))),
                 toUInt64(1)),
             s.latency_ms IS NOT NULL) AS latency_hist,
    countIf(s.kind = 'model_call' AND s.latency_ms IS NOT NULL) AS model_timed,
    countIf(s.kind = 'model_call' AND s.latency_ms <= 500) AS model_le_500,
    countIf(s.kind = 'model_call' AND s.latency_ms <= 1000) AS model_le_1000,
    countIf(s.kind = 'model_call' AND s.latency_ms <= 2000) AS model_le_2000,
    countIf(s.kind = 'model_call' AND s.latency_ms <= 5000) AS model_le_5000,
    countIf(s.kind = 'model_call' AND s.latency_ms <= 10000) AS model_le_10000,
    countIf(s.kind = 'model_call' AND s.latency_ms <= 30000) AS model_le_30000,
    countIf(s.kind = 'tool_call' AND s.latency_ms IS NOT NULL) AS tool_timed,
    countIf(s.kind = 'tool_call' AND s.latency_ms <= 500) AS tool_le_500,
    countIf(s.kind = 'tool_call' AND s.latency_ms <= 1000) AS tool_le_1000,
    countIf(s.kind = 'tool_call' AND s.latency_ms <= 2000) AS tool_le_2000,
    countIf(s.kind = 'tool_call' AND s.latency_ms <= 5000) AS tool_le_5000,
    countIf(s.kind = 'tool_call' AND s.latency_ms <= 10000) AS tool_le_10000,
    countIf(s.kind = 'tool_call' AND s.latency_ms <= 30000) AS tool_le_30000,
    countIf(s.injection_flagged) AS injection_flagged,
    countIf(s.kind = 'policy_decision') AS policy_decisions,
    countIf(s.kind = 'policy_decision' AND s.policy_outcome = 'allowed') AS policy_allowed,
    countIf(s.kind = 'policy_decision' AND s.policy_outcome = 'approval_required')
        AS policy_approval_required,
    countIf(s.kind = 'policy_decision' AND s.policy_outcome = 'denied') AS policy_denied,
    countIf(s.kind = 'policy_decision' AND s.policy_outcome = 'escalated') AS policy_escalated,
    countIf(s.kind = 'approval_decision' AND s.approved = true) AS approvals_granted,
    countIf(s.kind = 'approval_decision' AND s.approved = false) AS approvals_rejected,
    sumIf(ifNull(s.wait_ms, 0), s.kind = 'approval_decision') AS approval_wait_ms,
    quantilesTDigestStateIf(0.5, 0.9)(assumeNotNull(s.wait_ms),
                                      s.kind = 'approval_decision' AND s.wait_ms IS NOT NULL)
        AS approval_wait_quantiles,
    uniqStateIf(s.run_id, (s.kind = 'policy_decision'
                           AND s.policy_outcome IN ('denied', 'escalated'))
                          OR (s.kind = 'approval_decision' AND s.approved = false))
        AS blocked_runs
FROM steps AS s
GROUP BY resolution, bucket, agent_id, workflow, environment;

-- Per agent, tool, rule and minute (and hour): the blocked actions only (denied or escalated
-- by a policy rule, or rejected by the approver: outcome 'rejected', rule ''), with the runs
-- they touched. Few rows: most decisions allow, and those are counted in agent_stats.
CREATE TABLE IF NOT EXISTS block_stats
(
    resolution     UInt32,
    bucket         DateTime('UTC'),
    agent_id       LowCardinality(String),
    workflow       LowCardinality(String),
    environment    LowCardinality(String),
    tool           LowCardinality(String),
    action_class   LowCardinality(String),
    kind           LowCardinality(String),
    outcome        LowCardinality(String),
    rule           LowCardinality(String),
    decisions      SimpleAggregateFunction(sum, UInt64),
    runs           AggregateFunction(uniq, String)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMMDD(bucket)
ORDER BY (resolution, bucket, agent_id, workflow, environment, tool, action_class, kind, outcome,
          rule)
TTL bucket + INTERVAL {retention_days} DAY
SETTINGS ttl_only_drop_parts = 1, materialize_ttl_recalculate_only = 1;

CREATE MATERIALIZED VIEW IF NOT EXISTS block_stats_minute_mv TO block_stats AS
SELECT
    toUInt32(60) AS resolution,
    toStartOfMinute(s.ts) AS bucket,
    s.agent_id AS agent_id,
    s.workflow AS workflow,
    s.environment AS environment,
    s.tool AS tool,
    s.action_class AS action_class,
    s.kind AS kind,
    if(s.kind = 'policy_decision', s.policy_outcome,
       if(s.approved IS NULL, 'undecided', if(assumeNotNull(s.approved), 'approved', 'rejected')))
        AS outcome,
    s.policy_rule AS rule,
    count() AS decisions,
    uniqState(s.run_id) AS runs
FROM steps AS s
WHERE (s.kind = 'policy_decision' AND s.policy_outcome IN ('denied', 'escalated'))
   OR (s.kind = 'approval_decision' AND s.approved = false)
GROUP BY resolution, bucket, agent_id, workflow, environment, tool, action_class, kind, outcome, rule;

CREATE MATERIALIZED VIEW IF NOT EXISTS block_stats_hour_mv TO block_stats AS
SELECT
    toUInt32(3600) AS resolution,
    toStartOfHour(s.ts) AS bucket,
    s.agent_id AS agent_id,
    s.workflow AS workflow,
    s.environment AS environment,
    s.tool AS tool,
    s.action_class AS action_class,
    s.kind AS kind,
    if(s.kind = 'policy_decision', s.policy_outcome,
       if(s.approved IS NULL, 'undecided', if(assumeNotNull(s.approved), 'approved', 'rejected')))
        AS outcome,
    s.policy_rule AS rule,
    count() AS decisions,
    uniqState(s.run_id) AS runs
FROM steps AS s
WHERE (s.kind = 'policy_decision' AND s.policy_outcome IN ('denied', 'escalated'))
   OR (s.kind = 'approval_decision' AND s.approved = false)
GROUP BY resolution, bucket, agent_id, workflow, environment, tool, action_class, kind, outcome, rule;

-- Per run and hour of activity: one row per run for nearly every run (a run that spans an
-- hour boundary has a row per hour; queries GROUP BY run_key). Keyed by hour first so a
-- time range reads only its hours. Grouped by run_key (a hash of run_id): a day of a busy
-- fleet is ~a million runs, and grouping integers is several times faster than strings.
-- The run's identity columns (workflow, environment, version) are constant per agent and
-- ride in the key instead of any().
CREATE TABLE IF NOT EXISTS run_hour_stats
(
    hour             DateTime('UTC'),
    agent_id         LowCardinality(String),
    run_key          UInt64,
    run_id           SimpleAggregateFunction(any, String),
    workflow         LowCardinality(String),
    environment      LowCardinality(String),
    agent_version    LowCardinality(String),
    first_ts         SimpleAggregateFunction(min, DateTime64(3, 'UTC')),
    last_ts          SimpleAggregateFunction(max, DateTime64(3, 'UTC')),
    started          SimpleAggregateFunction(max, UInt8),
    -- '' until the run_end arrives; then its outcome (max() of '' and it is the outcome).
    outcome          SimpleAggregateFunction(max, String),
    -- run_end.step + 1 (the run's length in steps); 0 until the run ends.
    final_steps      SimpleAggregateFunction(max, UInt32),
    steps            SimpleAggregateFunction(sum, UInt64),
    denied           SimpleAggregateFunction(sum, UInt64),
    escalated        SimpleAggregateFunction(sum, UInt64),
    approvals_asked  SimpleAggregateFunction(sum, UInt64),
    approvals_rejected SimpleAggregateFunction(sum, UInt64),
    side_effects     SimpleAggregateFunction(sum, UInt64),
    cost_usd         SimpleAggregateFunction(sum, Float64),
    tokens           SimpleAggregateFunction(sum, Int64),
    injection_flagged SimpleAggregateFunction(sum, UInt64),
    -- Tools whose calls ran in the run: "cost per completed task by tool".
    tools            SimpleAggregateFunction(groupUniqArrayArray, Array(String))
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMMDD(hour)
ORDER BY (hour, agent_id, run_key, workflow, environment, agent_version)
TTL hour + INTERVAL {retention_days} DAY
SETTINGS ttl_only_drop_parts = 1, materialize_ttl_recalculate_only = 1;

CREATE MATERIALIZED VIEW IF NOT EXISTS run_hour_stats_mv TO run_hour_stats AS
SELECT
    toStartOfHour(s.ts) AS hour,
    s.agent_id AS agent_id,
    cityHash64(s.run_id) AS run_key,
    any(s.run_id) AS run_id,
    s.workflow AS workflow,
    s.environment AS environment,
    s.agent_version AS agent_version,
    min(s.ts) AS first_ts,
    max(s.ts) AS last_ts,
    toUInt8(countIf(s.kind = 'run_start') > 0) AS started,
    maxIf(toString(s.outcome), s.kind = 'run_end') AS outcome,
    toUInt32(maxIf(greatest(s.step, 0) + 1, s.kind = 'run_end')) AS final_steps,
    count() AS steps,
    countIf(s.kind = 'policy_decision' AND s.policy_outcome = 'denied') AS denied,
    countIf(s.kind = 'policy_decision' AND s.policy_outcome = 'escalated') AS escalated,
    countIf(s.kind = 'approval_request') AS approvals_asked,
    countIf(s.kind = 'approval_decision' AND s.approved = false) AS approvals_rejected,
    countIf(s.kind = 'tool_call' AND s.action_class IN ('write', 'external', 'money', 'destructive'))
        AS side_effects,
    sum(s.cost_usd) AS cost_usd,
    sum(s.input_tokens + s.output_tokens) AS tokens,
    countIf(s.injection_flagged) AS injection_flagged,
    groupUniqArrayIf(toString(s.tool), s.kind = 'tool_call') AS tools
FROM steps AS s
GROUP BY hour, agent_id, run_key, workflow, environment, agent_version;

-- Mode intervals: each agent-scope mode change with the time the next one replaced it
-- (until IS NULL: still the current mode). mode_changes is small (one row per decision),
-- so this is a plain view computed at query time; "mode time" clips these intervals to
-- the dashboard's range. FINAL: a re-published change (same agent, seq) counts once.
CREATE VIEW IF NOT EXISTS mode_intervals AS
SELECT
    agent_id,
    seq,
    mode,
    previous_mode,
    reason,
    rule,
    source,
    detection_ids,
    issued_at AS since,
    leadInFrame(toNullable(issued_at)) OVER (
        PARTITION BY agent_id ORDER BY seq ROWS BETWEEN CURRENT ROW AND 1 FOLLOWING
    ) AS until
FROM mode_changes FINAL
WHERE scope = 'agent';
