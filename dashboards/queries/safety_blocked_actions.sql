-- title: Blocked actions over time
-- chart: timeseries
-- dashboards: safety
-- order: 30
-- width: 12
-- unit: count
-- description: Tool calls that did not run: denied or escalated by policy, or rejected by
--   a human approver.
SELECT t, point.1 AS series, toFloat64(point.2) AS value
FROM (
    SELECT
        toStartOfInterval(bucket, toIntervalSecond(greatest(60, {bucket_s:UInt32}))) AS t,
        [('denied', sum(policy_denied)), ('escalated', sum(policy_escalated)),
         ('approval rejected', sum(approvals_rejected))] AS points
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
ORDER BY t, series
