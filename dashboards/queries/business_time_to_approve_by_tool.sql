-- title: Time to approve by tool
-- chart: bar
-- dashboards: business
-- order: 64
-- width: 12
-- orientation: horizontal
-- unit: s
-- optional_table: approval_decisions
-- description: How long agents waited for a human in the approval inbox, median and p90
--   per tool (expired requests left out: nobody decided them).
SELECT category, point.1 AS series, round(point.2 / 1000, 1) AS value
FROM (
    SELECT
        tool AS category,
        quantiles(0.5, 0.9)(wait_ms) AS q,
        [('median', q[1]), ('p90', q[2])] AS points
    FROM approval_decisions FINAL
    WHERE decided_at >= fromUnixTimestamp64Milli({from_ms:Int64}, 'UTC')
      AND decided_at < fromUnixTimestamp64Milli({to_ms:Int64}, 'UTC')
      AND (empty({agents:Array(String)}) OR agent_id IN {agents:Array(String)})
      AND (empty({workflows:Array(String)}) OR workflow IN {workflows:Array(String)})
      AND (empty({environments:Array(String)}) OR environment IN {environments:Array(String)})
      AND reason_code != 'expired'
    GROUP BY category
)
ARRAY JOIN points AS point
ORDER BY category, series
