-- title: Filter options
-- description: Agents, workflows and environments seen in the time range, for the filter
--   drop-downs (the page and the Grafana variables).
SELECT dimension, value
FROM (
    SELECT 'agent' AS dimension, toString(agent_id) AS value
    FROM agent_stats
    WHERE resolution = if({bucket_s:UInt32} >= 3600, 3600, 60)
      AND bucket >= toStartOfInterval(fromUnixTimestamp64Milli({from_ms:Int64}, 'UTC'),
                                     toIntervalSecond(if({bucket_s:UInt32} >= 3600, 3600, 60)))
      AND bucket < fromUnixTimestamp64Milli({to_ms:Int64}, 'UTC')
    GROUP BY value
    UNION ALL
    SELECT 'workflow', toString(workflow)
    FROM agent_stats
    WHERE resolution = if({bucket_s:UInt32} >= 3600, 3600, 60)
      AND bucket >= toStartOfInterval(fromUnixTimestamp64Milli({from_ms:Int64}, 'UTC'),
                                     toIntervalSecond(if({bucket_s:UInt32} >= 3600, 3600, 60)))
      AND bucket < fromUnixTimestamp64Milli({to_ms:Int64}, 'UTC')
      AND workflow != ''
    GROUP BY workflow
    UNION ALL
    SELECT 'environment', toString(environment)
    FROM agent_stats
    WHERE resolution = if({bucket_s:UInt32} >= 3600, 3600, 60)
      AND bucket >= toStartOfInterval(fromUnixTimestamp64Milli({from_ms:Int64}, 'UTC'),
                                     toIntervalSecond(if({bucket_s:UInt32} >= 3600, 3600, 60)))
      AND bucket < fromUnixTimestamp64Milli({to_ms:Int64}, 'UTC')
      AND environment != ''
    GROUP BY environment
)
ORDER BY dimension, value
