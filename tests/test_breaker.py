"""Breaker: every mode x every trigger, table-driven, plus the recovery and operator rules.

Test policy: cool-down 1 s, probation 0.5 s, backoff x2 capped at 3.5 s, 3 run stops within
10 s escalate to suggest_only. A detection from detector ``to_<mode>`` trips to that mode.
"""

from __future__ import annotations

import json
from itertools import count

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tripwire.detectors.breaker import Breaker, BreakerState, Command, Transition
from tripwire.detectors.detection import Detection
from tripwire.detectors.policy import BreakerPolicy, BreakerRule
from tripwire.schemas.modes import LADDER, Mode

COOLING, NORMAL, PINNED, PROBATION = (
    BreakerState.COOLING,
    BreakerState.NORMAL,
    BreakerState.PINNED,
    BreakerState.PROBATION,
)
COOLDOWN, PROBATION_MS, CAP = 1_000, 500, 3_500
TARGETS = [m for m in LADDER if m != Mode.AUTONOMOUS]
_ids = count()


def policy() -> BreakerPolicy:
    rules = [BreakerRule(name=f"to_{m}", detector=f"to_{m}", target=m) for m in TARGETS]
    rules.append(BreakerRule(name="runaway", scope="run", target="stop_run"))
    rules.append(BreakerRule(name="ignored", detector="noise", target="none"))
    return BreakerPolicy(
        rules=tuple(rules),
        cooldown_ms=COOLDOWN,
        probation_ms=PROBATION_MS,
        backoff_multiplier=2.0,
        max_cooldown_ms=CAP,
        run_stop_limit=3,
        run_stop_window_ms=10_000,
        run_stop_escalation=Mode.SUGGEST_ONLY,
    )


def trip(target: Mode | str, run_id: str | None = None) -> Detection:
    detector = (
        target if isinstance(target, str) and not isinstance(target, Mode) else f"to_{target}"
    )
    return Detection.build(
        detector="loop" if run_id else detector,
        agent_id="agent-1",
        metric="m",
        value=1.0,
        threshold=1.0,
        window_ms=None,
        severity="S2",
        evidence_event_ids=(f"e{next(_ids)}",),
        ts=0,
        message="test",
        scope="run" if run_id else "agent",
        run_id=run_id,
    )


def cmd(action: str, mode: Mode | None = None, duration: int | None = None, at: int = 0) -> Command:
    return Command(
        command_id=f"c{next(_ids)}",
        action=action,  # type: ignore[arg-type]
        operator="ops@example.com",
        reason="testing",
        mode=mode,
        duration_ms=duration,
        issued_at=at,
    )


# --- reaching each start state ------------------------------------------------------------

T = 100_000  # when the trigger under test happens; setups finish before it


def in_state(mode: Mode, state: BreakerState) -> Breaker:
    """A breaker in ``state`` at ``mode`` at time T with a fresh deadline ahead of T."""
    b = Breaker("agent-1", policy())
    if state == NORMAL:
        assert mode == Mode.AUTONOMOUS
    elif state == COOLING:
        b.on_detections([trip(mode)], T - 10)
    elif state == PROBATION:
        base = LADDER[mode.rank - 1]
        b.on_detections([trip(base)], T - COOLDOWN - 10)
        b.tick(T - 10)  # cool-down elapsed at T - 10: probation until T + 490
    elif state == PINNED:
        b.on_command(cmd("pin", mode), T - 10)
    assert (b.mode, b.state) == (mode, state)
    return b


START_STATES = (
    [(Mode.AUTONOMOUS, NORMAL)]
    + [(m, COOLING) for m in TARGETS]
    + [(m, PROBATION) for m in LADDER[1:]]
    + [(m, PINNED) for m in LADDER]
)


def state_id(case: tuple[Mode, BreakerState]) -> str:
    return f"{case[1]}-{case[0]}"


# --- trips: each state x each target ------------------------------------------------------


