-- title: Evidence: operator commands
-- optional_table: operator_commands
-- description: Operator commands about the agent in the time range, accepted or rejected
--   (when rejected, why). The table comes from migration 0010; the evidence leaves this
--   part out where it does not exist.
SELECT
    command_id, record_ts AS received_at, issued_at, toString(action) AS action,
    agent_id, toString(mode) AS mode, reason, operator, toString(outcome) AS outcome,
    if(detail = '', toString(rejection), concat(toString(rejection), ': ', detail))
        AS reject_reason
FROM operator_commands FINAL
WHERE agent_id = {agent:String}
  AND record_ts >= fromUnixTimestamp64Milli({from_ms:Int64}, 'UTC')
  AND record_ts < fromUnixTimestamp64Milli({to_ms:Int64}, 'UTC')
ORDER BY record_ts, command_id
