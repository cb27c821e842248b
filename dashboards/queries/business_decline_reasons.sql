-- title: Decline reasons by tool
-- chart: bar
-- dashboards: business, safety
-- order: 65
-- width: 12
-- orientation: horizontal
-- unit: count
-- optional_table: approval_decisions
-- description: Why humans declined agents' requests in the approval inbox, per tool: the
--   reasons that should feed back into policy and prompts (expired requests left out).
SELECT
    tool AS category,
    reason_code AS series,
    toFloat64(count()) AS value
FROM approval_decisions FINAL
WHERE decided_at >= fromUnixTimestamp64Milli({from_ms:Int64}, 'UTC')
  AND decided_at < fromUnixTimestamp64Milli({to_ms:Int64}, 'UTC')
  AND (empty({agents:Array(String)}) OR agent_id IN {agents:Array(String)})
  AND (empty({workflows:Array(String)}) OR workflow IN {workflows:Array(String)})
  AND (empty({environments:Array(String)}) OR environment IN {environments:Array(String)})
  AND approved = 0 AND reason_code NOT IN ('', 'expired')
GROUP BY category, series
ORDER BY category, series
LIMIT 200
