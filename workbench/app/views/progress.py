"""Researcher: live progress of a study."""

import streamlit as st

from db.engine import session_scope
from db.repo import get_study
from workbench.app.auth import require_role
from workbench.app.common import engine, escape_markdown, study_names, table
from workbench.participation import console as C
from workbench.participation.flow import expire_idle

require_role("researcher")
st.title("Progress")
eng = engine()
names = study_names(eng)
study = st.selectbox("Study", names, key="progress_study", bind="query-params")
if st.button("Refresh"):
    st.rerun()
with session_scope(eng) as s:
    expire_idle(s)  # idle sessions count as dropouts as soon as anyone looks
    sid = get_study(s, study).id
    status = C.participants_status_df(s, sid)
    per_condition = C.condition_progress_df(s, sid)
    dropouts = C.dropouts_df(s, sid)
    failures = C.assistant_failures_df(s, sid)
    model_problems = C.assistant_model_problems(s, sid)
for problem in model_problems:
    st.error(escape_markdown(f"Participants get no reply from this server: {problem}"))
st.subheader("Participants by status")
table(status, hide_index=True)
st.subheader("Conversations per condition by user kind")
table(per_condition, hide_index=True, width="stretch")
st.subheader("Dropouts")
table(dropouts, hide_index=True, width="stretch")
st.subheader("Assistant failures in participant sessions")
if failures.empty:
    st.caption("No failed assistant call recorded.")
else:
    st.caption(
        "Participants saw a short notice and could try again; the latest 50 failures, newest first "
        "(the server log has the same)."
    )
    table(failures, hide_index=True, width="stretch")
