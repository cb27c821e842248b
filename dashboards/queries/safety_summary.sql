-- title: At a glance
-- chart: stat
-- dashboards: safety
-- order: 10
-- width: 24
-- description: Agents below autonomous at the end of the range, what was blocked and
--   detected, what ran with side effects, and what it all cost.
WITH scoped AS (
    SELECT agent_id, sum(side_effects) AS effects, sum(cost_usd) AS cost,
           sum(policy_denied + policy_escalated + approvals_rejected) AS blocked,
           uniqMergeState(blocked_runs) AS runs
    FROM agent_stats
    WHERE resolution = if({bucket_s:UInt32} >= 3600, 3600, 60)
      AND bucket >= toStartOfInterval(fromUnixTimestamp64Milli({from_ms:Int64}, 'UTC'),
                                     toIntervalSecond(if({bucket_s:UInt32} >= 3600, 3600, 60)))
      AND bucket < fromUnixTimestamp64Milli({to_ms:Int64}, 'UTC')
      AND (empty({agents:Array(String)}) OR agent_id IN {agents:Array(String)})
      AND (empty({workflows:Array(String)}) OR workflow IN {workflows:Array(String)})
      AND (empty({environments:Array(String)}) OR environment IN {environments:Array(String)})
    GROUP BY agent_id
)
-- One pass over the scoped agents: their current mode and detections joined on by agent
-- (so the rollup is read once, not again for each IN).
SELECT
    countIf(m.current_mode NOT IN ('', 'autonomous')) AS agents_downgraded,
    count() AS agents_active,
    sum(s.blocked) AS blocked_actions,
    uniqMerge(s.runs) AS blocked_runs,
    sum(d.detections) AS detections,
    sum(d.injection) AS injection_detections,
    sum(s.effects) AS side_effects_run,
    round(sum(s.cost), 2) AS spend_usd
FROM scoped AS s
LEFT JOIN (
    SELECT agent_id, argMax(mode, seq) AS current_mode
    FROM mode_changes FINAL
    WHERE scope = 'agent'
      AND issued_at < fromUnixTimestamp64Milli({to_ms:Int64}, 'UTC')
      AND (empty({agents:Array(String)}) OR agent_id IN {agents:Array(String)})
    GROUP BY agent_id
) AS m ON m.agent_id = s.agent_id
LEFT JOIN (
    SELECT agent_id, count() AS detections, countIf(detector = 'injection') AS injection
    FROM detections FINAL
    WHERE ts >= fromUnixTimestamp64Milli({from_ms:Int64}, 'UTC')
      AND ts < fromUnixTimestamp64Milli({to_ms:Int64}, 'UTC')
      AND (empty({agents:Array(String)}) OR agent_id IN {agents:Array(String)})
    GROUP BY agent_id
) AS d ON d.agent_id = s.agent_id
