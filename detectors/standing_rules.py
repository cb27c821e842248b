"""Standing rules: actions that always need a human, or are always denied, whatever the mode.

The ``standing`` section of the policy file::

    standing:
      rules:
        - name: prod-money-needs-human
          action_class: money
          environment: prod
          effect: approve
        - name: no-warehouse-drops
          tool: "warehouse.drop_*"
          effect: deny
        - name: big-refunds
          tool: payments.refund
          when: {param: amount, above: 500}
          effect: approve
        - name: external-email-needs-human
          tool: email.send
          effect: approve
          shadow: true               # judged on live calls, not published (see below)
      reversibility:                 # tool name or pattern -> how its effects are undone
        "payments.*": irreversible
        "crm.update_*": reversible
        "email.send": irreversible
      irreversible_effect: approve   # what an irreversible tool needs by default

Each rule and each irreversible tool becomes a *standing scope control*: a ceiling on a shared
scope (approve -> approve_to_act, deny -> read_only) that the worker publishes on
``agent-controls-shared`` when it starts, and lifts when the rule leaves the policy. Guards
read that topic before their first decision, so a brand-new agent's first call is already
bound. Parameter conditions are checked by the guard on the call's own parameters; unknown
parameters meet the condition (fail closed). ``deny`` caps at read_only: side effects are
refused, reads still run (a read has nothing to undo).

A rule marked ``shadow: true`` is not published, so no guard enforces it; the worker judges
it on every tool call step instead and records the calls it would have sent to a human or
refused (``detectors/standing_shadow.py``). Deleting the flag promotes it: the worker
publishes it at its next policy reload.

Rate caps (calls per minute per agent) are the breaker's, on the stream, since a guard
cannot count across an agent's processes: ``breaker.containment.rate_caps`` in
``detectors/containment.py``.

Pure data and validation here; ``streams/scope_controls.py`` turns it into records.
"""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from tripwire.schemas.modes import Mode
from tripwire.sdk.scopes import ParamCondition, Scope

ActionClass = Literal["read", "write", "external", "money", "destructive"]
Reversibility = Literal["reversible", "compensable", "irreversible"]
Effect = Literal["approve", "deny"]

EFFECT_CEILING: dict[str, Mode] = {"approve": Mode.APPROVE_TO_ACT, "deny": Mode.READ_ONLY}
"""The mode ceiling each effect publishes as."""


@dataclass(frozen=True, slots=True)
class StandingControl:
    """A standing rule of the policy as a ceiling on a shared scope."""

    name: str
    scope: Scope
    mode: Mode
    reason: str
    condition: ParamCondition | None = None


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ParamConditionRule(_Model):
    """A condition on one parameter of the call (see ``sdk.scopes.ParamCondition``)."""

    param: str = Field(min_length=1, description="Parameter name as the tool function takes it.")
    above: float | None = Field(None, description="Holds when the number is greater.")
    outside_domains: tuple[str, ...] | None = Field(
        None, description="Holds when the address/URL's domain is none of these (or subdomains).")
    outside_prefixes: tuple[str, ...] | None = Field(
        None, description="Holds when the path starts with none of these ('..' counts as out).")

    @model_validator(mode="after")
    def _one(self) -> ParamConditionRule:
        self.condition()  # raises with the reason when not exactly one test is given
        return self

    def condition(self) -> ParamCondition:
        return ParamCondition(self.param, self.above, self.outside_domains,
                              self.outside_prefixes)


