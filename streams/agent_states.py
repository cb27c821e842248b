"""Per-agent monitor state: live AgentMonitors in a bounded LRU, the durable copy in a Faust
table (changelogged, so a restarted or rebalanced worker resumes the same windows and modes).

Writes go through ``Table.send_changelog(partition, ...)`` with the partition of the records
that carried the agent's events, rather than through ``table[key] = value``: that form only
works inside per-event iteration, and timers and batch code need to write too. The partition
comes from the event, never from hashing the key, because producers' partitioners differ.

Batches only mark an agent dirty; :meth:`AgentStates.checkpoint` writes each dirty agent once.
The stream checkpoints before it hands records to the sink, and records are acknowledged only
after that, so a committed offset never passes an event whose effect is not in the changelog.
Under steady load from many agents a 20 ms batch touches most of them, and serialising every
touched agent per batch was the worker's largest single cost (measured: a fifth of the main
thread at 1,000 small records/s); per checkpoint (each sink flush) it is a few percent.

Each stored value also holds, per source partition, the last offset already applied. Events
at or below it are skipped on re-delivery, so a crash between writing state and committing
offsets does not count the same events twice.

Values are ``detectors.monitor_state.StoredAgent`` records (versioned, named fields; how to
add a field is documented there). Values of release 1 (JSON) are read and rewritten in the
current form at the agent's next checkpoint. A value this release cannot read (written by a
newer release during a rolling upgrade or after a rollback, or damaged) does not stop the
worker: it is logged once, kept in ``quarantined``, and the agent starts fresh.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

from tripwire.detectors.agent_monitor import AgentMonitor
from tripwire.detectors.monitor_state import (
    STATE_VERSION,
    StateVersionError,
    StoredAgent,
    decode,
    encode,
)
from tripwire.detectors.policy import Policy
from tripwire.detectors.prompt_injection_hits import Scanner

log = logging.getLogger("tripwire.streams")


class AgentStates:
    def __init__(
        self,
        table: Any,
        policy: Policy,
        scanner: Scanner | None,
        live_capacity: int = 5_000,
    ) -> None:
        self.table = table
        self.policy = policy
        self.scanner = scanner
        self.live_capacity = live_capacity
        self._live: OrderedDict[str, AgentMonitor] = OrderedDict()
        # agent -> (partition its state lives in, {source partition: last applied offset})
        self._meta: dict[str, tuple[int, dict[str, int]]] = {}
        # agent -> when its breaker or run timeouts next need a tick (event-time ms)
        self.deadlines: dict[str, int] = {}
        # agent -> (wall-clock ms, event-time watermark) at its last save; see event_now()
        self._seen: dict[str, tuple[int, int]] = {}
        # agent -> (owner, workflow) from its latest events: who is alerted about it
        self.owners: dict[str, tuple[str | None, str | None]] = {}
        # agents updated since the last checkpoint; each is live until it is written
        self._dirty: set[str] = set()
        # changelog writes since the last checkpoint (evictions write early)
        self.writes_since_checkpoint = 0
        # agent -> the stored value this release could not read (see the module docstring)
        self.quarantined: dict[str, bytes] = {}

    def monitor(self, agent_id: str, workflow: str | None = None) -> AgentMonitor:
        live = self._live.get(agent_id)
        if live is not None:
            self._live.move_to_end(agent_id)
            return live
        stored = self._load(agent_id)
        policy = self.policy.for_agent(agent_id, workflow)
        if stored is not None:
            monitor = AgentMonitor.from_record(stored.monitor, policy, self.scanner)
            self._meta[agent_id] = (stored.partition, dict(stored.offsets))
        else:
            monitor = AgentMonitor(agent_id, policy, self.scanner)
        self._live[agent_id] = monitor
        if len(self._live) > self.live_capacity:
            # The table holds the evicted agent's state; it is rebuilt on its next event.
            evicted, evicted_monitor = self._live.popitem(last=False)
            if evicted in self._dirty:
                self._dirty.discard(evicted)
                self._write(evicted, evicted_monitor)
        return monitor

    def applied_offset(self, agent_id: str, source: str) -> int:
        meta = self._meta.get(agent_id)
        if meta is None:
            stored = self._load(agent_id)
            if stored is None:
                return -1
            meta = self._meta[agent_id] = (stored.partition, dict(stored.offsets))
        return meta[1].get(source, -1)

    def partition_of(self, agent_id: str) -> int | None:
        meta = self._meta.get(agent_id)
        if meta is not None:
            return meta[0]
        stored = self._load(agent_id)
        return None if stored is None else stored.partition

    def event_now(self, agent_id: str, wall_ms: int) -> int:
        """The agent's event-time "now" when nothing arrives: its watermark moved on by the
        wall time since it was last seen. Live traffic makes this the wall clock; a replay of
        old events keeps timers on the replay's own time axis instead of firing at once."""
        seen = self._seen.get(agent_id)
        if seen is None:
            stored = self._load(agent_id)
            if stored is None:
                return wall_ms
            seen = self._seen[agent_id] = (stored.wall_ms, stored.watermark)
        wall_then, watermark = seen
        if watermark <= 0:
            return wall_ms  # no event yet (e.g. killed before it ever ran): wall time only
        return watermark + max(0, wall_ms - wall_then)

    def update(self, agent_id: str, monitor: AgentMonitor, partition: int,
               source: str | None = None, offset: int | None = None,
               wall_ms: int | None = None) -> None:
        """Record that ``monitor``, the live one :meth:`monitor` returned, has new state applied
        up to ``offset`` of ``source``; it reaches the changelog at the next :meth:`checkpoint`
        (or when it is evicted from the live set first)."""
        meta = self._meta.get(agent_id)
        offsets = meta[1] if meta is not None else {}
        if source is not None and offset is not None:
            offsets[source] = offset
        self._meta[agent_id] = (partition, offsets)
        watermark = monitor.clock.watermark
        if wall_ms is None:
            wall_ms = int(time.time() * 1000)
            prev = self._seen.get(agent_id)
            if prev is not None and prev[1] == watermark:
                wall_ms = prev[0]  # no new event: keep the wall time the watermark was seen at
        self._seen[agent_id] = (wall_ms, watermark)
        deadline = next_deadline(monitor)
        if deadline is None:
            self.deadlines.pop(agent_id, None)
        else:
            self.deadlines[agent_id] = deadline
        self._dirty.add(agent_id)

    def checkpoint(self) -> set[int]:
        """Write every agent updated since the last checkpoint, once; the partitions written."""
        partitions: set[int] = set()
        for agent_id in self._dirty:
            partitions.add(self._write(agent_id, self._live[agent_id]))
        self._dirty.clear()
        self.writes_since_checkpoint = 0
        return partitions

    @property
    def dirty(self) -> int:
        return len(self._dirty)

    def _write(self, agent_id: str, monitor: AgentMonitor) -> int:
        partition, offsets = self._meta[agent_id]
        wall_ms, watermark = self._seen[agent_id]
        value = encode(StoredAgent(version=STATE_VERSION, partition=partition, offsets=offsets,
                                   wall_ms=wall_ms, watermark=watermark,
                                   monitor=monitor.to_record()))
        self.table.data[agent_id] = value
        self.table.send_changelog(partition, agent_id, value, value_serializer="raw")
        self.writes_since_checkpoint += 1
        return partition

    def agents_in_partition(self, partition: int) -> list[str]:
        """Every agent whose state lives in ``partition`` (for fleet-wide commands)."""
        out = []
        for agent_id, raw in list(self.table.data.items()):
            meta = self._meta.get(agent_id)
            if meta is not None:
                if meta[0] == partition:
                    out.append(agent_id)
            else:
                stored = self._load(agent_id) if raw else None
                if stored is not None and stored.partition == partition:
                    out.append(agent_id)
        return out

    def due(self, wall_ms: int) -> Iterator[tuple[str, int]]:
        """Agents whose deadline has come on their own event-time axis, with that time."""
        out = []
        for agent, deadline in self.deadlines.items():
            now = self.event_now(agent, wall_ms)
            if deadline <= now:
                out.append((agent, now))
        return iter(out)

    def forget_partitions(self, partitions: set[int]) -> None:
        """Drop live copies of agents whose partitions moved to another worker."""
        for agent_id in [a for a, (p, _) in self._meta.items() if p in partitions]:
            # Unwritten updates are dropped too: their records were never acknowledged, so the
            # new owner reads them again on top of the last checkpoint.
            self._dirty.discard(agent_id)
            self._live.pop(agent_id, None)
            self._meta.pop(agent_id, None)
            self.deadlines.pop(agent_id, None)
            self._seen.pop(agent_id, None)

    def adopt_restored(self, limit: int) -> int:
        """Give agents restored from the changelog (start-up, rebalance) their timers and idle
        clocks back; at most ``limit`` per call so a large table never stalls the stream."""
        adopted = 0
        for agent_id in list(self.table.data.keys()):
            if adopted >= limit:
                break
            if agent_id in self._meta:
                continue
            stored = self._load(agent_id)
            if stored is None:
                continue  # an end marker's tombstone
            self._meta[agent_id] = (stored.partition, dict(stored.offsets))
            self._seen.setdefault(agent_id, (stored.wall_ms, stored.watermark))
            monitor = AgentMonitor.from_record(stored.monitor, self.policy.for_agent(agent_id),
                                               self.scanner)
            deadline = next_deadline(monitor)
            if deadline is not None:
                self.deadlines[agent_id] = deadline
            adopted += 1
        return adopted

    def expire_idle(self, wall_ms: int, idle_ms: int, limit: int) -> list[str]:
        """Forget agents silent for ``idle_ms`` that are fully autonomous with nothing pending.

        A downgraded or pinned agent is kept however long it is quiet: forgetting it would
        silently hand its autonomy back.
        """
        expired: list[str] = []
        for agent_id, (wall, _) in list(self._seen.items()):
            if len(expired) >= limit:
                break
            if wall_ms - wall < idle_ms or agent_id in self.deadlines:
                continue
            monitor = self.monitor(agent_id)
            if monitor.mode != "autonomous" or monitor.breaker.wake_at is not None or any(
                    v.breaker.mode != "autonomous" for v in monitor.variants):
                continue  # a lowered shadow machine too: forgetting it would lift it
            partition = self._meta[agent_id][0] if agent_id in self._meta else None
            if partition is not None:
                self.table.send_changelog(partition, agent_id, None, value_serializer="raw")
            self.table.data.pop(agent_id, None)
            for index in (self._live, self._meta, self._seen, self.owners):
                index.pop(agent_id, None)
            self._dirty.discard(agent_id)
            expired.append(agent_id)
        return expired

    def _load(self, agent_id: str) -> StoredAgent | None:
        # Values stay bytes in the table, not objects: a 100,000-agent table then costs one
        # bytes object per agent instead of thousands of small Python objects each; and the
        # changelog is raw, so a value is written and restored as it is.
        raw = self.table.data.get(agent_id)
        if not raw:
            return None
        if agent_id in self.quarantined and self.quarantined[agent_id] == raw:
            return None
        try:
            return decode(raw)
        except StateVersionError as exc:
            self.quarantined[agent_id] = raw
            log.warning(
                "agent %s: stored state not restored, %s; %d bytes held aside in"
                " AgentStates.quarantined, the agent starts fresh", agent_id, exc.reason,
                len(raw))
            return None


def next_deadline(monitor: AgentMonitor) -> int | None:
    """The earliest time the monitor must be ticked even if the agent sends nothing."""
    return monitor.timer_due_ms
