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
          -- Not in the sorting key (command_id first, for one command's acks), but the
          -- partition key's: whole parts and months are skipped by their min and max
          -- applied_at. A guard applies a control after it was issued; a day covers any
          -- skew of its clock.
          AND applied_at >= fromUnixTimestamp64Milli({from_ms:Int64}, 'UTC') - INTERVAL 1 DAY
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
        -- Every ack around the controls (and later acks applying them), with what the guard
        -- said it guards. No FINAL: a duplicate row does not change who was heard from or
        -- what they said.
        SELECT guard_instance, agent_id, applied_at, toStartOfMinute(applied_at) AS minute,
               agent_version, workflow, environment
        FROM control_acks
        WHERE applied_at >= fromUnixTimestamp64Milli({from_ms:Int64}, 'UTC') - INTERVAL 5 MINUTE
          AND (applied_at < fromUnixTimestamp64Milli({to_ms:Int64}, 'UTC') + INTERVAL 1 MINUTE
               OR kind = 'applied')
    ),
    identity AS (
        -- Each guard's agent and identity as its latest acks in the range stated it. Per
        -- guard, not per control: a guard's agent runs in one version, workflow and
        -- environment, which the guard is told or learns from the agent's first run and never
        -- unsays (sdk/control_acks.py), so an older ack may have said more than a later one.
        SELECT guard_instance, any(agent_id) AS agent,
               argMaxIf(agent_version, applied_at, isNotNull(agent_version)) AS version,
               argMaxIf(workflow, applied_at, isNotNull(workflow)) AS workflow,
               argMaxIf(environment, applied_at, isNotNull(environment)) AS environment
        FROM heard
        GROUP BY guard_instance
    ),
    guards AS (
        -- Per control, the guards heard from between 5 minutes before it and 1 minute after:
        -- acks joined on the 7 minutes that window touches, then cut exactly (a cross join
        -- with the time condition compares every control with every ack of the range); and
        -- the guards that acknowledged it, however late.
        SELECT DISTINCT c.control AS control, h.guard_instance AS guard_instance
        FROM heard AS h
        -- The small side on the right: ClickHouse builds the join's hash table from it.
        INNER JOIN (SELECT control, issued,
                           toStartOfMinute(issued) + toIntervalMinute(arrayJoin(range(-5, 2)))
                               AS minute
                    FROM controls) AS c ON c.minute = h.minute
        WHERE h.applied_at >= c.issued - INTERVAL 5 MINUTE
          AND h.applied_at < c.issued + INTERVAL 1 MINUTE
        UNION DISTINCT
        SELECT control, guard_instance FROM acked WHERE control IN (SELECT control FROM controls)
    ),
    coverage AS (
        -- sdk.scopes.Scope.covers_guard: 1 covered, 0 a selector contradicts, NULL the scope
        -- sets one the guard did not state (or the control's scope is not known).
        SELECT g.control AS control, g.guard_instance AS guard_instance,
               multiIf(c.scope.1 = '', NULL,
                       isNotNull(c.scope.2) AND c.scope.2 != i.agent, 0,
                       isNotNull(c.scope.3) AND isNotNull(i.version) AND c.scope.3 != i.version, 0,
                       isNotNull(c.scope.4) AND isNotNull(i.workflow)
                           AND c.scope.4 != i.workflow, 0,
                       isNotNull(c.scope.5) AND isNotNull(i.environment)
                           AND c.scope.5 != i.environment, 0,
                       isNotNull(c.scope.3) AND isNull(i.version), NULL,
                       isNotNull(c.scope.4) AND isNull(i.workflow), NULL,
                       isNotNull(c.scope.5) AND isNull(i.environment), NULL,
                       1) AS covered
        FROM guards AS g
        INNER JOIN identity AS i ON i.guard_instance = g.guard_instance
        INNER JOIN controls AS c ON c.control = g.control
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
