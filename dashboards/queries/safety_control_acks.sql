-- title: Controls obeyed by guards
-- chart: table
-- dashboards: safety
-- order: 105
-- width: 24
-- optional_table: control_acks
-- description: Per control issued in the range (operator commands by id, other controls by
--   their key and seq): how many guards acknowledged applying it, of the guards heard from
--   in the 5 minutes before it, and how fast (apply_ms: guard's apply time minus issue
--   time, across two clocks). Guards that acknowledged nothing are silent.
WITH
    applied AS (
        SELECT if(command_id != '', command_id, concat(control_key, '#', toString(seq)))
                   AS control,
               any(mode) AS mode,
               min(issued_at) AS issued,
               uniqExact(guard_instance) AS obeyed,
               quantileExact(0.5)(apply_ms) AS p50_ms,
               max(apply_ms) AS slowest_ms,
               groupUniqArray(guard_instance) AS obeying
        FROM control_acks FINAL
        WHERE kind = 'applied'
          AND issued_at >= fromUnixTimestamp64Milli({from_ms:Int64}, 'UTC')
          AND issued_at < fromUnixTimestamp64Milli({to_ms:Int64}, 'UTC')
          AND (empty({agents:Array(String)}) OR agent_id IN {agents:Array(String)})
        GROUP BY control
    ),
    heard AS (
        SELECT guard_instance, applied_at FROM control_acks FINAL
        WHERE applied_at >= fromUnixTimestamp64Milli({from_ms:Int64}, 'UTC') - INTERVAL 5 MINUTE
          AND applied_at < fromUnixTimestamp64Milli({to_ms:Int64}, 'UTC')
    )
SELECT
    a.control AS control,
    any(a.mode) AS mode,
    a.issued AS issued_at,
    any(a.obeyed) AS obeyed,
    uniqExactIf(h.guard_instance, h.applied_at >= a.issued - INTERVAL 5 MINUTE
                                  AND h.applied_at < a.issued + INTERVAL 1 MINUTE)
        AS heard_from,
    any(a.p50_ms) AS p50_ms,
    any(a.slowest_ms) AS slowest_ms
FROM applied AS a
CROSS JOIN heard AS h
GROUP BY a.control, a.issued
ORDER BY issued_at DESC
LIMIT 200
