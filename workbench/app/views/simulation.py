"""Researcher: plan a simulation run (conversations, calls, tokens, cost), start it in the background
and follow every run of the study from the database (any researcher's session sees the same)."""

import pandas as pd
import streamlit as st
from pydantic import ValidationError

from db.engine import session_scope
from db.errors import WorkbenchError
from db.repo import condition_choices, get_study
from workbench.app.auth import require_role
from workbench.app.common import engine, escape_markdown, settings, study_names, table
from workbench.llm.costs import costs_df
from workbench.simulation import SimulationSpec, plan_simulation, spec_error, start_simulation
from workbench.simulation.runs import run_names, simulation_runs_df, study_run_errors

require_role("researcher")
st.title("Simulation")
eng = engine()
names = study_names(eng)
study = st.selectbox("Study", names, key="sim_study", bind="query-params")  # a reload keeps the study
with session_scope(eng) as s:
    study_id = get_study(s, study).id
    choices = condition_choices(s, study_id)
    runs = simulation_runs_df(s, study_id)
    costs = costs_df(s, study_id)  # the table of `workbench costs --study NAME`
    named = run_names(s, study_id)  # its runs as the runs table names them

scenarios = sorted({sc for _, sc in choices})
with st.form("simulate"):
    model = st.text_input("Simulator model (provider/model)", value=settings().default_model)
    chosen = st.multiselect(
        "Scenarios or conditions (none chosen: all of them)",
        scenarios + [c for c, _ in choices],
        help=f"{len(scenarios)} scenarios, {len(choices)} conditions in this study.",
    )
    left, right = st.columns(2)
    n = left.number_input("Conversations per condition", 1, 100, 1)
    budget = right.number_input("Budget in USD (0 = no limit)", 0.0, 100000.0, 0.0, step=1.0)
    concurrency = left.number_input("Concurrency", 1, 32, 4)
    max_turns = right.number_input("Maximum user turns (0 = the study's setting)", 0, 100, 0)
    twins = st.checkbox(
        "Digital twins of the human conversations (same condition, the participant's profile)"
    )
    ratings = st.checkbox(
        "The simulated user rates each reply and answers the post-task questionnaire, as participants do",
        value=True,
        help="In calls of their own that never enter the conversation (the CLI's --no-ratings turns them off).",
    )
    b1, b2 = st.columns(2)
    dry_run = b1.form_submit_button("Plan (dry run)", width="stretch")
    start = b2.form_submit_button("Start simulation", type="primary", width="stretch")


def _spec() -> SimulationSpec:
    return SimulationSpec(
        study=study,
        simulator_model=model.strip(),
        conditions=tuple(chosen) or None,
        n_per_condition=int(n),
        concurrency=int(concurrency),
        max_turns=int(max_turns) or None,
        budget=float(budget) or None,
        twin_of=["all"] if twins else None,
        ratings=ratings,
        cache=settings().llm_cache,
        prices_file=str(settings().prices_file) if settings().prices_file else None,
    )


if dry_run or start:
    try:
        spec = _spec()
        plan = plan_simulation(eng, spec)
        st.session_state["sim_plan"] = plan.lines()
        if start:
            st.session_state["sim_key"] = start_simulation(eng, spec)
            st.rerun()  # the runs table now shows the new run
    except ValidationError as exc:
        st.error(escape_markdown(spec_error(exc)))
    except WorkbenchError as exc:
        st.error(escape_markdown(str(exc)))
if st.session_state.get("sim_plan"):
    with st.container(border=True):
        st.markdown("**Planned (dry run)**")
        st.markdown("\n".join(f"- {escape_markdown(line)}" for line in st.session_state["sim_plan"]))

for msg in study_run_errors(study):
    st.error(escape_markdown(f"A simulation stopped: {msg}"))
running = runs[runs["status"] == "running"]
for r in running.itertuples():
    st.info(
        escape_markdown(
            f"Run {r.run} is running: {r.completed + r.failed} of {r.planned} conversations done, "
            f"${r.spend_usd:.2f} spent. Refresh to update."
        )
    )
if st.button("Refresh"):
    st.rerun()
st.subheader("Runs")
table(
    runs,
    hide_index=True,
    width="stretch",
    column_config={
        "run": "Run",
        "status": "Status",
        "planned": st.column_config.NumberColumn("Planned", help="conversations this run works towards"),
        "progress": st.column_config.ProgressColumn(
            "Progress", help="completed or failed of planned", min_value=0.0, max_value=1.0, format="percent"
        ),
        "spend_usd": st.column_config.NumberColumn("Spend", format="$%.2f"),
        "budget_usd": st.column_config.NumberColumn("Budget", format="$%.2f"),
        "process": "Process",
        "created_at": st.column_config.DatetimeColumn("Created"),
        "finished_at": st.column_config.DatetimeColumn("Finished"),
        "last_turn_at": st.column_config.DatetimeColumn("Last turn"),
        "completed": "Completed",
        "in_progress": "In progress",
        "failed": "Failed",
    },
)

st.subheader("Spending")
if len(costs) == 1:  # only the total row
    st.caption("No model calls recorded for this study yet.")
else:
    st.caption(
        "Every recorded model call of the study, by purpose, model and simulation run: failed calls "
        "and abandoned attempts included, calls answered from the cache cost nothing. The same table "
        "as `workbench costs --study NAME`."
    )
    table(
        costs.assign(run_id=["" if pd.isna(v) else named.get(int(v), str(v)) for v in costs["run_id"]]),
        hide_index=True,
        width="stretch",
        column_config={
            "purpose": "Purpose",
            "model": "Model",
            "run_id": st.column_config.TextColumn(
                "Run", help="simulation run (empty: outside simulation runs)"
            ),
            "calls": "Calls",
            "failed_calls": "Failed",
            "cached_calls": "From cache",
            "prompt_tokens": "Prompt tokens",
            "completion_tokens": "Completion tokens",
            "cost_usd": st.column_config.NumberColumn("Cost", format="$%.4f"),
        },
    )
    st.download_button("costs.csv", costs.to_csv(index=False), "costs.csv", "text/csv")
