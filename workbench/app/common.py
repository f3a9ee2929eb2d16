"""Helpers shared by the pages: the database, safe text rendering, one-call actions."""

from __future__ import annotations

import re
from typing import Any, Callable, Optional

import streamlit as st
from sqlalchemy.engine import Engine

from db.engine import session_scope
from workbench.errors import WorkbenchError

_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$:=^&])")


def escape_markdown(text: Optional[str]) -> str:
    """Text shown through st.markdown exactly as typed: no links, images, HTML, LaTeX or directives."""
    if not text:
        return ""
    escaped = _MD_SPECIAL.sub(r"\\\1", str(text))
    return escaped.replace("\r\n", "\n").replace("\n", "  \n")


def show_text(text: Optional[str]) -> None:
    st.markdown(escape_markdown(text))


def engine() -> Engine:
    """The configured database with its schema up to date (checked once per URL and process)."""
    from workbench.cli._common import ready_engine

    return ready_engine()


def run_action(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run one core function in a transaction; a user mistake becomes a message on the page."""
    try:
        with session_scope(engine()) as session:
            return fn(session, *args, **kwargs)
    except WorkbenchError as exc:
        st.session_state["_flash"] = str(exc)
        return None


def show_flash() -> None:
    msg = st.session_state.pop("_flash", None)
    if msg:
        st.error(escape_markdown(msg))


def study_names(eng: Engine) -> list[str]:
    """The studies' names; stops the page with a note when there are none yet."""
    from workbench.participation.console import study_names as names_of

    with session_scope(eng) as s:
        names = names_of(s)
    if not names:
        st.info("No studies yet.")
        st.stop()
    return names
