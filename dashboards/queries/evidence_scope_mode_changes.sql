-- title: Evidence: mode changes of a scope's agents
-- description: Mode changes (controls) in a time range of the given agents, plus shared
--   scope ceilings (agent '*': fleet, workflow, tool ... and standing rules).
SELECT
    toString(agent_id) AS agent_id, seq, issued_at, toString(previous_mode) AS previous_mode,
    toString(mode) AS mode, toString(scope) AS scope, run_id, reason, detection_ids,
    toString(rule) AS rule, expires_at, toString(source) AS source
FROM mode_changes FINAL
WHERE (agent_id IN {agents:Array(String)} OR agent_id = '*')
  AND issued_at >= fromUnixTimestamp64Milli({from_ms:Int64}, 'UTC')
  AND issued_at < fromUnixTimestamp64Milli({to_ms:Int64}, 'UTC')
ORDER BY issued_at, agent_id, seq
LIMIT 10000
