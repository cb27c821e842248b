-- title: Blocked runs over time
-- chart: timeseries
-- dashboards: safety
-- order: 40
-- width: 12
-- unit: count
-- description: Runs with at least one blocked action, and runs the breaker stopped.
SELECT t, series, value
FROM (
    SELECT
        toStartOfInterval(bucket, toIntervalSecond(greatest(60, {bucket_s:UInt32}))) AS t,
        'runs with a blocked action' AS series,
        toFloat64(uniqMerge(blocked_runs)) AS value
    FROM agent_stats
    WHERE resolution = if({bucket_s:UInt32} >= 3600, 3600, 60)
      AND bucket >= toStartOfInterval(fromUnixTimestamp64Milli({from_ms:Int64}, 'UTC'),
                                     toIntervalSecond(if({bucket_s:UInt32} >= 3600, 3600, 60)))
      AND bucket < fromUnixTimestamp64Milli({to_ms:Int64}, 'UTC')
      AND (empty({agents:Array(String)}) OR agent_id IN {agents:Array(String)})
      AND (empty({workflows:Array(String)}) OR workflow IN {workflows:Array(String)})
      AND (empty({environments:Array(String)}) OR environment IN {environments:Array(String)})
    GROUP BY t
    HAVING value > 0
    UNION ALL
    SELECT
        toStartOfInterval(toDateTime(issued_at, 'UTC'),
                          toIntervalSecond(greatest(60, {bucket_s:UInt32}))) AS t,
        'runs stopped by the breaker' AS series,
        toFloat64(uniqExact(run_id)) AS value
    FROM mode_changes FINAL
    WHERE scope = 'run'
      AND issued_at >= fromUnixTimestamp64Milli({from_ms:Int64}, 'UTC')
      AND issued_at < fromUnixTimestamp64Milli({to_ms:Int64}, 'UTC')
      AND (empty({agents:Array(String)}) OR agent_id IN {agents:Array(String)})
      AND ((empty({workflows:Array(String)}) AND empty({environments:Array(String)}))
           OR agent_id IN (
               SELECT agent_id FROM agent_stats
               WHERE resolution = if({bucket_s:UInt32} >= 3600, 3600, 60)
                 AND bucket >= toStartOfInterval(fromUnixTimestamp64Milli({from_ms:Int64}, 'UTC'),
                                                toIntervalSecond(if({bucket_s:UInt32} >= 3600, 3600, 60)))
                 AND bucket < fromUnixTimestamp64Milli({to_ms:Int64}, 'UTC')
                 AND (empty({workflows:Array(String)}) OR workflow IN {workflows:Array(String)})
                 AND (empty({environments:Array(String)})
                      OR environment IN {environments:Array(String)})))
    GROUP BY t
)
ORDER BY t, series
