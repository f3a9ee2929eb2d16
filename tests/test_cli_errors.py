"""User mistakes anywhere on the command line: one line on stderr, no traceback, exit status 2."""

from __future__ import annotations

import pytest

from tests.cli_helpers import run_cli

run = run_cli


def assert_one_line_error(code, err, *words):
    assert code == 2, err
    assert "Traceback" not in err and "sqlalche.me" not in err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), err
    for w in words:
        assert w in lines[0], (w, err)


@pytest.mark.parametrize(
    "url,words",
    [
        ("notaurl", ["'notaurl' is not a database URL", "sqlite:///", "postgresql://"]),
        ("mysql://u:secret@localhost/db", ["unsupported database", "SQLite and PostgreSQL", "u:***@"]),
        (
            "postgresql://u:secret@127.0.0.1:1/db",
            ["cannot open the database", "Connection refused", "WORKBENCH_DB_URL"],
        ),
        ("sqlite:////proc/nope/x.db", ["the folder /proc/nope", "does not exist", "WORKBENCH_DB_URL"]),
        ("sqlite:///", ["in-memory database", "WORKBENCH_DB_URL"]),
        ("sqlite://", ["in-memory database", "WORKBENCH_DB_URL"]),
        ("sqlite:///:memory:", ["in-memory database", "WORKBENCH_DB_URL"]),
    ],
)
@pytest.mark.parametrize("command", [["init"], ["users", "list"]])
def test_bad_database_settings(url, words, command, monkeypatch, capsys):
    monkeypatch.setenv("WORKBENCH_DB_URL", url)
    code, _, err = run(command, capsys)
    assert_one_line_error(code, err, *words)
    assert "secret" not in err


def test_missing_sqlite_folder_is_not_created(tmp_path, monkeypatch, capsys):
    """A typo in the database folder must not create folders anywhere (it used to make
    /nonexistent/dir); the data folder itself is still created on first use."""
    missing = tmp_path / "nonexistent" / "dir"
    monkeypatch.setenv("WORKBENCH_DB_URL", f"sqlite:///{missing / 'x.db'}")
    code, _, err = run(["users", "list"], capsys)
    assert_one_line_error(code, err, str(missing), "does not exist")
    assert not (tmp_path / "nonexistent").exists()
    monkeypatch.delenv("WORKBENCH_DB_URL")
    monkeypatch.setenv("WORKBENCH_DATA_DIR", str(tmp_path / "fresh" / "data"))
    code, _, err = run(["users", "list"], capsys)
    assert code == 0, err
    assert (tmp_path / "fresh" / "data" / "workbench.db").is_file()


def test_in_memory_url_refused_by_ready_engine():
    from db.engine import ready_engine
    from db.errors import UserInputError

    for url in ("sqlite://", "sqlite:///:memory:"):
        with pytest.raises(UserInputError, match="in-memory"):
            ready_engine(url)


def test_unwritable_data_dir(monkeypatch, capsys):
    monkeypatch.delenv("WORKBENCH_DB_URL")
    monkeypatch.setenv("WORKBENCH_DATA_DIR", "/proc/nope")
    code, _, err = run(["users", "list"], capsys)
    assert_one_line_error(code, err, "/proc/nope", "WORKBENCH_DATA_DIR")


@pytest.fixture
def afile(tmp_path):
    path = tmp_path / "afile"
    path.write_text("x")
    return path


@pytest.mark.parametrize(
    "args,words",
    [
        (
            ["agreement", "--study", "s", "--a", "x", "--b", "y", "--json", "{afile}/x.json"],
            ["--json", "is a file"],
        ),
        (["analyze", "--study", "s", "--out", "{afile}"], ["--out", "is an existing file"]),
        (["export", "--study", "s", "--out", "{afile}"], ["--out", "is an existing file"]),
        (["export", "--study", "s", "--out", "{afile}/sub/dir"], ["--out", "is a file, not a directory"]),
        (["report", "--study", "s", "--out", "{afile}/r.html"], ["--out", "is a file"]),
        (["report", "--study", "s", "--out", "{tmp}/r.html"], ["is a directory"]),
        (["features", "--study", "s", "--out", "{afile}/f.csv"], ["--out"]),
        (["invites", "create", "--study", "s", "--out", "{tmp}"], ["is a directory"]),
        (["annotate", "guesses", "--study", "s", "--csv", "{afile}/g.csv"], ["--csv"]),
        (["annotate", "disagreements", "--study", "s", "--json", "{afile}/d.json"], ["--json"]),
    ],
)
def test_output_paths_are_checked_before_the_work(args, words, afile, tmp_path, capsys, monkeypatch):
    """No study 's' exists: the path is refused before the study is even looked up."""
    if "report" in args and "{tmp}/r.html" in args:
        (tmp_path / "r.html").mkdir()
    args = [a.format(afile=afile, tmp=tmp_path) for a in args]
    code, _, err = run(args, capsys)
    assert_one_line_error(code, err, *words)
    assert "no study" not in err


@pytest.mark.parametrize(
    "args,env,words",
    [
        (
            ["simulate", "--study", "s", "--simulator-model", "scripted/x", "--prompt", "{bad}", "--dry-run"],
            {},
            "invalid YAML in the prompt template",
        ),
        (
            ["models", "prices"],
            {"WORKBENCH_PRICES": "{bad}"},
            "invalid YAML in the price table (check WORKBENCH_PRICES)",
        ),
        (["annotate", "codebook", "{bad}"], {}, "invalid YAML in the codebook"),
    ],
)
def test_broken_yaml_is_one_line_with_file_line_and_column(args, env, words, tmp_path, monkeypatch, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text('name: x\nversion: 1\nen: {system: "a"\n  bad: [\n', encoding="utf-8")
    for k, v in env.items():
        monkeypatch.setenv(k, v.format(bad=bad))
    code, _, err = run([a.format(bad=bad) for a in args], capsys)
    assert_one_line_error(code, err, f"{bad}:4:3: {words}: expected ',' or '}}'")


def test_python_dash_m_runs_the_cli():
    """``python -m workbench.cli`` is the ``workbench`` command (for environments without the script)."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "workbench.cli", "--help"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "Usage: workbench" in out.stdout
