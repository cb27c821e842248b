"""Policy of earned autonomy (``autonomy`` in the policy file; logic in ``detectors/autonomy.py``).

Each agent, workflow (the policy file's overrides) and agent version (``autonomy.versions``)
gets a starting mode and a ceiling. With ``earn`` on, Tripwire measures the agent's record
on a rolling window and moves it one rung at a time along suggest_only -> approve_to_act ->
autonomous, never above ``ceiling`` and never below ``floor`` (lower modes belong to the
breaker and to operators).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tripwire.schemas.modes import Mode

DAY_MS = 24 * 3600 * 1000
EARNED_MODES = (Mode.SUGGEST_ONLY, Mode.APPROVE_TO_ACT, Mode.AUTONOMOUS)


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class VersionAutonomy(_Frozen):
    """Start and ceiling for one agent version: a new version can start over in shadow."""

    start_mode: Mode | None = Field(None, description="Start of this version (null: inherit).")
    ceiling: Mode | None = Field(None, description="Ceiling of this version (null: inherit).")


class AutonomyPolicy(_Frozen):
    start_mode: Mode = Field(
        Mode.AUTONOMOUS,
        description="Mode a new agent starts in. autonomous keeps today's behaviour; "
        "suggest_only starts it in shadow: it proposes, humans decide, and it earns the rest.",
    )
    ceiling: Mode = Field(
        Mode.AUTONOMOUS,
        description="Highest mode the agent may reach, by earning it or by the breaker's "
        "recovery. approve_to_act keeps a human on every side effect for good.",
    )
    floor: Mode = Field(
        Mode.SUGGEST_ONLY,
        description="Lowest mode falling agreement demotes to. Below it are the breaker's and "
        "the operators' modes (read_only, halted), which need a trip or a human.",
    )
    earn: bool = Field(
        False,
        description="Promote and demote from the agent's measured record. Off by default: "
        "an agent's autonomy changes only by the breaker and operators, as before.",
    )
    window_ms: int = Field(
        7 * DAY_MS,
        gt=0,
        description="Rolling window of the record. A week covers weekly work patterns and "
        "is long enough for 50 decisions from an agent that asks a few times a day.",
    )
    buckets: int = Field(
        7,
        ge=1,
        le=1000,
        description="Buckets of the window (a day each by default): the window's edge is "
        "accurate to one bucket, and memory is 5 numbers per bucket per agent.",
    )
    promote_agreement: float = Field(
        0.95,
        gt=0,
        le=1,
        description="Share of decided requests approved and proposals accepted needed for "
        "the next rung. 95 %: one human correction in 20 is the most a step up tolerates.",
    )
    promote_min_decisions: int = Field(
        50,
        ge=1,
        description="Human decisions needed at the current rung before a promotion: 50 at "
        "95 % means at most 2 disagreements, too many for luck to pass.",
    )
    promote_max_denial_rate: float = Field(
        0.05,
        ge=0,
        le=1,
        description="Highest policy-denial rate (the agent's own policy engine, not the "
        "guard's) that still earns a promotion: an agent pushing at its permissions is not "
        "ready for more.",
    )
    promote_max_trips: int = Field(
        0,
        ge=0,
        description="Breaker trips in the window that still allow a promotion: none.",
    )
    demote_agreement: float = Field(
        0.8,
        gt=0,
        le=1,
        description="Agreement below which the agent drops one rung: a human disagreeing "
        "with one call in five means its judgement has drifted.",
    )
    demote_min_decisions: int = Field(
        10,
        ge=1,
        description="Decisions needed before agreement can demote: 2 declines of 3 is noise, "
        "3 of 10 is a pattern.",
    )
    versions: dict[str, VersionAutonomy] = Field(
        {},
        description="Per agent_version start and ceiling; a version listed here starts over "
        "at its start mode the first time it is seen.",
    )

    @model_validator(mode="after")
    def _ladder(self) -> AutonomyPolicy:
        for name in ("start_mode", "ceiling", "floor"):
            if getattr(self, name) not in EARNED_MODES:
                raise ValueError(f"autonomy.{name} must be one of "
                                 f"{[str(m) for m in EARNED_MODES]}")
        for version, override in self.versions.items():
            for name in ("start_mode", "ceiling"):
                mode = getattr(override, name)
                if mode is not None and mode not in EARNED_MODES:
                    raise ValueError(f"autonomy.versions.{version}.{name} must be one of "
                                     f"{[str(m) for m in EARNED_MODES]}")
        if self.floor.rank > self.ceiling.rank:
            raise ValueError("autonomy.floor is above autonomy.ceiling")
        if self.demote_agreement >= self.promote_agreement:
            raise ValueError("autonomy.demote_agreement must be below promote_agreement, or an "
                             "agent could be promoted and demoted on the same record")
        if self.window_ms % self.buckets:
            raise ValueError(f"autonomy.window_ms = {self.window_ms} is not a multiple of "
                             f"autonomy.buckets = {self.buckets}")
        return self

    def for_version(self, version: str | None) -> tuple[Mode, Mode]:
        """(start, ceiling) for ``version``; the start never above the ceiling."""
        start, ceiling = self.start_mode, self.ceiling
        override = self.versions.get(version) if version is not None else None
        if override is not None:
            start = override.start_mode or start
            ceiling = override.ceiling or ceiling
        return start.lowest(ceiling), ceiling
