"""Policy section ``otlp``: what the OpenTelemetry span source needs to turn spans into steps.

Spans from OpenTelemetry instrumentations say which tool ran and how many tokens a model call
took, but not what a tool does to the world, nor what a call cost. Both come from here, per
agent like every other policy section (an ``agents.x.otlp`` override replaces a list whole,
see ``detectors/policy.py``'s deep merge):

* ``tool_action_classes``: glob patterns on the tool name -> action class, first match wins,
  ``read`` when none matches (the breaker's standing rules and modes then apply as to SDK
  agents; a tool that writes but is classed ``read`` escapes suggest-only, so list yours);
* ``model_prices``: USD per million input/output tokens, matched on the longest model-name
  prefix (``gpt-4o-mini-2024-07-18`` -> ``gpt-4o-mini``), so dated snapshots need no entry;
* ``denial_error_types``: ``error.type`` values of a tool span that mean the call was refused
  by a permission or policy check, counted as denied policy decisions by the denial-rate
  detector.
"""

from __future__ import annotations

from fnmatch import fnmatchcase
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class PolicyModel(BaseModel):
    # As detectors/policy.py's PolicyModel (which imports this module, hence not imported).
    model_config = ConfigDict(extra="forbid", frozen=True)


ActionClassName = Literal["read", "write", "external", "money", "destructive"]


class ToolClass(PolicyModel):
    pattern: str = Field(min_length=1, description="fnmatch glob on the tool name: 'delete*'.")
    action_class: ActionClassName

    def __repr__(self) -> str:  # the policy table in the README prints defaults
        return f"{self.pattern}->{self.action_class}"


class ModelPrice(PolicyModel):
    model: str = Field(min_length=1, description="Model name or name prefix.")
    input_usd_per_mtok: float = Field(ge=0)
    output_usd_per_mtok: float = Field(ge=0)

    def __repr__(self) -> str:
        return f"{self.model}:{self.input_usd_per_mtok:g}/{self.output_usd_per_mtok:g}"


# Verbs common in tool names (OpenAI function names, MCP tools, LangChain tools), matched at
# the start of the name or after a separator ("delete_user", "crm.delete", "db-drop"), so
# "display" is not a payment. Order matters: destructive and money before the generic write
# verbs ("delete_payment" is destructive, "create_refund" money).
_VERBS: tuple[tuple[str, ActionClassName], ...] = (
    *((v, "destructive") for v in ("delete", "drop", "destroy", "truncate", "wipe", "purge",
                                    "remove", "terminate")),
    *((v, "money") for v in ("refund", "pay", "transfer", "charge", "purchase")),
    *((v, "external") for v in ("send", "email", "post", "publish", "notify", "tweet", "sms")),
    *((v, "write") for v in ("create", "update", "write", "insert", "upsert", "save", "edit",
                              "set", "put", "patch", "add", "modify")),
)
DEFAULT_TOOL_CLASSES: tuple[ToolClass, ...] = tuple(
    ToolClass(pattern=pattern, action_class=action_class)
    for verb, action_class in _VERBS
    for pattern in (f"{verb}*", f"*[._-]{verb}*")
)

# Public list prices (USD per million tokens, input / output) of widely used hosted models,
# late 2026 price pages; override in the policy file for negotiated prices.
DEFAULT_MODEL_PRICES: tuple[ModelPrice, ...] = tuple(
    ModelPrice(model=m, input_usd_per_mtok=i, output_usd_per_mtok=o) for m, i, o in (
        ("gpt-4o", 2.50, 10.00), ("gpt-4o-mini", 0.15, 0.60), ("gpt-4.1", 2.00, 8.00),
        ("gpt-4.1-mini", 0.40, 1.60), ("gpt-4.1-nano", 0.10, 0.40), ("o3", 2.00, 8.00),
        ("o4-mini", 1.10, 4.40), ("gpt-5", 1.25, 10.00), ("gpt-5-mini", 0.25, 2.00),
        ("claude-3-5-sonnet", 3.00, 15.00), ("claude-3-5-haiku", 0.80, 4.00),
        ("claude-sonnet-4", 3.00, 15.00), ("claude-opus-4", 15.00, 75.00),
        ("claude-haiku-4", 1.00, 5.00), ("gemini-1.5-flash", 0.075, 0.30),
        ("gemini-2.5-flash", 0.30, 2.50), ("gemini-2.5-pro", 1.25, 10.00),
    )
)

DEFAULT_DENIAL_ERROR_TYPES: tuple[str, ...] = (
    "permission_denied", "PermissionDenied", "PermissionError", "PermissionDeniedError",
    "access_denied", "AccessDenied", "AccessDeniedException", "forbidden", "Forbidden", "403",
    "policy_denied", "PolicyViolation", "unauthorized", "Unauthorized", "401",
)


class OtlpPolicy(PolicyModel):
    tool_action_classes: tuple[ToolClass, ...] = Field(
        DEFAULT_TOOL_CLASSES,
        description="Tool-name globs -> action class for spans (first match; no match: read). "
        "Spans carry no action class; verbs in tool names are the best default signal, and "
        "the policy file names your tools exactly.",
    )
    model_prices: tuple[ModelPrice, ...] = Field(
        DEFAULT_MODEL_PRICES,
        description="USD per million input/output tokens by model-name prefix (longest "
        "wins): cost of spans that report tokens but no cost. Public list prices.",
    )
    denial_error_types: tuple[str, ...] = Field(
        DEFAULT_DENIAL_ERROR_TYPES,
        description="error.type values of a tool span that mean the call was refused: "
        "counted as denied policy decisions. Permission-style names from HTTP, Python, "
        "AWS and MCP servers.",
    )

    def action_class(self, tool: str) -> str:
        for rule in self.tool_action_classes:
            if fnmatchcase(tool.lower(), rule.pattern.lower()):
                return rule.action_class
        return "read"

    def price(self, model: str) -> ModelPrice | None:
        best: ModelPrice | None = None
        for entry in self.model_prices:
            longer = best is None or len(entry.model) > len(best.model)
            if longer and model.startswith(entry.model):
                best = entry
        return best
