-- title: Current mode of every agent
-- chart: table
-- dashboards: safety
-- order: 20
-- width: 24
-- description: The mode each agent active in the range runs in at the end of the range,
--   since when and why (least autonomy first). Agents never downgraded are autonomous.
WITH
    active AS (
        SELECT agent_id, any(workflow) AS wf, sum(steps) AS n_steps, sum(cost_usd) AS cost
        FROM agent_stats
        WHERE resolution = if({bucket_s:UInt32} >= 3600, 3600, 60)
          AND bucket >= toStartOfInterval(fromUnixTimestamp64Milli({from_ms:Int64}, 'UTC'),
                                         toIntervalSecond(if({bucket_s:UInt32} >= 3600, 3600, 60)))
          AND bucket < fromUnixTimestamp64Milli({to_ms:Int64}, 'UTC')
          AND (empty({agents:Array(String)}) OR agent_id IN {agents:Array(String)})
          AND (empty({workflows:Array(String)}) OR workflow IN {workflows:Array(String)})
          AND (empty({environments:Array(String)}) OR environment IN {environments:Array(String)})
        GROUP BY agent_id
    ),
    latest AS (
        SELECT agent_id, argMax(mode, seq) AS current_mode, max(issued_at) AS changed_at,
               argMax(reason, seq) AS why, argMax(rule, seq) AS by_rule,
               argMax(source, seq) AS by_source, count() AS changes
        FROM mode_changes FINAL
        WHERE scope = 'agent'
          AND issued_at < fromUnixTimestamp64Milli({to_ms:Int64}, 'UTC')
          AND agent_id IN (SELECT agent_id FROM active)
        GROUP BY agent_id
    )
SELECT
    toString(a.agent_id) AS agent_id,
    toString(a.wf) AS workflow,
    if(l.agent_id = '', 'autonomous', toString(l.current_mode)) AS mode,
    if(l.agent_id = '', NULL, l.changed_at) AS since,
    l.why AS reason,
    toString(l.by_rule) AS rule,
    toString(l.by_source) AS source,
    l.changes AS mode_changes,
    a.n_steps AS steps,
    round(a.cost, 2) AS cost_usd
FROM active AS a
LEFT JOIN latest AS l ON l.agent_id = a.agent_id
ORDER BY indexOf(['halted', 'read_only', 'suggest_only', 'approve_to_act', 'autonomous'], mode),
         agent_id
