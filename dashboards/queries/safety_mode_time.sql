-- title: Time spent downgraded
-- chart: bar
-- dashboards: safety
-- order: 120
-- width: 8
-- unit: min
-- description: Minutes each agent spent in each mode below autonomous within the range.
SELECT
    toString(agent_id) AS category,
    toString(mode) AS series,
    round(sum(dateDiff('millisecond',
                       greatest(since, fromUnixTimestamp64Milli({from_ms:Int64}, 'UTC')),
                       least(ifNull(until, now64(3, 'UTC')),
                             fromUnixTimestamp64Milli({to_ms:Int64}, 'UTC')))) / 60000, 1)
        AS value
FROM mode_intervals
WHERE mode != 'autonomous'
  AND since < fromUnixTimestamp64Milli({to_ms:Int64}, 'UTC')
  AND (until IS NULL OR until > fromUnixTimestamp64Milli({from_ms:Int64}, 'UTC'))
  AND (empty({agents:Array(String)}) OR agent_id IN {agents:Array(String)})
GROUP BY category, series
HAVING value > 0
ORDER BY category, indexOf(['approve_to_act', 'suggest_only', 'read_only', 'halted'], series)
