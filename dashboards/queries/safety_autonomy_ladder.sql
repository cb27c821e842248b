-- title: Earned autonomy: each agent's rung and what the next one needs
-- chart: table
-- dashboards: safety
-- order: 25
-- width: 24
-- description: Agents under earned autonomy (policy section autonomy): the rung they are on,
--   since when, how many rungs they have climbed or fallen, and the record behind the latest
--   change with what the next rung needs (the reason of its autonomy.* control).
SELECT
    agent_id,
    argMax(mode, seq) AS rung,
    max(issued_at) AS since,
    argMax(rule, seq) AS latest_change,
    countIf(rule = 'autonomy.promote') AS promotions,
    countIf(rule = 'autonomy.demote') AS demotions,
    argMax(reason, seq) AS record_and_next
FROM mode_changes FINAL
WHERE scope = 'agent' AND startsWith(rule, 'autonomy.')
  AND issued_at < fromUnixTimestamp64Milli({to_ms:Int64}, 'UTC')
  AND (empty({agents:Array(String)}) OR agent_id IN {agents:Array(String)})
GROUP BY agent_id
ORDER BY agent_id
LIMIT 500
