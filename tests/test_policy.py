"""Policy: loading, override resolution, and validation errors that name the field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from tripwire.detectors.policy import (
    DEFAULT_POLICY,
    Policy,
    ResolvedPolicy,
    describe_policy,
    load_policy,
)
from tripwire.schemas.modes import Mode

EXAMPLE = Path(__file__).parents[1] / "detectors" / "policy.example.yaml"


def test_example_file_loads_and_documents_the_real_defaults() -> None:
    policy = load_policy(EXAMPLE)
    assert policy.defaults == ResolvedPolicy()
    assert policy.for_agent("any", "research").loops.max_steps == 200
    assert policy.for_agent("triage-bot").breaker.cooldown_ms == 300_000


def test_toml_loads_the_same_model(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text(
        """
[defaults.spend]
run_budget_usd = 3.5

[[defaults.denial_rate.bands]]
at = 0.5
severity = "S2"

[agents.bot-1.loops]
max_steps = 80
"""
    )
    policy = load_policy(path)
    assert policy.defaults.spend.run_budget_usd == 3.5
    assert [(b.at, b.severity) for b in policy.defaults.denial_rate.bands] == [(0.5, "S2")]
    assert policy.for_agent("bot-1").loops.max_steps == 80


def test_empty_yaml_is_all_defaults(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("")
    assert load_policy(path).defaults == DEFAULT_POLICY


@pytest.mark.parametrize(("name", "text"), [("p.json", "{}"), ("p.yaml", "- 1\n- 2\n")])
def test_unsupported_files_are_refused(tmp_path: Path, name: str, text: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ValueError, match=name):
        load_policy(path)


# --- resolution ---------------------------------------------------------------------------


def layered() -> Policy:
    return Policy.model_validate(
        {
            "defaults": {"spend": {"run_budget_usd": 1.0, "hour_budget_usd": 10.0}},
            "workflows": {
                "billing": {
                    "spend": {"run_budget_usd": 2.0, "day_budget_usd": 50.0},
                    "loops": {"max_steps": 70},
                }
            },
            "agents": {
                "bot-1": {
                    "spend": {"run_budget_usd": 3.0},
                    "denial_rate": {"bands": [{"at": 0.9, "severity": "S1"}]},
                }
            },
        }
    )


def test_agent_beats_workflow_beats_defaults_with_deep_merge() -> None:
    resolved = layered().for_agent("bot-1", "billing")
    assert resolved.spend.run_budget_usd == 3.0  # agent
    assert resolved.spend.day_budget_usd == 50.0  # workflow, kept by the deep merge
    assert resolved.spend.hour_budget_usd == 10.0  # defaults
    assert resolved.loops.max_steps == 70
    # Lists replace as a whole rather than merging item by item.
    assert [(b.at, b.severity) for b in resolved.denial_rate.bands] == [(0.9, "S1")]


def test_agents_without_overrides_share_one_policy_object() -> None:
    policy = layered()
    assert policy.for_agent("other") is policy.defaults
    assert policy.for_agent("other", "unknown-workflow") is policy.defaults
    assert policy.for_agent("x", "billing") is policy.for_agent("y", "billing")
    assert policy.for_agent("bot-1", "billing") is not policy.for_agent("bot-1")


def test_a_combination_made_invalid_only_by_layering_names_both_layers() -> None:
    policy = Policy.model_validate(
        {
            "workflows": {
                "slow": {
                    "loops": {
                        "run_timeout_ms": 3_000_000,
                        "timeout_bands": [{"at": 1.0, "severity": "S3"}],
                    }
                }
            },
            "agents": {"bot": {"loops": {"timeout_bands": [{"at": 4.0, "severity": "S2"}]}}},
        }
    )
    with pytest.raises(ValueError, match=r"agents\.bot over workflows\.slow"):
        policy.for_agent("bot", "slow")


# --- validation names the field -----------------------------------------------------------


INVALID: list[tuple[dict[str, Any], str]] = [
    (
        {"defaults": {"denial_rate": {"bands": [{"at": 1.5, "severity": "S1"}]}}},
        "denial_rate.bands.0.at",
    ),
    ({"defaults": {"spend": {"run_budget_usd": -1}}}, "spend.run_budget_usd"),
    ({"defaults": {"spend": {"day_budget_tokens": 0}}}, "spend.day_budget_tokens"),
    ({"defaults": {"breaker": {"run_stop_escalation": "sleeping"}}}, "breaker.run_stop_escalation"),
    (
        {"defaults": {"breaker": {"rules": [{"name": "r", "target": "paused"}]}}},
        "breaker.rules.0.target",
    ),
    ({"defaults": {"denial_rate": {"windw_ms": 1}}}, "denial_rate.windw_ms"),
    ({"defaults": {"loops": {"max_steps": 0}}}, "loops.max_steps"),
    ({"agents": {"bot-7": {"loops": {"max_steps": 0}}}}, "agents.bot-7.loops.max_steps"),
    ({"workflows": {"w": {"spend": {"hour_budget_usd": -5}}}}, "workflows.w.spend.hour_budget_usd"),
    ({"agents": {"bot-7": {"speed": {}}}}, "agents.bot-7.speed"),
    ({"defaults": {"event_time": {"grace_ms": 290_000}}}, "event_time.grace_ms"),
    ({"defaults": {"event_time": {"rearm_ratio": 1.2}}}, "event_time.rearm_ratio"),
    (
        {
            "defaults": {
                "loops": {"step_bands": [{"at": 2, "severity": "S3"}, {"at": 1, "severity": "S2"}]}
            }
        },
        "loops.step_bands",
    ),
    (
        {
            "defaults": {
                "injection": {"bands": [{"at": 1, "severity": "S1"}, {"at": 2, "severity": "S3"}]}
            }
        },
        "injection.bands",
    ),
    ({"defaults": {"denial_rate": {"window_ms": 300_001}}}, "denial_rate.window_ms"),
    ({"defaults": {"spend": {"hour_buckets": 7}}}, "spend.hour_buckets"),
    (
        {
            "defaults": {
                "breaker": {"rules": [{"name": "r", "scope": "agent", "target": "stop_run"}]}
            }
        },
        "breaker.rules.0",
    ),
    (
        {"defaults": {"breaker": {"rules": [{"name": "r", "target": "autonomous"}]}}},
        "breaker.rules.0",
    ),
    (
        {
            "defaults": {
                "breaker": {
                    "rules": [{"name": "r", "target": "none"}, {"name": "r", "target": "none"}]
                }
            }
        },
        "breaker.rules",
    ),
    ({"defaults": {"breaker": {"max_cooldown_ms": 1}}}, "breaker.max_cooldown_ms"),
    ({"defaults": {"breaker": {"backoff_multiplier": 0.5}}}, "breaker.backoff_multiplier"),
    ({"defaults": {"runs": {"idle_expiry_ms": 3_600_000}}}, "runs.idle_expiry_ms"),
    ({"defaults": {"runs": {"ttl_after_end_ms": 1_000}}}, "runs.ttl_after_end_ms"),
    ({"defaults": {"loops": {"repeat_horizon": 6}}}, "loops.repeat_horizon"),
    ({"defaults": {"loops": {"cycle_periods": [1, 2]}}}, "loops.cycle_periods"),
    ({"defaults": {"injection": {"min_score": 2}}}, "injection.min_score"),
]


@pytest.mark.parametrize(("data", "field"), INVALID, ids=[f for _, f in INVALID])
def test_invalid_policies_are_refused_naming_the_field(data: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        Policy.model_validate(data)
    text = str(caught.value)
    locations = {".".join(str(p) for p in err["loc"]) for err in caught.value.errors()}
    assert field in text or any(loc.endswith(field) for loc in locations), text


def test_a_valid_override_of_every_section_is_accepted() -> None:
    Policy.model_validate(
        {
            "agents": {
                "bot": {
                    "event_time": {"grace_ms": 10_000},
                    "runs": {"max_open_runs": 4},
                    "denial_rate": {"min_decisions": 3},
                    "loops": {"cycle_periods": [3, 2]},
                    "spend": {"hour_budget_usd": None},
                    "injection": {"min_score": 0.9},
                    "breaker": {"run_stop_escalation": "read_only"},
                }
            }
        }
    )


def test_modes_are_parsed_into_the_ordered_enum() -> None:
    policy = Policy.model_validate({"defaults": {"breaker": {"run_stop_escalation": "halted"}}})
    assert policy.defaults.breaker.run_stop_escalation is Mode.HALTED


# --- documentation ------------------------------------------------------------------------


def test_every_field_has_its_reasoning_and_is_described() -> None:
    text = describe_policy()
    rows = [line for line in text.splitlines()[2:]]
    assert len(rows) > 50
    for row in rows:
        name, _default, why = (cell.strip() for cell in row.strip("|").split("|", 2))
        assert why, f"{name} has no description"
    assert "`denial_rate.min_decisions`" in text and "`breaker.cooldown_ms`" in text


def test_compiled_entries_go_with_their_policy() -> None:
    import gc

    from tripwire.detectors import policy as policy_module

    resolved = Policy().for_agent("agent-compiled", None)
    assert resolved.compiled("probe", lambda p: ["built"]) == ["built"]
    key = id(resolved)
    assert key in policy_module._COMPILED
    del resolved
    gc.collect()
    assert key not in policy_module._COMPILED
