-- title: Spend over time by workflow
-- chart: timeseries
-- dashboards: business
-- order: 80
-- width: 12
-- unit: usd
-- description: Model spend per interval, by workflow.
SELECT
    toStartOfInterval(bucket, toIntervalSecond(greatest(60, {bucket_s:UInt32}))) AS t,
    if(workflow = '', '(none)', toString(workflow)) AS series,
    round(sum(cost_usd), 4) AS value
FROM agent_stats
WHERE resolution = if({bucket_s:UInt32} >= 3600, 3600, 60)
  AND bucket >= toStartOfInterval(fromUnixTimestamp64Milli({from_ms:Int64}, 'UTC'),
                                 toIntervalSecond(if({bucket_s:UInt32} >= 3600, 3600, 60)))
  AND bucket < fromUnixTimestamp64Milli({to_ms:Int64}, 'UTC')
  AND (empty({agents:Array(String)}) OR agent_id IN {agents:Array(String)})
  AND (empty({workflows:Array(String)}) OR workflow IN {workflows:Array(String)})
  AND (empty({environments:Array(String)}) OR environment IN {environments:Array(String)})
GROUP BY t, series
ORDER BY t, series
