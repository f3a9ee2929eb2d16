import streamlit as st

from db.engine import session_scope
from workbench.app.auth import require_role
from workbench.app.common import engine
from workbench.participation.console import studies_overview_df

user = require_role("annotator", "researcher")
st.title("Studies")
st.caption("Conversations per study and scenario, by user kind.")
with session_scope(engine()) as session:
    df = studies_overview_df(session)
if df.empty:
    st.info("No studies yet. Create one on the Studies page or import the released data "
            "(`workbench import recllmsim PATH`).")
else:
    st.dataframe(df, hide_index=True, use_container_width=True)
