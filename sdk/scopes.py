"""Scopes: which calls a control covers, and the lowest ceiling over the controls that match.

A control is a *mode ceiling on a scope*. A scope is a set of selectors, each optional:
``agent_id``, ``agent_version``, ``environment``, ``workflow``, ``tool`` (a name or a
shell-style pattern, ``warehouse.drop_*``) and ``action_class``. A call matches when every
selector that is set matches it; a scope with none set is the whole fleet. So ``workflow`` +
``action_class`` is "money calls in the refunds workflow", ``agent_id`` + ``tool`` is "this
agent's use of this tool", ``agent_id`` + ``agent_version`` is "this release of this agent".

The guard's effective mode for a call is the lowest of the ceilings of every control whose
scope matches it (and the agent's and run's own modes). This module is that matching, as pure
functions over plain data, so the guard, the operator API and the worker agree on it.

Kafka keys. The compacted ``agent-controls`` topic holds one record per key; a guard reads only
its own agent's partition. A scoped control that names an agent is keyed ``agent_id`` + 0x1f +
scope key and written to the agent's partition (the partition its ``agent_id`` hashes to), so
the guard sees it while reading what it reads anyway, compaction keeps it apart from the
agent's mode record, and guards from before scopes skip it (they only take records keyed
exactly ``agent_id``). Scopes without an agent are fleet-wide facts: they go to the
single-partition compacted topic ``agent-controls-shared``, keyed by scope key (operator
controls) or ``policy:<rule>`` (standing rules). Its size after compaction is the number of
distinct shared scopes ever set, independent of the fleet's size, and every guard reads it
whole. A separate topic rather than a reserved partition of ``agent-controls`` because that
topic's partition count must equal the steps topic's (co-partitioned state), every partition
is owned by some agent hash, and old guards would read a reserved partition's records as
their own agents' neighbours.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

from tripwire.schemas.modes import Mode

__all__ = [
    "AGENT_KEY_SEPARATOR",
    "BREAKER_KEY_PREFIX",
    "POLICY_KEY_PREFIX",
    "SELECTORS",
    "CallContext",
    "Ceiling",
    "ParamCondition",
    "Scope",
    "ScopedControl",
    "lowest_ceiling",
    "scope_of_control_key",
]

AGENT_KEY_SEPARATOR = "\x1f"
"""Between ``agent_id`` and the scope key in the Kafka key of an agent's scoped control."""

BREAKER_KEY_PREFIX = "breaker:"
"""Keys of the breaker's own shared ceilings on ``agent-controls-shared``: the prefix, then the
scope key (a workflow restricted by many agents' trips, ``streams/scope_controls.py``)."""
POLICY_KEY_PREFIX = "policy:"
"""Keys of standing rules on ``agent-controls-shared``: ``policy:<rule name>``; the rule's
scope is in the record only."""

SELECTORS: tuple[str, ...] = (
    "agent_id", "agent_version", "environment", "workflow", "tool", "action_class",
)
"""Selector fields in the order scope keys list them."""

_SHORT = {"agent_id": "agent", "agent_version": "version"}
_PATTERN_CHARS = frozenset("*?[")


