"""`workbench annotate ...` end to end on a migrated SQLite database."""

from __future__ import annotations

import pytest
from sqlmodel import Session, select

from db.engine import make_engine
from db.migrate import upgrade
from db.models.annotation import AnnotationAssignment
from tests.annotation_data import make_study
from tests.cli_helpers import run_cli


@pytest.fixture
def cli_db(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    monkeypatch.setenv("WORKBENCH_DB_URL", url)
    eng = make_engine(url)
    upgrade(eng)
    with Session(eng) as s:
        make_study(s, n_per_cell=2)
        s.commit()
    yield eng
    eng.dispose()


def run(args, capsys):
    code, out, err = run_cli(args, capsys)
    return code, out + err


def test_assign_progress_guesses(cli_db, capsys):
    code, out = run(
        [
            "annotate",
            "assign",
            "--study",
            "pilot",
            "--annotators",
            "ann,bob,cy",
            "--overlap",
            "2",
            "--per-annotator",
            "4",
        ],
        capsys,
    )
    assert code == 0, out
    assert "Assigned 6 conversations x 2 annotators" in out and "ann: +4" in out
    with Session(cli_db) as s:
        assert len(s.exec(select(AnnotationAssignment)).all()) == 12
    code, out = run(["annotate", "progress", "--study", "pilot"], capsys)
    assert code == 0 and "ann" in out and "pending" in out
    code, out = run(["annotate", "guesses", "--study", "pilot"], capsys)
    assert code == 0 and "No guesses yet" in out
    code, out = run(["annotate", "disagreements", "--study", "pilot"], capsys)
    assert code == 0 and "No disagreements" in out


def test_user_errors_exit_2(cli_db, capsys):
    code, out = run(
        ["annotate", "assign", "--study", "pilot", "--annotators", "ann,zed", "--overlap", "1"], capsys
    )
    assert code == 2 and "workbench users add" in out and "Traceback" not in out
    code, out = run(
        ["annotate", "assign", "--study", "pilot", "--annotators", "ann", "--overlap", "2"], capsys
    )
    assert code == 2 and "needs at least 2 annotators" in out
    assert "pass --overlap 1" in out  # one annotator with the default overlap: says what to do


def test_codebook_command(tmp_path, capsys):
    code, out = run(["annotate", "codebook"], capsys)
    assert code == 0 and "politeness" in out and "Impolite" in out
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "version: 1\ndimensions:\n  - {name: a, scale: ratio, definition: {en: x}, labels: [p, q]}\n"
    )
    code, out = run(["annotate", "codebook", str(bad)], capsys)
    assert code == 2 and "bad.yaml" in out and "unknown scale type 'ratio'" in out
    code, out = run(["annotate", "codebook", "--lang", "fr"], capsys)
    assert code == 2 and "use en or zh" in out


def test_assign_nothing_gives_the_true_reason(cli_db, capsys):
    from db.models import Conversation, Study

    assign = ["annotate", "assign", "--annotators", "ann,bob", "--overlap", "1"]
    with Session(cli_db) as s:
        s.add(Study(name="empty"))
        s.commit()
    code, out = run([*assign, "--study", "empty"], capsys)
    assert code == 0 and "no finished conversation with a user turn" in out and "already" not in out, out
    code, out = run([*assign, "--study", "pilot", "--kinds", "alien"], capsys)
    assert code == 2 and "unknown user kind 'alien'" in out and "human or agent" in out, out
    with Session(cli_db) as s:  # the human conversations are still running: not labellable yet
        for c in s.exec(select(Conversation).where(Conversation.user_kind == "human")).all():
            c.status = "in_progress"
            s.add(c)
        s.commit()
    code, out = run([*assign, "--study", "pilot", "--kinds", "human"], capsys)
    assert code == 0 and "none of its 4 labellable conversations is a human conversation" in out, out
    code, out = run([*assign, "--study", "pilot"], capsys)
    assert code == 0 and "Assigned 4 conversations" in out, out
    code, out = run([*assign, "--study", "pilot"], capsys)
    assert code == 0 and "every labellable conversation is already in a queue" in out, out


