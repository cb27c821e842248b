-- Who each acknowledging guard protects, and which guards each acknowledged control covers,
-- so the safety dashboard counts "obeyed by N of M" over the guards a control's scope covers
-- (as `tripwire kill --workflow billing` does from Kafka, sdk/ack_report.py), not the fleet.
-- Rows come from sinks/control_audit.py (control_ack_row). In place: ADD COLUMN IF NOT
-- EXISTS on the 0015 table; rows stored before read NULL / '' here, i.e. a guard that did not
-- state its identity and a control of unknown scope.
--
-- agent_version, workflow, environment: the guard's identity as its ack stated it
-- (schemas/control_ack.avsc; NULL when the guard did not say, or wrote before it could).
-- scope_key: the applied control's scope (sdk.scopes.Scope.key(): 'fleet', 'agent=a1',
-- 'workflow=billing;action_class=money'), read back from its record key by
-- sdk.scopes.scope_of_control_key; '' for hello rows, rows from before this migration and
-- controls whose key does not name their scope (standing rules, 'policy:<name>').
-- scope_agent, scope_version, scope_workflow, scope_environment: the selectors of that scope
-- that narrow which guards must obey (Scope.covers_guard: tool and action_class do not).
ALTER TABLE control_acks ADD COLUMN IF NOT EXISTS agent_version LowCardinality(Nullable(String));
ALTER TABLE control_acks ADD COLUMN IF NOT EXISTS workflow LowCardinality(Nullable(String));
ALTER TABLE control_acks ADD COLUMN IF NOT EXISTS environment LowCardinality(Nullable(String));
ALTER TABLE control_acks ADD COLUMN IF NOT EXISTS scope_key String DEFAULT '';
ALTER TABLE control_acks ADD COLUMN IF NOT EXISTS scope_agent Nullable(String);
ALTER TABLE control_acks ADD COLUMN IF NOT EXISTS
    scope_version LowCardinality(Nullable(String));
ALTER TABLE control_acks ADD COLUMN IF NOT EXISTS
    scope_workflow LowCardinality(Nullable(String));
ALTER TABLE control_acks ADD COLUMN IF NOT EXISTS
    scope_environment LowCardinality(Nullable(String));
