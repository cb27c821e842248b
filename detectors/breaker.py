"""The per-agent circuit breaker: detections in, mode transitions out.

States (after resilience4j's CircuitBreakerStateMachine, with a mode ladder instead of a
single open/closed switch)::

    NORMAL     autonomous, nothing pending
    COOLING    downgraded; waits for a trip-free cool-down            (open)
    PROBATION  raised one mode on trial for probation_ms              (half-open)
    PINNED     an operator decided the mode; automation stands aside

Transitions:

* trip (a detection whose rule targets a mode), in NORMAL or COOLING: a target below the
  current mode lowers it at once and (re)starts the cool-down. A target at or above the mode
  never raises it; in COOLING it restarts the cool-down (the agent is still misbehaving).
* trip in PROBATION: probation failed. The mode drops to the lower of the target and the mode
  below the probation, and the cool-down grows x ``backoff_multiplier`` (up to
  ``max_cooldown_ms``), like Envoy's outlier ejection time.
* cool-down elapsed (COOLING): PROBATION one mode up.
* probation elapsed clean: the mode is kept; at autonomous the breaker is NORMAL again and
  the backoff resets, otherwise COOLING for the next climb and the backoff shrinks one step.
* stop_run (a run-scoped rule): stops that one run, mode unchanged. ``run_stop_limit`` stops
  within ``run_stop_window_ms`` escalate to an agent downgrade to ``run_stop_escalation``
  (a trip like any other); stops made while pinned do not count. A run is stopped once
  within the window, however many detections it draws.
* operator kill / pin (optionally until an expiry): PINNED at halted / the pinned mode, from
  any state; trips change nothing while pinned (run stops still happen, they are not a mode).
  release or pin expiry: back to automation at the current mode, NORMAL if autonomous and
  COOLING otherwise, so recovery is earned from there.

Time-driven steps happen in ``tick`` (and before every detection or command, so a trip is
judged against the state the clock says the breaker is in). Each step is stamped with its own
deadline, not with the time ``tick`` ran, so transitions do not depend on how often it runs.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal

from tripwire.detectors.containment import CLASS_LIMIT_PREFIX, VERSION_LIMIT_PREFIX
from tripwire.detectors.detection import Detection, Scope
from tripwire.detectors.policy import BreakerPolicy
from tripwire.detectors.windows import NO_TIME
from tripwire.schemas.modes import Mode

TRANSITION_NAMESPACE = uuid.UUID("0b6a3f4e-1c2d-4e5f-8a9b-6c7d8e9f0a1b")

MAX_BACKOFF_STEPS = 30  # beyond this the multiplier has long hit max_cooldown_ms
REMEMBERED_COMMANDS = 16  # command ids kept to apply each at most once (redelivery)
REMEMBERED_RUN_STOPS = 32  # bound on stopped runs kept (dedup), >= the largest run_stop_limit


class BreakerState(StrEnum):
    NORMAL = "normal"
    COOLING = "cooling"
    PROBATION = "probation"
    PINNED = "pinned"


Action = Literal[
    "downgrade",
    "escalate",
    "probation",
    "probation_failed",
    "probation_passed",
    "stop_run",
    "kill",
    "pin",
    "release",
    "pin_expired",
    "restrict_tool",
    "lift_tool",
    # earned autonomy (detectors/autonomy.py)
    "autonomy_start",
    "promote",
    "demote",
    "autonomy_cap",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class Transition:
    """One recorded change of a breaker, with why it happened."""

    transition_id: str
    agent_id: str
    seq: int
    ts: int
    action: Action
    prev_mode: Mode
    new_mode: Mode
    prev_state: BreakerState
    new_state: BreakerState
    rule: str | None
    scope: Scope
    run_id: str | None
    detection_ids: tuple[str, ...]
    next_change_ms: int | None
    """When the breaker moves on its own next (cool-down/probation end, pin expiry)."""
    source: Literal["breaker", "operator"]
    operator: str | None
    reason: str
    command_id: str | None = None
    """The operator command that caused it, so guards' acknowledgements can name it."""
    tool: str | None = None
    """For restrict_tool / lift_tool: the tool whose ceiling changed (the agent's mode did
    not); its control is an agent + tool scoped record."""
    tool_ceiling: Mode | None = None
    """The tool's new ceiling (autonomous when lifted)."""

    @property
    def mode_changed(self) -> bool:
        return self.prev_mode != self.new_mode

    def to_control(self) -> dict[str, Any]:
        """The ``schemas/control.avsc`` record. A stopped run is that run set to halted; a
        tool restriction is a scoped record on agent + tool."""
        if self.tool is not None:
            on_class = self.tool.startswith(CLASS_LIMIT_PREFIX)
            on_version = self.tool.startswith(VERSION_LIMIT_PREFIX)
            return {
                "agent_id": self.agent_id,
                "mode": str(self.tool_ceiling or Mode.AUTONOMOUS),
                "previous_mode": None,
                "scope": "scoped",
                "run_id": None,
                "reason": self.reason,
                "detection_ids": list(self.detection_ids),
                "seq": self.seq,
                "issued_at": self.ts,
                "rule": self.rule,
                "expires_at": None,
                "source": self.source,
                "tool": None if on_class or on_version else self.tool,
                "action_class": self.tool[len(CLASS_LIMIT_PREFIX):] if on_class else None,
                "agent_version": self.tool[len(VERSION_LIMIT_PREFIX):] if on_version else None,
                "command_id": self.command_id,
            }
        run_scoped = self.scope == "run"
        return {
            "agent_id": self.agent_id,
            "mode": str(Mode.HALTED if run_scoped else self.new_mode),
            "previous_mode": str(self.prev_mode),
            "scope": self.scope,
            "run_id": self.run_id,
            "reason": self.reason,
            "detection_ids": list(self.detection_ids),
            "seq": self.seq,
            "issued_at": self.ts,
            "rule": self.rule,
            "expires_at": self.next_change_ms if self.new_state == BreakerState.PINNED else None,
            "source": self.source,
            "command_id": self.command_id,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class Command:
    """An operator command (``schemas/command.avsc``); signature checks happen upstream."""

    command_id: str
    action: Literal["kill", "kill_all", "pin", "release", "release_all"]
    operator: str
    reason: str = ""
    mode: Mode | None = None
    duration_ms: int | None = None
    issued_at: int | None = None

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Command:
        mode = record.get("mode")
        return cls(
            command_id=record["command_id"],
            action=record["action"],
            operator=record["operator"],
            reason=record.get("reason") or "",
            mode=Mode(mode) if mode is not None else None,
            duration_ms=record.get("duration_ms"),
            issued_at=record.get("issued_at"),
        )


class Breaker:
    """One agent's breaker. Not thread-safe; the stream owns one per agent."""

    __slots__ = (
        "agent_id",
        "policy",
        "mode",
        "state",
        "deadline",
        "probation_base",
        "backoff",
        "seq",
        "clock_ms",
        "run_stops",
        "commands",
        "tool_limits",
        "versions",
        "ceiling",
    )

    def __init__(self, agent_id: str, policy: BreakerPolicy) -> None:
        self.agent_id = agent_id
        self.policy = policy
        self.mode = Mode.AUTONOMOUS
        self.state = BreakerState.NORMAL
        self.deadline: int | None = None  # end of cool-down / probation / pin
        self.probation_base = Mode.AUTONOMOUS  # the mode a failed probation falls back to
        self.backoff = 0  # failed probations not yet earned back
        self.seq = 0
        self.clock_ms = NO_TIME  # latest time seen; time never runs backwards in here
        # Tuples, not lists: the empty tuple is shared, so 100k quiet breakers store nothing.
        # (ts, run_id, detection_id, counts): counts is 1 while the stop still counts toward
        # escalation, 0 once it has escalated or if it happened while pinned; the entry stays
        # so the same run is not stopped twice.
        self.run_stops: tuple[tuple[int, str, str, int], ...] = ()
        self.commands: tuple[str, ...] = ()
        # (tool, ceiling, lifts_at, detector): tools restricted for this agent (narrow
        # containment), and the detector that tripped each.
        self.tool_limits: tuple[tuple[str, str, int, str], ...] = ()
        # (version, last seen): versions of this agent seen running, for narrow_versions.
        self.versions: tuple[tuple[str, int], ...] = ()
        # The highest mode recovery climbs to: the rung earned autonomy allows (autonomous
        # unless the policy's autonomy section says otherwise).
        self.ceiling = Mode.AUTONOMOUS

    @property
    def wake_at(self) -> int | None:
        """When the breaker next changes something on its own: its deadline or the earliest
        tool restriction lifting."""
        if not self.tool_limits:
            return self.deadline  # the usual case: read after every event of every agent
        times = [lifts for _, _, lifts, _ in self.tool_limits]
        if self.deadline is not None:
            times.append(self.deadline)
        return min(times) if times else None

    # --- entry points ---------------------------------------------------------------------

    def saw_version(self, version: str, ts: int) -> None:
        """An event of this agent ran ``version`` at ``ts`` (called when the version an
        agent's events carry changes, so it costs nothing while one version runs)."""
        kept = tuple(v for v in self.versions if v[0] != version)[-7:]
        self.versions = (*kept, (version, ts))

    def _running_versions(self, now: int) -> set[str]:
        horizon = now - self.policy.containment.version_window_ms
        latest = max((ts for _, ts in self.versions), default=None)
        # The most recent switch marks the current version as running from then on.
        return {v for v, ts in self.versions if ts > horizon or ts == latest}

    def on_detections(
        self, detections: Iterable[Detection], now_ms: int, version: str | None = None
    ) -> list[Transition]:
        """``version``: the agent version of the event the detections came from, if known."""
        now = self._now(now_ms)
        out = self._advance(now)
        for det in detections:
            rule = self.policy.rule_for(det.detector, det.metric, det.scope, det.severity)
            if rule is None or rule.target == "none":
                continue
            if det.tool is None and det.scope == "agent" and any(
                    limit[3] == det.detector and not limit[0].startswith(VERSION_LIMIT_PREFIX)
                    for limit in self.tool_limits):
                # The same detector already contained this agent's tool(s): the agent-wide
                # figure counts the same calls. Escalation to the agent goes by how many
                # tools are restricted (containment.tool_trip_limit).
                continue
            if rule.target == "stop_run":
                self._stop_run(det, rule.name, now, out)
            elif self.state != BreakerState.PINNED:
                why = f"{det.detector}: {det.message}"
                if det.tool is not None and self.policy.containment.narrow_tools:
                    self._restrict_tool(det.tool, Mode(rule.target), rule.name,
                                        (det.detection_id,), det.detector, why, now, out)
                elif version is not None and self._contain_version(
                        version, Mode(rule.target), rule.name, det, why, now, out):
                    pass
                else:
                    self._trip(Mode(rule.target), rule.name, (det.detection_id,), why, now, out)
        return out

    def tick(self, now_ms: int) -> list[Transition]:
        return self._advance(self._now(now_ms))

    def on_command(self, command: Command | Mapping[str, Any], now_ms: int) -> list[Transition]:
        cmd = command if isinstance(command, Command) else Command.from_record(command)
        now = self._now(now_ms)
        out = self._advance(now)
        if cmd.command_id in self.commands:
            return out
        self.commands = (*self.commands, cmd.command_id)[-REMEMBERED_COMMANDS:]
        reason = (
            f"operator {cmd.operator}: {cmd.reason}" if cmd.reason else f"operator {cmd.operator}"
        )
        if cmd.action in ("release", "release_all"):
            if self.state == BreakerState.PINNED:
                self._unpin(now, "release", cmd.operator, reason, out, cmd.command_id)
            return out
        if cmd.action in ("kill", "kill_all"):
            target, until, action = Mode.HALTED, None, "kill"
        else:
            if cmd.mode is None:
                raise ValueError(f"command {cmd.command_id}: pin needs a mode")
            target, action = cmd.mode, "pin"
            start = cmd.issued_at if cmd.issued_at is not None else now
            until = start + cmd.duration_ms if cmd.duration_ms is not None else None
        if self.state == BreakerState.PINNED and self.mode == target and self.deadline == until:
            return out
        self._move(
            out,
            now,
            action,
            target,
            BreakerState.PINNED,
            until,
            rule=None,
            source="operator",
            operator=cmd.operator,
            reason=reason,
            command_id=cmd.command_id,
        )
        out += self._advance(now)  # a pin whose expiry has already passed lapses at once
        return out

    def on_earned(self, level: Mode, action: Action, reason: str, now_ms: int) -> list[Transition]:
        """Earned autonomy moved the agent's rung to ``level`` (start, promote, demote, cap).

        The rung becomes the ceiling of recovery. At rest (NORMAL) the mode follows the rung
        at once; while recovering from a trip the mode only drops if the rung is below it (a
        promotion waits for the recovery to climb); while pinned only the ceiling changes.
        """
        now = self._now(now_ms)
        out = self._advance(now)
        self.ceiling = level
        if self.state == BreakerState.PINNED:
            return out
        if self.state == BreakerState.NORMAL or level.rank < self.mode.rank:
            if level != self.mode:
                self._move(out, now, action, level, BreakerState.NORMAL, None,
                           rule=f"autonomy.{action.removeprefix('autonomy_')}", reason=reason)
        return out

    # --- transitions ----------------------------------------------------------------------

    def _trip(
        self,
        target: Mode,
        rule: str,
        detection_ids: tuple[str, ...],
        why: str,
        now: int,
        out: list[Transition],
        action: Action = "downgrade",
    ) -> None:
        if self.state == BreakerState.PROBATION:
            self.backoff = min(self.backoff + 1, MAX_BACKOFF_STEPS)
            mode = target.lowest(self.probation_base)
            cooldown = self._cooldown()
            self._move(
                out,
                now,
                "probation_failed",
                mode,
                BreakerState.COOLING,
                now + cooldown,
                rule=rule,
                detection_ids=detection_ids,
                reason=f"probation at {self.mode} failed, next cool-down {cooldown // 1000} s: "
                f"{why}",
            )
        elif target.rank < self.mode.rank:
            cooldown = self._cooldown()
            self._move(
                out,
                now,
                action,
                target,
                BreakerState.COOLING,
                now + cooldown,
                rule=rule,
                detection_ids=detection_ids,
                reason=why,
            )
        elif self.state == BreakerState.COOLING:
            self.deadline = now + self._cooldown()

    def _contain_version(
        self, version: str, target: Mode, rule: str, det: Detection, why: str, now: int,
        out: list[Transition],
    ) -> bool:
        """Restrict this agent + version when other versions of it are running and not yet
        restricted (containment.narrow_versions); False when the agent should trip instead."""
        if not self.policy.containment.narrow_versions:
            return False
        running = self._running_versions(now)
        if version not in running or len(running) < 2:
            return False
        restricted = {limit[0][len(VERSION_LIMIT_PREFIX):] for limit in self.tool_limits
                      if limit[0].startswith(VERSION_LIMIT_PREFIX)}
        if not running - restricted - {version}:
            return False  # no healthy version left: the agent itself trips
        limit = VERSION_LIMIT_PREFIX + version
        lifts = now + (self.policy.containment.tool_cooldown_ms or self.policy.cooldown_ms)
        current = next((x for x in self.tool_limits if x[0] == limit), None)
        others = tuple(x for x in self.tool_limits if x[0] != limit)
        if target.rank >= self.mode.rank:
            return True
        if current is not None and Mode(current[1]).rank <= target.rank:
            self.tool_limits = (*others, (limit, current[1], lifts, current[3]))
            return True
        self.tool_limits = (*others, (limit, str(target), lifts, det.detector))
        self.seq += 1
        healthy = ", ".join(sorted(running - {version}))
        out.append(self._tool_transition(
            "restrict_tool", limit, target, rule, (det.detection_id,), now,
            f"version {version} restricted to {target} (trips concentrated in it; "
            f"{healthy} still running): {why}"))
        return True

    def cap(self, limit: str, target: Mode, rule: str, why: str, now_ms: int) -> list[Transition]:
        """A rate cap exceeded: restrict ``limit`` (a tool or pattern, or
        ``action_class=<c>``) for this agent like a tool trip. Nothing while pinned."""
        now = self._now(now_ms)
        out = self._advance(now)
        if self.state != BreakerState.PINNED:
            self._restrict_tool(limit, target, rule, (), "rate_cap", why, now, out)
        return out

    def _restrict_tool(
        self, tool: str, target: Mode, rule: str, detection_ids: tuple[str, ...],
        detector: str, why: str, now: int, out: list[Transition],
    ) -> None:
        """Cap one tool of this agent at ``target``; escalate to the agent when too many of
        its tools are capped at once (detectors/containment.py)."""
        containment = self.policy.containment
        lifts = now + (containment.tool_cooldown_ms or self.policy.cooldown_ms)
        current = next((limit for limit in self.tool_limits if limit[0] == tool), None)
        others = tuple(limit for limit in self.tool_limits if limit[0] != tool)
        if target.rank >= self.mode.rank:
            return  # the agent's own mode already allows no more than this
        if current is not None and Mode(current[1]).rank <= target.rank:
            self.tool_limits = (*others, (tool, current[1], lifts, current[3]))  # still tripping
            return
        self.tool_limits = (*others, (tool, str(target), lifts, detector))
        self.seq += 1
        out.append(self._tool_transition(
            "restrict_tool", tool, target, rule, detection_ids, now,
            f"{tool} restricted to {target} for this agent (narrow containment): {why}"))
        tool_limits = [limit for limit in self.tool_limits
                       if not limit[0].startswith(VERSION_LIMIT_PREFIX)]
        if len(tool_limits) >= containment.tool_trip_limit:
            tools = ", ".join(sorted(limit[0] for limit in tool_limits))
            worst = min((Mode(limit[1]) for limit in tool_limits), key=lambda m: m.rank)
            self._trip(worst, "tools_tripped", detection_ids,
                       f"{len(tool_limits)} tools restricted at once ({tools}), limit "
                       f"{containment.tool_trip_limit}: escalated to the agent", now, out,
                       action="escalate")

    def _lift_tools(self, now: int, out: list[Transition]) -> None:
        due = sorted((lifts, tool) for tool, _, lifts, _ in self.tool_limits if lifts <= now)
        if not due:
            return
        self.tool_limits = tuple(limit for limit in self.tool_limits if limit[2] > now)
        for lifts, tool in due:
            self.seq += 1
            out.append(self._tool_transition(
                "lift_tool", tool, Mode.AUTONOMOUS, "tool_cooldown_elapsed", (), lifts,
                f"no trips of {tool} for the cool-down: restriction lifted"))

    def _tool_transition(
        self, action: Action, tool: str, ceiling: Mode, rule: str,
        detection_ids: tuple[str, ...], now: int, reason: str,
    ) -> Transition:
        return Transition(
            transition_id=str(uuid.uuid5(TRANSITION_NAMESPACE, f"{self.agent_id}\x1f{self.seq}")),
            agent_id=self.agent_id, seq=self.seq, ts=now, action=action, prev_mode=self.mode,
            new_mode=self.mode, prev_state=self.state, new_state=self.state, rule=rule,
            scope="agent", run_id=None, detection_ids=detection_ids, next_change_ms=None,
            source="breaker", operator=None, reason=reason, tool=tool, tool_ceiling=ceiling)

    def _stop_run(self, det: Detection, rule: str, now: int, out: list[Transition]) -> None:
        run_id = det.run_id
        if run_id is None:
            return
        horizon = now - self.policy.run_stop_window_ms
        stops = tuple(s for s in self.run_stops if s[0] > horizon)
        if any(s[1] == run_id for s in stops):
            self.run_stops = stops
            return
        pinned = self.state == BreakerState.PINNED
        stop = (now, run_id, det.detection_id, 0 if pinned else 1)
        self.run_stops = (*stops, stop)[-REMEMBERED_RUN_STOPS:]
        self._move(
            out,
            now,
            "stop_run",
            self.mode,
            self.state,
            self.deadline,
            rule=rule,
            scope="run",
            run_id=run_id,
            detection_ids=(det.detection_id,),
            reason=f"{det.detector}: {det.message}",
        )
        counted = [s for s in self.run_stops if s[3]]
        if pinned or len(counted) < self.policy.run_stop_limit:
            return
        ids = tuple(s[2] for s in counted)
        self.run_stops = tuple((ts, r, d, 0) for ts, r, d, _ in self.run_stops)
        count = len(counted)
        self._trip(
            self.policy.run_stop_escalation,
            "repeated_run_stops",
            ids,
            f"{count} runs stopped within {self.policy.run_stop_window_ms // 1000} s",
            now,
            out,
            action="escalate",
        )

    def _advance(self, now: int) -> list[Transition]:
        out: list[Transition] = []
        # Tool restrictions lifting and the recovery deadline, in time order: the steps then
        # do not depend on how often the breaker is ticked (a tick covering both gives what a
        # tick at each would), which shadow variants and the backtest rely on.
        while True:
            due = self.deadline if self.deadline is not None and now >= self.deadline else None
            if self.tool_limits:
                lift = min(limit[2] for limit in self.tool_limits)
                if lift <= now and (due is None or lift <= due):
                    self._lift_tools(lift, out)
                    continue
            if due is None:
                return out
            at = due
            if self.state == BreakerState.PINNED:
                self._unpin(at, "pin_expired", None, "pin expired", out)
            elif self.state == BreakerState.COOLING and self.mode.rank >= self.ceiling.rank:
                self._move(out, at, "probation_passed", self.mode, BreakerState.NORMAL, None,
                           rule="ceiling_reached",
                           reason=f"no trips for the cool-down: {self.mode} is the agent's "
                           "earned ceiling, recovery ends here")
            elif self.state == BreakerState.COOLING:
                base = self.mode
                raised = base.one_level_up()
                self.probation_base = base
                self._move(
                    out,
                    at,
                    "probation",
                    raised,
                    BreakerState.PROBATION,
                    at + self.policy.probation_ms,
                    rule="cooldown_elapsed",
                    reason=f"no trips for the cool-down: on probation at {raised}",
                )
            elif self.mode.rank >= self.ceiling.rank:
                self.backoff = 0
                self._move(
                    out,
                    at,
                    "probation_passed",
                    self.mode,
                    BreakerState.NORMAL,
                    None,
                    rule="probation_passed",
                    reason=f"clean probation: {self.mode} again",
                )
            else:
                self.backoff = max(self.backoff - 1, 0)
                self._move(
                    out,
                    at,
                    "probation_passed",
                    self.mode,
                    BreakerState.COOLING,
                    at + self._cooldown(),
                    rule="probation_passed",
                    reason=f"clean probation: {self.mode} kept, next climb after the cool-down",
                )

    def _unpin(
        self, now: int, action: Action, operator: str | None, reason: str, out: list[Transition],
        command_id: str | None = None,
    ) -> None:
        if self.mode.rank >= self.ceiling.rank:
            state, deadline = BreakerState.NORMAL, None
        else:
            state, deadline = BreakerState.COOLING, now + self._cooldown()
        self._move(
            out,
            now,
            action,
            self.mode,
            state,
            deadline,
            rule=None,
            source="operator" if operator else "breaker",
            operator=operator,
            reason=f"{reason}; recovery starts from {self.mode}",
            command_id=command_id,
        )

    def _move(
        self,
        out: list[Transition],
        now: int,
        action: Action,
        mode: Mode,
        state: BreakerState,
        deadline: int | None,
        *,
        rule: str | None,
        reason: str,
        scope: Scope = "agent",
        run_id: str | None = None,
        detection_ids: tuple[str, ...] = (),
        source: Literal["breaker", "operator"] = "breaker",
        operator: str | None = None,
        command_id: str | None = None,
    ) -> None:
        self.seq += 1
        out.append(
            Transition(
                transition_id=str(
                    uuid.uuid5(TRANSITION_NAMESPACE, f"{self.agent_id}\x1f{self.seq}")
                ),
                agent_id=self.agent_id,
                seq=self.seq,
                ts=now,
                action=action,
                prev_mode=self.mode,
                new_mode=mode,
                prev_state=self.state,
                new_state=state,
                rule=rule,
                scope=scope,
                run_id=run_id,
                detection_ids=detection_ids,
                next_change_ms=deadline,
                source=source,
                operator=operator,
                reason=reason,
                command_id=command_id,
            )
        )
        self.mode, self.state, self.deadline = mode, state, deadline

    def _cooldown(self) -> int:
        policy = self.policy
        grown = policy.cooldown_ms * policy.backoff_multiplier**self.backoff
        return int(min(grown, policy.max_cooldown_ms))

    def _now(self, now_ms: int) -> int:
        # Callers mix event time and wall time; never letting time go backwards keeps
        # deadlines and transition timestamps monotonic.
        if now_ms > self.clock_ms:
            self.clock_ms = now_ms
        return self.clock_ms

    # --- state ----------------------------------------------------------------------------

    def to_state(self) -> list:
        stops: list = []
        for ts, run_id, detection_id, counts in self.run_stops:
            stops += [ts, run_id, detection_id, counts]
        return [
            str(self.mode),
            str(self.state),
            self.deadline if self.deadline is not None else NO_TIME,
            str(self.probation_base),
            self.backoff,
            self.seq,
            self.clock_ms,
            stops,
            list(self.commands),
            [part for limit in self.tool_limits for part in limit],
            [part for seen in self.versions for part in seen],
            str(self.ceiling),
        ]

    @classmethod
    def from_state(cls, state: list, agent_id: str, policy: BreakerPolicy) -> Breaker:
        breaker = cls(agent_id, policy)
        breaker.mode = Mode(state[0])
        breaker.state = BreakerState(state[1])
        breaker.deadline = int(state[2]) if int(state[2]) != NO_TIME else None
        breaker.probation_base = Mode(state[3])
        breaker.backoff, breaker.seq, breaker.clock_ms = int(state[4]), int(state[5]), int(state[6])
        stops = state[7]
        breaker.run_stops = tuple(
            (int(stops[i]), str(stops[i + 1]), str(stops[i + 2]), int(stops[i + 3]))
            for i in range(0, len(stops), 4)
        )
        breaker.commands = tuple(str(c) for c in state[8])
        limits = state[9] if len(state) > 9 else []  # states written before tool limits
        breaker.tool_limits = tuple(
            (str(limits[i]), str(limits[i + 1]), int(limits[i + 2]), str(limits[i + 3]))
            for i in range(0, len(limits), 4)
        )
        seen = state[10] if len(state) > 10 else []
        breaker.versions = tuple((str(seen[i]), int(seen[i + 1]))
                                 for i in range(0, len(seen), 2))
        if len(state) > 11:  # state written before earned autonomy has no ceiling
            breaker.ceiling = Mode(state[11])
        return breaker
