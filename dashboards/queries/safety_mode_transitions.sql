-- title: Mode transitions
-- chart: timeline
-- dashboards: safety
-- order: 100
-- width: 24
-- description: Every mode change in the range: agent downgrades and recoveries, and runs
--   the breaker stopped (scope run), with the rule and reason.
SELECT
    issued_at AS t,
    toString(agent_id) AS agent_id,
    toString(previous_mode) AS previous_mode,
    toString(mode) AS mode,
    toString(scope) AS scope,
    run_id,
    toString(rule) AS rule,
    toString(source) AS source,
    reason
FROM mode_changes FINAL
WHERE issued_at >= fromUnixTimestamp64Milli({from_ms:Int64}, 'UTC')
  AND issued_at < fromUnixTimestamp64Milli({to_ms:Int64}, 'UTC')
  AND (empty({agents:Array(String)}) OR agent_id IN {agents:Array(String)})
  AND ((empty({workflows:Array(String)}) AND empty({environments:Array(String)}))
       OR agent_id IN (
           SELECT agent_id FROM agent_stats
           WHERE resolution = if({bucket_s:UInt32} >= 3600, 3600, 60)
             AND bucket >= toStartOfInterval(fromUnixTimestamp64Milli({from_ms:Int64}, 'UTC'),
                                            toIntervalSecond(if({bucket_s:UInt32} >= 3600, 3600, 60)))
             AND bucket < fromUnixTimestamp64Milli({to_ms:Int64}, 'UTC')
             AND (empty({workflows:Array(String)}) OR workflow IN {workflows:Array(String)})
             AND (empty({environments:Array(String)})
                  OR environment IN {environments:Array(String)})))
ORDER BY t, agent_id, seq
LIMIT 1000
