"""Trained labeller: on a small hand-made study (both engines), and on the released dataset
(trained on the GPT-4o labels of conversations outside the gold set, compared with the human gold)."""

from __future__ import annotations

import shutil

import pytest
from sklearn.metrics import cohen_kappa_score
from sqlalchemy.engine import make_url
from sqlmodel import Session, select

from annotation.agreement import study_agreement_df
from annotation.labellers.trained import source_name, train_and_label
from annotation.store import LabelRecord, ensure_source, write_labels
from db.engine import make_engine
from db.errors import UserInputError
from db.models import LabelSource, Turn
from db.repo import labels_df
from tests.annotation_data import make_study

POLITE = [
    "Could you please help me? Thank you so much, I appreciate it.",
    "Please, would you kindly suggest something? Many thanks!",
]
BLUNT = ["Give me hotels now.", "Just list options. Fast."]


def _seed_texts_and_labels(session):
    """Rewrite the user turns: even replicates polite, odd blunt; label them in source teacher."""
    make_study(session, n_per_cell=6)
    session.flush()
    turns = session.exec(select(Turn).where(Turn.role == "user")).all()
    conv_polite = {}
    from db.models import Conversation

    for t in turns:
        conv = session.get(Conversation, t.conversation_id)
        polite = conv.replicate % 2 == 0
        t.content = (POLITE if polite else BLUNT)[t.index // 2 % 2] + f" (item {conv.id})"
        conv_polite[conv.id] = polite
    src = ensure_source(session, "teacher", "human")
    # The teacher labels all but the last replicate of each cell; "gold" labels replicates 0 and 1.
    from db.models import Conversation as C

    convs = session.exec(select(C)).all()
    write_labels(
        session,
        src,
        [
            LabelRecord(c.id, "politeness", "Polite" if conv_polite[c.id] else "Neutral")
            for c in convs
            if c.replicate < 5
        ],
    )
    gold = ensure_source(session, "gold", "human")
    write_labels(
        session,
        gold,
        [
            LabelRecord(c.id, "politeness", "Polite" if conv_polite[c.id] else "Neutral")
            for c in convs
            if c.replicate < 2
        ],
    )
    session.commit()
    return conv_polite


def test_trained_labeller_learns_and_labels_the_rest(engine):
    with Session(engine) as s:
        truth = _seed_texts_and_labels(s)
    report = train_and_label(engine, "pilot", "teacher", holdout_source="gold")
    assert report.source == source_name("teacher") == "trained:teacher:v2"
    assert report.n_train == 12  # replicates 2-4 of 4 cells (0-1 held out as gold)
    assert report.n_labelled == 12 and report.n_labels == 12  # gold (8) + never-labelled (4)
    with Session(engine) as s:
        src = s.exec(select(LabelSource).where(LabelSource.name == report.source)).one()
        assert src.kind == "trained" and src.params["train_source"] == "teacher"
        assert src.params["holdout_source"] == "gold"
        lab = labels_df(s, 1, sources=[report.source])
    assert all(lab["value"] == ["Polite" if truth[c] else "Neutral" for c in lab["conversation_id"]])
    assert lab["rationale"].str.startswith("confidence=").all()
    with Session(engine) as s:
        agree = study_agreement_df(s, "pilot", report.source, "gold", n_boot=50)
    row = agree[(agree.dimension == "politeness") & (agree.user_kind == "all")].iloc[0]
    assert row["n"] == 8 and row["cohen_kappa"] == pytest.approx(1.0)


def test_cross_validated_agreement_with_the_teacher(engine):
    from annotation.labellers.trained import cross_validate

    with Session(engine) as s:
        _seed_texts_and_labels(s)
    report = train_and_label(engine, "pilot", "teacher", holdout_source="gold", cv_folds=3)
    cv = report.cv.set_index(["dimension", "user_kind"])
    assert cv.loc[("politeness", "all"), "n"] == 12 and cv.loc[("politeness", "all"), "cohen_kappa"] == 1.0
    assert {k for _d, k in cv.index} == {"all", "human", "agent"}
    assert cv.loc[("politeness", "human"), "n"] + cv.loc[("politeness", "agent"), "n"] == 12
    with Session(engine) as s:
        src = s.exec(select(LabelSource).where(LabelSource.name == report.source)).one()
        assert src.params["cv_folds"] == 3 and src.params["cv_kappa"]["politeness/all"] == 1.0
    # a teacher that contradicts itself on two items cannot be imitated perfectly
    import pandas as pd

    texts = pd.Series(
        [f"{w} request number {i}" for i, w in enumerate(["please kindly"] * 10 + ["now fast"] * 10)]
    )
    y = pd.DataFrame({"politeness": ["Polite"] * 9 + ["Neutral"] + ["Neutral"] * 9 + ["Polite"]})
    res = cross_validate(texts, y, None, folds=5).set_index("user_kind")
    assert res.loc["all", "n"] == 20 and 0 < res.loc["all", "cohen_kappa"] < 1
    with pytest.raises(UserInputError, match="at least 2 folds"):
        cross_validate(texts, y, None, folds=1)


def test_trained_labeller_errors(sqlite_engine):
    with Session(sqlite_engine) as s:
        _seed_texts_and_labels(s)
    with pytest.raises(UserInputError, match="has no conversation-level labels for \\['order'\\]"):
        train_and_label(sqlite_engine, "pilot", "teacher", dimensions=["order"])
    with pytest.raises(UserInputError, match="no label source 'nobody'"):
        train_and_label(sqlite_engine, "pilot", "nobody")
    with Session(sqlite_engine) as s:
        one = ensure_source(s, "constant", "human")
        write_labels(s, one, [LabelRecord(c, "politeness", "Polite") for c in range(1, 20)])
        s.commit()
    with pytest.raises(UserInputError, match="only one value"):
        train_and_label(sqlite_engine, "pilot", "constant")


# What the trained labeller achieves on the released data (see the README, section Annotation):
# Cohen's kappa against the human gold labels, trained on the GPT-4o labels of the 3,780
# conversations outside the gold set. Measured (v2, per-kind linear SVMs over char + word
# TF-IDF): problem_solving 0.726, promise 0.838, feedback 0.842, politeness 0.950, formality 0.549
# (below the 0.6 target; v1 had 0.715, 0.900, 0.833, 0.940, 0.524). Asserted a little lower so a
# different BLAS or scikit-learn release does not flip the test.
ACHIEVED = {"problem_solving": 0.7, "promise": 0.81, "feedback": 0.81, "politeness": 0.92, "formality": 0.52}


def test_trained_labeller_on_reference_data(reference_db, tmp_path):
    copy = tmp_path / "ref.db"
    shutil.copy(make_url(reference_db).database, copy)
    eng = make_engine(f"sqlite:///{copy}")
    report = train_and_label(
        eng,
        "recllmsim",
        "imported:recllmsim-gpt4o",
        dimensions=list(ACHIEVED),
        holdout_source="imported:recllmsim-human",
    )
    assert report.n_train == 3780 and report.n_labelled == 200
    with Session(eng) as s:
        df = study_agreement_df(s, "recllmsim", report.source, "imported:recllmsim-human", n_boot=100)
        lab = labels_df(s, 1, sources=[report.source, "imported:recllmsim-human"])
    eng.dispose()
    pooled = df[df["user_kind"] == "all"].set_index("dimension")
    print(df[["dimension", "user_kind", "n", "agreement", "cohen_kappa", "krippendorff_alpha"]].to_string())
    for dim, floor in ACHIEVED.items():
        assert pooled.loc[dim, "n"] == 200
        assert pooled.loc[dim, "cohen_kappa"] >= floor, (dim, pooled.loc[dim, "cohen_kappa"])
    # Same figure from scikit-learn on the same pairs.
    wide = (
        lab[lab.dimension == "promise"]
        .pivot(index="conversation_id", columns="source", values="value")
        .dropna()
    )
    assert pooled.loc["promise", "cohen_kappa"] == pytest.approx(
        cohen_kappa_score(wide[report.source], wide["imported:recllmsim-human"])
    )
    assert set(df["user_kind"]) == {"all", "human", "agent"}


def test_cli_trained_with_holdout_prints_agreement(use_db, capsys):
    from db.migrate import upgrade
    from workbench.cli import main

    eng = make_engine(use_db)
    upgrade(eng)
    with Session(eng) as s:
        _seed_texts_and_labels(s)
    eng.dispose()
    code = 0
    try:
        main(
            [
                "label",
                "--study",
                "pilot",
                "--labeller",
                "trained",
                "--train-source",
                "teacher",
                "--holdout-source",
                "gold",
            ]
        )
    except SystemExit as exc:
        code = exc.code or 0
    out = capsys.readouterr().out
    assert code == 0, out
    assert "trained:teacher:v2: trained on 12 conversations, labelled 12" in out
    assert "Cohen's kappa against gold" in out and "politeness" in out and "1.000" in out
    assert "Cross-validated" not in out
    try:
        main(["label", "--study", "pilot", "--labeller", "trained", "--train-source", "teacher", "--cv", "3"])
    except SystemExit as exc:
        code = exc.code or 0
    out = capsys.readouterr().out
    assert code == 0, out
    assert "Cross-validated Cohen's kappa against teacher (3 folds" in out and "1.000" in out