@pytest.mark.parametrize("start", START_STATES, ids=state_id)
@pytest.mark.parametrize("target", TARGETS, ids=str)
def test_trip_from_every_state_to_every_target(
    start: tuple[Mode, BreakerState], target: Mode
) -> None:
    mode, state = start
    b = in_state(mode, state)
    deadline_before = b.deadline
    out = b.on_detections([trip(target)], T)
    if state == PINNED:
        assert out == [] and (b.mode, b.state, b.deadline) == (mode, PINNED, deadline_before)
    elif state == PROBATION:
        base = LADDER[mode.rank - 1]
        expected = target if target.rank < base.rank else base
        [t] = out
        assert (t.action, t.prev_mode, t.new_mode, t.new_state) == (
            "probation_failed",
            mode,
            expected,
            COOLING,
        )
        assert b.deadline == T + 2 * COOLDOWN  # backoff grew
    elif target.rank < mode.rank:
        [t] = out
        assert (t.action, t.prev_mode, t.new_mode, t.prev_state, t.new_state) == (
            "downgrade",
            mode,
            target,
            state,
            COOLING,
        )
        assert t.rule == f"to_{target}" and t.scope == "agent" and t.run_id is None
        assert b.deadline == t.next_change_ms == T + COOLDOWN
    else:
        # Equal or higher target: never raises; while cooling it restarts the cool-down.
        assert out == [] and (b.mode, b.state) == (mode, state)
        assert b.deadline == T + COOLDOWN


def test_detections_mapped_to_none_or_no_rule_change_nothing() -> None:
    b = Breaker("agent-1", policy())
    assert b.on_detections([trip("noise"), trip("unmatched")], T) == []
    assert (b.mode, b.state, b.seq) == (Mode.AUTONOMOUS, NORMAL, 0)


# --- time: cool-down, probation, backoff --------------------------------------------------


@pytest.mark.parametrize("mode", TARGETS, ids=str)
def test_cooldown_expiry_starts_probation_one_level_up(mode: Mode) -> None:
    b = in_state(mode, COOLING)
    assert b.tick(T - 10 + COOLDOWN - 1) == []
    [t] = b.tick(T - 10 + COOLDOWN + 400)  # a late tick: stamped with the deadline anyway
    assert (t.action, t.prev_mode, t.new_mode, t.new_state) == (
        "probation",
        mode,
        mode.one_level_up(),
        PROBATION,
    )
    assert t.ts == T - 10 + COOLDOWN and t.rule == "cooldown_elapsed"


@pytest.mark.parametrize("mode", LADDER[1:], ids=str)
def test_clean_probation_keeps_the_level(mode: Mode) -> None:
    b = in_state(mode, PROBATION)
    assert b.tick(T + PROBATION_MS - 11) == []
    [t] = b.tick(T + PROBATION_MS - 10)
    expected_state = NORMAL if mode == Mode.AUTONOMOUS else COOLING
    assert (t.action, t.prev_mode, t.new_mode, t.new_state) == (
        "probation_passed",
        mode,
        mode,
        expected_state,
    )
    assert b.deadline == (None if mode == Mode.AUTONOMOUS else T + PROBATION_MS - 10 + COOLDOWN)


def test_recovery_from_halted_climbs_one_level_per_cooldown_and_probation() -> None:
    b = Breaker("agent-1", policy())
    b.on_detections([trip(Mode.HALTED)], 0)
    out = b.tick(10**9)
    assert [(t.action, t.new_mode) for t in out] == [
        ("probation", Mode.READ_ONLY),
        ("probation_passed", Mode.READ_ONLY),
        ("probation", Mode.SUGGEST_ONLY),
        ("probation_passed", Mode.SUGGEST_ONLY),
        ("probation", Mode.APPROVE_TO_ACT),
        ("probation_passed", Mode.APPROVE_TO_ACT),
        ("probation", Mode.AUTONOMOUS),
        ("probation_passed", Mode.AUTONOMOUS),
    ]
    step = COOLDOWN + PROBATION_MS
    assert [t.ts for t in out] == [
        x for k in range(4) for x in (k * step + COOLDOWN, (k + 1) * step)
    ]
    assert b.state == NORMAL and b.deadline is None


def test_failed_probations_double_the_cooldown_up_to_the_cap_and_earn_it_back() -> None:
    b = Breaker("agent-1", policy())
    b.on_detections([trip(Mode.SUGGEST_ONLY)], 0)
    cooldowns = []
    now = 0
    for _ in range(4):
        [probation] = b.tick(b.deadline or 0)
        now = probation.ts + 1
        [failed] = b.on_detections([trip(Mode.APPROVE_TO_ACT)], now)
        assert failed.action == "probation_failed" and failed.new_mode == Mode.SUGGEST_ONLY
        cooldowns.append((b.deadline or 0) - now)
    assert cooldowns == [2_000, 3_500, 3_500, 3_500]
    # Each clean probation shrinks the backoff one step; reaching autonomous resets it.
    out = b.tick(10**9)
    assert out[-1].new_state == NORMAL and b.backoff == 0


