-- title: Evidence: every step in a scope and time range
-- description: The raw steps rows of every agent matching the scope's agent, version,
--   workflow, environment and action class between two instants (tool patterns are matched
--   afterwards, in Python, as the guard matches them). Bounded: a fleet-wide window of an
--   incident is minutes, not days.
SELECT
    toString(event_id) AS event_id, ts, toString(agent_id) AS agent_id,
    toString(agent_version) AS agent_version, run_id, step,
    toString(workflow) AS workflow, toString(owner) AS owner,
    toString(environment) AS environment, toString(kind) AS kind, toString(tool) AS tool,
    toString(action_class) AS action_class, params_hash,
    toString(policy_outcome) AS policy_outcome, toString(policy_rule) AS policy_rule,
    toString(model) AS model, input_tokens, output_tokens, cost_usd, latency_ms,
    toString(status) AS status, toString(outcome) AS outcome, toString(approver) AS approver,
    approved, wait_ms, content, toString(source_trust) AS source_trust, injection_flagged,
    mapApply((k, v) -> (toString(k), v), attributes) AS attributes
FROM steps FINAL
WHERE ts >= fromUnixTimestamp64Milli({from_ms:Int64}, 'UTC')
  AND ts < fromUnixTimestamp64Milli({to_ms:Int64}, 'UTC')
  AND (empty({agents:Array(String)}) OR agent_id IN {agents:Array(String)})
  AND (empty({versions:Array(String)}) OR agent_version IN {versions:Array(String)})
  AND (empty({workflows:Array(String)}) OR workflow IN {workflows:Array(String)})
  AND (empty({environments:Array(String)}) OR environment IN {environments:Array(String)})
  AND (empty({action_classes:Array(String)})
       OR toString(action_class) IN {action_classes:Array(String)})
ORDER BY ts, agent_id, run_id, step, event_id
LIMIT 200000
