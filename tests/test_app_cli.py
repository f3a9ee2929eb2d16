"""CLI of the app area: users, invites, participants; the console's study creation from the packs."""

from __future__ import annotations

import pytest
from sqlmodel import Session, select
from typer.testing import CliRunner

from db.engine import get_engine
from db.errors import UserInputError
from db.models import Annotator, Condition, Participant, Study
from db.settings import Settings
from tests.participation_helpers import make_study
from workbench.accounts import authenticate
from workbench.cli import app
from workbench.participation.entry import hash_token

runner = CliRunner()


def test_users_add_list_and_login(use_db):
    r = runner.invoke(
        app, ["users", "add", "rita", "--role", "researcher", "--password-stdin"], input="s3cret-pass\n"
    )
    assert r.exit_code == 0, r.output
    r = runner.invoke(
        app, ["users", "add", "ann", "--role", "annotator"], env={"WORKBENCH_PASSWORD": "another-pass"}
    )
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["users", "list"])
    assert "rita\tresearcher" in r.output and "ann\tannotator" in r.output and "$2" not in r.output
    with Session(get_engine(Settings.from_env().db_url)) as s:
        rita = s.exec(select(Annotator).where(Annotator.name == "rita")).one()
        assert rita.password_hash.startswith("$2") and "s3cret" not in rita.password_hash
        assert authenticate(s, "rita", "s3cret-pass").id == rita.id
        assert authenticate(s, "rita", "wrong-pass") is None and authenticate(s, "nobody", "x") is None


@pytest.mark.parametrize(
    "args,needle",
    [
        (["users", "add", "x", "--role", "admin", "--password-stdin"], "unknown role"),
        (["users", "add", "x", "--role", "annotator", "--password-stdin"], "at least 8"),
    ],
)
def test_users_add_errors(use_db, args, needle):
    from workbench.cli import main

    with pytest.raises(SystemExit) as exc:
        import sys

        sys.stdin = __import__("io").StringIO("short\n")
        try:
            main(args)
        finally:
            sys.stdin = sys.__stdin__
    assert exc.value.code == 2


def test_duplicate_user_refused(use_db):
    runner.invoke(
        app, ["users", "add", "rita", "--role", "researcher", "--password-stdin"], input="s3cret-pass\n"
    )
    r = runner.invoke(
        app, ["users", "add", "rita", "--role", "researcher", "--password-stdin"], input="other-pass\n"
    )
    assert r.exit_code != 0 and "already exists" in str(r.exception or r.output)


def test_invites_create_and_expire(use_db, tmp_path):
    from db.engine import ready_engine

    with Session(ready_engine(Settings.from_env().db_url)) as s:
        make_study(s)
        s.commit()
    out = tmp_path / "links.txt"
    r = runner.invoke(
        app,
        [
            "invites",
            "create",
            "--study",
            "pilot",
            "-n",
            "3",
            "--out",
            str(out),
            "--base-url",
            "https://study.example.org",
        ],
    )
    assert r.exit_code == 0, r.output
    links = out.read_text().split()
    assert len(links) == 3 and all(link.startswith("https://study.example.org/?t=") for link in links)
    with Session(get_engine(Settings.from_env().db_url)) as s:
        assert set(s.exec(select(Participant.invite_token_hash)).all()) == {
            hash_token(link.split("=", 1)[1]) for link in links
        }
    r = runner.invoke(app, ["invites", "create", "--study", "pilot", "--language", "fr"])
    assert r.exit_code != 0 and "use en or zh" in str(r.exception or r.output)  # no participant created
    with Session(get_engine(Settings.from_env().db_url)) as s:
        assert len(s.exec(select(Participant)).all()) == 3
    r = runner.invoke(app, ["invites", "prolific-url", "--study", "pilot"])
    assert r.exit_code != 0 and "no Prolific STUDY_ID" in str(r.exception)  # no link that would be refused
    r = runner.invoke(app, ["invites", "prolific-url", "--study", "pilot", "--prolific-study-id", "PSTUDY"])
    assert "PROLIFIC_PID={{%PROLIFIC_PID%}}" in r.output and r.output.startswith("http://localhost:8501/")
    with Session(get_engine(Settings.from_env().db_url)) as s:
        assert s.exec(select(Study)).one().settings["prolific_study_id"] == "PSTUDY"
    # the public address can be configured once instead of on every command
    r = runner.invoke(
        app,
        ["invites", "prolific-url", "--study", "pilot"],
        env={"WORKBENCH_PUBLIC_URL": "https://lab.example.org/study/"},
    )
    assert r.output.startswith("https://lab.example.org/study/?study=pilot"), r.output
    r = runner.invoke(app, ["participants", "expire"])
    assert r.exit_code == 0 and "0 idle" in r.output


