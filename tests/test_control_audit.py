"""The control-plane audit tables on real chDB: rows the code builds are rows the DDL takes."""

from __future__ import annotations

import pytest

from chdb_fixtures import TEST_RETENTION_DAYS
from tripwire.schemas.command_signing import CommandVerifier, sign_command
from tripwire.sinks.alerts import AlertNotifier
from tripwire.sinks.clickhouse import Client
from tripwire.sinks.control_audit import RecordRef, applied_nonces, command_audit_row, insert_rows

pytestmark = pytest.mark.integration

NOW = 1_800_000_000_000


def _ddl(client: Client, table: str) -> str:
    return client.query(
        "SELECT create_table_query FROM system.tables"
        " WHERE database = currentDatabase() AND name = {t:String}",
        parameters={"t": table},
    ).result_rows[0][0]


def test_tables_expire_with_the_retention_setting(ch_migrated: Client):
    assert f"TTL toDateTime(record_ts) + toIntervalDay({TEST_RETENTION_DAYS})" in _ddl(
        ch_migrated, "operator_commands")
    assert f"TTL toDateTime(ts) + toIntervalDay({TEST_RETENTION_DAYS})" in _ddl(
        ch_migrated, "alert_deliveries")


def test_every_command_accepted_or_not_is_auditable(ch_migrated: Client):
    verifier = CommandVerifier({"ops": "secret"})
    kill = {"command_id": "c-1", "action": "kill", "agent_id": "agent-7", "mode": None,
            "duration_ms": None, "reason": "refund loop", "operator": "alice", "issued_at": NOW}
    good = sign_command(kill, "ops", "secret")
    forged = sign_command(dict(kill, command_id="c-2", operator="agent-7"), "ops", "guess")
    rows = []
    for offset, cmd in enumerate([good, good, forged]):
        ref = RecordRef("agent-commands", 3, offset, NOW + offset, b"agent-7")
        rows.append(command_audit_row(ref, cmd, rejection=verifier.verify(cmd, NOW),
                                      judged_at_ms=NOW + 5))
    rows.append(command_audit_row(RecordRef("agent-commands", 3, 3, NOW + 3, None), None,
                                  rejection="undecodable", detail="bad framing",
                                  judged_at_ms=NOW + 5))
    # A worker re-reading after a crash writes the same records again.
    assert insert_rows(ch_migrated, "operator_commands", rows + rows[:1]) == 5
    got = ch_migrated.query(
        "SELECT source_offset, command_id, operator, outcome, rejection, reason"
        " FROM operator_commands FINAL ORDER BY source_offset").result_rows
    assert got == [
        (0, "c-1", "alice", "applied", "", "refund loop"),
        (1, "c-1", "alice", "rejected", "replayed", "refund loop"),
        (2, "c-2", "agent-7", "rejected", "bad_signature", "refund loop"),
        (3, "", "", "rejected", "undecodable", ""),
    ]


def test_a_restarted_verifier_refuses_replays_of_applied_commands(ch_migrated: Client):
    before = CommandVerifier({"ops": "secret"})
    base = {"action": "kill", "agent_id": "agent-7", "mode": None, "duration_ms": None,
            "reason": "refund loop", "operator": "alice"}
    old = sign_command(base | {"command_id": "c-old", "issued_at": NOW - 400_000}, "ops", "secret")
    recent = sign_command(base | {"command_id": "c-new", "issued_at": NOW - 1_000}, "ops", "secret")
    forged = sign_command(base | {"command_id": "c-bad", "issued_at": NOW}, "ops", "guess")
    rows = [command_audit_row(RecordRef("agent-commands", 0, i, NOW, b"agent-7"), cmd,
                              rejection=before.verify(cmd, cmd["issued_at"]), judged_at_ms=NOW)
            for i, cmd in enumerate([old, recent, forged])]
    insert_rows(ch_migrated, "operator_commands", rows)

    after = CommandVerifier({"ops": "secret"}, max_age_s=300)
    since = NOW - after.max_age_ms
    # Only applied commands young enough to be replayed; a rejected one never used its nonce.
    assert applied_nonces(ch_migrated, since) == [
        {"nonce": recent["nonce"], "issued_at": NOW - 1_000, "source": ("agent-commands", 0, 1)}]
    after.remember(applied_nonces(ch_migrated, since))
    assert after.verify(recent, NOW, ("agent-commands", 0, 7)) == "replayed"
    # The applied record itself read again (its effect may not have been stored): applied.
    assert after.verify(recent, NOW, ("agent-commands", 0, 1)) is None
    assert after.verify(old, NOW) == "expired"


async def test_alert_outcomes_land_as_rows(ch_migrated: Client):
    rows: list[dict] = []
    async with AlertNotifier({}, record=rows.append) as alerts:
        t = {"agent_id": "agent-7", "mode": "read_only", "previous_mode": "autonomous",
             "scope": "agent", "run_id": None, "reason": "denials", "seq": 1,
             "issued_at": NOW, "owner": None, "workflow": None}
        alerts.notify(t)
        alerts.notify(t)
    assert [r["outcome"] for r in rows] == ["unrouted", "suppressed"]
    assert insert_rows(ch_migrated, "alert_deliveries", rows) == 2
    got = ch_migrated.query(
        "SELECT kind, outcome, route, seq, status_code FROM alert_deliveries ORDER BY outcome"
    ).result_rows
    assert got == [("downgrade", "suppressed", "-", 1, None), ("downgrade", "unrouted", "-", 1,
                                                                None)]