def test_trip_while_cooling_at_a_lower_target_keeps_the_backoff() -> None:
    b = Breaker("agent-1", policy())
    b.on_detections([trip(Mode.APPROVE_TO_ACT)], 0)
    [t] = b.on_detections([trip(Mode.READ_ONLY)], 500)
    assert t.action == "downgrade" and b.deadline == 500 + COOLDOWN and b.backoff == 0


# --- run stops ----------------------------------------------------------------------------


@pytest.mark.parametrize("start", START_STATES, ids=state_id)
def test_run_stop_stops_one_run_without_touching_the_mode(
    start: tuple[Mode, BreakerState],
) -> None:
    mode, state = start
    b = in_state(mode, state)
    [t] = b.on_detections([trip("loop", run_id="run-9")], T)
    assert (t.action, t.scope, t.run_id, t.prev_mode, t.new_mode) == (
        "stop_run",
        "run",
        "run-9",
        mode,
        mode,
    )
    assert (b.mode, b.state) == (mode, state)
    assert t.to_control()["mode"] == "halted" and t.to_control()["scope"] == "run"
    assert b.on_detections([trip("loop", run_id="run-9")], T + 1) == []  # stopped once


@pytest.mark.parametrize("start", START_STATES, ids=state_id)
def test_repeated_run_stops_escalate_to_the_agent(start: tuple[Mode, BreakerState]) -> None:
    mode, state = start
    b = in_state(mode, state)
    out = []
    for i in range(3):
        out += b.on_detections([trip("loop", run_id=f"run-{i}")], T + i)
    actions = [t.action for t in out]
    assert actions[:3] == ["stop_run"] * 3
    escalation = Mode.SUGGEST_ONLY
    if state == PINNED:
        assert len(out) == 3 and b.mode == mode
    elif state == PROBATION:
        [t] = out[3:]
        base = LADDER[mode.rank - 1]
        assert t.action == "probation_failed" and t.new_mode == base.lowest(escalation)
        assert t.rule == "repeated_run_stops" and len(t.detection_ids) == 3
    elif escalation.rank < mode.rank:
        [t] = out[3:]
        assert (t.action, t.new_mode, t.rule) == ("escalate", escalation, "repeated_run_stops")
        assert t.detection_ids == tuple(s.detection_ids[0] for s in out[:3])
    else:
        assert len(out) == 3 and b.mode == mode and b.deadline == T + 2 + COOLDOWN


def test_run_stops_spread_beyond_the_window_do_not_escalate() -> None:
    b = Breaker("agent-1", policy())
    out = []
    for i in range(6):
        out += b.on_detections([trip("loop", run_id=f"run-{i}")], i * 6_000)
    assert [t.action for t in out] == ["stop_run"] * 6 and b.mode == Mode.AUTONOMOUS


# --- operator commands --------------------------------------------------------------------


@pytest.mark.parametrize("start", START_STATES, ids=state_id)
def test_kill_halts_from_every_state(start: tuple[Mode, BreakerState]) -> None:
    mode, state = start
    b = in_state(mode, state)
    out = b.on_command(cmd("kill"), T)
    if (mode, state) == (Mode.HALTED, PINNED):
        assert out == []  # already killed: nothing to change, nothing to record
        return
    [t] = out
    assert (t.action, t.new_mode, t.new_state, t.source, t.operator) == (
        "kill",
        Mode.HALTED,
        PINNED,
        "operator",
        "ops@example.com",
    )
    assert t.prev_mode == mode and "testing" in t.reason
    assert b.tick(10**12) == []  # no expiry, no automatic recovery
    assert b.on_detections([trip(Mode.READ_ONLY)], 10**12) == []


@pytest.mark.parametrize("start", START_STATES, ids=state_id)
@pytest.mark.parametrize("pinned", LADDER, ids=str)
def test_pin_any_mode_from_every_state_then_expire(
    start: tuple[Mode, BreakerState], pinned: Mode
) -> None:
    mode, state = start
    b = in_state(mode, state)
    # Also from a pin at the same mode: the new expiry is a change, so it is recorded.
    [t] = b.on_command(cmd("pin", pinned, duration=5_000, at=T), T)
    assert (t.action, t.new_mode, t.new_state) == ("pin", pinned, PINNED)
    assert t.to_control()["expires_at"] == T + 5_000
    assert b.on_detections([trip(Mode.HALTED)], T + 1) == []  # operator wins
    assert b.tick(T + 4_999) == []
    [expired] = b.tick(T + 5_000)
    assert (expired.action, expired.new_mode) == ("pin_expired", pinned)
    if pinned == Mode.AUTONOMOUS:
        assert expired.new_state == NORMAL
    else:
        # Recovery starts from the pinned mode: no jump to autonomous.
        assert expired.new_state == COOLING and b.deadline == T + 5_000 + COOLDOWN


