-- title: At a glance
-- chart: stat
-- dashboards: business
-- order: 10
-- width: 24
-- description: Tasks finished and how well, what a completed task cost, how much needed a
--   human, and how fast the agents' calls were, in the selected range.
SELECT
    w.finished AS tasks_finished,
    round(100 * w.succeeded / nullIf(w.finished, 0), 1) AS success_rate_pct,
    round(w.finished_steps / nullIf(w.finished, 0), 1) AS avg_steps_per_task,
    round(c.cost / nullIf(c.tasks, 0), 4) AS cost_per_completed_task_usd,
    round(w.cost, 2) AS spend_usd,
    round(100 * w.asked / nullIf(w.decided, 0), 1) AS manual_approval_rate_pct,
    round(w.waited / nullIf(w.answered, 0) / 1000, 1) AS avg_time_to_approve_s,
    round(w.latency[2]) AS p90_latency_ms,
    round(100 * w.tool_within_sla / nullIf(w.tool_calls_timed, 0), 1) AS tool_calls_within_sla_pct
FROM (
    SELECT sum(runs_succeeded) AS succeeded,
           sum(runs_succeeded + runs_failed + runs_abandoned) AS finished,
           sum(finished_run_steps) AS finished_steps,
           sum(cost_usd) AS cost,
           sum(multiIf({sla_ms:UInt32} >= 30000, tool_le_30000,
                       {sla_ms:UInt32} >= 10000, tool_le_10000,
                       {sla_ms:UInt32} >= 5000, tool_le_5000,
                       {sla_ms:UInt32} >= 2000, tool_le_2000,
                       {sla_ms:UInt32} >= 1000, tool_le_1000,
                       tool_le_500)) AS tool_within_sla,
           sum(tool_timed) AS tool_calls_timed,
           -- p50/p90/p99 from the latency histogram (see 0003_dashboard_rollups.sql):
           -- the bucket holding the quantile, interpolated log-linearly within it.
           sumMap(latency_hist) AS hist,
           mapValues(hist) AS v,
           arrayCumSum(v) AS c,
           arrayMap(b -> toFloat64(b), mapKeys(hist)) AS k,
           arrayMap(p -> arrayFirstIndex(x -> x >= p * c[-1], c), [0.5, 0.9, 0.99]) AS i,
           arrayMap((p, j) -> if(j = 0, nan,
                                 pow(2, (k[j] - 1 + (p * c[-1] - c[j] + v[j]) / v[j]) / 4)),
                    [0.5, 0.9, 0.99], i) AS latency,
           sum(policy_approval_required) AS asked,
           sum(policy_decisions) AS decided,
           sum(approval_wait_ms) AS waited,
           sum(approvals_granted + approvals_rejected) AS answered
    FROM agent_stats
    WHERE resolution = if({bucket_s:UInt32} >= 3600, 3600, 60)
      AND bucket >= toStartOfInterval(fromUnixTimestamp64Milli({from_ms:Int64}, 'UTC'),
                                     toIntervalSecond(if({bucket_s:UInt32} >= 3600, 3600, 60)))
      AND bucket < fromUnixTimestamp64Milli({to_ms:Int64}, 'UTC')
      AND (empty({agents:Array(String)}) OR agent_id IN {agents:Array(String)})
      AND (empty({workflows:Array(String)}) OR workflow IN {workflows:Array(String)})
      AND (empty({environments:Array(String)}) OR environment IN {environments:Array(String)})
) AS w
CROSS JOIN (
    -- The hour rows that hold a successful run_end: a run's cost before its last hour is
    -- left out (runs are short; grouping ~a million runs a day by run would not be).
    SELECT count() AS tasks, sum(cost_usd) AS cost
    FROM run_hour_stats
    WHERE hour >= toStartOfHour(fromUnixTimestamp64Milli({from_ms:Int64}, 'UTC'))
      AND hour < fromUnixTimestamp64Milli({to_ms:Int64}, 'UTC')
      AND (empty({agents:Array(String)}) OR agent_id IN {agents:Array(String)})
      AND (empty({workflows:Array(String)}) OR workflow IN {workflows:Array(String)})
      AND (empty({environments:Array(String)}) OR environment IN {environments:Array(String)})
      AND outcome = 'success'
) AS c
