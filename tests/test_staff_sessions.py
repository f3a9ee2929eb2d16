"""Staff logins that survive a reload and a server restart (a hashed token with an expiry)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from sqlmodel import Session, select

from db.models import Annotator
from db.models.accounts import StaffSession
from db.types import utcnow
from workbench import accounts as A
from workbench.cli._common import ready_engine
from workbench.errors import UserInputError

streamlit_testing = pytest.importorskip("streamlit.testing.v1")
AppTest = streamlit_testing.AppTest

MAIN = str(Path(__file__).resolve().parent.parent / "workbench" / "app" / "main.py")
PASSWORDS = {"rita": "rita-password-1", "ann": "ann-password-1"}


# --- core: the token functions on SQLite and PostgreSQL ------------------------------------------

def _user(session, name="ann", role="annotator") -> Annotator:
    return A.add_user(session, name, role, PASSWORDS.get(name, "some-password-1"))


def test_token_round_trip_stores_only_the_hash(session):
    user = _user(session)
    token = A.create_session(session, user)
    session.commit()
    assert len(token) >= 40
    row = session.exec(select(StaffSession)).one()
    assert row.token_hash == A.hash_session_token(token) != token and len(row.token_hash) == 64
    assert token not in {row.token_hash, str(row.id)}
    hours = (row.expires_at - row.created_at).total_seconds() / 3600
    assert hours == pytest.approx(12.0)
    assert A.user_for_session(session, token).id == user.id
    # another login gets another token
    assert A.create_session(session, user) != token


@pytest.mark.parametrize("bad", ["", None, "x" * 500, "not-a-token"])
def test_unknown_tokens_are_refused(session, bad):
    A.create_session(session, _user(session))
    assert A.user_for_session(session, bad) is None


def test_tampered_expired_and_inactive(session):
    user = _user(session)
    token = A.create_session(session, user)
    tampered = token[:-1] + ("A" if token[-1] != "A" else "B")
    assert A.user_for_session(session, tampered) is None
    row = session.exec(select(StaffSession)).one()
    row.expires_at = utcnow() - timedelta(seconds=1)
    session.add(row)
    session.commit()
    assert A.user_for_session(session, token) is None
    session.commit()
    assert session.exec(select(StaffSession)).all() == []  # the expired row is gone
    token = A.create_session(session, user)
    user.active = False
    session.add(user)
    session.commit()
    assert A.user_for_session(session, token) is None


def test_end_session_and_password_reset_revoke(session):
    user = _user(session)
    t1, t2 = A.create_session(session, user), A.create_session(session, user)
    assert A.end_session(session, t1) is True
    assert A.end_session(session, t1) is False
    assert A.user_for_session(session, t1) is None and A.user_for_session(session, t2).id == user.id
    A.add_user(session, "ann", "annotator", "a-new-password", update=True)
    session.commit()
    assert A.user_for_session(session, t2) is None


def test_expired_rows_are_cleaned_on_login(session):
    user = _user(session)
    A.create_session(session, user, hours=-1)
    A.create_session(session, user)
    session.commit()
    assert len(session.exec(select(StaffSession)).all()) == 1


def test_session_hours_setting(monkeypatch, session):
    monkeypatch.setenv(A.ENV_SESSION_HOURS, "0.5")
    A.create_session(session, _user(session))
    row = session.exec(select(StaffSession)).one()
    assert (row.expires_at - row.created_at) == timedelta(minutes=30)
    for bad in ("abc", "0", "-2"):
        monkeypatch.setenv(A.ENV_SESSION_HOURS, bad)
        with pytest.raises(UserInputError, match=A.ENV_SESSION_HOURS):
            A.session_hours()


# --- the app --------------------------------------------------------------------------------------

@pytest.fixture
def eng():
    engine = ready_engine()
    with Session(engine) as s:
        for name, role in (("rita", "researcher"), ("ann", "annotator")):
            A.add_user(s, name, role, PASSWORDS[name])
        s.commit()
    yield engine


def _param(at: AppTest, key: str = "session"):
    v = at.query_params.get(key)
    return v[0] if isinstance(v, list) else v


def _login(name: str) -> AppTest:
    at = AppTest.from_file(MAIN, default_timeout=30).run()
    at.text_input[0].set_value(name)
    at.text_input[1].set_value(PASSWORDS[name])
    at.button[0].click().run()
    assert not at.exception, at.exception
    assert at.session_state["user"]["name"] == name
    return at


def _fresh(**query) -> AppTest:
    """A new browser session (what a reload or a server restart gives) with this address."""
    at = AppTest.from_file(MAIN, default_timeout=30)
    for k, v in query.items():
        at.query_params[k] = v
    return at.run()


def _on_login_form(at: AppTest) -> bool:
    return (not at.exception and at.title and at.title[0].value == "LLM user workbench"
            and "user" not in at.session_state and [b.label for b in at.button] == ["Log in"])


def test_reload_keeps_the_login(eng):
    at = _login("rita")
    token = _param(at)
    assert token
    with Session(eng) as s:
        row = s.exec(select(StaffSession)).one()
        assert row.token_hash == A.hash_session_token(token)
    again = _fresh(session=token)
    assert not again.exception, again.exception
    assert again.session_state["user"]["name"] == "rita"
    assert again.session_state["user"]["role"] == "researcher"
    assert again.title[0].value == "Studies"
    assert _param(again) == token


def test_page_switch_keeps_the_token_in_the_address(eng):
    """A sidebar page switch in the browser may drop the query parameters: every run puts the token
    back from the session (the real-browser test checks the address bar after a switch too)."""
    token = A_token(eng, "rita")
    at = AppTest.from_file(MAIN, default_timeout=30)
    at.session_state["user"] = {"id": 1, "name": "rita", "role": "researcher"}
    at.session_state["_staff_session"] = token
    at.run()  # no ?session= in the address
    assert not at.exception, at.exception
    assert _param(at) == token
    at.switch_page("pages/transcripts.py").run()
    assert not at.exception, at.exception
    assert _param(at) == token and at.title[0].value == "Transcripts"


def A_token(eng, name: str, hours: float | None = None) -> str:
    with Session(eng) as s:
        user = s.exec(select(Annotator).where(Annotator.name == name)).one()
        token = A.create_session(s, user, hours=hours)
        s.commit()
    return token


@pytest.mark.parametrize("kind", ["unknown", "tampered", "expired", "inactive"])
def test_invalid_tokens_show_the_login_form(eng, kind):
    token = A_token(eng, "rita", hours=-1 if kind == "expired" else None)
    if kind == "unknown":
        token = "x" * 43
    elif kind == "tampered":
        token = token[:10] + ("a" if token[10] != "a" else "b") + token[11:]
    elif kind == "inactive":
        with Session(eng) as s:
            user = s.exec(select(Annotator).where(Annotator.name == "rita")).one()
            user.active = False
            s.add(user)
            s.commit()
    at = _fresh(session=token)
    assert _on_login_form(at), [t.value for t in at.title]
    assert "session" not in at.query_params


def test_role_comes_from_the_account(eng):
    token = A_token(eng, "ann")
    with Session(eng) as s:
        user = s.exec(select(Annotator).where(Annotator.name == "ann")).one()
        user.role = "researcher"
        s.add(user)
        s.commit()
    at = _fresh(session=token)
    assert at.session_state["user"]["role"] == "researcher"


def test_logout_invalidates_the_token(eng):
    at = _login("ann")
    token = _param(at)
    again = _fresh(session=token)
    assert again.session_state["user"]["name"] == "ann"
    _logout(at)
    assert "session" not in at.query_params and "user" not in at.session_state
    with Session(eng) as s:
        assert s.exec(select(StaffSession)).all() == []
    assert _on_login_form(_fresh(session=token))


def _logout(at: AppTest) -> None:
    """Open the sidebar's "Log out" page (a function page: AppTest.switch_page only takes files)."""
    at._page_hash = next(h for h, info in at._registered_pages.items() if info.get("url_pathname") == "logout")
    at.run()
    assert not at.exception, at.exception


