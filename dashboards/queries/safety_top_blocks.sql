-- title: Top blocks and reasons
-- chart: table
-- dashboards: safety
-- order: 80
-- width: 12
-- description: The agent, tool and rule combinations blocked most often.
SELECT
    toString(agent_id) AS agent_id,
    toString(tool) AS tool,
    toString(action_class) AS action_class,
    toString(outcome) AS outcome,
    if(rule = '', 'approver rejected', toString(rule)) AS reason,
    sum(decisions) AS blocked,
    uniqMerge(runs) AS runs,
    max(bucket) AS last_seen
FROM block_stats
WHERE resolution = if({bucket_s:UInt32} >= 3600, 3600, 60)
  AND bucket >= toStartOfInterval(fromUnixTimestamp64Milli({from_ms:Int64}, 'UTC'),
                                 toIntervalSecond(if({bucket_s:UInt32} >= 3600, 3600, 60)))
  AND bucket < fromUnixTimestamp64Milli({to_ms:Int64}, 'UTC')
  AND (empty({agents:Array(String)}) OR agent_id IN {agents:Array(String)})
  AND (empty({workflows:Array(String)}) OR workflow IN {workflows:Array(String)})
  AND (empty({environments:Array(String)}) OR environment IN {environments:Array(String)})
GROUP BY agent_id, tool, action_class, outcome, reason
ORDER BY blocked DESC, agent_id, tool, action_class, outcome, reason
LIMIT 20
