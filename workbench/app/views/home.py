"""Home: researchers see every study by user kind; annotators only their own queues (labelling is blind)."""

import pandas as pd
import streamlit as st

from db.engine import session_scope
from workbench.app.auth import require_role
from workbench.app.common import engine, table
from workbench.participation.console import studies_overview_df

user = require_role("annotator", "researcher")
if user["role"] != "researcher":
    # Counts by user kind would tell an annotator how likely each item is to come from a person.
    from annotation import queue as Q

    st.title("Welcome")
    with session_scope(engine()) as session:
        rows = []
        for study in Q.annotator_studies(session, user["id"]):
            prog = Q.queue_progress(session, study.id, user["id"])
            rows.append(
                {
                    "study": study.name,
                    "labelled": prog.done,
                    "skipped": prog.skipped,
                    "to go": prog.pending,
                    "total": prog.total,
                }
            )
    if rows:
        st.caption("Your labelling queues.")
        table(pd.DataFrame(rows), hide_index=True, width="stretch")
        st.page_link("views/annotate.py", label="Go to labelling")
    else:
        st.info("No conversations are assigned to you yet.")
    st.stop()

st.title("Studies")
st.caption("Conversations per study and scenario, by user kind.")
with session_scope(engine()) as session:
    df = studies_overview_df(session)
if df.empty:
    st.info(
        "No studies yet. Create one on the Studies page or import the released data "
        "(`workbench import recllmsim PATH`)."
    )
else:
    table(df, hide_index=True, width="stretch")
