"""Entry of the Streamlit app (``workbench serve``): chooses the pages by role.

Participants arrive with a token (``?t=``) or a Prolific link and see only their study page;
annotators and researchers log in and get their pages in the sidebar.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

# `streamlit run` puts this file's folder on sys.path, not the repository; make the packages importable.
_ROOT = Path(__file__).resolve().parents[2]
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

import streamlit as st  # noqa: E402
from sqlalchemy.exc import InterfaceError, OperationalError  # noqa: E402

from db.errors import DatabaseUnavailable  # noqa: E402
from workbench.app.a11y import page_style  # noqa: E402
from workbench.app.auth import current_user, login_form, logout, restore_login  # noqa: E402

# Not "pages/": Streamlit lists a folder of that name in the sidebar on its own before st.navigation
# takes over, so the login page would flash every page file's name.
PAGES = Path(__file__).resolve().parent / "views"

st.set_page_config(page_title="LLM user workbench", layout="wide")
# Participants should not see Streamlit's developer menu (Deploy, rerun settings...).
st.set_option("client.toolbarMode", "minimal")
page_style()  # readable captions on every page (WCAG AA contrast)


def _logout_page() -> None:
    logout()
    st.rerun()


def _page(name: str, title: str, **kw):
    path = PAGES / name
    return st.Page(path, title=title, **kw) if path.exists() else None


# Shown when the database cannot be reached (a server restart, a network problem): to participants
# too, so it says nothing about the database itself; the details go to the server log.
UNAVAILABLE = (
    "The study is temporarily unavailable. Please try again in a minute. / 研究暂时无法访问，请稍后再试。"
)


def _route() -> None:
    params = st.query_params
    if "t" in params or "PROLIFIC_PID" in params:
        nav = st.navigation(
            [st.Page(PAGES / "participant.py", title="Study", default=True)], position="hidden"
        )
    else:
        restore_login()  # a reload or a server restart keeps a staff login (a cookie)
        user = current_user()
        if user is None:
            # The login form is drawn here rather than as a page, so that after logging in the
            # navigation starts fresh on its default page.
            login_form()
            st.stop()
        else:
            sections: dict[str, list] = {
                "Workbench": [st.Page(PAGES / "home.py", title="Home", default=True)]
            }
            if user["role"] in ("annotator", "researcher"):
                # Adjudication is a researcher's decision (the page refuses annotators): no link for them.
                adjudicate = _page("adjudicate.py", "Adjudicate") if user["role"] == "researcher" else None
                labelling = [p for p in (_page("annotate.py", "Annotate"), adjudicate) if p]
                if labelling:
                    sections["Annotation"] = labelling
            if user["role"] == "researcher":
                sections["Research"] = [
                    p
                    for p in (
                        _page("studies.py", "Studies"),
                        _page("progress.py", "Progress"),
                        _page("transcripts.py", "Transcripts"),
                        _page("simulation.py", "Simulation"),
                        _page("export.py", "Export"),
                        _page("dashboard.py", "Dashboard"),
                    )
                    if p
                ]
            sections["Account"] = [
                st.Page(_logout_page, title=f"Log out ({user['name']})", url_path="logout")
            ]
            nav = st.navigation(sections)
    nav.run()


try:
    _route()
except (DatabaseUnavailable, OperationalError, InterfaceError) as exc:
    logging.getLogger("workbench.app").error("database unavailable: %s", exc)
    st.error(UNAVAILABLE)
