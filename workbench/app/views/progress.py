"""Researcher: live progress of a study."""

import streamlit as st

from db.engine import session_scope
from workbench.app.auth import require_role
from workbench.app.common import engine, escape_markdown, study_names, table
from workbench.participation.progress import study_progress

require_role("researcher")
st.title("Progress")
eng = engine()
names = study_names(eng)
study = st.selectbox("Study", names, key="progress_study", bind="query-params")
if st.button("Refresh"):
    st.rerun()
with session_scope(eng) as s:
    progress = study_progress(s, study)
for problem in progress.model_problems:
    st.error(escape_markdown(f"Participants get no reply from this server: {problem}"))
st.subheader("Participants by status")
table(progress.status, hide_index=True)
st.subheader("Conditions covered by user kind")
st.caption(
    progress.coverage_note()
    + " Completed and running conversations per condition; digital twins and participants' own "
    "profiles count under the condition they copy."
)
table(progress.coverage, hide_index=True, width="stretch")
st.subheader("Dropouts")
table(progress.dropouts, hide_index=True, width="stretch")
st.subheader("Assistant failures in participant sessions")
if progress.failures.empty:
    st.caption("No failed assistant call recorded.")
else:
    st.caption(
        "Participants saw a short notice and could try again; the latest 50 failures, newest first "
        "(the server log has the same)."
    )
    table(progress.failures, hide_index=True, width="stretch")