def test_disagreements_json_is_strict_json(cli_db, capsys, tmp_path):
    """Open items' `adjudicated` is null (NaN is not JSON)."""
    import json

    from annotation.adjudication import adjudicate
    from annotation.codebook import load_codebook
    from annotation.labelling import save_labels
    from db.models import Annotator
    from db.repo import get_study
    from tests.annotation_data import full_labels

    code, out = run(
        ["annotate", "assign", "--study", "pilot", "--annotators", "ann,bob", "--overlap", "2"], capsys
    )
    assert code == 0, out
    cb = load_codebook()
    with Session(cli_db) as s:
        study_id = get_study(s, "pilot").id
        convs = s.exec(select(AnnotationAssignment.conversation_id).distinct()).all()[:2]
        for name, pol in (("ann", "Polite"), ("bob", "Neutral")):
            a = s.exec(select(Annotator).where(Annotator.name == name)).one()
            for c in convs:
                save_labels(s, study_id, a, c, cb, full_labels(cb) | {"politeness": pol})
        adjudicate(s, "pilot", convs[0], "politeness", "Polite", cb, adjudicator="res")
        s.commit()
    out_file = tmp_path / "dis.json"
    code, out = run(["annotate", "disagreements", "--study", "pilot", "--json", str(out_file)], capsys)
    assert code == 0 and "Wrote 2 items" in out, out

    def no_constants(name):
        raise ValueError(f"{name} is not JSON")

    records = json.loads(out_file.read_text(encoding="utf-8"), parse_constant=no_constants)
    by_conv = {r["conversation_id"]: r for r in records}
    assert by_conv[convs[0]]["adjudicated"] == "Polite"
    assert by_conv[convs[1]]["adjudicated"] is None
    assert by_conv[convs[1]]["values"] == {"human:ann": "Polite", "human:bob": "Neutral"}
    assert (by_conv[convs[0]]["status"], by_conv[convs[1]]["status"]) == ("decided", "open")
    assert "2 items (1 decided, 1 open)" in out or "2 items (1 open, 1 decided)" in out, out
    code, out = run(
        ["annotate", "disagreements", "--study", "pilot", "--open", "--json", str(out_file)], capsys
    )
    assert code == 0 and "1 item (1 open)" in out, out
    assert [r["conversation_id"] for r in json.loads(out_file.read_text(encoding="utf-8"))] == [convs[1]]


def test_top_up_and_reassign(cli_db, capsys):
    code, out = run(
        ["annotate", "assign", "--study", "pilot", "--annotators", "ann,bob", "--overlap", "2"], capsys
    )
    assert code == 0 and "Assigned 8 conversations x 2 annotators" in out
    code, out = run(
        [
            "annotate",
            "assign",
            "--study",
            "pilot",
            "--annotators",
            "cy",
            "--overlap",
            "3",
            "--top-up",
            "--per-annotator",
            "4",
        ],
        capsys,
    )
    assert code == 0 and "Topped up 4 queued conversations towards 3 annotators" in out and "cy: +4" in out
    code, out = run(["annotate", "reassign", "--study", "pilot", "--from", "bob", "--to", "cy"], capsys)
    assert code == 0 and "Moved 4 pending items from bob to cy" in out and "4 cy already had" in out
    code, out = run(["annotate", "reassign", "--study", "pilot", "--from", "cy", "--to", "cy"], capsys)
    assert code == 2 and "named twice" in out and "Traceback" not in out
    code, out = run(["annotate", "reassign", "--study", "pilot", "--from", "cy", "--to", "zed"], capsys)
    assert code == 2 and "workbench users add" in out


def test_assign_errors_name_the_flags(cli_db, capsys):
    assign = ["annotate", "assign", "--study", "pilot", "--annotators", "ann,bob"]
    code, out = run([*assign, "--overlap", "0"], capsys)
    assert code == 2 and "--overlap must be at least 1" in out, out
    code, out = run([*assign, "--per-annotator", "0"], capsys)
    assert code == 2 and "--per-annotator must be at least 1" in out, out
    code, out = run([*assign, "--overlap", "3"], capsys)
    assert code == 2 and "--overlap 3 needs at least 3 annotators (got 2)" in out, out
    code, out = run([*assign, "--kinds", "alien"], capsys)
    assert code == 2 and "in --kinds" in out, out
