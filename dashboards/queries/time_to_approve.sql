-- title: Time to approve
-- chart: timeseries
-- dashboards: safety, business
-- order: 60
-- width: 12
-- unit: s
-- description: How long agents waited for a human decision: average, median and p90.
SELECT t, point.1 AS series, round(point.2 / 1000, 1) AS value
FROM (
    SELECT
        toStartOfInterval(bucket, toIntervalSecond(greatest(60, {bucket_s:UInt32}))) AS t,
        quantilesTDigestMerge(0.5, 0.9)(approval_wait_quantiles) AS q,
        [('average', sum(approval_wait_ms) / (sum(approvals_granted) + sum(approvals_rejected))),
         ('median', q[1]), ('p90', q[2])] AS points
    FROM agent_stats
    WHERE resolution = if({bucket_s:UInt32} >= 3600, 3600, 60)
      AND bucket >= toStartOfInterval(fromUnixTimestamp64Milli({from_ms:Int64}, 'UTC'),
                                      toIntervalSecond(if({bucket_s:UInt32} >= 3600, 3600, 60)))
      AND bucket < fromUnixTimestamp64Milli({to_ms:Int64}, 'UTC')
      AND (empty({agents:Array(String)}) OR agent_id IN {agents:Array(String)})
      AND (empty({workflows:Array(String)}) OR workflow IN {workflows:Array(String)})
      AND (empty({environments:Array(String)}) OR environment IN {environments:Array(String)})
    GROUP BY t
    HAVING sum(approvals_granted) + sum(approvals_rejected) > 0
)
ARRAY JOIN points AS point
ORDER BY t, series