@pytest.mark.parametrize("pinned", LADDER, ids=str)
def test_release_hands_back_to_the_breaker_at_the_current_mode(pinned: Mode) -> None:
    b = in_state(pinned, PINNED)
    [t] = b.on_command(cmd("release"), T)
    assert (t.action, t.prev_mode, t.new_mode, t.source) == ("release", pinned, pinned, "operator")
    if pinned == Mode.AUTONOMOUS:
        assert t.new_state == NORMAL
    else:
        assert t.new_state == COOLING
        [probation] = b.tick(T + COOLDOWN)
        assert probation.new_mode == pinned.one_level_up()


@pytest.mark.parametrize("start", START_STATES[: -len(LADDER)], ids=state_id)
def test_release_without_a_pin_changes_nothing(start: tuple[Mode, BreakerState]) -> None:
    b = in_state(*start)
    assert b.on_command(cmd("release"), T) == []


def test_a_command_is_applied_at_most_once() -> None:
    b = Breaker("agent-1", policy())
    kill = cmd("kill")
    assert len(b.on_command(kill, T)) == 1
    b.on_command(cmd("release"), T + 1)
    assert b.on_command(kill, T + 2) == []  # redelivered
    assert b.mode == Mode.HALTED and b.state == COOLING


def test_commands_accept_the_wire_record() -> None:
    b = Breaker("agent-1", policy())
    record = {
        "command_id": "c-wire",
        "action": "pin",
        "agent_id": "agent-1",
        "mode": "read_only",
        "duration_ms": None,
        "reason": "investigating",
        "operator": "alice",
        "issued_at": T,
    }
    [t] = b.on_command(record, T)
    assert t.new_mode == Mode.READ_ONLY and t.next_change_ms is None
    with pytest.raises(ValueError, match="pin needs a mode"):
        b.on_command({**record, "command_id": "c2", "mode": None}, T)


# --- records ------------------------------------------------------------------------------


def scenario(b: Breaker) -> list[Transition]:
    out = b.on_detections([trip(Mode.SUGGEST_ONLY)], 0)
    out += b.on_detections([trip("loop", run_id="r1")], 10)
    out += b.tick(COOLDOWN)
    out += b.on_detections([trip(Mode.READ_ONLY)], COOLDOWN + 100)
    out += b.on_command(cmd("pin", Mode.APPROVE_TO_ACT, duration=1_000, at=5_000), 5_000)
    out += b.tick(20_000)
    return out


def test_every_transition_records_why_with_increasing_seq() -> None:
    out = scenario(Breaker("agent-1", policy()))
    assert [t.seq for t in out] == list(range(1, len(out) + 1))
    assert all(t.reason for t in out)
    assert all(t.detection_ids for t in out if (t.rule or "").startswith("to_"))
    assert len({t.transition_id for t in out}) == len(out)
    control = out[0].to_control()
    assert control["mode"] == "suggest_only" and control["previous_mode"] == "autonomous"
    assert control["seq"] == 1 and control["source"] == "breaker" and control["rule"]


def test_time_never_runs_backwards() -> None:
    b = Breaker("agent-1", policy())
    b.on_detections([trip(Mode.READ_ONLY)], 10_000)
    [t] = b.on_detections([trip(Mode.HALTED)], 5_000)  # a caller on an older clock
    assert t.ts == 10_000


