-- title: Evidence: every step of one run, within its agent and time span
-- description: The raw steps rows of a run found by evidence_run_locate, in step order;
--   reads one (agent_id, ts) slice of the steps key.
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
WHERE agent_id = {agent:String}
  AND ts >= fromUnixTimestamp64Milli({from_ms:Int64}, 'UTC')
  AND ts <= fromUnixTimestamp64Milli({to_ms:Int64}, 'UTC')
  AND run_id = {run_id:String}
ORDER BY step, ts, event_id
