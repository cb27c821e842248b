-- title: Release gate: detections per agent version
-- description: Detections in the window, each attributed to the agent_version of the steps
--   it cites as evidence, by detector, for `tripwire gate`.
SELECT version, detector, count() AS trips
FROM (
    SELECT d.detection_id, any(d.detector) AS detector, any(s.version) AS version
    FROM (
        SELECT detection_id, toString(detector) AS detector, arrayJoin(evidence_event_ids) AS eid
        FROM detections
        WHERE ts >= fromUnixTimestamp64Milli({from_ms:Int64}, 'UTC')
          AND ts < fromUnixTimestamp64Milli({to_ms:Int64}, 'UTC')
          AND (empty({agents:Array(String)}) OR agent_id IN {agents:Array(String)})
    ) AS d
    INNER JOIN (
        SELECT toString(event_id) AS eid, toString(agent_version) AS version
        FROM steps
        WHERE ts >= fromUnixTimestamp64Milli({from_ms:Int64}, 'UTC') - INTERVAL 1 HOUR
          AND ts < fromUnixTimestamp64Milli({to_ms:Int64}, 'UTC')
          AND (empty({agents:Array(String)}) OR agent_id IN {agents:Array(String)})
          AND (empty({workflows:Array(String)}) OR workflow IN {workflows:Array(String)})
          AND (empty({environments:Array(String)}) OR environment IN {environments:Array(String)})
    ) AS s ON d.eid = s.eid
    GROUP BY d.detection_id
)
GROUP BY version, detector
ORDER BY version, detector
