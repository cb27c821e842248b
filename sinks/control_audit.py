"""Rows for the control-plane audit tables (``sinks/sql/0010_operator_commands_and_alerts.sql``).

:func:`command_audit_row` turns one record read from ``agent-commands`` and the verifier's
verdict into an ``operator_commands`` row; :class:`~sinks.alerts.AlertNotifier` hands its
``record`` callback rows for ``alert_deliveries``. :func:`insert_rows` stores either kind
(blocking: call it off the event loop, as the step sink is).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tripwire.schemas.codec import ACK_IDENTITY_FIELDS
from tripwire.sdk.scopes import scope_of_control_key
from tripwire.sinks.clickhouse import Client
from tripwire.sinks.masking import mask

__all__ = [
    "ALERT_DELIVERY_COLUMNS",
    "CONTROL_ACK_COLUMNS",
    "AuditSink",
    "OPERATOR_COMMAND_COLUMNS",
    "RecordRef",
    "command_audit_row",
    "control_ack_row",
    "insert_rows",
]

OPERATOR_COMMAND_COLUMNS: tuple[str, ...] = (
    "record_ts", "source_topic", "source_partition", "source_offset", "record_key",
    "judged_at", "outcome", "rejection", "detail", "command_id", "action", "agent_id",
    "mode", "duration_ms", "reason", "operator", "issued_at", "key_id", "nonce",
)
ALERT_DELIVERY_COLUMNS: tuple[str, ...] = (
    "ts", "alert_id", "kind", "agent_id", "mode", "previous_mode", "scope", "run_id", "seq",
    "owner", "workflow", "route", "outcome", "attempts", "status_code", "error", "latency_ms",
    "suppressed",
)
CONTROL_ACK_COLUMNS: tuple[str, ...] = (
    "applied_at", "kind", "guard_instance", "agent_id", "control_key", "seq", "mode",
    "command_id", "issued_at", "apply_ms", "verified", "source_partition", "source_offset",
    # 0019_control_ack_scope.sql: the guard's identity and the applied control's scope.
    "agent_version", "workflow", "environment", "scope_key", "scope_agent", "scope_version",
    "scope_workflow", "scope_environment",
)
# Columns that are Nullable in the DDL; every other string column stores None as ''.
_NULLABLE = frozenset({"duration_ms", "issued_at", "seq", "status_code", "latency_ms",
                       "apply_ms"})
# ... and per table, where a name is Nullable in one table only (alert_deliveries' workflow
# is '' when unknown; control_acks' is NULL, as the guard's ack has it).
_NULLABLE_IN = {"control_acks": frozenset({
    "agent_version", "workflow", "environment", "scope_agent", "scope_version",
    "scope_workflow", "scope_environment"})}
_COLUMNS = {"operator_commands": OPERATOR_COMMAND_COLUMNS,
            "alert_deliveries": ALERT_DELIVERY_COLUMNS,
            "control_acks": CONTROL_ACK_COLUMNS}
# Free text (an operator's reason, a delivery error that may quote a URL) is stored masked.
_FREE_TEXT = frozenset({"detail", "reason", "error"})


def control_ack_row(ref: RecordRef, ack: Mapping[str, Any], *, verified: bool) -> dict[str, Any]:
    """The ``control_acks`` row of one decoded ControlAck record: with the guard's identity
    as the ack states it and, for an ``applied`` ack, the applied control's scope as its
    record key names it (``scope_key`` '' when the key does not say, e.g. a standing rule)."""
    issued_at = ack.get("issued_at")
    key = ack.get("control_key")
    scope = None if key is None else scope_of_control_key(key, ack["agent_id"])
    return {
        "applied_at": ack["applied_at"],
        "kind": ack["kind"],
        "guard_instance": ack["guard_instance"],
        "agent_id": ack["agent_id"],
        "control_key": ack.get("control_key"),
        "seq": ack.get("seq"),
        "mode": ack.get("mode"),
        "command_id": ack.get("command_id"),
        "issued_at": issued_at,
        "apply_ms": ack["applied_at"] - issued_at if issued_at is not None else None,
        "verified": int(verified),
        "source_partition": ref.partition,
        "source_offset": ref.offset,
        **{name: ack.get(name) for name in ACK_IDENTITY_FIELDS},
        "scope_key": "" if scope is None else scope.key(),
        "scope_agent": None if scope is None else scope.agent_id,
        "scope_version": None if scope is None else scope.agent_version,
        "scope_workflow": None if scope is None else scope.workflow,
        "scope_environment": None if scope is None else scope.environment,
    }


@dataclass(frozen=True, slots=True)
class RecordRef:
    """Where a command record was read: its identity in Kafka and its broker timestamp."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None = None


