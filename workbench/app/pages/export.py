"""Researcher: export a study (jsonl, csv, parquet) and download the files."""

import tempfile
from pathlib import Path

import streamlit as st

from workbench.app.auth import require_role
from workbench.app.common import engine, study_names
from workbench.errors import WorkbenchError
from workbench.participation import console as C

require_role("researcher")
st.title("Export")
eng = engine()
names = study_names(eng)
study = st.selectbox("Study", names)
fmt = st.radio("Format", ["jsonl", "csv", "parquet"], horizontal=True)
if st.button("Export", type="primary"):
    out = Path(tempfile.mkdtemp(prefix="workbench-export-"))
    try:
        st.session_state["export_files"] = [str(p) for p in C.export(eng, study, fmt, out)]
    except WorkbenchError as exc:
        st.error(str(exc))
for path in map(Path, st.session_state.get("export_files", [])):
    if path.is_file():
        st.download_button(f"Download {path.name}", path.read_bytes(), file_name=path.name, key=f"dl_{path}")
