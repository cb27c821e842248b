-- Humans in the loop (issue 16). Rows come from the web server (dashboards/inbox.py and
-- dashboards/access.py), which holds the ClickHouse client in `tripwire run`.
--
-- approval_decisions: one row per decided approval request or proposal: who decided, how
-- long the agent waited, and for a decline the reason code from the inbox's short list
-- (wrong_recipient, too_risky, needs_review, wrong_data, other, expired) and its text.
-- Keyed by request_id: a decision stored twice (a retried insert) keeps one row.
CREATE TABLE IF NOT EXISTS approval_decisions
(
    decided_at     DateTime64(3, 'UTC'),
    requested_at   DateTime64(3, 'UTC'),
    request_id     String,
    agent_id       LowCardinality(String),
    agent_version  LowCardinality(String),
    workflow       LowCardinality(String),
    environment    LowCardinality(String),
    run_id         String,
    tool           LowCardinality(String),
    action_class   LowCardinality(String),
    kind           LowCardinality(String),
    trig           LowCardinality(String),
    approved       UInt8,
    approver       String,
    wait_ms        Int64,
    reason_code    LowCardinality(String),
    reason_text    String,
    ingested_at    DateTime64(3, 'UTC') DEFAULT now64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(ingested_at)
PARTITION BY toYYYYMM(decided_at)
ORDER BY (agent_id, decided_at, request_id)
TTL toDateTime(decided_at) + INTERVAL {retention_days} DAY
SETTINGS ttl_only_drop_parts = 1, materialize_ttl_recalculate_only = 1;

-- web_audit: every action taken in the web UI and every refused attempt (logins, approvals,
-- declines, kills, pins, releases, a viewer trying to approve), with who and how they were
-- identified (proxy, token, session).
CREATE TABLE IF NOT EXISTS web_audit
(
    ts        DateTime64(3, 'UTC'),
    user      String,
    role      LowCardinality(String),
    via       LowCardinality(String),
    action    LowCardinality(String),
    target    String,
    outcome   LowCardinality(String),
    detail    String
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(ts)
ORDER BY (ts, user)
TTL toDateTime(ts) + INTERVAL {retention_days} DAY
SETTINGS ttl_only_drop_parts = 1, materialize_ttl_recalculate_only = 1;
