"""Researcher: launch a simulation run for a study and follow it from the database."""

import streamlit as st
from pydantic import ValidationError

from db.engine import session_scope
from db.errors import WorkbenchError
from db.repo import get_study
from workbench.app.auth import require_role
from workbench.app.common import engine, escape_markdown, settings, study_names, table
from workbench.simulation import (
    SimulationSpec,
    simulation_runs_df,
    simulation_status,
    spec_error,
    start_simulation,
)

require_role("researcher")
st.title("Simulation")
eng = engine()
names = study_names(eng)
study = st.selectbox("Study", names, key="sim_study", bind="query-params")  # a reload keeps the study
with st.form("simulate"):
    model = st.text_input("Simulator model (provider/model)", value=settings().default_model)
    n = st.number_input("Conversations per condition", 1, 100, 1)
    concurrency = st.number_input("Concurrency", 1, 32, 4)
    max_turns = st.number_input("Maximum user turns (0 = the study's setting)", 0, 100, 0)
    twins = st.checkbox(
        "Digital twins of the human conversations (same condition, the participant's profile)"
    )
    if st.form_submit_button("Start simulation", type="primary"):
        try:
            spec = SimulationSpec(
                study=study,
                simulator_model=model.strip(),
                n_per_condition=int(n),
                concurrency=int(concurrency),
                max_turns=int(max_turns) or None,
                twin_of=["all"] if twins else None,
                cache=settings().llm_cache,
                prices_file=str(settings().prices_file) if settings().prices_file else None,
            )
            st.session_state["sim_key"] = start_simulation(eng, spec)
        except ValidationError as exc:
            st.error(escape_markdown(spec_error(exc)))
        except WorkbenchError as exc:
            st.error(escape_markdown(str(exc)))
key = st.session_state.get("sim_key")
if key:
    state = simulation_status(key)
    if state["error"]:
        st.error(escape_markdown(f"The simulation stopped: {state['error']}"))
    elif state["running"]:
        st.info("Running in the background. Refresh to update the figures.")
    else:
        st.success("Finished.")
if st.button("Refresh"):
    st.rerun()
with session_scope(eng) as s:
    runs = simulation_runs_df(s, get_study(s, study).id)
table(runs, hide_index=True, width="stretch")
