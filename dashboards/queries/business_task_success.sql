-- title: Task success rate
-- chart: timeseries
-- dashboards: business
-- order: 20
-- width: 12
-- unit: percent
-- description: Share of finished runs (run_end) that succeeded, failed or were abandoned.
SELECT t, point.1 AS series, round(point.2, 2) AS value
FROM (
    SELECT
        toStartOfInterval(bucket, toIntervalSecond(greatest(60, {bucket_s:UInt32}))) AS t,
        sum(runs_succeeded + runs_failed + runs_abandoned) AS finished,
        [('success', 100 * sum(runs_succeeded) / finished),
         ('failure', 100 * sum(runs_failed) / finished),
         ('abandoned', 100 * sum(runs_abandoned) / finished)] AS points
    FROM agent_stats
    WHERE resolution = if({bucket_s:UInt32} >= 3600, 3600, 60)
  AND bucket >= toStartOfInterval(fromUnixTimestamp64Milli({from_ms:Int64}, 'UTC'),
                                 toIntervalSecond(if({bucket_s:UInt32} >= 3600, 3600, 60)))
  AND bucket < fromUnixTimestamp64Milli({to_ms:Int64}, 'UTC')
  AND (empty({agents:Array(String)}) OR agent_id IN {agents:Array(String)})
  AND (empty({workflows:Array(String)}) OR workflow IN {workflows:Array(String)})
  AND (empty({environments:Array(String)}) OR environment IN {environments:Array(String)})
    GROUP BY t
    HAVING finished > 0
)
ARRAY JOIN points AS point
ORDER BY t, series
