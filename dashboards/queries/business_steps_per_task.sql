-- title: Steps per task
-- chart: timeseries
-- dashboards: business
-- order: 30
-- width: 12
-- unit: steps
-- description: Average length of the runs that finished in each interval.
SELECT
    toStartOfInterval(bucket, toIntervalSecond(greatest(60, {bucket_s:UInt32}))) AS t,
    'average steps per finished task' AS series,
    round(sum(finished_run_steps) / sum(runs_succeeded + runs_failed + runs_abandoned), 1)
        AS value
FROM agent_stats
WHERE resolution = if({bucket_s:UInt32} >= 3600, 3600, 60)
  AND bucket >= toStartOfInterval(fromUnixTimestamp64Milli({from_ms:Int64}, 'UTC'),
                                 toIntervalSecond(if({bucket_s:UInt32} >= 3600, 3600, 60)))
  AND bucket < fromUnixTimestamp64Milli({to_ms:Int64}, 'UTC')
  AND (empty({agents:Array(String)}) OR agent_id IN {agents:Array(String)})
  AND (empty({workflows:Array(String)}) OR workflow IN {workflows:Array(String)})
  AND (empty({environments:Array(String)}) OR environment IN {environments:Array(String)})
GROUP BY t
HAVING sum(runs_succeeded + runs_failed + runs_abandoned) > 0
ORDER BY t
