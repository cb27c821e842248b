-- title: Agent versions compared
-- chart: table
-- dashboards: business
-- order: 90
-- width: 24
-- description: Each agent version side by side over the range: runs, task success, policy
--   denials, approval declines, cost per completed task and steps per run. `tripwire gate`
--   judges two of them with confidence intervals.
SELECT
    version,
    uniqExact(agent_id) AS agents,
    count() AS runs,
    round(100 * avg(succeeded), 1) AS success_pct,
    round(100 * sum(denied) / greatest(sum(decisions), 1), 2) AS denial_pct,
    round(100 * sum(declined) / greatest(sum(approvals), 1), 2) AS decline_pct,
    round(sum(cost) / greatest(sum(succeeded), 1), 4) AS cost_per_completed_task_usd,
    round(avg(steps), 1) AS steps_per_run
FROM (
    SELECT
        toString(any(agent_version)) AS version,
        agent_id,
        sum(cost_usd) AS cost,
        max(step) + 1 AS steps,
        countIf(kind = 'run_end' AND outcome = 'success') > 0 AS succeeded,
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
    GROUP BY agent_id, run_id
    HAVING countIf(kind = 'run_end') > 0
)
GROUP BY version
ORDER BY version
