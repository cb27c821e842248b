-- title: Spend against budget
-- chart: bar
-- dashboards: business
-- order: 70
-- width: 12
-- orientation: horizontal
-- unit: usd
-- description: Each agent's spend in the range next to its budget for the range (the daily
--   budget pro rata), top spenders first.
WITH
    greatest({to_ms:Int64} - {from_ms:Int64}, 60000) / 86400000 * {daily_budget_usd:Float64}
        AS budget
SELECT category, point.1 AS series, round(point.2, 2) AS value
FROM (
    SELECT toString(agent_id) AS category, sum(cost_usd) AS spend,
           [('spend', spend), ('budget', budget)] AS points
    FROM agent_stats
    WHERE resolution = if({bucket_s:UInt32} >= 3600, 3600, 60)
  AND bucket >= toStartOfInterval(fromUnixTimestamp64Milli({from_ms:Int64}, 'UTC'),
                                 toIntervalSecond(if({bucket_s:UInt32} >= 3600, 3600, 60)))
  AND bucket < fromUnixTimestamp64Milli({to_ms:Int64}, 'UTC')
  AND (empty({agents:Array(String)}) OR agent_id IN {agents:Array(String)})
  AND (empty({workflows:Array(String)}) OR workflow IN {workflows:Array(String)})
  AND (empty({environments:Array(String)}) OR environment IN {environments:Array(String)})
    GROUP BY category
    ORDER BY spend DESC
    LIMIT 20
)
ARRAY JOIN points AS point
ORDER BY spend DESC, category, series DESC
