-- title: Controls obeyed by guards
-- chart: table
-- dashboards: safety
-- order: 105
-- width: 24
-- optional_table: control_acks
-- description: Per control issued in the range (operator commands by id, other controls by
--   their key and seq) and its scope: how many of the guards it covers acknowledged applying
--   it (obeyed), of the guards it covers heard from between 5 minutes before it and 1 minute
--   after (heard_from; an agent's control covers that agent's guards, a workflow, environment
--   or version control the guards stating that workflow, environment or version, the fleet
--   every guard), and how fast (apply_ms: guard's apply time minus issue time, across two
--   clocks). unknown_scope: guards heard from that did not state what the scope selects on
--   (their workflow, for a workflow control), counted apart as `tripwire kill` counts them.
--   A control whose scope is not known here (a standing rule, or acks stored before
--   migration 0019) has no heard_from and all its guards in unknown_scope. Guards covered and
--   heard from that acknowledged nothing are silent.
WITH
    acked AS (
        -- One row per control and acknowledging guard. A command that wrote several records
        -- (kill --all: the fleet ceiling and each agent's own mode) is as wide as its widest
        -- record: the scope with the fewest selectors.
        SELECT if(command_id != '', command_id, concat(control_key, '#', toString(seq)))
                   AS control,
               guard_instance,
               any(mode) AS mode,
               min(issued_at) AS issued,
               min(apply_ms) AS apply_ms,
               -- (key, agent, version, workflow, environment) of the fewest selectors
               argMin((scope_key, scope_agent, scope_version, scope_workflow,
                       scope_environment),
                      if(scope_key = '', 99, length(splitByChar(';', scope_key))
                                             - (scope_key = 'fleet')) AS width) AS scope,
               min(width) AS selectors
        FROM control_acks FINAL
        WHERE kind = 'applied'
          AND issued_at >= fromUnixTimestamp64Milli({from_ms:Int64}, 'UTC')
          AND issued_at < fromUnixTimestamp64Milli({to_ms:Int64}, 'UTC')
          AND (empty({agents:Array(String)}) OR agent_id IN {agents:Array(String)})
        GROUP BY control, guard_instance
    ),
    controls AS (
        -- The 200 latest, before the join below multiplies rows by them.
        SELECT control, any(mode) AS mode, min(issued) AS issued,
               argMin(scope, selectors) AS scope
        FROM acked
        GROUP BY control
        ORDER BY issued DESC
        LIMIT 200
    ),
    heard AS (
        -- Every ack around the controls, with what the guard said it guards. No FINAL: a
        -- duplicate row does not change who was heard from or what they said.
        SELECT guard_instance, agent_id, applied_at, agent_version, workflow, environment,
               if(kind = 'applied',
                  if(command_id != '', command_id, concat(control_key, '#', toString(seq))),
                  '') AS control
        FROM control_acks
        WHERE applied_at >= fromUnixTimestamp64Milli({from_ms:Int64}, 'UTC') - INTERVAL 5 MINUTE
          AND (applied_at < fromUnixTimestamp64Milli({to_ms:Int64}, 'UTC') + INTERVAL 1 MINUTE
               OR kind = 'applied')
    ),
    guards AS (
        -- Per control, each guard heard from around it (or acknowledging it, however late),
        -- with its identity as its latest acks stated it (a guard learns its workflow from
        -- its agent's first run; an older ack may have said more than a later one).
        SELECT c.control AS control, h.guard_instance AS guard_instance,
               any(c.scope) AS scope,
               any(h.agent_id) AS agent,
               argMaxIf(h.agent_version, h.applied_at, isNotNull(h.agent_version)) AS version,
               argMaxIf(h.workflow, h.applied_at, isNotNull(h.workflow)) AS workflow,
               argMaxIf(h.environment, h.applied_at, isNotNull(h.environment)) AS environment
        FROM controls AS c
        CROSS JOIN heard AS h
        WHERE (h.applied_at >= c.issued - INTERVAL 5 MINUTE
               AND h.applied_at < c.issued + INTERVAL 1 MINUTE)
           OR h.control = c.control
        GROUP BY c.control, h.guard_instance
    ),
    coverage AS (
        -- sdk.scopes.Scope.covers_guard: 1 covered, 0 a selector contradicts, NULL the scope
        -- sets one the guard did not state (or the control's scope is not known).
        SELECT control, guard_instance,
               multiIf(scope.1 = '', NULL,
                       isNotNull(scope.2) AND scope.2 != agent, 0,
                       isNotNull(scope.3) AND isNotNull(version) AND scope.3 != version, 0,
                       isNotNull(scope.4) AND isNotNull(workflow) AND scope.4 != workflow, 0,
                       isNotNull(scope.5) AND isNotNull(environment)
                           AND scope.5 != environment, 0,
                       isNotNull(scope.3) AND isNull(version), NULL,
                       isNotNull(scope.4) AND isNull(workflow), NULL,
                       isNotNull(scope.5) AND isNull(environment), NULL,
                       1) AS covered
        FROM guards
    )
SELECT
    c.control AS control,
    if(c.scope.1 = '', 'unknown', c.scope.1) AS scope,
    c.mode AS mode,
    c.issued AS issued_at,
    -- Acknowledgements of guards the scope covers (any guard's, when the scope is unknown).
    uniqExactIf(v.guard_instance, a.guard_instance != ''
                                  AND ifNull(v.covered, c.scope.1 = '') = 1) AS obeyed,
    if(c.scope.1 = '', NULL, toNullable(uniqExactIf(v.guard_instance, v.covered = 1)))
        AS heard_from,
    uniqExactIf(v.guard_instance, isNull(v.covered)) AS unknown_scope,
    quantileExactIf(0.5)(a.apply_ms, a.guard_instance != ''
                                     AND ifNull(v.covered, c.scope.1 = '') = 1) AS p50_ms,
    maxIf(a.apply_ms, a.guard_instance != ''
                      AND ifNull(v.covered, c.scope.1 = '') = 1) AS slowest_ms
FROM controls AS c
INNER JOIN coverage AS v ON v.control = c.control
LEFT JOIN acked AS a ON a.control = v.control AND a.guard_instance = v.guard_instance
GROUP BY c.control, c.scope, c.mode, c.issued
ORDER BY issued_at DESC
LIMIT 200
