-- title: Distribution of loop lengths
-- chart: bar
-- dashboards: business
-- order: 40
-- width: 12
-- unit: runs
-- description: Finished runs by their number of steps; long tails are loops.
-- Each finished run once: its run_end's row (final_steps is run_end.step + 1, exact).
SELECT
    multiIf(final_steps <= 5, '1-5', final_steps <= 10, '6-10', final_steps <= 20, '11-20',
            final_steps <= 50, '21-50', final_steps <= 100, '51-100', final_steps <= 200,
            '101-200', '200+') AS category,
    toString(outcome) AS series,
    toFloat64(count()) AS value
FROM run_hour_stats
WHERE hour >= toStartOfHour(fromUnixTimestamp64Milli({from_ms:Int64}, 'UTC'))
  AND hour < fromUnixTimestamp64Milli({to_ms:Int64}, 'UTC')
  AND (empty({agents:Array(String)}) OR agent_id IN {agents:Array(String)})
  AND (empty({workflows:Array(String)}) OR workflow IN {workflows:Array(String)})
  AND (empty({environments:Array(String)}) OR environment IN {environments:Array(String)})
  AND final_steps > 0
GROUP BY category, series
ORDER BY indexOf(['1-5', '6-10', '11-20', '21-50', '51-100', '101-200', '200+'], category),
         series
