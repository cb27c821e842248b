-- title: Injection detections by source and agent
-- chart: bar
-- dashboards: safety
-- order: 115
-- width: 8
-- orientation: horizontal
-- unit: count
-- description: Steps cited as prompt-injection evidence, by the tool whose content carried
--   it (and that content's trust level), stacked by agent.
WITH hits AS (
    SELECT agent_id, detection_id, arrayJoin(evidence_event_ids) AS event_id
    FROM detections FINAL
    WHERE detector = 'injection'
      AND ts >= fromUnixTimestamp64Milli({from_ms:Int64}, 'UTC')
      AND ts < fromUnixTimestamp64Milli({to_ms:Int64}, 'UTC')
      AND (empty({agents:Array(String)}) OR agent_id IN {agents:Array(String)})
)
SELECT
    concat(if(s.tool = '', toString(s.kind), toString(s.tool)),
           if(s.source_trust = '', '', concat(' (', toString(s.source_trust), ')'))) AS category,
    toString(s.agent_id) AS series,
    toFloat64(uniqExact(s.event_id)) AS value
FROM steps AS s
-- Evidence ids are a handful per detection: the lookup stays inside the detections'
-- agents and time range, a prefix of the steps key.
WHERE s.agent_id IN (SELECT agent_id FROM hits)
  AND s.ts >= fromUnixTimestamp64Milli({from_ms:Int64}, 'UTC') - INTERVAL 1 HOUR
  AND s.ts < fromUnixTimestamp64Milli({to_ms:Int64}, 'UTC')
  AND toString(s.event_id) IN (SELECT event_id FROM hits)
  AND (empty({workflows:Array(String)}) OR s.workflow IN {workflows:Array(String)})
  AND (empty({environments:Array(String)}) OR s.environment IN {environments:Array(String)})
GROUP BY category, series
ORDER BY value DESC, category, series
