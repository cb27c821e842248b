-- title: Shadow standing rules: would-be approvals and denials beside enforced ones
-- chart: table
-- dashboards: safety
-- order: 106
-- width: 24
-- optional_table: shadow_detections
-- description: Per agent and standing rule marked shadow: true (never published, so no guard
--   enforced it), the tool calls it would have sent to a human or refused, judged by the
--   worker on each tool-call step; beside them the agent's calls the enforced standing rules
--   did send to a human or refuse (guard decisions whose rule is standing.*). Promote a rule
--   by deleting its shadow: true.
SELECT
    s.agent_id AS agent_id,
    s.shadow_rule AS shadow_rule,
    s.would_approve AS would_approve,
    s.would_deny AS would_deny,
    s.last_would_be AS last_would_be,
    ifNull(e.enforced_standing, 0) AS enforced_standing
FROM (
    SELECT
        toString(agent_id) AS agent_id,
        toString(shadow_rule) AS shadow_rule,
        countIf(metric = 'would_approve') AS would_approve,
        countIf(metric = 'would_deny') AS would_deny,
        max(ts) AS last_would_be
    FROM shadow_detections FINAL
    WHERE detector = 'standing'
      AND ts >= fromUnixTimestamp64Milli({from_ms:Int64}, 'UTC')
      AND ts < fromUnixTimestamp64Milli({to_ms:Int64}, 'UTC')
      AND (empty({agents:Array(String)}) OR agent_id IN {agents:Array(String)})
    GROUP BY agent_id, shadow_rule
) AS s
LEFT JOIN (
    SELECT toString(agent_id) AS agent_id, count() AS enforced_standing
    FROM steps
    WHERE kind = 'policy_decision' AND startsWith(policy_rule, 'standing.')
      AND policy_outcome IN ('approval_required', 'denied')
      AND ts >= fromUnixTimestamp64Milli({from_ms:Int64}, 'UTC')
      AND ts < fromUnixTimestamp64Milli({to_ms:Int64}, 'UTC')
      AND (empty({agents:Array(String)}) OR agent_id IN {agents:Array(String)})
    GROUP BY agent_id
) AS e ON s.agent_id = e.agent_id
ORDER BY would_approve + would_deny DESC, agent_id, shadow_rule
LIMIT 500