class StandingRule(_Model):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.:-]+$",
                      description="Names the published control (policy:<name>) and decisions.")
    effect: Effect = Field(description="approve: a human decides each matching call; deny: "
                           "matching side effects are refused.")
    tool: str | None = Field(None, description="Tool name or pattern (* ? [...]).")
    action_class: ActionClass | None = None
    workflow: str | None = None
    environment: str | None = None
    agent_version: str | None = None
    when: ParamConditionRule | None = Field(
        None, description="Only calls whose parameters meet this condition.")
    reason: str = Field("", description="Shown in the decision; defaults to a description.")
    shadow: bool = Field(
        False, description="Judge the rule on live tool calls without publishing it: no guard "
        "enforces it, and each call it would have sent to a human or refused is recorded in "
        "shadow_detections (detectors/standing_shadow.py). Promote by deleting it. Off by "
        "default.")

    @model_validator(mode="after")
    def _narrow(self) -> StandingRule:
        if not any((self.tool, self.action_class, self.workflow, self.environment,
                    self.agent_version)):
            raise ValueError(f"rule {self.name}: name at least one of tool, action_class, "
                             "workflow, environment, agent_version (a rule on every call is "
                             "a fleet kill: use the operator command)")
        return self

    def control(self) -> StandingControl:
        scope = Scope(agent_version=self.agent_version, environment=self.environment,
                      workflow=self.workflow, tool=self.tool, action_class=self.action_class)
        condition = self.when.condition() if self.when else None
        what = "needs a human" if self.effect == "approve" else "is denied"
        cond = f" when {condition.describe()}" if condition else ""
        reason = self.reason or f"standing rule {self.name}: {scope.key()}{cond} {what}"
        return StandingControl(self.name, scope, EFFECT_CEILING[self.effect], reason, condition)


DEFAULT_RULES: tuple[StandingRule, ...] = (
    StandingRule(name="prod-destructive-needs-human", action_class="destructive",
                 environment="prod", effect="approve",
                 reason="destructive calls in prod need a human (standing default: the "
                 "runbooks' pre-specified list of irreversible actions starts here)"),
)


class StandingPolicy(_Model):
    rules: tuple[StandingRule, ...] = Field(
        DEFAULT_RULES,
        description="Standing approval/deny rules. Default: destructive calls in prod need a "
        "human, because deleting is the action class nobody can undo and prod is where it "
        "hurts; everything else follows the agent's mode. A policy that sets rules replaces "
        "the defaults (list them again to keep them).")
    reversibility: dict[str, Reversibility] = Field(
        default_factory=dict,
        description="Tool name or pattern -> reversible, compensable or irreversible. "
        "Unlisted tools are judged by action class in evidence (destructive and money as "
        "irreversible). Empty by default: only the owner knows their tools.")
    irreversible_effect: Effect | Literal["none"] = Field(
        "approve",
        description="What every listed irreversible tool needs whatever the mode. approve by "
        "default: the runbooks' minimum is that irreversible actions route to a human before "
        "they run, enforced mechanically.")

    @field_validator("rules")
    @classmethod
    def _unique(cls, rules: tuple[StandingRule, ...]) -> tuple[StandingRule, ...]:
        names = [r.name for r in rules]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"rule names must be unique: {dupes}")
        return rules

    def controls(self) -> list[StandingControl]:
        """Every standing ceiling to publish: the enforced rules (not those marked shadow),
        then the irreversible tools."""
        out = [rule.control() for rule in self.rules if not rule.shadow]
        if self.irreversible_effect != "none":
            for pattern, kind in sorted(self.reversibility.items()):
                if kind != "irreversible":
                    continue
                what = "needs a human" if self.irreversible_effect == "approve" else "is denied"
                out.append(StandingControl(
                    f"irreversible:{pattern}", Scope(tool=pattern),
                    EFFECT_CEILING[self.irreversible_effect],
                    f"{pattern} is irreversible: {what} (standing.irreversible_effect)"))
        return out

    def shadow_controls(self) -> list[StandingControl]:
        """The rules marked shadow, as the ceilings they would publish once promoted."""
        return [rule.control() for rule in self.rules if rule.shadow]

    def reversibility_of(self, tool: str | None, action_class: str | None) -> Reversibility:
        """How a step's effect is undone, for evidence: the listed tool pattern, else by class."""
        if tool:
            for pattern, kind in self.reversibility.items():
                if pattern == tool or fnmatchcase(tool, pattern):
                    return kind
        if action_class in ("destructive", "money"):
            return "irreversible"
        if action_class in ("write", "external"):
            return "compensable"
        return "reversible"
