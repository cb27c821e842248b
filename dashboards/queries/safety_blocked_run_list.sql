-- title: Blocked and stopped runs (open a run for its evidence)
-- chart: table
-- dashboards: safety
-- order: 130
-- width: 24
-- link: run_id
-- description: The latest runs of each agent with a blocked action or a breaker stop,
--   with the side effects that did run.
WITH
    stopped AS (
        SELECT run_id, any(reason) AS stop_reason
        FROM mode_changes FINAL
        WHERE scope = 'run'
          AND issued_at >= fromUnixTimestamp64Milli({from_ms:Int64}, 'UTC') - INTERVAL 1 HOUR
          AND issued_at < fromUnixTimestamp64Milli({to_ms:Int64}, 'UTC') + INTERVAL 1 HOUR
        GROUP BY run_id
    ),
    runs AS (
        SELECT run_key, any(run_id) AS rid, any(agent_id) AS agent, any(workflow) AS wf, min(first_ts) AS started,
               max(last_ts) AS last_step, max(outcome) AS run_outcome, sum(steps) AS n_steps,
               sum(denied) + sum(escalated) + sum(approvals_rejected) AS n_blocked,
               sum(side_effects) AS n_side_effects, sum(cost_usd) AS cost
        FROM run_hour_stats
        WHERE hour >= toStartOfHour(fromUnixTimestamp64Milli({from_ms:Int64}, 'UTC'))
          AND hour < fromUnixTimestamp64Milli({to_ms:Int64}, 'UTC')
          AND (empty({agents:Array(String)}) OR agent_id IN {agents:Array(String)})
          AND (empty({workflows:Array(String)}) OR workflow IN {workflows:Array(String)})
          AND (empty({environments:Array(String)})
               OR environment IN {environments:Array(String)})
          -- Only candidate runs are grouped: each agent's latest runs with a block (by the
          -- block's hour row; a run is short, so that orders them as their starts do) and
          -- the runs a breaker stopped. A day holds ~a hundred thousand blocked runs; the
          -- list shows at most 8 of each agent.
          AND (run_key IN (SELECT run_key FROM run_hour_stats
                           WHERE hour >= toStartOfHour(
                                     fromUnixTimestamp64Milli({from_ms:Int64}, 'UTC'))
                             AND hour < fromUnixTimestamp64Milli({to_ms:Int64}, 'UTC')
                             AND (empty({agents:Array(String)})
                                  OR agent_id IN {agents:Array(String)})
                             AND (empty({workflows:Array(String)})
                                  OR workflow IN {workflows:Array(String)})
                             AND (empty({environments:Array(String)})
                                  OR environment IN {environments:Array(String)})
                             AND denied + escalated + approvals_rejected > 0
                           ORDER BY first_ts DESC
                           LIMIT 16 BY agent_id)
               OR run_key IN (SELECT cityHash64(run_id) FROM stopped))
        GROUP BY run_key
    )
SELECT
    r.rid AS run_id,
    toString(r.agent) AS agent_id,
    toString(r.wf) AS workflow,
    r.started AS started,
    if(r.run_outcome = '', 'open', r.run_outcome) AS outcome,
    r.n_steps AS steps,
    r.n_blocked AS blocked_actions,
    r.n_side_effects AS side_effects,
    round(r.cost, 4) AS cost_usd,
    s.stop_reason AS breaker_stop
FROM runs AS r
LEFT JOIN stopped AS s ON s.run_id = r.rid
ORDER BY started DESC
-- The most recent runs of each agent, so one noisy agent cannot hide the others.
LIMIT 8 BY agent_id
LIMIT 50
