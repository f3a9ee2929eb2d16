"""User mistakes anywhere on the command line: one line on stderr, no traceback, exit status 2."""

from __future__ import annotations

import pytest

from workbench.cli import main


def run(args, capsys):
    code = 0
    try:
        main(args)
    except SystemExit as exc:
        code = exc.code or 0
    out = capsys.readouterr()
    return code, out.out, out.err


def assert_one_line_error(code, err, *words):
    assert code == 2, err
    assert "Traceback" not in err and "sqlalche.me" not in err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), err
    for w in words:
        assert w in lines[0], (w, err)


@pytest.mark.parametrize("url,words", [
    ("notaurl", ["'notaurl' is not a database URL", "sqlite:///", "postgresql://"]),
    ("mysql://u:secret@localhost/db", ["unsupported database", "SQLite and PostgreSQL", "u:***@"]),
    ("postgresql://u:secret@127.0.0.1:1/db", ["cannot open the database", "Connection refused", "WORKBENCH_DB_URL"]),
    ("sqlite:////proc/nope/x.db", ["cannot create the directory /proc/nope", "WORKBENCH_DB_URL"]),
])
@pytest.mark.parametrize("command", [["init"], ["users", "list"]])
def test_bad_database_settings(url, words, command, monkeypatch, capsys):
    monkeypatch.setenv("WORKBENCH_DB_URL", url)
    code, _, err = run(command, capsys)
    assert_one_line_error(code, err, *words)
    assert "secret" not in err


def test_unwritable_data_dir(monkeypatch, capsys):
    monkeypatch.delenv("WORKBENCH_DB_URL")
    monkeypatch.setenv("WORKBENCH_DATA_DIR", "/proc/nope")
    code, _, err = run(["users", "list"], capsys)
    assert_one_line_error(code, err, "/proc/nope", "WORKBENCH_DATA_DIR")
