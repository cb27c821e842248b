-- title: Evidence: where a run's steps are
-- description: A run's agent, time span and step count from the run rollup, so its steps
--   can be read along the steps key (agent_id, ts) instead of through the run_id bloom
--   filter, which has to look at every granule of the table.
SELECT any(agent_id) AS agent_id, min(first_ts) AS first_ts, max(last_ts) AS last_ts,
       sum(steps) AS steps
FROM run_hour_stats
WHERE run_key = cityHash64({run_id:String})
HAVING count() > 0
