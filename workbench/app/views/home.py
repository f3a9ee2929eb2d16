"""Home: researchers see every study by user kind; annotators only their own queues (labelling is blind)."""

import streamlit as st

from db.engine import session_scope
from workbench.app.auth import require_role
from workbench.app.common import engine, table

user = require_role("annotator", "researcher")
if user["role"] != "researcher":
    # Counts by user kind would tell an annotator how likely each item is to come from a person.
    from annotation.worklist import annotator_queues_df

    st.title("Welcome")
    with session_scope(engine()) as session:
        queues = annotator_queues_df(session, user["id"])
    if not queues.empty:
        st.caption("Your labelling queues.")
        table(
            queues,
            hide_index=True,
            width="stretch",
            column_config={
                "study": "Study",
                "labelled": "Labelled",
                "skipped": "Skipped",
                "to go": "To go",
                "total": "Total",
            },
        )
        st.page_link("views/annotate.py", label="Go to labelling")
    else:
        st.info("No conversations are assigned to you yet.")
    st.stop()

from db.repo import studies_overview_df  # noqa: E402  (after the role check: nothing loads for annotators)

st.title("Studies")
st.caption(
    "Conversations per study and scenario, by user kind. New studies, their settings and invite links "
    "are on the Studies page (Study setup); live coverage of each study's conditions on Progress."
)
with session_scope(engine()) as session:
    df = studies_overview_df(session)
if df.empty:
    st.info(
        "No studies yet. Create one on the Studies page or import the released data "
        "(`workbench import recllmsim PATH`)."
    )
else:
    # Plain names on screen (the scenario's display name, people and simulated users); the tidy
    # snake_case fields stay the data's.
    table(
        df,
        hide_index=True,
        width="stretch",
        column_order=["study", "scenario_name", "human", "agent"],
        column_config={
            "study": "Study",
            "scenario_name": "Scenario",
            "human": st.column_config.NumberColumn("People", help="conversations of real participants"),
            "agent": st.column_config.NumberColumn(
                "Simulated users", help="conversations of simulated users"
            ),
        },
    )
