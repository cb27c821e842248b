-- title: Approval rate
-- chart: timeseries
-- dashboards: safety, business
-- order: 50
-- width: 12
-- unit: percent
-- description: Share of policy decisions that required a human approval, and share of
--   approval decisions that granted it.
SELECT t, point.1 AS series, round(point.2, 2) AS value
FROM (
    SELECT
        toStartOfInterval(bucket, toIntervalSecond(greatest(60, {bucket_s:UInt32}))) AS t,
        [('needed approval', 100 * sum(policy_approval_required) / sum(policy_decisions)),
         ('approved', 100 * sum(approvals_granted)
                      / (sum(approvals_granted) + sum(approvals_rejected)))] AS points
    FROM agent_stats
    WHERE resolution = if({bucket_s:UInt32} >= 3600, 3600, 60)
      AND bucket >= toStartOfInterval(fromUnixTimestamp64Milli({from_ms:Int64}, 'UTC'),
                                      toIntervalSecond(if({bucket_s:UInt32} >= 3600, 3600, 60)))
      AND bucket < fromUnixTimestamp64Milli({to_ms:Int64}, 'UTC')
      AND (empty({agents:Array(String)}) OR agent_id IN {agents:Array(String)})
      AND (empty({workflows:Array(String)}) OR workflow IN {workflows:Array(String)})
      AND (empty({environments:Array(String)}) OR environment IN {environments:Array(String)})
    GROUP BY t
)
ARRAY JOIN points AS point
WHERE isFinite(point.2)
ORDER BY t, series
