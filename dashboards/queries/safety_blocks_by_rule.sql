-- title: Policy violations by rule and agent
-- chart: bar
-- dashboards: safety
-- order: 70
-- width: 12
-- orientation: horizontal
-- unit: count
-- description: Denied and escalated policy decisions per rule, stacked by agent.
SELECT
    toString(rule) AS category,
    toString(agent_id) AS series,
    toFloat64(sum(decisions)) AS value
FROM block_stats
WHERE resolution = if({bucket_s:UInt32} >= 3600, 3600, 60)
  AND bucket >= toStartOfInterval(fromUnixTimestamp64Milli({from_ms:Int64}, 'UTC'),
                                 toIntervalSecond(if({bucket_s:UInt32} >= 3600, 3600, 60)))
  AND bucket < fromUnixTimestamp64Milli({to_ms:Int64}, 'UTC')
  AND (empty({agents:Array(String)}) OR agent_id IN {agents:Array(String)})
  AND (empty({workflows:Array(String)}) OR workflow IN {workflows:Array(String)})
  AND (empty({environments:Array(String)}) OR environment IN {environments:Array(String)})
  AND kind = 'policy_decision'
GROUP BY category, series
ORDER BY sum(value) OVER (PARTITION BY category) DESC, category, value DESC
