-- title: Latency of model and tool calls
-- chart: timeseries
-- dashboards: business
-- order: 90
-- width: 12
-- unit: ms
-- description: Median, p90 and p99 latency of the calls in each interval.
SELECT t, point.1 AS series, round(point.2) AS value
FROM (
    SELECT
        toStartOfInterval(bucket, toIntervalSecond(greatest(60, {bucket_s:UInt32}))) AS t,
        -- p50/p90/p99 from the latency histogram (see 0003_dashboard_rollups.sql): the
        -- bucket holding the quantile, interpolated log-linearly within it.
        sumMap(latency_hist) AS hist,
        mapValues(hist) AS v,
        arrayCumSum(v) AS c,
        arrayMap(b -> toFloat64(b), mapKeys(hist)) AS k,
        arrayMap(p -> arrayFirstIndex(x -> x >= p * c[-1], c), [0.5, 0.9, 0.99]) AS i,
        arrayMap((p, j) -> if(j = 0, nan,
                              pow(2, (k[j] - 1 + (p * c[-1] - c[j] + v[j]) / v[j]) / 4)),
                 [0.5, 0.9, 0.99], i) AS q,
        [('p50', q[1]), ('p90', q[2]), ('p99', q[3])] AS points
    FROM agent_stats
    WHERE resolution = if({bucket_s:UInt32} >= 3600, 3600, 60)
  AND bucket >= toStartOfInterval(fromUnixTimestamp64Milli({from_ms:Int64}, 'UTC'),
                                 toIntervalSecond(if({bucket_s:UInt32} >= 3600, 3600, 60)))
  AND bucket < fromUnixTimestamp64Milli({to_ms:Int64}, 'UTC')
  AND (empty({agents:Array(String)}) OR agent_id IN {agents:Array(String)})
  AND (empty({workflows:Array(String)}) OR workflow IN {workflows:Array(String)})
  AND (empty({environments:Array(String)}) OR environment IN {environments:Array(String)})
    GROUP BY t
    HAVING sum(model_timed + tool_timed) > 0
)
ARRAY JOIN points AS point
ORDER BY t, series
