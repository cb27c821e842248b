-- title: Evidence: detections
-- description: An agent's detections in a time range, plus any that name the run or cite
--   one of its events as evidence.
SELECT
    toString(detection_id) AS detection_id, ts, toString(agent_id) AS agent_id, run_id,
    toString(tool) AS tool, toString(detector) AS detector, toString(metric) AS metric,
    value, threshold, window_ms, toString(severity) AS severity, evidence_event_ids, message
FROM detections FINAL
WHERE agent_id = {agent:String}
  AND ((ts >= fromUnixTimestamp64Milli({from_ms:Int64}, 'UTC')
        AND ts < fromUnixTimestamp64Milli({to_ms:Int64}, 'UTC'))
       OR (run_id != '' AND run_id = {run_id:String})
       OR hasAny(evidence_event_ids, {event_ids:Array(String)}))
ORDER BY ts, detection_id
