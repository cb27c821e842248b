"""The stored form of one agent's state: versioned records with named fields.

A record is a msgspec struct encoded as a MessagePack *array* (``array_like=True``): as
compact as the positional JSON it replaces (no field names on the wire), but every field
has a name in code, and the record says which version wrote it.

Versions:

* **1** (release 1, up to commit 1eee097): a JSON object
  ``{"p", "o", "w", "wm", "m": {"v": 1, "agent", "clock", "maint", "loops", "denials",
  "spend", "injection", "breaker"}}``. Read by :func:`_read_v1`; never written any more.
* **2** (this release): :class:`StoredAgent`, MessagePack. Fields appended since, each
  with its default: ``MonitorState.autonomy`` (earned autonomy), ``MonitorState.variants``
  (shadow rules' state machines, :class:`VariantState`).

How to change the state (read before adding a field):

* **Adding a field** (a new detector, a new counter): append it *at the end* of
  :class:`MonitorState` (or :class:`StoredAgent`) **with a default**. Records written before
  it decode with the default; records written with it are still read by the previous
  release, which ignores trailing fields it does not know, so a rolling upgrade and a
  rollback both work. ``STATE_VERSION`` does not change. Inside a detector's own positional
  list (its ``to_state``), the same rule holds: append, and read ``state[i]`` only when
  ``len(state) > i``.
* **Anything else** (removing, reordering or re-typing a field): bump ``STATE_VERSION`` and
  add a reader for the old version to ``_READERS`` that builds the new record from the old
  one. A worker that meets a version newer than it knows does not crash: the caller
  quarantines that agent's record (see ``streams.agent_states``) and the agent starts fresh.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import msgspec

STATE_VERSION = 2
"""Version this release writes. Readers exist for every older version in ``_READERS``."""


class MonitorState(msgspec.Struct, array_like=True):
    """One ``AgentMonitor``: its clock and each detector's own state (their ``to_state``)."""

    agent: str
    clock: list[Any]
    next_maintenance: int
    loops: list[Any]
    denials: list[Any]
    spend: list[Any]
    injection: list[Any]
    breaker: list[Any]
    # New fields go here, each with a default (see the module docstring).
    autonomy: list[Any] | None = None
    """Earned autonomy's tracker (``detectors.autonomy``); None while it is at rest."""
    variants: dict[str, VariantState] | None = None
    """Shadow variants' state machines by shadow element name (``detectors.shadow``); None
    when the policy marks nothing shadow."""


class VariantState(msgspec.Struct, array_like=True):
    """One variant of an ``AgentMonitor`` (``agent_monitor.Variant``): ``monitor`` for one
    with a monitor of its own, otherwise its breaker, its own detectors' states (by
    monitor attribute: loops, denials, spend, injection; None when it shares them all) and
    its earned-autonomy tracker (None at rest)."""

    breaker: list[Any] | None = None
    own: dict[str, list[Any]] | None = None
    autonomy: list[Any] | None = None
    monitor: MonitorState | None = None
    # New fields go here, each with a default (see the module docstring).


class StoredAgent(msgspec.Struct, array_like=True):
    """The changelog value of one agent."""

    version: int
    partition: int
    """The partition the agent's state lives in (that of its events)."""
    offsets: dict[str, int]
    """Per source partition, the last offset whose events are applied."""
    wall_ms: int
    """Wall clock at the last save, with ``watermark``: the agent's idle clock."""
    watermark: int
    monitor: MonitorState
    # New fields go here, each with a default (see the module docstring).


class StateVersionError(ValueError):
    """A record written by a newer release (or not a state record at all)."""

    def __init__(self, version: object, reason: str) -> None:
        super().__init__(reason)
        self.version = version
        self.reason = reason


class _Peek(msgspec.Struct, array_like=True):
    version: int


_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder(StoredAgent)
_PEEK = msgspec.msgpack.Decoder(_Peek)


def encode(record: StoredAgent) -> bytes:
    return _ENCODER.encode(record)


def monitor_from_plain(m: dict[str, Any]) -> MonitorState:
    """``AgentMonitor.to_state()`` output as a record: release 1 wrote this layout (``"v": 1``)
    inside its JSON values, and to_state keeps it."""
    variants = m.get("variants")
    return MonitorState(
        agent=str(m["agent"]), clock=m["clock"], next_maintenance=int(m["maint"]),
        loops=m["loops"], denials=m["denials"], spend=m["spend"], injection=m["injection"],
        breaker=m["breaker"], autonomy=m.get("autonomy"),
        variants={str(name): _variant_from_plain(v) for name, v in variants.items()}
        if variants else None,
    )


def _variant_from_plain(v: dict[str, Any]) -> VariantState:
    if "monitor" in v:
        return VariantState(monitor=monitor_from_plain(v["monitor"]))
    return VariantState(breaker=v.get("breaker"), own=v.get("own"), autonomy=v.get("autonomy"))


def _read_v1(raw: bytes) -> StoredAgent:
    value = json.loads(raw)
    m = value["m"]
    if m.get("v") != 1:
        raise StateVersionError(m.get("v"), f"JSON agent state of version {m.get('v')!r}")
    return StoredAgent(
        version=STATE_VERSION, partition=int(value["p"]),
        offsets={str(k): int(v) for k, v in value["o"].items()},
        wall_ms=int(value["w"]), watermark=int(value["wm"]), monitor=monitor_from_plain(m),
    )


_READERS: dict[int, Callable[[bytes], StoredAgent]] = {}
"""Readers of older MessagePack versions (none yet: 2 is the first); JSON is version 1."""


def decode(raw: bytes) -> StoredAgent:
    """Any version this release knows, as the current record; StateVersionError otherwise."""
    if raw[:1] == b"{":
        try:
            return _read_v1(raw)
        except (ValueError, KeyError, TypeError) as exc:
            if isinstance(exc, StateVersionError):
                raise
            raise StateVersionError(None, f"unreadable JSON agent state: {exc}") from exc
    try:
        version = _PEEK.decode(raw).version
    except msgspec.DecodeError as exc:
        raise StateVersionError(None, f"not an agent state record: {exc}") from exc
    if version == STATE_VERSION:
        try:
            return _DECODER.decode(raw)
        except msgspec.DecodeError as exc:
            raise StateVersionError(version, f"agent state record is damaged: {exc}") from exc
    reader = _READERS.get(version)
    if reader is None:
        newer = "newer release" if version > STATE_VERSION else "release this one cannot read"
        raise StateVersionError(
            version, f"agent state version {version} was written by a {newer}"
            f" (this release reads versions 1 to {STATE_VERSION})")
    return reader(raw)
