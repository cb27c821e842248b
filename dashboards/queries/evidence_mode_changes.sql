-- title: Evidence: mode changes
-- description: An agent's mode changes in a time range, plus those scoped to the run or
--   caused by one of the given detections.
SELECT
    toString(agent_id) AS agent_id, seq, issued_at, toString(previous_mode) AS previous_mode,
    toString(mode) AS mode, toString(scope) AS scope, run_id, reason, detection_ids,
    toString(rule) AS rule, expires_at, toString(source) AS source
FROM mode_changes FINAL
WHERE agent_id = {agent:String}
  AND ((issued_at >= fromUnixTimestamp64Milli({from_ms:Int64}, 'UTC')
        AND issued_at < fromUnixTimestamp64Milli({to_ms:Int64}, 'UTC'))
       OR (run_id != '' AND run_id = {run_id:String})
       OR hasAny(detection_ids, {detection_ids:Array(String)}))
ORDER BY seq
