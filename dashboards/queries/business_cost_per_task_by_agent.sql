-- title: Cost per completed task by agent
-- chart: bar
-- dashboards: business
-- order: 50
-- width: 12
-- orientation: horizontal
-- unit: usd
-- description: Average cost of the runs that succeeded, per agent (most expensive first).
-- Row level, not grouped by run: the hour row that holds a run's run_end carries its
-- outcome and length; cost spent before that hour is left out (runs are short, and
-- grouping a busy day's ~million runs by run would not answer in time).
SELECT
    toString(agent_id) AS category,
    'USD per completed task' AS series,
    round(avg(cost_usd), 4) AS value
FROM run_hour_stats
WHERE hour >= toStartOfHour(fromUnixTimestamp64Milli({from_ms:Int64}, 'UTC'))
  AND hour < fromUnixTimestamp64Milli({to_ms:Int64}, 'UTC')
  AND (empty({agents:Array(String)}) OR agent_id IN {agents:Array(String)})
  AND (empty({workflows:Array(String)}) OR workflow IN {workflows:Array(String)})
  AND (empty({environments:Array(String)}) OR environment IN {environments:Array(String)})
  AND outcome = 'success'
GROUP BY category
ORDER BY value DESC, category
LIMIT 30
