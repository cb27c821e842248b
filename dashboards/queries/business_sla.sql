-- title: SLA adherence
-- chart: timeseries
-- dashboards: business
-- order: 100
-- width: 12
-- unit: percent
-- description: Share of tool calls and of model calls answered within the SLA (sla_ms,
--   one of 500, 1000, 2000, 5000, 10000, 30000 ms; other values round down to one).
SELECT t, point.1 AS series, round(100 * point.2 / point.3, 2) AS value
FROM (
    SELECT
        toStartOfInterval(bucket, toIntervalSecond(greatest(60, {bucket_s:UInt32}))) AS t,
        [('model calls',
          multiIf({sla_ms:UInt32} >= 30000, sum(model_le_30000),
                      {sla_ms:UInt32} >= 10000, sum(model_le_10000),
                      {sla_ms:UInt32} >= 5000, sum(model_le_5000),
                      {sla_ms:UInt32} >= 2000, sum(model_le_2000),
                      {sla_ms:UInt32} >= 1000, sum(model_le_1000),
                      sum(model_le_500)),
          sum(model_timed)),
         ('tool calls',
          multiIf({sla_ms:UInt32} >= 30000, sum(tool_le_30000),
                      {sla_ms:UInt32} >= 10000, sum(tool_le_10000),
                      {sla_ms:UInt32} >= 5000, sum(tool_le_5000),
                      {sla_ms:UInt32} >= 2000, sum(tool_le_2000),
                      {sla_ms:UInt32} >= 1000, sum(tool_le_1000),
                      sum(tool_le_500)),
          sum(tool_timed))] AS points
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
WHERE point.3 > 0
ORDER BY t, series
