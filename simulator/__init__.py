"""Simulated agent fleet: realistic and misbehaving traffic for tests, demos and benchmarks."""

from tripwire.simulator.fleet import (
    DEFAULT_START_MS,
    SimulationReport,
    agent_profiles,
    fleet_events,
    scenario_agent_id,
    scenario_of,
    simulate,
    simulate_sync,
)
from tripwire.simulator.scenarios import (
    INJECTION_VARIANTS,
    MODEL_PRICES_USD_PER_MTOK,
    SCENARIOS,
    WORKFLOWS,
    AgentProfile,
    model_cost_usd,
)

__all__ = [
    "DEFAULT_START_MS",
    "INJECTION_VARIANTS",
    "MODEL_PRICES_USD_PER_MTOK",
    "SCENARIOS",
    "WORKFLOWS",
    "AgentProfile",
    "SimulationReport",
    "agent_profiles",
    "fleet_events",
    "model_cost_usd",
    "scenario_agent_id",
    "scenario_of",
    "simulate",
    "simulate_sync",
]
