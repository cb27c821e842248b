"""Scoped control records the worker publishes: operator ceilings on scopes, the fleet kill's
shared ceiling, and the policy's standing rules.

Plain synchronous code: given a verified command (or the policy), the Control records to
publish and where. The agent's own mode stays the breaker's (``step_processor``); everything
here is a ceiling that sits beside it and that guards combine by taking the lowest
(``sdk/scopes.py``).

Sequence numbers. A scoped record's ``seq`` is the publishing worker's clock in milliseconds,
raised to one above the last seq it wrote for the same key: a scope has no breaker holding a
counter, each key is written by one worker at a time (operator commands for a scope are keyed
by it, so one partition of ``agent-commands`` carries them all), and after a restart the clock
has moved past what was written before.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from tripwire.detectors.fleet_containment import WorkflowTrip
from tripwire.detectors.standing_rules import StandingControl
from tripwire.schemas import topics
from tripwire.schemas.command_signing import SHARED_AGENT
from tripwire.schemas.modes import Mode
from tripwire.sdk.control_follower import key_partition
from tripwire.sdk.operator import command_scope
from tripwire.sdk.scopes import (
    BREAKER_KEY_PREFIX,
    POLICY_KEY_PREFIX,
    SELECTORS,
    ParamCondition,
    Scope,
)

__all__ = ["FLEET_KEY", "POLICY_KEY_PREFIX", "ScopeControlWriter", "ScopedRecord"]

FLEET_KEY = "fleet"
"""Key of the fleet ceiling on ``agent-controls-shared`` (set by kill_all, lifted by
release_all)."""
# BREAKER_KEY_PREFIX and POLICY_KEY_PREFIX live beside Scope.kafka_key in sdk/scopes.py: the
# ack sink reads a control's scope back from its key there (scope_of_control_key).


@dataclass(frozen=True, slots=True)
class ScopedRecord:
    """One Control record and where it goes."""

    topic: str
    key: str
    partition: int
    control: dict[str, Any]


class ScopeControlWriter:
    def __init__(self, partitions: int) -> None:
        self.partitions = partitions
        self._last_seq: dict[str, int] = {}

    def for_command(
        self, command: Mapping[str, Any], command_partition: int, now_ms: int
    ) -> list[ScopedRecord]:
        """The scoped records a verified command calls for (none for a plain agent command).

        kill_all and release_all arrive once per partition; the copy on partition 0 sets or
        lifts the fleet ceiling, so it is written once.
        """
        action = command["action"]
        who = f"operator {command['operator']}"
        reason = f"{who}: {command['reason']}" if command.get("reason") else who
        if action in ("kill_all", "release_all"):
            if command_partition != 0:
                return []
            mode = Mode.HALTED if action == "kill_all" else Mode.AUTONOMOUS
            return [self._record(Scope(), FLEET_KEY, mode, reason, now_ms,
                                 rule=f"operator.{action}", source="operator",
                                 command_id=command["command_id"])]
        scope = command_scope(command)
        if scope is None:
            return []
        expires_at = None
        if action == "kill":
            mode = Mode.HALTED
        elif action == "release":
            mode = Mode.AUTONOMOUS
        else:
            mode = Mode(command["mode"])
            if command.get("duration_ms") is not None:
                start = command.get("issued_at") or now_ms
                expires_at = start + int(command["duration_ms"])
        return [self._record(scope, scope.kafka_key(), mode, reason, now_ms,
                             rule=f"operator.{action}", source="operator",
                             command_id=command["command_id"], expires_at=expires_at)]

    def workflow_trip(self, trip: WorkflowTrip) -> ScopedRecord:
        """The shared ceiling for a workflow many of whose agents tripped together; keyed
        apart from operator controls on the same workflow, so a release of one does not lift
        the other. Lapses at ``trip.until`` (expires_at)."""
        scope = Scope(workflow=trip.workflow)
        return self._record(scope, BREAKER_KEY_PREFIX + scope.key(), trip.mode, trip.reason,
                            trip.at, rule="workflow_trips", source="breaker",
                            expires_at=trip.until)

    def standing(
        self, rules: Iterable[StandingControl], published: Mapping[str, Mapping[str, Any]],
        now_ms: int,
    ) -> list[ScopedRecord]:
        """Records that make the shared topic's standing rules equal ``rules``: new or changed
        rules are (re)published, rules gone from the policy are lifted. ``published`` is the
        latest record per ``policy:`` key on the topic now (key -> decoded control)."""
        out = []
        wanted: set[str] = set()
        for rule in rules:
            key = POLICY_KEY_PREFIX + rule.name
            wanted.add(key)
            record = self._record(rule.scope, key, rule.mode, rule.reason, now_ms,
                                  rule=f"standing.{rule.name}", source="breaker",
                                  condition=rule.condition)
            current = published.get(key)
            if current is not None and current.get("seq", 0) >= record.control["seq"]:
                # Our clock is behind what is on the topic (another worker, a skewed clock):
                # keep the sequence rising.
                record = self._bumped(record, int(current["seq"]) + 1)
            if current is not None and _same_rule(current, record.control):
                continue
            out.append(record)
        for key, current in published.items():
            if key.startswith(POLICY_KEY_PREFIX) and key not in wanted \
                    and current.get("mode") != str(Mode.AUTONOMOUS):
                scope = Scope.from_record(current)
                record = self._record(scope, key, Mode.AUTONOMOUS,
                                      "rule removed from the policy", now_ms,
                                      rule=current.get("rule"), source="breaker")
                if record.control["seq"] <= int(current["seq"]):
                    record = self._bumped(record, int(current["seq"]) + 1)
                out.append(record)
        return out

    # --- building records -------------------------------------------------------------------

    def _record(
        self,
        scope: Scope,
        key: str,
        mode: Mode,
        reason: str,
        now_ms: int,
        *,
        rule: str | None,
        source: str,
        command_id: str | None = None,
        expires_at: int | None = None,
        condition: ParamCondition | None = None,
    ) -> ScopedRecord:
        seq = max(now_ms, self._last_seq.get(key, 0) + 1)
        self._last_seq[key] = seq
        control: dict[str, Any] = {
            "agent_id": scope.agent_id or SHARED_AGENT,
            "mode": str(mode),
            "previous_mode": None,
            "scope": "scoped",
            "run_id": None,
            "reason": reason,
            "detection_ids": [],
            "seq": seq,
            "issued_at": now_ms,
            "rule": rule,
            "expires_at": expires_at,
            "source": source,
            **{name: getattr(scope, name) for name in SELECTORS[1:]},
            "condition": condition.to_json() if condition is not None else None,
            "command_id": command_id,
        }
        if scope.agent_id is None:
            return ScopedRecord(topics.CONTROLS_SHARED, key, 0, control)
        partition = key_partition(scope.agent_id.encode("utf-8"), self.partitions)
        return ScopedRecord(topics.CONTROLS, key, partition, control)

    def _bumped(self, record: ScopedRecord, seq: int) -> ScopedRecord:
        self._last_seq[record.key] = seq
        return ScopedRecord(record.topic, record.key, record.partition,
                            {**record.control, "seq": seq})


_RULE_FIELDS = ("mode", "reason", "condition", *SELECTORS[1:])


def _same_rule(current: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    return all(current.get(f) == new.get(f) for f in _RULE_FIELDS)
