"""Logins of annotators and researchers (participants never log in)."""

from __future__ import annotations

from typing import Optional

import streamlit as st

from db.engine import session_scope


def current_user() -> Optional[dict]:
    return st.session_state.get("user")


def login(name: str, password: str) -> bool:
    from workbench.accounts import authenticate
    from workbench.app.common import engine

    with session_scope(engine()) as session:
        user = authenticate(session, name, password)
        if user is None:
            return False
        st.session_state["user"] = {"id": user.id, "name": user.name, "role": user.role}
    return True


def logout() -> None:
    st.session_state.pop("user", None)


def require_role(*roles: str) -> dict:
    """The logged-in user if their role is one of ``roles``; otherwise the page stops here."""
    user = current_user()
    if user is None:
        st.warning("Please log in first.")
        st.stop()
    if roles and user.get("role") not in roles:
        st.error("You do not have access to this page.")
        st.stop()
    return user


def login_form() -> None:
    st.title("LLM user workbench")
    st.write("Annotators and researchers log in here. Participants use the link they were given.")
    with st.form("login"):
        name = st.text_input("User name")
        password = st.text_input("Password", type="password")
        if st.form_submit_button("Log in"):
            if login(name, password):
                st.rerun()
            st.error("Unknown user name or wrong password.")
