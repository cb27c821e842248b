-- title: Open incidents by severity
-- chart: bar
-- dashboards: safety
-- order: 110
-- width: 8
-- unit: count
-- description: Agents below autonomous at the end of the range, by the most severe
--   detection behind the downgrades since they were last autonomous ('operator' when an
--   operator set the mode without a detection).
WITH
    changes AS (
        SELECT agent_id, seq, mode, source, detection_ids
        FROM mode_changes FINAL
        WHERE scope = 'agent'
          AND issued_at < fromUnixTimestamp64Milli({to_ms:Int64}, 'UTC')
          AND (empty({agents:Array(String)}) OR agent_id IN {agents:Array(String)})
    ),
    open AS (
        SELECT agent_id, argMax(mode, seq) AS current_mode,
               argMax(source, seq) AS current_source,
               maxIf(seq, mode = 'autonomous') AS calm_seq
        FROM changes
        GROUP BY agent_id
        HAVING current_mode != 'autonomous'
    ),
    cited AS (
        SELECT o.agent_id AS agent_id, o.current_source AS current_source,
               arrayJoin(if(empty(c.detection_ids), [''], c.detection_ids)) AS detection_id
        FROM open AS o
        INNER JOIN changes AS c ON c.agent_id = o.agent_id
        WHERE c.seq > o.calm_seq
    ),
    graded AS (
        SELECT ci.agent_id AS agent_id, any(ci.current_source) AS current_source,
               minIf(d.severity, d.severity != '') AS worst
        FROM cited AS ci
        LEFT JOIN (
            SELECT toString(detection_id) AS detection_id, toString(severity) AS severity
            FROM detections FINAL
            WHERE agent_id IN (SELECT agent_id FROM open)
        ) AS d ON d.detection_id = ci.detection_id
        GROUP BY ci.agent_id
    )
SELECT
    if(worst = '', if(current_source = 'operator', 'operator', 'unknown'), worst) AS category,
    'open incidents' AS series,
    toFloat64(count()) AS value
FROM graded
GROUP BY category
ORDER BY category
