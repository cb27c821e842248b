"""The console's restrict action, its list of controls in force, and their ack counts."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

import pytest

from tripwire.dashboards.console import ACTIONS, Console, attach_ack_counts
from tripwire.schemas.codec import control_codec
from tripwire.sdk.operator import new_command
from tripwire.sdk.scopes import AGENT_KEY_SEPARATOR, Scope
from tripwire.sinks.clickhouse import Client
from tripwire.sinks.control_audit import insert_rows

FORM = {"agent_id": "billing-bot", "tool": "crm.update_contact", "mode": "read_only",
        "reason": "incident 5121"}


def test_restrict_builds_the_command_the_cli_sends() -> None:
    built = ACTIONS["restrict"].build(FORM, "oscar")
    # What `tripwire restrict billing-bot --tool crm.update_contact --mode read_only` builds.
    cli = new_command("restrict", reason="incident 5121", operator="oscar", mode="read_only",
                      scope=Scope(agent_id="billing-bot", tool="crm.update_contact"))
    assert {k: v for k, v in built.items() if k not in ("command_id", "issued_at")} == {
        k: v for k, v in cli.items() if k not in ("command_id", "issued_at")}
    assert built["tool"] == "crm.update_contact" and built["duration_ms"] is None


@pytest.mark.parametrize("missing", ["agent_id", "tool", "mode", "reason"])
def test_restrict_refuses_incomplete_forms(missing: str) -> None:
    with pytest.raises(ValueError):
        ACTIONS["restrict"].build({**FORM, missing: ""}, "oscar")


def _control(agent: str, seq: int, mode: str, **fields: Any) -> dict[str, Any]:
    return {"agent_id": agent, "mode": mode, "previous_mode": None, "scope": "agent",
            "run_id": None, "reason": "why", "detection_ids": [], "seq": seq,
            "issued_at": seq, "rule": None, "expires_at": None, "source": "operator",
            **fields}


def _record(key: str, control: dict[str, Any] | None) -> Any:
    value = None if control is None else control_codec().encode(control)
    return SimpleNamespace(key=key.encode(), value=value, headers=[])


def test_console_lists_the_agents_scoped_controls_until_released() -> None:
    console = Console("unused:9092", operator_key=None)
    scoped_key = f"a1{AGENT_KEY_SEPARATOR}agent=a1;tool=crm.update_contact"
    console._on_record(_record("a1", _control("a1", 10, "approve_to_act", command_id="c-pin")))
    console._on_record(_record(scoped_key, _control(
        "a1", 20, "read_only", scope="scoped", tool="crm.update_contact")))
    console._on_record(_record("a2" + AGENT_KEY_SEPARATOR + "agent=a2;tool=x", _control(
        "a1", 30, "halted", scope="scoped", tool="x")))  # key of another agent: ignored
    [row] = console.agents()
    assert row["mode"] == "approve_to_act"  # the scoped control is not the agent's mode
    assert [(c["scope"], c["mode"], c["control"]) for c in row["controls"]] == [
        ("agent", "approve_to_act", "c-pin"),
        ("agent=a1;tool=crm.update_contact", "read_only", f"{scoped_key}#20")]
    console._on_record(_record(scoped_key, _control(  # the worker's record of a release
        "a1", 25, "autonomous", scope="scoped", tool="crm.update_contact")))
    assert [c["scope"] for c in console.agents()[0]["controls"]] == ["agent"]
    console._on_record(_record(scoped_key, _control(
        "a1", 26, "read_only", scope="scoped", tool="crm.update_contact")))
    console._on_record(_record(scoped_key, None))  # compaction's tombstone
    assert [c["scope"] for c in console.agents()[0]["controls"]] == ["agent"]


def _ack(guard: str, command_id: str, issued: int, applied: int,
         agent: str = "ack-bot") -> dict[str, Any]:
    return {"applied_at": applied, "kind": "applied", "guard_instance": guard,
            "agent_id": agent, "control_key": "ack-bot", "seq": issued, "mode": "halted",
            "command_id": command_id, "issued_at": issued, "apply_ms": applied - issued,
            "verified": 0, "source_partition": 0, "source_offset": applied}


def test_ack_counts_come_from_control_acks(ch_migrated: Client) -> None:
    # Recent: rows past the table's TTL vanish from FINAL reads.
    issued = int(time.time() * 1000) - 60_000
    insert_rows(ch_migrated, "control_acks", [
        _ack("g1", "cmd-acked", issued, issued + 40), _ack("g2", "cmd-acked", issued, issued + 90),
        # Another agent's guard, acknowledging another control, counts for neither.
        _ack("g3", "cmd-other", issued, issued + 10, agent="other-bot")])
    rows = [{"agent_id": "ack-bot", "controls": [
        {"control": "cmd-acked", "issued_at": issued},
        {"control": "cmd-silent", "issued_at": issued}]}]
    attach_ack_counts(ch_migrated, rows, issued + 1000)
    acked, silent = rows[0]["controls"]
    assert acked["acks"] == {"obeyed": 2, "slowest_ms": 90}
    assert silent["acks"] is None
