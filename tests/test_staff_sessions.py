"""Staff logins that survive a reload and a server restart (a hashed token with an expiry)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from sqlmodel import Session, select

from db.engine import ready_engine
from db.errors import UserInputError
from db.models import Annotator
from db.models.accounts import StaffSession
from db.settings import Settings
from db.types import utcnow
from workbench import accounts as A

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
    A.create_session(session, _user(session), hours=Settings.from_env().session_hours)
    row = session.exec(select(StaffSession)).one()
    assert (row.expires_at - row.created_at) == timedelta(minutes=30)
    for bad in ("abc", "0", "-2"):
        monkeypatch.setenv(A.ENV_SESSION_HOURS, bad)
        with pytest.raises(UserInputError, match=A.ENV_SESSION_HOURS):
            Settings.from_env()


# --- the app --------------------------------------------------------------------------------------
# AppTest cannot send cookies, so a "browser" here is the cookie value that auth.browser_token() would
# read (monkeypatched); the real-browser test (tests/e2e/test_staff_browser.py) sets and sends the
# real cookie through a reload.


def _staff_db():
    engine = ready_engine(Settings.from_env().db_url)
    with Session(engine) as s:
        for name, role in (("rita", "researcher"), ("ann", "annotator")):
            A.add_user(s, name, role, PASSWORDS[name])
        s.commit()
    return engine


@pytest.fixture
def eng():
    return _staff_db()


@pytest.fixture
def eng_both(use_db):
    """``eng`` on SQLite and on PostgreSQL (the app's WORKBENCH_DB_URL points at each)."""
    return _staff_db()


@pytest.fixture
def browser(monkeypatch):
    """The cookie jar of one browser: what the page sends when it opens."""
    from workbench.app import auth

    jar: dict = {}
    monkeypatch.setattr(auth, "browser_token", lambda: jar.get("token"))
    return jar


def _cookie_scripts(at: AppTest) -> list[str]:
    return [e.proto.body for e in at.get("html") if "document.cookie" in e.proto.body]


def _set_cookie(at: AppTest) -> str:
    """The token of the cookie-setting script the last run sent, checked for its attributes."""
    scripts = _cookie_scripts(at)
    assert len(scripts) == 1, scripts
    import re

    m = re.search(
        r"document\.cookie='(wb_staff_\d+)=([A-Za-z0-9_-]+); Max-Age=(\d+); Path=/; SameSite=Strict'",
        scripts[0],
    )
    assert m, scripts[0]
    assert int(m.group(3)) == 12 * 3600
    return m.group(2)


def _login(name: str) -> AppTest:
    at = AppTest.from_file(MAIN, default_timeout=30).run()
    at.text_input[0].set_value(name)
    at.text_input[1].set_value(PASSWORDS[name])
    at.button[0].click().run()
    assert not at.exception, at.exception
    assert at.session_state["user"]["name"] == name
    return at


def _fresh(jar: dict | None = None, token: str | None = None, **query) -> AppTest:
    """A new browser session (what a reload or a server restart gives) with this cookie and address."""
    if jar is not None:
        jar["token"] = token
    at = AppTest.from_file(MAIN, default_timeout=30)
    for k, v in query.items():
        at.query_params[k] = v
    return at.run()


def _on_login_form(at: AppTest) -> bool:
    return (
        not at.exception
        and at.title
        and at.title[0].value == "LLM user workbench"
        and "user" not in at.session_state
        and [b.label for b in at.button] == ["Log in"]
    )


def test_reload_keeps_the_login(eng, browser):
    at = _login("rita")
    token = _set_cookie(at)
    assert "session" not in at.query_params  # the token never goes into the address
    with Session(eng) as s:
        row = s.exec(select(StaffSession)).one()
        assert row.token_hash == A.hash_session_token(token)
    at.run()
    assert _cookie_scripts(at) == []  # set once, not on every run
    again = _fresh(browser, token)
    assert not again.exception, again.exception
    assert again.session_state["user"]["name"] == "rita"
    assert again.session_state["user"]["role"] == "researcher"
    assert again.title[0].value == "Studies"
    assert "session" not in again.query_params and _cookie_scripts(again) == []


def test_page_switch_keeps_the_login(eng, browser):
    token = A_token(eng, "rita")
    at = _fresh(browser, token)
    at.switch_page("views/transcripts.py").run()
    assert not at.exception, at.exception
    assert at.title[0].value == "Transcripts" and at.session_state["user"]["name"] == "rita"


def test_an_old_token_in_the_address_is_removed_and_ignored(eng, browser):
    token = A_token(eng, "rita")
    at = _fresh(browser, None, session=token)  # ?session= of older versions
    assert _on_login_form(at) and "session" not in at.query_params


def A_token(eng, name: str, hours: float | None = None) -> str:
    with Session(eng) as s:
        user = s.exec(select(Annotator).where(Annotator.name == name)).one()
        token = A.create_session(s, user, hours=hours)
        s.commit()
    return token


@pytest.mark.parametrize("kind", ["unknown", "tampered", "expired", "inactive"])
def test_invalid_tokens_show_the_login_form(eng, browser, kind):
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
    at = _fresh(browser, token)
    assert _on_login_form(at), [t.value for t in at.title]
    assert any("Max-Age=0" in s for s in _cookie_scripts(at))  # the browser is told to forget it


def test_role_comes_from_the_account(eng, browser):
    token = A_token(eng, "ann")
    with Session(eng) as s:
        user = s.exec(select(Annotator).where(Annotator.name == "ann")).one()
        user.role = "researcher"
        s.add(user)
        s.commit()
    at = _fresh(browser, token)
    assert at.session_state["user"]["role"] == "researcher"


def test_logout_invalidates_the_token(eng, browser):
    at = _login("ann")
    token = _set_cookie(at)
    again = _fresh(browser, token)
    assert again.session_state["user"]["name"] == "ann"
    _logout(at)
    assert "user" not in at.session_state and _on_login_form(at)
    assert any("Max-Age=0" in s for s in _cookie_scripts(at))  # the cookie is cleared...
    with Session(eng) as s:
        assert s.exec(select(StaffSession)).all() == []  # ... and dead even if the browser kept it
    assert _on_login_form(_fresh(browser, token))


def _logout(at: AppTest) -> None:
    """Open the sidebar's "Log out" page (a function page: AppTest.switch_page only takes files)."""
    at._page_hash = next(
        h for h, info in at._registered_pages.items() if info.get("url_pathname") == "logout"
    )
    at.run()
    assert not at.exception, at.exception


def test_annotator_token_cannot_reach_researcher_pages(eng, browser):
    token = A_token(eng, "ann")
    at = _fresh(browser, token)
    assert not at.exception, at.exception
    assert at.session_state["user"]["role"] == "annotator"
    for page in (
        "studies.py",
        "progress.py",
        "transcripts.py",
        "simulation.py",
        "export.py",
        "dashboard.py",
        "adjudicate.py",
    ):
        # Not even registered in the navigation for an annotator restored from a token.
        with pytest.raises(ValueError, match="not a registered page|registered"):
            at.switch_page(f"views/{page}")
    at.switch_page("views/annotate.py").run()
    assert not at.exception, at.exception
    assert at.session_state["user"]["name"] == "ann"
    # The page files themselves refuse the annotator when run directly.
    for page in ("studies.py", "transcripts.py", "export.py"):
        direct = AppTest.from_file(str(Path(MAIN).parent / "views" / page), default_timeout=30)
        direct.session_state["user"] = {"id": 2, "name": "ann", "role": "annotator"}
        direct.run()
        assert direct.error and "access" in direct.error[0].value


def test_participant_links_ignore_staff_tokens(eng, browser):
    token = A_token(eng, "rita")
    at = _fresh(browser, None, t=token)  # a staff token given as an invite token is just an invalid invite
    assert "not valid" in at.error[0].value and "user" not in at.session_state
    at = _fresh(browser, token, t="not-a-token")  # a participant link never restores a staff login
    assert "not valid" in at.error[0].value and "user" not in at.session_state


# --- an open tab follows the account: every page run checks the login against the database --------


def _set_account(eng, name: str, **changes) -> None:
    with Session(eng) as s:
        user = s.exec(select(Annotator).where(Annotator.name == name)).one()
        for key, value in changes.items():
            setattr(user, key, value)
        s.add(user)
        s.commit()


def _expire_logins(eng) -> None:
    with Session(eng) as s:
        for row in s.exec(select(StaffSession)).all():
            row.expires_at = utcnow() - timedelta(seconds=1)
            s.add(row)
        s.commit()


@pytest.mark.parametrize("revoke", ["password_reset", "deactivated", "expired", "logged_out_elsewhere"])
def test_revoking_a_login_closes_the_open_tab(eng_both, browser, revoke):
    """An open researcher tab on Transcripts loses it at its next run (no reload) when the password is
    reset, the account deactivated, the login expires or is ended from another tab."""
    eng = eng_both
    at = _login("rita")
    token = _set_cookie(at)
    at.switch_page("views/transcripts.py").run()
    assert at.title[0].value == "Transcripts"
    if revoke == "password_reset":
        with Session(eng) as s:
            A.add_user(s, "rita", "researcher", "a-brand-new-password", update=True)
            s.commit()
    elif revoke == "deactivated":
        _set_account(eng, "rita", active=False)
    elif revoke == "expired":
        _expire_logins(eng)
    else:
        with Session(eng) as s:
            A.end_session(s, token)
            s.commit()
    browser["token"] = token  # the browser still sends the cookie
    at.run()
    assert _on_login_form(at), [t.value for t in at.title]
    assert any("Max-Age=0" in s for s in _cookie_scripts(at))
    at.switch_page("views/export.py").run()  # no page of the sidebar opens any more
    assert _on_login_form(at)


def test_a_role_change_applies_to_the_open_tab(eng_both, browser):
    """A researcher demoted to annotator while their tab is open loses the research pages at the next
    run; promoted back, they get them again, without logging in anew."""
    eng = eng_both
    at = _login("rita")
    at.switch_page("views/transcripts.py").run()
    _set_account(eng, "rita", role="annotator")
    at.run()
    assert not at.exception, at.exception
    assert at.session_state["user"]["role"] == "annotator"
    assert at.title[0].value != "Transcripts"
    with pytest.raises(ValueError, match="registered"):
        at.switch_page("views/studies.py")
    _set_account(eng, "rita", role="researcher")
    at.run()
    at.switch_page("views/studies.py").run()
    assert at.title[0].value == "Study setup" and at.session_state["user"]["role"] == "researcher"


def test_a_user_without_a_login_token_is_not_logged_in(eng, browser):
    """A user entry in the session state that no login made (no token) gets the login form."""
    at = AppTest.from_file(MAIN, default_timeout=30)
    at.session_state["user"] = {"id": 1, "name": "rita", "role": "researcher"}
    at.run()
    assert _on_login_form(at)


# --- login throttle: failures counted per account and per client in the database -------------------


def _clock(monkeypatch, start=None):
    """A clock the throttle reads (``now["t"]``), moved by the test instead of sleeping."""
    from workbench import throttle

    now = {"t": start or utcnow()}
    monkeypatch.setattr(throttle, "utcnow", lambda: now["t"])
    return now


def test_repeated_failures_wait_longer_then_lock(session, monkeypatch, caplog):
    """15 wrong passwords 1.5 s apart, then the right one: the waits grow (0, 1, 2, 4 s), the
    5th failure locks the account for 5 minutes (the 6th for 10), attempts during a wait are refused
    without looking at the password (even the right one), one warning line per lock, and
    ``users add --update`` lifts it."""
    from workbench.throttle import LoginPolicy

    _user(session, "rita", "researcher")
    session.commit()
    now = _clock(monkeypatch)
    t0, policy, waits, refused = now["t"], LoginPolicy(max_failures=5, lock_minutes=5), [], 0
    with caplog.at_level("WARNING", logger="workbench.throttle"):
        for _ in range(15):
            user, wait, was_refused = A.log_in(session, "rita", "wrong-password", "10.0.0.7", policy)
            assert user is None
            if was_refused:
                refused += 1
            else:
                waits.append(((wait.until - now["t"]).total_seconds(), wait.locked))
            now["t"] += timedelta(seconds=1.5)
        session.commit()
        assert waits == [(0, False), (1, False), (2, False), (4, False), (300, True)]
        assert refused == 10
        assert A.log_in(session, "rita", PASSWORDS["rita"], "10.0.0.8", policy).refused  # other client too
        now["t"] = t0 + timedelta(minutes=10)  # the 5-minute lock is over
        user, wait, was_refused = A.log_in(session, "rita", "wrong-again", "10.0.0.7", policy)
        assert not was_refused and wait.locked and wait.until - now["t"] == timedelta(minutes=10)
    locks = [r for r in caplog.records if "login locked" in r.getMessage()]
    assert len(locks) == 2 and "account:rita after 5 failed" in locks[0].getMessage()
    assert "locked for 10 minutes" in wait.message(now["t"])
    A.add_user(session, "rita", "researcher", "rita-password-2", update=True)  # lifts the lock
    session.commit()
    assert A.log_in(session, "rita", "rita-password-2", "10.0.0.8", policy).user.name == "rita"
    now["t"] += timedelta(seconds=30)  # the client's own delay (6 failures of its 20) runs out alone
    assert A.log_in(session, "rita", "rita-password-2", "10.0.0.7", policy).user.name == "rita"


def test_a_client_trying_many_accounts_is_locked(session, monkeypatch):
    """One address guessing across accounts (a known one and unknown names alike) is locked after
    4 x max_failures failures; another address still reaches the accounts, and a success clears only
    the account's count."""
    from workbench.throttle import LoginPolicy

    _user(session, "rita", "researcher")
    session.commit()
    now = _clock(monkeypatch)
    policy = LoginPolicy(max_failures=2, lock_minutes=1)
    for i in range(8):
        outcome = A.log_in(session, f"guess{i}", "nope-nope", "10.0.0.9", policy)
        assert not outcome.refused, i
        now["t"] += timedelta(seconds=31)
    assert outcome.wait.locked
    assert A.log_in(session, "rita", PASSWORDS["rita"], "10.0.0.9", policy).refused
    assert A.log_in(session, "rita", PASSWORDS["rita"], "10.0.0.10", policy).user is not None
    session.commit()


def test_failures_are_shared_across_servers_and_forgotten_after_a_day(engine, monkeypatch):
    """Two app servers (two engines on one database) add to the same count; a day without a failure
    starts it afresh."""
    from db.engine import make_engine
    from workbench.throttle import LoginPolicy, account_key, record_failure

    now = _clock(monkeypatch)
    other = make_engine(engine.url.render_as_string(hide_password=False))
    policy = LoginPolicy(max_failures=3, lock_minutes=5)
    try:
        for eng in (engine, other, engine):
            with Session(eng) as s:
                wait = record_failure(s, "rita", "10.0.0.1", policy)
                s.commit()
        assert wait.locked
        now["t"] += timedelta(days=2)
        with Session(other) as s:
            assert not record_failure(s, "rita", "10.0.0.1", policy).locked
            s.commit()
            from db.models.accounts import LoginThrottle

            assert s.get(LoginThrottle, account_key("rita")).failures == 1
    finally:
        other.dispose()


def test_login_settings(monkeypatch):
    monkeypatch.setenv("WORKBENCH_LOGIN_MAX_FAILURES", "3")
    monkeypatch.setenv("WORKBENCH_LOGIN_LOCK_MINUTES", "0.5")
    s = Settings.from_env()
    assert (s.login_max_failures, s.login_lock_minutes) == (3, 0.5)
    monkeypatch.delenv("WORKBENCH_LOGIN_LOCK_MINUTES")
    assert Settings.from_env().login_lock_minutes == 5
    for var, bad in (("WORKBENCH_LOGIN_MAX_FAILURES", "2.5"), ("WORKBENCH_LOGIN_MAX_FAILURES", "0")):
        monkeypatch.setenv(var, bad)
        with pytest.raises(UserInputError, match=var):
            Settings.from_env()


def test_login_form_locks_and_users_update_lifts_it(eng_both, monkeypatch, caplog):
    """The login form after repeated wrong passwords: a quick retry is told to wait, the failure that
    reaches WORKBENCH_LOGIN_MAX_FAILURES (3 here) says the account is locked and for how long, the
    right password is then refused too, and `workbench users add rita --update` lifts the lock."""
    from typer.testing import CliRunner

    from workbench.cli import app as cli

    monkeypatch.setenv("WORKBENCH_LOGIN_MAX_FAILURES", "3")
    now = _clock(monkeypatch)
    at = AppTest.from_file(MAIN, default_timeout=30).run()

    def attempt(password: str) -> str:
        at.text_input[0].set_value("rita")
        at.text_input[1].set_value(password)
        at.button[0].click().run()
        assert not at.exception, at.exception
        return at.error[0].value if at.error else ""

    assert attempt("wrong-1") == "Unknown user name or wrong password."  # a typo costs no wait
    assert attempt("wrong-2") == "Unknown user name or wrong password."
    assert attempt("wrong-3") == "Too many failed logins: wait 1 second and try again."
    now["t"] += timedelta(seconds=2)
    with caplog.at_level("WARNING", logger="workbench.throttle"):
        locked = attempt("wrong-3")
    assert locked.startswith("Unknown user name or wrong password. Too many failed logins: logging in is")
    assert "locked for 5 minutes" in locked
    assert [r.levelname for r in caplog.records if "login locked" in r.getMessage()] == ["WARNING"]
    assert "locked for 5 minutes" in attempt(PASSWORDS["rita"]) and "user" not in at.session_state
    r = CliRunner().invoke(
        cli,
        ["users", "add", "rita", "--role", "researcher", "--update", "--password-stdin"],
        input="new-pass-123\n",
    )
    assert r.exit_code == 0 and "lock lifted" in r.output, r.output
    now["t"] += timedelta(seconds=3)  # the client's own 2-second delay
    assert attempt("new-pass-123") == "" and at.session_state["user"]["name"] == "rita"
