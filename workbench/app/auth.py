"""Logins of annotators and researchers (participants never log in).

A login survives a reload and a server restart: it is a random token kept in a browser cookie
whose SHA-256 hash is stored with the account and an expiry time. Streamlit can read cookies
(``st.context.cookies``, sent when the page opens) but has no call to set one, so the page sets and
clears it with a one-line script. The token never appears in the address, so it does not end up in
the history, in a shared link or in a screenshot. Participants' ``?t=`` links are handled before
any of this.
"""

from __future__ import annotations

import re

import streamlit as st

from db.engine import session_scope

# Older versions kept the token in the address as ?session=; it is removed from the address on sight.
SESSION_PARAM = "session"
_TOKEN_KEY = "_staff_session"
# The cookie change a login or logout leaves for the next page run (they rerun at once): the token
# to set, or None to clear it.
_COOKIE_OP = "_staff_cookie_op"
_TOKEN_SHAPE = re.compile(r"[A-Za-z0-9_-]{20,200}")
# A cookie found dead in this browser session: the browser keeps sending it until the page's script
# clears it, and it is not looked up again.
_DEAD_KEY = "_staff_dead_token"


def cookie_name() -> str:
    """One cookie per site. Without WORKBENCH_PUBLIC_URL, one per server port: browsers share cookies
    across the ports of a host, and two workbench servers on one machine must not log each other
    out. With it (several servers behind one reverse proxy), one per public address, so a login
    made through one server is valid on the others."""
    import hashlib

    from workbench.app.common import settings

    public = settings().public_url
    if public:
        return f"wb_staff_{hashlib.sha256(public.encode()).hexdigest()[:10]}"
    try:
        port = int(st.get_option("server.port"))
    except Exception:  # noqa: BLE001 - no server (tests)
        port = 0
    return f"wb_staff_{port}"


def browser_token() -> str | None:
    """The staff token the browser sent with the page (None without one)."""
    try:
        value = st.context.cookies.get(cookie_name())
    except Exception:  # noqa: BLE001 - no browser connection (AppTest, bare mode)
        return None
    return value if isinstance(value, str) and _TOKEN_SHAPE.fullmatch(value) else None


def _write_cookie(token: str | None) -> None:
    """Set (``token``) or clear (None) the login cookie in the browser: a script in the page, since
    Streamlit has no Set-Cookie. The token is checked against its shape before it goes into the script."""
    if token and _TOKEN_SHAPE.fullmatch(token):
        from workbench.app.common import settings

        value, age = token, int(settings().session_hours * 3600)
    else:
        value, age = "", 0
    st.html(
        "<script>(function(){var s=location.protocol==='https:'?'; Secure':'';"
        f"document.cookie='{cookie_name()}={value}; Max-Age={age}; Path=/; SameSite=Strict'+s;}})();</script>",
        unsafe_allow_javascript=True,
    )


def current_user() -> dict | None:
    return st.session_state.get("user")


def _user_dict(user) -> dict:
    return {"id": user.id, "name": user.name, "role": user.role}


def client_id() -> str:
    """Who is trying to log in, for counting failures per client: the address the browser connects
    from (behind a reverse proxy that is the proxy's; X-Forwarded-For is not trusted, a client could
    send any), else this browser session's id."""
    try:
        address = st.context.ip_address
    except Exception:  # noqa: BLE001 - no browser connection (AppTest, bare mode)
        address = None
    if isinstance(address, str) and address:
        return address
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    ctx = get_script_run_ctx()
    return f"session:{ctx.session_id}" if ctx is not None else "session:unknown"


def login(name: str, password: str) -> str | None:
    """Log in; None on success, else what to tell the person (a wrong password, or how long failed
    logins keep them waiting)."""
    from workbench.accounts import create_session, log_in
    from workbench.app.common import engine, settings
    from workbench.throttle import LoginPolicy

    config = settings()
    policy = LoginPolicy(max_failures=config.login_max_failures, lock_minutes=config.login_lock_minutes)
    with session_scope(engine()) as session:
        user, wait, refused = log_in(session, name, password, client_id(), policy)
        if user is None:
            if refused:
                return wait.message()
            return f"{WRONG} {wait.message()}" if wait is not None and wait.locked else WRONG
        token = create_session(session, user, hours=config.session_hours)
        st.session_state["user"] = _user_dict(user)
    st.session_state[_TOKEN_KEY] = token
    st.session_state[_COOKIE_OP] = token
    return None


WRONG = "Unknown user name or wrong password."


def restore_login() -> None:
    """Run at the top of every staff page run: check the login against the database (a reset
    password, a deactivated account, an expired or ended login, a changed role take effect at the
    next run of an open tab, not at the next reload), bring back a login after a reload or a restart
    from the browser's cookie, and carry out a pending cookie change (after a login or a logout)."""
    if SESSION_PARAM in st.query_params:
        del st.query_params[SESSION_PARAM]
    if _COOKIE_OP in st.session_state:
        _write_cookie(st.session_state.pop(_COOKIE_OP))
    token = st.session_state.get(_TOKEN_KEY) or browser_token()
    if not token or token == st.session_state.get(_DEAD_KEY):
        # Only a login puts a user here, always with its token: a user without one is no login.
        st.session_state.pop("user", None)
        return
    from workbench.accounts import user_for_session
    from workbench.app.common import engine

    with session_scope(engine()) as session:
        user = user_for_session(session, token)
        found = _user_dict(user) if user is not None else None
    if found is None:
        st.session_state.pop("user", None)
        st.session_state.pop(_TOKEN_KEY, None)
        st.session_state[_DEAD_KEY] = token
        # Unknown, expired or revoked: the browser forgets it; the login form follows.
        _write_cookie(None)
        return
    st.session_state["user"] = found  # the account's current name and role
    st.session_state[_TOKEN_KEY] = token


def logout() -> None:
    from workbench.accounts import end_session
    from workbench.app.common import engine

    token = st.session_state.pop(_TOKEN_KEY, None) or browser_token()
    if token:
        with session_scope(engine()) as session:
            end_session(session, token)  # the token is dead even if the browser kept the cookie
    st.session_state[_COOKIE_OP] = None
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
            problem = login(name, password)
            if problem is None:
                st.rerun()
            st.error(problem)