def test_state_round_trip_resumes_identically() -> None:
    straight = Breaker("agent-1", policy())
    expected = scenario(straight)
    b = Breaker("agent-1", policy())
    got = b.on_detections([trip(Mode.SUGGEST_ONLY)], 0)
    got += b.on_detections([trip("loop", run_id="r1")], 10)
    b = Breaker.from_state(json.loads(json.dumps(b.to_state())), "agent-1", policy())
    got += b.tick(COOLDOWN)
    got += b.on_detections([trip(Mode.READ_ONLY)], COOLDOWN + 100)
    got += b.on_command(cmd("pin", Mode.APPROVE_TO_ACT, duration=1_000, at=5_000), 5_000)
    got += b.tick(20_000)
    strip = [(t.seq, t.action, t.new_mode, t.new_state, t.ts, t.transition_id) for t in got]
    assert strip == [
        (t.seq, t.action, t.new_mode, t.new_state, t.ts, t.transition_id) for t in expected
    ]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 3_000), st.sampled_from([*TARGETS, "run"])),
        max_size=15,
    ),
    st.lists(st.integers(0, 40_000), max_size=30),
)
def test_transitions_do_not_depend_on_how_often_tick_runs(
    trips: list[tuple[int, Mode | str]], extra_ticks: list[int]
) -> None:
    """Ticking at arbitrary extra times must yield exactly the transitions of no extra ticks."""
    events: list[tuple[int, int, Mode | str | None]] = []
    at = 0
    for i, (gap, what) in enumerate(trips):
        at += gap
        events.append((at, 0, what if what != "run" else f"run-{i}"))
    quiet = Breaker("agent-1", policy())
    busy = Breaker("agent-1", policy())

    def apply(b: Breaker, what: Mode | str | None, now: int) -> list[Transition]:
        if isinstance(what, Mode):
            return b.on_detections([trip(what)], now)
        return b.on_detections([trip("loop", run_id=what)], now)

    expected: list[Transition] = []
    for now, _, what in events:
        expected += apply(quiet, what, now)
    expected += quiet.tick(10**6)
    got: list[Transition] = []
    timeline = sorted([(t, 1, None) for t in extra_ticks] + events, key=lambda e: (e[0], -e[1]))
    for now, kind, what in timeline:
        got += busy.tick(now) if kind == 1 else apply(busy, what, now)
    got += busy.tick(10**6)

    def view(ts: list[Transition]) -> list[tuple]:
        return [(t.action, t.new_mode, t.new_state, t.ts, t.run_id) for t in ts]

    assert view(got) == view(expected)


# --- earned autonomy: the rung is the ceiling of recovery ---------------------------------


def test_earned_rung_moves_a_resting_agent_and_caps_recovery() -> None:
    b = Breaker("agent-1", policy())
    [start] = b.on_earned(Mode.SUGGEST_ONLY, "autonomy_start", "new agent starts", 0)
    assert (start.action, start.new_mode, start.new_state) == ("autonomy_start",
                                                                Mode.SUGGEST_ONLY, NORMAL)
    assert start.rule == "autonomy.start" and start.to_control()["mode"] == "suggest_only"
    [up] = b.on_earned(Mode.APPROVE_TO_ACT, "promote", "earned", 10)
    assert (up.prev_mode, up.new_mode, b.state) == (Mode.SUGGEST_ONLY, Mode.APPROVE_TO_ACT,
                                                    NORMAL)
    # A trip, then recovery: it climbs back to the earned rung and no further.
    b.on_detections([trip(Mode.READ_ONLY)], 100)
    assert (b.mode, b.state) == (Mode.READ_ONLY, COOLING)
    moves = b.tick(100 + 10 * COOLDOWN + 10 * PROBATION_MS)
    assert b.mode == Mode.APPROVE_TO_ACT and b.state == NORMAL
    assert all(t.new_mode.rank <= Mode.APPROVE_TO_ACT.rank for t in moves)
    assert b.tick(10**7) == [] and b.mode == Mode.APPROVE_TO_ACT


def test_a_promotion_while_recovering_only_raises_the_ceiling_and_pins_win() -> None:
    b = Breaker("agent-1", policy())
    b.on_earned(Mode.APPROVE_TO_ACT, "autonomy_start", "start", 0)
    b.on_detections([trip(Mode.SUGGEST_ONLY)], 10)
    assert b.on_earned(Mode.AUTONOMOUS, "promote", "earned", 20) == []
    assert (b.mode, b.ceiling) == (Mode.SUGGEST_ONLY, Mode.AUTONOMOUS)
    # A demotion below the current mode applies at once, even while recovering.
    b1 = Breaker("agent-3", policy())
    b1.on_detections([trip(Mode.APPROVE_TO_ACT)], 10)
    assert b1.state == COOLING
    [down] = b1.on_earned(Mode.SUGGEST_ONLY, "demote", "fell", 30)
    assert (down.new_mode, down.new_state, down.rule) == (Mode.SUGGEST_ONLY, NORMAL,
                                                          "autonomy.demote")
    b2 = Breaker("agent-2", policy())
    b2.on_command(cmd("pin", Mode.AUTONOMOUS), 0)
    assert b2.on_earned(Mode.SUGGEST_ONLY, "demote", "fell", 10) == []
    assert b2.mode == Mode.AUTONOMOUS and b2.ceiling == Mode.SUGGEST_ONLY
    assert Breaker.from_state(b2.to_state(), "agent-2", policy()).ceiling == Mode.SUGGEST_ONLY