def test_console_creates_study_from_packs(sqlite_engine):
    from workbench.studies import available_scenarios, create_study_from_packs, get_settings, update_settings

    with Session(sqlite_engine) as s:
        study, n = create_study_from_packs(
            s,
            "packs",
            "openai/gpt-4o-mini",
            ["travel_planning"],
            2,
            "en",
            None,
            {"tasks_per_participant": 1, "min_turns": 3},
        )
        s.commit()
        assert n > 0 and study.settings["min_turns"] == 3
        assert len(s.exec(select(Condition).where(Condition.study_id == study.id)).all()) == n
        assert "travel_planning" in available_scenarios()
        settings = update_settings(s, "packs", {"completion_code": "XYZ", "idle_timeout_minutes": 10})
        assert settings.completion_code == "XYZ"
        with pytest.raises(Exception, match="invalid settings"):
            update_settings(s, "packs", {"max_turns": 0})
        # the rules across fields hold for changes as they do at creation, and a refused change stores nothing
        with pytest.raises(UserInputError, match=r"min turns \(5\) is greater than max turns \(3\)"):
            update_settings(s, "packs", {"min_turns": 5, "max_turns": 3})
        update_settings(s, "packs", {"profile_mode": "assigned"})  # every condition has a profile: fine
        update_settings(s, "packs", {"profile_mode": "participant"})
        create_study_from_packs(s, "bare", "openai/gpt-4o-mini", ["travel_planning"], 0, "en", None, {})
        with pytest.raises(UserInputError, match="'assigned' needs a profile in every condition"):
            update_settings(s, "bare", {"profile_mode": "assigned"})
        s.commit()
        assert (
            get_settings(s, "packs").max_turns == 10 and get_settings(s, "bare").profile_mode == "participant"
        )


def test_public_url_sources(monkeypatch):
    from workbench.config import public_url

    monkeypatch.delenv("WORKBENCH_PUBLIC_URL", raising=False)
    assert public_url() == "http://localhost:8501"
    assert (
        public_url("http://10.0.0.5:8611/studies") == "http://10.0.0.5:8611"
    )  # the address the page is open at
    assert public_url("about:blank") == "http://localhost:8501"
    monkeypatch.setenv("WORKBENCH_PUBLIC_URL", "https://lab.example.org/")
    configured = Settings.from_env().public_url
    assert public_url("http://10.0.0.5:8611/studies", configured=configured) == "https://lab.example.org"


def test_serve_port_out_of_range(use_db, capsys):
    from workbench.cli import main

    for port in ("99999", "0"):
        with pytest.raises(SystemExit) as exc:
            main(["serve", "--port", port])
        err = capsys.readouterr().err
        assert exc.value.code == 2 and "--port must be between 1 and 65535" in err and "Traceback" not in err


def test_sigterm_to_serve_stops_the_app(tmp_path):
    """`workbench serve` becomes the app (exec): a SIGTERM sent to it reaches the app, which a child
    started with subprocess.call did not get. A stand-in `streamlit` module records its pid and waits."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    fake = tmp_path / "fake" / "streamlit"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    (fake / "__main__.py").write_text(
        "import os, sys, time\n"
        "open(os.environ['FAKE_PIDFILE'], 'w').write(str(os.getpid()))\n"
        "time.sleep(600)\n"
    )
    pidfile = tmp_path / "pid"
    repo = Path(__file__).resolve().parent.parent
    env = {
        **os.environ,
        "FAKE_PIDFILE": str(pidfile),
        "PYTHONPATH": os.pathsep.join([str(tmp_path / "fake"), str(repo), os.environ.get("PYTHONPATH", "")]),
    }
    proc = subprocess.Popen(
        [sys.executable, "-c", "from workbench.cli import main; main()", "serve", "--port", "8599"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.time() + 60
        while (
            not (pidfile.exists() and pidfile.read_text()) and proc.poll() is None and time.time() < deadline
        ):
            time.sleep(0.05)
        assert pidfile.exists(), proc.communicate(timeout=5)
        app_pid = int(pidfile.read_text())
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        with pytest.raises(ProcessLookupError):
            os.kill(app_pid, 0)  # the app is gone with it
    finally:
        if proc.poll() is None:
            proc.kill()
        if pidfile.exists() and pidfile.read_text():
            try:
                os.kill(int(pidfile.read_text()), signal.SIGKILL)
            except ProcessLookupError:
                pass
