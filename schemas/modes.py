"""The ordered operating modes of an agent, from most to least autonomy.

The symbols match ``Mode`` in ``schemas/control.avsc``; the order is what the breaker relies on:
a trip may only move an agent down this ladder, recovery climbs it one rung at a time.
"""

from __future__ import annotations

from enum import StrEnum


class Mode(StrEnum):
    AUTONOMOUS = "autonomous"
    APPROVE_TO_ACT = "approve_to_act"
    SUGGEST_ONLY = "suggest_only"
    READ_ONLY = "read_only"
    HALTED = "halted"

    @property
    def rank(self) -> int:
        """0 for halted up to 4 for autonomous: higher means more autonomy."""
        return _RANK[self]

    def one_level_up(self) -> Mode:
        """The next mode with more autonomy; autonomous stays autonomous."""
        return LADDER[min(_RANK[self] + 1, len(LADDER) - 1)]

    def lowest(self, other: Mode) -> Mode:
        """Whichever of the two modes allows less."""
        return self if _RANK[self] <= _RANK[other] else other


LADDER: tuple[Mode, ...] = (
    Mode.HALTED,
    Mode.READ_ONLY,
    Mode.SUGGEST_ONLY,
    Mode.APPROVE_TO_ACT,
    Mode.AUTONOMOUS,
)
"""Modes from least to most autonomy; a mode's index is its rank."""

_RANK: dict[Mode, int] = {mode: i for i, mode in enumerate(LADDER)}