def command_audit_row(
    ref: RecordRef,
    command: Mapping[str, Any] | None,
    *,
    rejection: str | None,
    judged_at_ms: int,
    detail: str = "",
    outcome: str | None = None,
) -> dict[str, Any]:
    """The ``operator_commands`` row of one record. ``command`` is None when the record could
    not be decoded (then ``rejection`` is e.g. ``"undecodable"`` and ``detail`` says why).
    ``outcome`` defaults to ``applied`` / ``rejected`` by ``rejection``."""
    cmd = command or {}
    issued_at = cmd.get("issued_at")
    return {
        "record_ts": ref.timestamp_ms,
        "source_topic": ref.topic,
        "source_partition": ref.partition,
        "source_offset": ref.offset,
        "record_key": (ref.key or b"").decode("utf-8", "replace"),
        "judged_at": judged_at_ms,
        "outcome": outcome or ("applied" if rejection is None else "rejected"),
        "rejection": rejection or "",
        "detail": detail,
        "command_id": cmd.get("command_id"),
        "action": cmd.get("action"),
        "agent_id": cmd.get("agent_id"),
        "mode": cmd.get("mode"),
        "duration_ms": cmd.get("duration_ms"),
        "reason": cmd.get("reason"),
        "operator": cmd.get("operator"),
        "issued_at": issued_at if isinstance(issued_at, int) else None,
        "key_id": cmd.get("key_id"),
        "nonce": cmd.get("nonce"),
    }


def insert_rows(client: Client, table: str, rows: Sequence[Mapping[str, Any]]) -> int:
    """Insert ``operator_commands`` or ``alert_deliveries`` rows; returns how many."""
    if not rows:
        return 0
    columns = _COLUMNS[table]
    nullable = _NULLABLE | _NULLABLE_IN.get(table, frozenset())
    data = [
        [row.get(c) if c in nullable
         else mask(row.get(c) or "") if c in _FREE_TEXT
         else _not_null(row.get(c)) for c in columns]
        for row in rows
    ]
    client.insert(table, data, column_names=list(columns),
                  settings={"max_partitions_per_insert_block": 0})
    return len(data)


def applied_nonces(client: Client, since_ms: int) -> list[dict[str, Any]]:
    """``nonce``, ``issued_at`` (epoch ms) and ``source`` (topic, partition, offset of the
    record) of the commands applied that were issued at or after ``since_ms``: what
    :meth:`~schemas.command_signing.CommandVerifier.remember` takes."""
    result = client.query(
        "SELECT DISTINCT nonce, toUnixTimestamp64Milli(issued_at), source_topic, "
        "source_partition, source_offset FROM operator_commands "
        "WHERE outcome = 'applied' AND nonce != '' AND issued_at >= fromUnixTimestamp64Milli("
        "{since:Int64}, 'UTC') ORDER BY source_topic, source_partition, source_offset",
        parameters={"since": since_ms})
    return [{"nonce": nonce, "issued_at": int(issued),
             "source": (topic, int(partition), int(offset))}
            for nonce, issued, topic, partition, offset in result.result_rows]


def _not_null(value: Any) -> Any:
    return "" if value is None else value


class AuditSink:
    """``insert(table, rows)`` for the stream's sink buffer (operator_commands,
    alert_deliveries); synchronous, call it off the event loop."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def insert(self, table: str, rows: Sequence[Mapping[str, Any]]) -> int:
        if table.startswith("shadow_"):  # shadow rules' would-be rows ride the same path
            from tripwire.sinks.shadow_sink import insert_shadow

            return insert_shadow(self._client, table, rows)
        return insert_rows(self._client, table, rows) if rows else 0

    def applied_nonces(self, since_ms: int) -> list[dict[str, Any]]:
        return applied_nonces(self._client, since_ms)
