-- title: Release gate: policy and approval decisions per agent version
-- description: Policy decisions and denials, approval decisions and declines, per
--   agent_version, for `tripwire gate` (detectors/release_gate.py).
SELECT
    toString(agent_version) AS version,
    countIf(kind = 'policy_decision') AS decisions,
    countIf(kind = 'policy_decision' AND policy_outcome = 'denied') AS denied,
    countIf(kind = 'approval_decision' AND approved IS NOT NULL) AS approvals,
    countIf(kind = 'approval_decision' AND approved = false) AS declined
FROM steps
WHERE ts >= fromUnixTimestamp64Milli({from_ms:Int64}, 'UTC')
  AND ts < fromUnixTimestamp64Milli({to_ms:Int64}, 'UTC')
  AND (empty({agents:Array(String)}) OR agent_id IN {agents:Array(String)})
  AND (empty({workflows:Array(String)}) OR workflow IN {workflows:Array(String)})
  AND (empty({environments:Array(String)}) OR environment IN {environments:Array(String)})
  AND kind IN ('policy_decision', 'approval_decision')
GROUP BY version
ORDER BY version
