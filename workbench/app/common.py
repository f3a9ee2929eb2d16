"""Helpers shared by the pages: the database, safe text rendering (``safe_text``), one-call actions."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import streamlit as st
from sqlalchemy.engine import Engine

from db.engine import session_scope
from db.errors import WorkbenchError
from db.settings import Settings
from workbench.app.safe_text import escape_markdown, safe_markdown

# What the core logs (e.g. a failed assistant reply, with its details) goes to the server's stderr
# with a time stamp: Streamlit configures only its own logger.
_log = logging.getLogger("workbench")
if not _log.handlers:
    _handler = logging.StreamHandler()
    _handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    _log.addHandler(_handler)


def table(df, **kwargs) -> None:
    """``st.dataframe`` with empty text cells left empty (Streamlit prints a grey "None" for a
    missing value); numeric columns keep their type, so they still sort as numbers."""
    import pandas as pd

    shown = df.copy()
    for col in shown.columns:
        if pd.api.types.is_object_dtype(shown[col]) or pd.api.types.is_string_dtype(shown[col]):
            shown[col] = shown[col].astype(object).where(shown[col].notna(), "")
    st.dataframe(shown, **kwargs)


def show_text(text: str | None) -> None:
    st.markdown(escape_markdown(text))


def show_reply(text: str | None) -> None:
    """An assistant turn: readable markdown, nothing in it can load, link or run."""
    st.markdown(safe_markdown(text))


def show_turn(role: str, text: str | None) -> None:
    """A chat turn: assistant replies as safe markdown, everything else exactly as typed."""
    if role == "assistant":
        show_reply(text)
    else:
        show_text(text)


def hide_input_hints(language: str) -> None:
    """Hide Streamlit's own input hints ("Press Enter to submit form", "Press Ctrl+Enter to apply",
    character counters) on pages in a language other than English: Streamlit writes them in English
    only, which on a Chinese page is noise for the reader (and, on the labelling page, a hint of
    another language next to the conversation)."""
    if language != "en":
        st.html("<style>[data-testid='InputInstructions']{display:none}</style>")


def settings() -> Settings:
    """The settings from the environment, read afresh on each call (cheap), so every page run sees
    the environment the server runs in."""
    return Settings.from_env()


def engine() -> Engine:
    """The configured database with its schema up to date (checked once per URL and process)."""
    from db.engine import ready_engine

    return ready_engine(settings().db_url)


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
    from db.repo import study_names as names_of

    with session_scope(eng) as s:
        names = names_of(s)
    if not names:
        st.info("No studies yet.")
        st.stop()
    return names


def codebook_or_stop():
    """The configured codebook; a page that needs it stops with the loader's message (file and
    field) when it cannot be loaded."""
    from annotation.codebook import load_codebook

    try:
        return load_codebook(extensions=settings().codebook_extensions)
    except WorkbenchError as exc:
        st.error(escape_markdown(f"The codebook cannot be loaded: {exc}"))
        st.stop()