@dataclass(frozen=True, slots=True)
class Scope:
    """The calls a control covers; every field None is the whole fleet."""

    agent_id: str | None = None
    agent_version: str | None = None
    environment: str | None = None
    workflow: str | None = None
    tool: str | None = None
    action_class: str | None = None

    def __post_init__(self) -> None:
        for name in SELECTORS:
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value):
                raise ValueError(f"scope {name} must be a non-empty string or None")
            if value is not None and AGENT_KEY_SEPARATOR in value:
                raise ValueError(f"scope {name} must not contain 0x1f")
        if self.agent_id == "*":
            raise ValueError("agent_id '*' is reserved for shared scopes; leave it unset")

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Scope:
        """The scope of a Control or Command record (``agent_id`` ``*`` means any agent)."""
        agent = record.get("agent_id")
        return cls(
            agent_id=None if agent in (None, "*") else agent,
            **{name: record.get(name) for name in SELECTORS[1:]},
        )

    @classmethod
    def from_key(cls, text: str) -> Scope:
        """The scope a :meth:`key` names (``fleet``, ``workflow=refunds;tool=pay.*``);
        ValueError naming the part it does not understand."""
        text = text.strip()
        if text in ("", "fleet"):
            return cls()
        long = {v: k for k, v in _SHORT.items()}
        fields: dict[str, str] = {}
        for part in text.split(";"):
            name, sep, value = part.partition("=")
            name = long.get(name.strip(), name.strip())
            if not sep or name not in SELECTORS or not value.strip():
                raise ValueError(f"scope part {part!r}: expected NAME=VALUE with NAME one of "
                                 "agent, version, environment, workflow, tool, action_class")
            fields[name] = value.strip()
        return cls(**fields)

    def selectors(self) -> dict[str, str]:
        return {name: getattr(self, name) for name in SELECTORS if getattr(self, name)}

    @property
    def is_fleet(self) -> bool:
        return not self.selectors()

    @property
    def shared(self) -> bool:
        """True when no agent is named: the control lives on ``agent-controls-shared``."""
        return self.agent_id is None

    @property
    def kind(self) -> str:
        """``fleet``, ``workflow``, ``agent+tool``, ``workflow+action_class``, ..."""
        names = [_SHORT.get(n, n) for n in self.selectors()]
        return "+".join(names) if names else "fleet"

    def key(self) -> str:
        """Stable text naming the scope: ``fleet`` or ``workflow=refunds;action_class=money``."""
        parts = [f"{_SHORT.get(n, n)}={v}" for n, v in self.selectors().items()]
        return ";".join(parts) if parts else "fleet"

    def kafka_key(self) -> str:
        """The record key of this scope's operator control (see the module docstring)."""
        if self.agent_id is None:
            return self.key()
        return f"{self.agent_id}{AGENT_KEY_SEPARATOR}{self.key()}"

    def covers_guard(self, agent_id: str, identity: Mapping[str, str | None]) -> bool | None:
        """Whether the guard of ``agent_id`` (its ``agent_version``, ``workflow`` and
        ``environment`` in ``identity``, None where unknown) must obey this scope's control:
        True when every agent selector matches, False when one contradicts, None when the
        scope sets one the guard did not state. Tool and action class do not narrow it: any
        agent may call any tool."""
        if self.agent_id is not None and self.agent_id != agent_id:
            return False
        unknown = False
        for name in ("agent_version", "environment", "workflow"):
            want = getattr(self, name)
            if want is None:
                continue
            have = identity.get(name)
            if have is None:
                unknown = True
            elif have != want:
                return False
        return None if unknown else True

    def matches(self, call: CallContext) -> bool:
        if self.agent_id is not None and self.agent_id != call.agent_id:
            return False
        for name in ("agent_version", "environment", "workflow", "action_class"):
            want = getattr(self, name)
            if want is not None and want != getattr(call, name):
                return False
        tool = self.tool
        if tool is not None:
            if call.tool is None:
                return False
            if _PATTERN_CHARS.isdisjoint(tool):
                return tool == call.tool
            return fnmatchcase(call.tool, tool)
        return True


def scope_of_control_key(key: str, agent_id: str) -> Scope | None:
    """The scope of the control a guard of ``agent_id`` applied under record key ``key``, read
    back from the key as the worker wrote it (the inverse of :meth:`Scope.kafka_key` and the
    shared keys): ``agent_id`` itself is the agent's own mode (its guards), ``agent`` + 0x1f +
    scope key an agent's scoped control, a scope key (``fleet``, ``workflow=billing``) or
    ``breaker:`` + scope key a shared one. None when the key does not say: a standing rule
    (``policy:<name>``, its scope is in the record) or a key this version does not know."""
    if key == agent_id:
        return Scope(agent_id=agent_id)
    owner, sep, text = key.partition(AGENT_KEY_SEPARATOR)
    if not sep:
        if key.startswith(POLICY_KEY_PREFIX):
            return None
        text = key.removeprefix(BREAKER_KEY_PREFIX)
    try:
        scope = Scope.from_key(text)
    except ValueError:
        return None
    if sep and scope.agent_id != owner:
        return None  # not a key Scope.kafka_key writes
    return scope


