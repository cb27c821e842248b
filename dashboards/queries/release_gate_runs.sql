-- title: Release gate: finished runs per agent version
-- description: One row per run that ended in the window: its version, cost, steps and
--   whether it succeeded, for `tripwire gate` (cost per completed task, steps per run).
SELECT
    toString(any(agent_version)) AS version,
    run_id,
    sum(cost_usd) AS cost_usd,
    max(step) + 1 AS steps,
    toUInt8(countIf(kind = 'run_end' AND outcome = 'success') > 0) AS succeeded
FROM steps
WHERE ts >= fromUnixTimestamp64Milli({from_ms:Int64}, 'UTC')
  AND ts < fromUnixTimestamp64Milli({to_ms:Int64}, 'UTC')
  AND (empty({agents:Array(String)}) OR agent_id IN {agents:Array(String)})
  AND (empty({workflows:Array(String)}) OR workflow IN {workflows:Array(String)})
  AND (empty({environments:Array(String)}) OR environment IN {environments:Array(String)})
GROUP BY agent_id, run_id
HAVING countIf(kind = 'run_end') > 0
ORDER BY version, run_id
LIMIT 1000000