def test_annotator_token_cannot_reach_researcher_pages(eng):
    token = A_token(eng, "ann")
    at = _fresh(session=token)
    assert not at.exception, at.exception
    assert at.session_state["user"]["role"] == "annotator"
    for page in ("studies.py", "progress.py", "transcripts.py", "simulation.py", "export.py", "dashboard.py",
                 "adjudicate.py"):
        # Not even registered in the navigation for an annotator restored from a token.
        with pytest.raises(ValueError, match="not a registered page|registered"):
            at.switch_page(f"pages/{page}")
    at.switch_page("pages/annotate.py").run()
    assert not at.exception, at.exception
    assert _param(at) == token and at.session_state["user"]["name"] == "ann"
    # The page files themselves refuse the annotator when run directly.
    for page in ("studies.py", "transcripts.py", "export.py"):
        direct = AppTest.from_file(str(Path(MAIN).parent / "pages" / page), default_timeout=30)
        direct.session_state["user"] = {"id": 2, "name": "ann", "role": "annotator"}
        direct.run()
        assert direct.error and "access" in direct.error[0].value


def test_participant_links_ignore_staff_tokens(eng):
    token = A_token(eng, "rita")
    at = _fresh(t=token)  # a staff token given as an invite token is just an invalid invite
    assert "not valid" in at.error[0].value and "user" not in at.session_state
    at = _fresh(t="not-a-token", session=token)  # a participant link never restores a staff login
    assert "not valid" in at.error[0].value and "user" not in at.session_state
