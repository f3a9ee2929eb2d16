"""Logins of annotators and researchers (participants never log in).

A login survives a reload and a server restart: it is a random token kept in the page's address
(``?session=``; Streamlit offers no way to set a cookie) whose SHA-256 hash is stored with the
account and an expiry time. Participants' ``?t=`` links are handled before any of this.
"""

from __future__ import annotations

from typing import Optional

import streamlit as st

from db.engine import session_scope

SESSION_PARAM = "session"
_TOKEN_KEY = "_staff_session"


def current_user() -> Optional[dict]:
    return st.session_state.get("user")


def _user_dict(user) -> dict:
    return {"id": user.id, "name": user.name, "role": user.role}


def login(name: str, password: str) -> bool:
    from workbench.accounts import authenticate, create_session
    from workbench.app.common import engine

    with session_scope(engine()) as session:
        user = authenticate(session, name, password)
        if user is None:
            return False
        token = create_session(session, user)
        st.session_state["user"] = _user_dict(user)
    st.session_state[_TOKEN_KEY] = token
    st.query_params[SESSION_PARAM] = token
    return True


def restore_login() -> None:
    """Run at the top of every staff page run: bring back a login after a reload or a restart, and
    keep its token in the address (a sidebar page switch may drop the query parameters)."""
    token = st.session_state.get(_TOKEN_KEY)
    if st.session_state.get("user") is not None:
        if token and st.query_params.get(SESSION_PARAM) != token:
            st.query_params[SESSION_PARAM] = token
        return
    token = st.query_params.get(SESSION_PARAM)
    if not token:
        return
    from workbench.accounts import user_for_session
    from workbench.app.common import engine

    with session_scope(engine()) as session:
        user = user_for_session(session, token)
        found = _user_dict(user) if user is not None else None
    if found is None:
        # Unknown, expired or revoked: drop it so the login form starts from a clean address.
        del st.query_params[SESSION_PARAM]
        return
    st.session_state["user"] = found
    st.session_state[_TOKEN_KEY] = token


def logout() -> None:
    from workbench.accounts import end_session
    from workbench.app.common import engine

    token = st.session_state.pop(_TOKEN_KEY, None) or st.query_params.get(SESSION_PARAM)
    if token:
        with session_scope(engine()) as session:
            end_session(session, token)
    if SESSION_PARAM in st.query_params:
        del st.query_params[SESSION_PARAM]
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
