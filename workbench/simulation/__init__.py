"""The simulated user and the batch runner.

Build a ``SimulationSpec`` once and pass it down::

    from workbench.simulation import SimulationSpec, plan_simulation, run_simulation

    spec = SimulationSpec(study="pilot", simulator_model="openai/gpt-4o-mini", n_per_condition=2)
    print("\\n".join(plan_simulation(engine, spec).lines()))
    summary = run_simulation(engine, spec)
"""

from workbench.simulation.conversation import ConversationResult, TurnRecord, run_conversation, simulate
from workbench.simulation.runner import (
    Plan,
    Progress,
    RateLimiter,
    RunSummary,
    arun_simulation,
    claim_run,
    plan_simulation,
    run_simulation,
)
from workbench.simulation.runs import simulation_runs_df, simulation_status, start_simulation
from workbench.simulation.spec import SimulationSpec, spec_error
from workbench.simulation.templates import PromptTemplate, available_templates, load_template
from workbench.simulation.user import SimulatedUser, UserContext, UserReply, parse_user_reply

__all__ = [
    "ConversationResult",
    "Plan",
    "Progress",
    "PromptTemplate",
    "RateLimiter",
    "RunSummary",
    "SimulatedUser",
    "SimulationSpec",
    "TurnRecord",
    "UserContext",
    "UserReply",
    "arun_simulation",
    "available_templates",
    "claim_run",
    "load_template",
    "parse_user_reply",
    "plan_simulation",
    "run_conversation",
    "run_simulation",
    "simulate",
    "simulation_runs_df",
    "simulation_status",
    "spec_error",
    "start_simulation",
]
