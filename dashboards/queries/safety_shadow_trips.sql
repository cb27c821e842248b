-- title: Shadow rules: would-be trips beside enforced ones
-- chart: table
-- dashboards: safety
-- order: 105
-- width: 24
-- optional_table: shadow_mode_changes
-- description: Per agent and shadow rule (policy elements marked shadow: true), the trips
--   its own state machine would have made and the lowest mode it would have reached, beside
--   the trips the enforced breaker made. Never published; promote a rule by deleting its
--   shadow: true.
SELECT
    s.agent_id AS agent_id,
    s.shadow_rule AS shadow_rule,
    s.would_be_trips AS would_be_trips,
    s.would_be_lowest_mode AS would_be_lowest_mode,
    s.last_would_be_trip AS last_would_be_trip,
    ifNull(e.enforced_trips, 0) AS enforced_trips
FROM (
    SELECT
        toString(agent_id) AS agent_id,
        toString(shadow_rule) AS shadow_rule,
        countIf(action IN ('downgrade', 'escalate', 'probation_failed', 'stop_run'))
            AS would_be_trips,
        ['halted', 'read_only', 'suggest_only', 'approve_to_act', 'autonomous'][
            min(if(scope = 'agent', indexOf(['halted', 'read_only', 'suggest_only',
                                             'approve_to_act', 'autonomous'], toString(mode)),
                   5))] AS would_be_lowest_mode,
        maxIf(issued_at, action IN ('downgrade', 'escalate', 'probation_failed', 'stop_run'))
            AS last_would_be_trip
    FROM shadow_mode_changes FINAL
    WHERE issued_at >= fromUnixTimestamp64Milli({from_ms:Int64}, 'UTC')
      AND issued_at < fromUnixTimestamp64Milli({to_ms:Int64}, 'UTC')
      AND (empty({agents:Array(String)}) OR agent_id IN {agents:Array(String)})
    GROUP BY agent_id, shadow_rule
) AS s
LEFT JOIN (
    SELECT
        toString(agent_id) AS agent_id,
        countIf(scope = 'run' OR (source = 'breaker'
            AND indexOf(['halted', 'read_only', 'suggest_only', 'approve_to_act', 'autonomous'],
                        toString(mode))
              < indexOf(['halted', 'read_only', 'suggest_only', 'approve_to_act', 'autonomous'],
                        toString(previous_mode)))) AS enforced_trips
    FROM mode_changes FINAL
    WHERE issued_at >= fromUnixTimestamp64Milli({from_ms:Int64}, 'UTC')
      AND issued_at < fromUnixTimestamp64Milli({to_ms:Int64}, 'UTC')
      AND (empty({agents:Array(String)}) OR agent_id IN {agents:Array(String)})
    GROUP BY agent_id
) AS e ON s.agent_id = e.agent_id
ORDER BY would_be_trips DESC, agent_id, shadow_rule
LIMIT 500