@dataclass(frozen=True, slots=True)
class CallContext:
    """What the guard knows about one call when it decides."""

    agent_id: str
    tool: str | None = None
    action_class: str | None = None
    agent_version: str | None = None
    environment: str | None = None
    workflow: str | None = None
    params: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class ParamCondition:
    """A condition on one parameter of a call, for standing rules the runbooks ask for:

    * ``above``: the number is greater than this (a refund above an amount);
    * ``outside_domains``: an e-mail address or URL whose domain is none of these, nor a
      subdomain of one (a recipient outside the allowed domains);
    * ``outside_prefixes``: a path that does not start with any of these (a path outside the
      allowed prefixes). ``..`` segments count as outside: they could climb out of a prefix.

    A call whose parameters are unknown, or lack the parameter, or hold a value of the wrong
    type, *meets* the condition: a standing rule fails closed.
    """

    param: str
    above: float | None = None
    outside_domains: tuple[str, ...] | None = None
    outside_prefixes: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        given = [x is not None for x in (self.above, self.outside_domains, self.outside_prefixes)]
        if sum(given) != 1:
            raise ValueError(f"condition on {self.param!r}: give exactly one of above, "
                             "outside_domains, outside_prefixes")

    @classmethod
    def from_json(cls, text: str) -> ParamCondition:
        data = json.loads(text)
        for name in ("outside_domains", "outside_prefixes"):
            if data.get(name) is not None:
                data[name] = tuple(data[name])
        return cls(**data)

    def to_json(self) -> str:
        data: dict[str, Any] = {"param": self.param}
        for name in ("above", "outside_domains", "outside_prefixes"):
            value = getattr(self, name)
            if value is not None:
                data[name] = list(value) if isinstance(value, tuple) else value
        return json.dumps(data, sort_keys=True, separators=(",", ":"))

    def holds(self, params: Mapping[str, Any] | None) -> bool:
        if params is None or self.param not in params:
            return True
        value = params[self.param]
        if self.above is not None:
            if isinstance(value, bool) or not isinstance(value, int | float):
                return True
            return value > self.above
        if not isinstance(value, str):
            return True
        if self.outside_domains is not None:
            domain = _domain_of(value)
            return not any(domain == d.lower() or domain.endswith("." + d.lower())
                           for d in self.outside_domains)
        assert self.outside_prefixes is not None
        if ".." in value.replace("\\", "/").split("/"):
            return True
        return not any(value.startswith(prefix) for prefix in self.outside_prefixes)

    def describe(self) -> str:
        if self.above is not None:
            return f"{self.param} > {self.above:g}"
        if self.outside_domains is not None:
            return f"{self.param} outside {', '.join(self.outside_domains)}"
        return f"{self.param} outside {', '.join(self.outside_prefixes or ())}"


def _domain_of(value: str) -> str:
    text = value.strip().lower()
    if "://" in text:
        text = text.split("://", 1)[1].split("/", 1)[0]
    elif "@" in text:
        text = text.rsplit("@", 1)[1]
    return text.split(":", 1)[0].rstrip(".>")


@dataclass(frozen=True, slots=True)
class ScopedControl:
    """One applied scoped control: a ceiling on a scope, maybe conditional, maybe expiring."""

    key: str
    """The Kafka record key it came under (names the control in decisions)."""
    scope: Scope
    mode: Mode
    seq: int
    issued_at: int
    reason: str
    rule: str | None
    source: str
    expires_at: int | None = None
    condition: ParamCondition | None = None
    command_id: str | None = None

    @classmethod
    def from_record(cls, key: str, record: Mapping[str, Any]) -> ScopedControl:
        condition = record.get("condition")
        return cls(
            key=key,
            scope=Scope.from_record(record),
            mode=Mode(record["mode"]),
            seq=int(record["seq"]),
            issued_at=int(record["issued_at"]),
            reason=record.get("reason") or "",
            rule=record.get("rule"),
            source=record.get("source") or "breaker",
            expires_at=record.get("expires_at"),
            condition=ParamCondition.from_json(condition) if condition else None,
            command_id=record.get("command_id"),
        )

    def applies(self, call: CallContext, now_ms: int) -> bool:
        if self.mode == Mode.AUTONOMOUS:
            return False  # a lifted scope: no ceiling
        if self.expires_at is not None and now_ms >= self.expires_at:
            return False
        if not self.scope.matches(call):
            return False
        return self.condition is None or self.condition.holds(call.params)


@dataclass(frozen=True, slots=True)
class Ceiling:
    """The lowest matching ceiling and the control that set it."""

    mode: Mode
    control: ScopedControl


def lowest_ceiling(
    controls: Iterable[ScopedControl], call: CallContext, now_ms: int
) -> Ceiling | None:
    """The lowest ceiling among ``controls`` that apply to ``call``; None if none does.

    Ties go to the narrower scope (more selectors), then the newer control, so a decision names
    the most specific reason for its mode.
    """
    best: ScopedControl | None = None
    for control in controls:
        if not control.applies(call, now_ms):
            continue
        if best is None or _before(control, best):
            best = control
    return None if best is None else Ceiling(best.mode, best)


def _before(a: ScopedControl, b: ScopedControl) -> bool:
    if a.mode.rank != b.mode.rank:
        return a.mode.rank < b.mode.rank
    width_a, width_b = len(a.scope.selectors()), len(b.scope.selectors())
    if width_a != width_b:
        return width_a > width_b
    return a.issued_at > b.issued_at
