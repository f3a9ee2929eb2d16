"""Researcher: export a study (jsonl, csv, parquet) and download the files."""

import streamlit as st

from db.errors import WorkbenchError
from workbench.app.auth import require_role
from workbench.app.common import engine, escape_markdown, study_names
from workbench.dataio.export import export_files, export_for_download

require_role("researcher")
st.title("Export")
eng = engine()
names = study_names(eng)
study = st.selectbox("Study", names, key="export_study", bind="query-params")
fmt = st.radio("Format", ["jsonl", "csv", "parquet"], horizontal=True)
if st.button("Export", type="primary"):
    try:
        with st.spinner(f"Exporting {study} as {fmt}…"):
            # The previous export of this browser session is deleted, and any older than a day.
            st.session_state["export"] = export_for_download(eng, study, fmt, st.session_state.get("export"))
    except WorkbenchError as exc:
        st.error(escape_markdown(str(exc)))
done = st.session_state.get("export")
if done and (done["study"], done["format"]) == (study, fmt):
    st.caption(
        escape_markdown(f"{done['study']} as {done['format']}, exported {done['at']:%Y-%m-%d %H:%M} UTC:")
    )
    for path in export_files(done):
        st.download_button(
            f"Download {path.name}",
            path.read_bytes(),
            file_name=f"{done['study']}-{path.name}",
            key=f"dl_{path}",
        )
elif done:
    # Download buttons belong to the study and format they were made for: never offer another study's files.
    st.caption(
        escape_markdown(
            f"The last export was {done['study']} as {done['format']}; press Export for {study} as {fmt}."
        )
    )
