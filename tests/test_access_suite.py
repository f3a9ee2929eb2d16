"""The access suite: forged links and logins, pages beyond a role, and markup in participants' text.

One small study serves every test (``site``), on SQLite and PostgreSQL where the database matters.
Each test's docstring says what it tried.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from sqlmodel import Session, select

from analysis.synthetic import make_study as make_synthetic_study
from annotation.queue import assign_items
from db.engine import ready_engine
from db.models import Annotator, Participant, Scenario, Study, Turn
from tests.participation_helpers import make_study
from workbench import accounts as A

streamlit_testing = pytest.importorskip("streamlit.testing.v1")
AppTest = streamlit_testing.AppTest

VIEWS = Path(__file__).resolve().parent.parent / "workbench" / "app" / "views"
MAIN = str(VIEWS.parent / "main.py")
PAYLOAD = (
    "<script>alert(1)</script> <img src=x onerror=alert(1)> ![img](http://evil.example/x.png) "
    "[link](http://evil.example) [js](javascript:alert(1)) <a href='javascript:alert(1)'>x</a>"
)
UNSAFE = re.compile(r"(?<!\\)(<|!\[|\]\()")  # an unescaped tag, image or link
PID, SESSION = "5f1a2b3c4d5e6f7a8b9c0d1e", "sess-1"


def _site(url: str):
    """Study "pilot" (human and agent conversations, labels, Prolific STUDY_ID "PS1", every user
    message the payload, a scenario named with it), invite-only study "closed", researcher rita,
    annotator ann with labelling work."""
    eng = ready_engine(url)
    make_synthetic_study(eng, "pilot", n_human=6, n_agent=6, n_participants=3, seed=1, max_user_turns=2)
    with Session(eng) as s:
        make_study(s, name="closed", scenarios=("closed_scenario",), contexts=1)
        pilot = s.exec(select(Study).where(Study.name == "pilot")).one()
        pilot.settings = {**(pilot.settings or {}), "prolific_study_id": "PS1"}
        s.add(pilot)
        for t in s.exec(select(Turn).where(Turn.role == "user")).all():
            t.content = PAYLOAD
            s.add(t)
        scenario = s.exec(select(Scenario)).first()
        scenario.name = PAYLOAD
        s.add(scenario)
        A.add_user(s, "rita", "researcher", "rita-password-1")
        A.add_user(s, "ann", "annotator", "ann-password-1")
        s.flush()
        assign_items(s, "pilot", ["ann"], overlap=1, seed=0)
        s.commit()
    return eng


@pytest.fixture
def site(use_db):
    return _site(use_db)


def _app(**query) -> AppTest:
    at = AppTest.from_file(MAIN, default_timeout=60)
    for k, v in query.items():
        at.query_params[k] = v
    return at.run()


def _token(eng, name: str, hours: float | None = None) -> str:
    with Session(eng) as s:
        user = s.exec(select(Annotator).where(Annotator.name == name)).one()
        token = A.create_session(s, user, hours=hours)
        s.commit()
    return token


def _as(eng, name: str, page: str, **query) -> AppTest:
    """A page file run directly by a logged-in ``name`` (what the navigation runs)."""
    with Session(eng) as s:
        user = s.exec(select(Annotator).where(Annotator.name == name)).one()
        who = {"id": user.id, "name": user.name, "role": user.role}
    at = AppTest.from_file(str(VIEWS / page), default_timeout=120)
    at.session_state["user"] = who
    for k, v in query.items():
        at.query_params[k] = v
    return at


def _prolific_participants(eng) -> int:
    with Session(eng) as s:
        return len(s.exec(select(Participant).where(Participant.external_source == "prolific")).all())


# --- forged and replayed Prolific links ---------------------------------------------------------


@pytest.mark.parametrize(
    "study,study_id",
    [("closed", "PS1"), ("closed", "ANYTHING"), ("pilot", "WRONG"), (None, "WRONG"), ("pilot", "")],
)
def test_forged_prolific_links_create_no_participant(site, study, study_id):
    """Tried: Prolific links for a study that takes no Prolific participants (no prolific_study_id),
    a wrong or missing STUDY_ID for a Prolific study, and no study name with a wrong STUDY_ID."""
    query = {"PROLIFIC_PID": PID, "STUDY_ID": study_id, "SESSION_ID": SESSION}
    if study:
        query["study"] = study
    at = _app(**query)
    assert not at.exception, at.exception
    assert at.error and "not valid" in at.error[0].value
    assert "t" not in at.query_params and _prolific_participants(site) == 0


def test_replayed_prolific_pid_with_another_session_is_refused(site):
    """Tried: the genuine link, then the same PROLIFIC_PID replayed with another SESSION_ID (someone
    who learnt a participant's id): refused, no second participant, the first session untouched;
    the same SESSION_ID resumes."""
    first = _app(study="pilot", PROLIFIC_PID=PID, STUDY_ID="PS1", SESSION_ID=SESSION)
    assert not first.exception and "t" in first.query_params
    replay = _app(study="pilot", PROLIFIC_PID=PID, STUDY_ID="PS1", SESSION_ID="another-session")
    assert not replay.exception and "t" not in replay.query_params
    assert replay.error and "another Prolific session" in replay.error[0].value
    assert _prolific_participants(site) == 1
    again = _app(study="pilot", PROLIFIC_PID=PID, STUDY_ID="PS1", SESSION_ID=SESSION)
    assert "t" in again.query_params and _prolific_participants(site) == 1


# --- forged, expired and revoked staff logins ---------------------------------------------------


@pytest.mark.parametrize("kind", ["forged", "tampered", "expired", "revoked", "participant_token"])
def test_forged_expired_and_revoked_staff_cookies_get_the_login_form(site, monkeypatch, kind):
    """Tried, as the browser's staff cookie: a made-up token, a real one with one character changed,
    an expired one, one ended by logging out, and a participant's session token."""
    from workbench.app import auth

    token = _token(site, "rita", hours=-1 if kind == "expired" else None)
    if kind == "forged":
        token = "A" * 43
    elif kind == "tampered":
        token = token[:-1] + ("B" if token[-1] != "B" else "C")
    elif kind == "revoked":
        with Session(site) as s:
            A.end_session(s, token)
            s.commit()
    elif kind == "participant_token":
        token = _app(study="pilot", PROLIFIC_PID=PID, STUDY_ID="PS1", SESSION_ID=SESSION).query_params["t"]
    monkeypatch.setattr(auth, "browser_token", lambda: token)
    at = _app()
    assert not at.exception, at.exception
    assert "user" not in at.session_state and [b.label for b in at.button] == ["Log in"]
    at.session_state["_staff_session"] = token  # even held in the session state, it is checked
    at.run()
    assert "user" not in at.session_state and [b.label for b in at.button] == ["Log in"]


def test_the_shape_of_a_cookie_is_checked_before_use(monkeypatch):
    """Tried: cookies holding markup, a quote that would end the cookie script, and an overlong
    value; none is taken as a token."""
    from types import SimpleNamespace

    from workbench.app import auth

    for value in ("<script>alert(1)</script>", "abc'; document.cookie='x", "a" * 500):
        monkeypatch.setattr(auth.st, "context", SimpleNamespace(cookies={auth.cookie_name(): value}))
        assert auth.browser_token() is None


# --- an annotator against every researcher page --------------------------------------------------


def _researcher_pages() -> list[str]:
    pages = sorted(
        p.name
        for p in VIEWS.glob("*.py")
        if re.search(r"require_role\(\s*\"researcher\"\s*\)", p.read_text())
    )
    assert {"studies.py", "transcripts.py", "export.py", "adjudicate.py"} <= set(pages), pages
    return pages


@pytest.mark.parametrize("page", _researcher_pages())
def test_an_annotator_is_refused_every_researcher_page(site, monkeypatch, page):
    """Tried: an annotator's real login opening each page that requires the researcher role, through
    the navigation (not offered) and by running the page file itself (refused)."""
    from workbench.app import auth

    token = _token(site, "ann")
    monkeypatch.setattr(auth, "browser_token", lambda: token)
    at = _app()
    assert at.session_state["user"]["role"] == "annotator"
    with pytest.raises(Exception, match="navigation page|registered"):
        at.switch_page(f"views/{page}")
    direct = _as(site, "ann", page).run()
    assert not direct.exception, direct.exception
    assert direct.error and "do not have access" in direct.error[0].value
    assert not (direct.selectbox or direct.dataframe or direct.button or direct.text_area)  # nothing else


# --- markup in participants' messages ------------------------------------------------------------


def _shown(at: AppTest) -> list[str]:
    return [str(e.value) for e in (*at.markdown, *at.caption, *at.text, *at.error, *at.info) if e.value]


def _assert_escaped(at: AppTest) -> None:
    assert not at.exception, at.exception
    shown = [v for v in _shown(at) if "onerror" in v]
    assert shown, "the payload is not on the page at all"
    for value in (*(m.value for m in at.markdown), *(c.value for c in at.caption)):
        assert not UNSAFE.search(value), value
    assert not any(m.proto.allow_html for m in at.markdown)
    assert not at.get("html") or not any("alert(1)" in h.proto.body for h in at.get("html"))


def test_payloads_are_escaped_on_transcripts(site):
    """Tried: <script>, <img onerror>, markdown images and links and javascript: URLs as participant
    messages (and as a scenario's name) on the Transcripts page."""
    _assert_escaped(_as(site, "rita", "transcripts.py", tr_study="pilot").run())


def test_payloads_are_escaped_on_annotate(site):
    """Tried: the same payloads in the conversations an annotator labels."""
    _assert_escaped(_as(site, "ann", "annotate.py").run())


def test_payloads_are_escaped_on_the_dashboard(site):
    """Tried: the payloads in the conversations the Dashboard's drill-down opens (a click on a bar)."""
    from analysis.compare import analysis_frame
    from analysis.dataset import load_study
    from analysis.findings import Names
    from annotation.codebook import load_codebook

    data = load_study(site, "pilot")
    frame = analysis_frame(data)
    dim = Names.of(load_codebook()).sort(data.dimensions)[0]  # the page's first: codebook group order
    value = frame.loc[frame.user_kind == "human", dim].dropna().iloc[0]
    at = _as(site, "rita", "dashboard.py", dash_study="pilot").run()
    at.session_state[f"dist-{dim}"] = {"selection": {"points": [{"customdata": ["human", "all", value]}]}}
    _assert_escaped(at.run())


def test_payloads_are_escaped_in_the_html_report(sqlite_url, monkeypatch, tmp_path):
    """Tried: `workbench report` of a study whose messages and scenario name carry the payloads;
    none of them reaches the HTML as markup (the report shows no message text today; this holds the
    line should it start to). The database does not matter here: SQLite only."""
    from typer.testing import CliRunner

    from workbench.cli import app as cli

    monkeypatch.setenv("WORKBENCH_DB_URL", sqlite_url)
    _site(sqlite_url)
    out = tmp_path / "report.html"
    r = CliRunner().invoke(cli, ["report", "--study", "pilot", "--out", str(out), "--n-boot", "100"])
    assert r.exit_code == 0, r.output
    html = out.read_text(encoding="utf-8")
    for raw in (
        "<script>alert(1)</script>",
        "<img src=x onerror",
        "javascript:alert(1)",
        "<a href='javascript",
    ):
        assert raw not in html, raw
