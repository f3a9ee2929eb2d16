"""Assignment, saving and resuming labels, guesses, skips and adjudication (SQLite and PostgreSQL)."""

from __future__ import annotations

from collections import Counter
from itertools import combinations

import pytest
from sqlmodel import delete, select

from annotation.adjudication import adjudicate, disagreements_df
from annotation.codebook import load_codebook
from annotation.labelling import blind_view, guesses_df, load_saved, save_labels, skip_item
from annotation.queue import assign_items, next_item, progress_df, queue_progress, reopen_skipped
from db.errors import NotFoundError, UserInputError
from db.models import Annotator, Conversation, Label, LabelSource
from db.models.annotation import AnnotationAssignment
from tests.annotation_data import SECRET_MODEL, full_labels, humour_codebook, make_study


def ann(session, name):
    return session.exec(select(Annotator).where(Annotator.name == name)).one()


def test_assignment_overlap_and_balance(session):
    make_study(session, n_per_cell=5)  # 4 strata x 5 = 20 conversations
    rep = assign_items(session, "pilot", ["ann", "bob", "cy"], overlap=2, per_annotator=8, seed=1)
    assert rep.n_items == 12  # 3 annotators x 8 / overlap 2
    assert rep.per_annotator == {"ann": 8, "bob": 8, "cy": 8}
    # Balanced across user kind and scenario: 12 items over 4 strata = 3 each.
    assert sorted(rep.per_stratum.values()) == [3, 3, 3, 3]
    rows = session.exec(select(AnnotationAssignment)).all()
    per_item = Counter(r.conversation_id for r in rows)
    assert set(per_item.values()) == {2}
    # No annotator gets an item twice; positions are 0..n-1 per annotator.
    for a in ("ann", "bob", "cy"):
        mine = [r for r in rows if r.annotator_id == ann(session, a).id]
        assert len({r.conversation_id for r in mine}) == len(mine) == 8
        assert sorted(r.position for r in mine) == list(range(8))
    # Every pair of annotators shares items (pairwise agreement is computable).
    by_item = {}
    for r in rows:
        by_item.setdefault(r.conversation_id, set()).add(r.annotator_id)
    pairs = Counter(tuple(sorted(p)) for s in by_item.values() for p in combinations(s, 2))
    assert len(pairs) == 3 and min(pairs.values()) >= 3
    # Topping up never re-assigns an item and continues the positions.
    rep2 = assign_items(session, "pilot", ["ann", "bob", "cy"], overlap=3, seed=2)
    assert rep2.n_items == 8 and rep2.per_annotator == {"ann": 8, "bob": 8, "cy": 8}
    rows = session.exec(select(AnnotationAssignment)).all()
    assert len({(r.annotator_id, r.conversation_id) for r in rows}) == len(rows) == 48
    rep3 = assign_items(session, "pilot", ["ann", "bob"], overlap=1)
    assert rep3.n_items == 0


def test_each_queue_is_balanced_across_user_kinds(session):
    """Each annotator's own queue mixes the kinds evenly (a queue of only humans would confound the
    annotator with the kind), and every pair of annotators shares items, for any seed."""
    make_study(session, n_per_cell=10, annotators=("ann", "bob", "cy", "dee"))  # 20 human + 20 agent
    names = ["ann", "bob", "cy", "dee"]
    for seed in range(6):
        session.exec(delete(AnnotationAssignment))
        assign_items(session, "pilot", names, overlap=2, per_annotator=10, seed=seed)
        rows = session.exec(select(AnnotationAssignment)).all()
        kind_of = {c.id: c.user_kind for c in session.exec(select(Conversation)).all()}
        for a in names:
            mine = Counter(kind_of[r.conversation_id] for r in rows if r.annotator_id == ann(session, a).id)
            assert sum(mine.values()) == 10 and abs(mine["human"] - mine["agent"]) <= 1, (seed, a, mine)
        by_item = {}
        for r in rows:
            by_item.setdefault(r.conversation_id, set()).add(r.annotator_id)
        pairs = Counter(tuple(sorted(p)) for s_ in by_item.values() for p in combinations(s_, 2))
        assert len(pairs) == 6 and max(pairs.values()) - min(pairs.values()) <= 2, (seed, pairs)


def test_a_short_queue_is_balanced_across_user_kinds(session):
    """Fewer items than strata: kinds first (agents used to fill the first slots, sorted before humans)."""
    make_study(session, n_per_cell=5)
    rep = assign_items(session, "pilot", ["ann", "bob"], overlap=2, per_annotator=2, seed=0)
    rows = session.exec(select(AnnotationAssignment)).all()
    kinds = Counter(
        session.get(Conversation, r.conversation_id).user_kind
        for r in rows
        if r.annotator_id == ann(session, "ann").id
    )
    assert rep.n_items == 2 and kinds == {"agent": 1, "human": 1}


def test_assignment_errors(session):
    make_study(session, n_per_cell=1)
    with pytest.raises(UserInputError, match="needs at least 3 annotators"):
        assign_items(session, "pilot", ["ann", "bob"], overlap=3)
    with pytest.raises(NotFoundError, match="workbench users add"):
        assign_items(session, "pilot", ["ann", "zed"], overlap=1)
    with pytest.raises(NotFoundError, match="no study named 'nope'"):
        assign_items(session, "nope", ["ann"], overlap=1)
    with pytest.raises(UserInputError, match="named twice"):
        assign_items(session, "pilot", ["ann", "ann"], overlap=1)
    # The core names its settings; the CLI checks its flags first (tests/test_annotation_cli.py).
    with pytest.raises(UserInputError, match="^overlap must be at least 1$"):
        assign_items(session, "pilot", ["ann"], overlap=0)
    with pytest.raises(UserInputError, match="^per_annotator must be at least 1$"):
        assign_items(session, "pilot", ["ann"], overlap=1, per_annotator=0)
    with pytest.raises(UserInputError, match="unknown user kind 'alien' in user_kinds"):
        assign_items(session, "pilot", ["ann"], overlap=1, user_kinds=["alien"])
    assert session.exec(select(AnnotationAssignment)).all() == []


def test_save_resume_and_guess(session):
    study = make_study(session, n_per_cell=1)
    cb = load_codebook()
    assign_items(session, "pilot", ["ann"], overlap=1, seed=0)
    a = ann(session, "ann")
    assert queue_progress(session, study.id, a.id).total == 4
    first = next_item(session, study.id, a.id)
    conv_id = first.conversation_id
    labels = full_labels(cb) | {"question_broadness": "4"}
    # the missing dimensions are named by the titles the form shows, in the page's language
    without = {k: v for k, v in labels.items() if k not in ("politeness", "formality")}
    with pytest.raises(
        UserInputError, match=r"^Choose a label for: Politeness, Formality \(or skip the item\)$"
    ):
        save_labels(session, study.id, a, conv_id, cb, without)
    zh = f"请为以下维度选择标签：{cb.get('politeness').display_title('zh')}、{cb.get('formality').display_title('zh')}"
    with pytest.raises(UserInputError, match=zh):
        save_labels(session, study.id, a, conv_id, cb, without, language="zh")
    with pytest.raises(UserInputError, match="'7' is not a label of question_broadness"):
        save_labels(session, study.id, a, conv_id, cb, labels | {"question_broadness": "7"})
    with pytest.raises(UserInputError, match="turn 0 .* is not a assistant turn"):
        save_labels(session, study.id, a, conv_id, cb, labels, turn_values={("hallucination", 0): "yes"})
    with pytest.raises(UserInputError, match="guess must be one of"):
        save_labels(session, study.id, a, conv_id, cb, labels, guess="robot")
    assert session.exec(select(Label)).all() == []  # nothing half-written
    n = save_labels(
        session,
        study.id,
        a,
        conv_id,
        cb,
        labels,
        turn_values={("hallucination", 1): "cant_tell"},
        rationale="  asks for details ",
        guess="ai",
        confidence=4,
    )
    assert n == 12
    src = session.exec(select(LabelSource).where(LabelSource.name == "human:ann")).one()
    assert (src.kind, src.annotator_id, src.codebook_version) == ("human", a.id, cb.version)
    lab = session.exec(select(Label).where(Label.dimension == "question_broadness")).one()
    assert (lab.value, lab.turn_index, lab.rationale, lab.source_id) == ("4", -1, "asks for details", src.id)
    turn_lab = session.exec(select(Label).where(Label.dimension == "hallucination")).one()
    assert (turn_lab.turn_index, turn_lab.value) == (1, "cant_tell") and turn_lab.turn_id is not None
    # Resume: the next item is another one; progress moved; what was saved comes back.
    assert next_item(session, study.id, a.id).conversation_id != conv_id
    assert queue_progress(session, study.id, a.id).done == 1
    saved = load_saved(session, study.id, a, conv_id)
    assert saved.values["question_broadness"] == "4" and saved.guess == "ai" and saved.confidence == 4
    assert saved.turn_values == {("hallucination", 1): "cant_tell"}
    # Saving again replaces (no duplicate rows), clearing a turn label and the guess.
    save_labels(
        session,
        study.id,
        a,
        conv_id,
        cb,
        labels | {"question_broadness": "2"},
        flagged=True,
        flag_note="odd ending",
    )
    assert session.exec(select(Label).where(Label.dimension == "hallucination")).all() == []
    assert [
        x.value for x in session.exec(select(Label).where(Label.dimension == "question_broadness")).all()
    ] == ["2"]
    assert guesses_df(session, study.id).empty
    assert load_saved(session, study.id, a, conv_id).flagged
    # Guesses frame for the indistinguishability statistics.
    conv2 = next_item(session, study.id, a.id).conversation_id
    save_labels(session, study.id, a, conv2, cb, labels, guess="human", confidence=2)
    g = guesses_df(session, study.id)
    assert g[["conversation_id", "annotator", "guess", "confidence"]].values.tolist() == [
        [conv2, "ann", "human", 2]
    ]
    # Skip and reopen.
    conv3 = next_item(session, study.id, a.id).conversation_id
    skip_item(session, study.id, a, conv3, reason="unreadable", flagged=True, flag_note="garbled")
    p = queue_progress(session, study.id, a.id)
    assert (p.done, p.skipped, p.pending) == (2, 1, 1)
    assert reopen_skipped(session, study.id, a.id) == 1
    assert progress_df(session, "pilot").to_dict("records") == [
        {"annotator": "ann", "total": 4, "done": 2, "skipped": 0, "pending": 2, "flagged": 2}
    ]
    # Skipping an item already labelled withdraws its labels and guess (nothing skipped feeds the analysis).
    assert session.exec(select(Label).where(Label.conversation_id == conv2)).all()
    skip_item(session, study.id, a, conv2)
    assert session.exec(select(Label).where(Label.conversation_id == conv2)).all() == []
    assert guesses_df(session, study.id).empty
    assert queue_progress(session, study.id, a.id).skipped == 1
    assert session.exec(select(Label).where(Label.conversation_id == conv_id)).all()  # other items untouched
    # Not in the queue: clear error.
    other = session.exec(select(Conversation.id)).all()
    with pytest.raises(NotFoundError, match="not in this annotator's queue"):
        save_labels(session, study.id, ann(session, "bob"), other[0], cb, labels)


def test_blind_view_uses_translations_and_hides_metadata(session):
    make_study(session, n_per_cell=1, language="zh")
    convs = session.exec(select(Conversation).order_by(Conversation.id)).all()
    agent = next(c for c in convs if c.user_kind == "agent")
    human = next(c for c in convs if c.user_kind == "human")
    av = blind_view(session, agent.id, "zh")
    hv = blind_view(session, human.id, "zh")
    assert av.language == hv.language == "zh"
    assert all(t.text.startswith("[zh] ") for t in av.turns)
    assert av.scenario_name in ("旅行规划", "菜谱规划")
    for v in (av, hv):
        blob = repr(v)
        assert SECRET_MODEL not in blob and ".json" not in blob and "wave" not in blob
    # Same language as the conversation: the original text.
    assert blind_view(session, agent.id, "en").turns[0].text.startswith("agent-")


def test_adjudication(session):
    study = make_study(session, n_per_cell=1)
    cb = load_codebook()
    assign_items(session, "pilot", ["ann", "bob"], overlap=2, seed=0)
    conv_ids = sorted({r.conversation_id for r in session.exec(select(AnnotationAssignment)).all()})
    base = full_labels(cb)
    for name, pol in (("ann", "Polite"), ("bob", "Neutral")):
        for cid in conv_ids[:2]:
            save_labels(
                session,
                study.id,
                ann(session, name),
                cid,
                cb,
                base | {"politeness": pol if cid == conv_ids[0] else "Polite"},
                turn_values={("hallucination", 1): "yes" if name == "ann" else "no"},
            )
    df = disagreements_df(session, "pilot")
    got = sorted((r.conversation_id, r.dimension, r.turn_index) for r in df.itertuples())
    assert got == [
        (conv_ids[0], "hallucination", 1),
        (conv_ids[0], "politeness", -1),
        (conv_ids[1], "hallucination", 1),
    ]
    row = df[(df.dimension == "politeness")].iloc[0]
    assert row["values"] == {"human:ann": "Polite", "human:bob": "Neutral"} and row["adjudicated"] is None
    with pytest.raises(UserInputError, match="not a label of politeness"):
        adjudicate(session, "pilot", conv_ids[0], "politeness", "Rude", cb)
    with pytest.raises(UserInputError, match="turn-level"):
        adjudicate(session, "pilot", conv_ids[0], "hallucination", "yes", cb)
    lab = adjudicate(
        session, "pilot", conv_ids[0], "politeness", "Neutral", cb, adjudicator="res", note="no courtesy"
    )
    adjudicate(session, "pilot", conv_ids[0], "hallucination", "no", cb, turn_index=1, adjudicator="res")
    src = session.get(LabelSource, lab.source_id)
    assert (src.name, src.kind) == ("adjudicated:pilot", "adjudicated")
    assert lab.samples == [
        {"source": "human:ann", "value": "Polite"},
        {"source": "human:bob", "value": "Neutral"},
    ]
    assert lab.rationale == "adjudicated by res: no courtesy"
    # Deciding again replaces the decision.
    adjudicate(session, "pilot", conv_ids[0], "politeness", "Polite", cb)
    finals = session.exec(
        select(Label).where(Label.source_id == src.id, Label.dimension == "politeness")
    ).all()
    assert [f.value for f in finals] == ["Polite"]
    df = disagreements_df(session, "pilot")
    assert (
        df.set_index(["conversation_id", "dimension"]).loc[(conv_ids[0], "politeness"), "adjudicated"]
        == "Polite"
    )
    # Adjudicated labels are not themselves counted as an annotator.
    assert all("adjudicated:pilot" not in v for v in df["values"])


def test_a_stale_decision_stays_listed_with_its_status(session):
    """Adjudicated, then the annotators stop disagreeing (one changes, one withdraws): the decision
    is still the gold label, so the item stays listed, marked as no longer disputed."""
    study = make_study(session, n_per_cell=1)
    cb = load_codebook()
    assign_items(session, "pilot", ["ann", "bob"], overlap=2, seed=0)
    c1, c2 = sorted({r.conversation_id for r in session.exec(select(AnnotationAssignment)).all()})[:2]
    for name, pol in (("ann", "Polite"), ("bob", "Neutral")):
        for cid in (c1, c2):
            save_labels(session, study.id, ann(session, name), cid, cb, full_labels(cb) | {"politeness": pol})

    def status():
        df = disagreements_df(session, "pilot")
        return {(r.conversation_id, r.dimension): (r.status, r.adjudicated, r.n) for r in df.itertuples()}

    assert status() == {(c1, "politeness"): ("open", None, 2), (c2, "politeness"): ("open", None, 2)}
    adjudicate(session, "pilot", c1, "politeness", "Neutral", cb, adjudicator="res")
    adjudicate(session, "pilot", c2, "politeness", "Neutral", cb, adjudicator="res")
    assert status()[(c1, "politeness")] == ("decided", "Neutral", 2)
    # ann now agrees with bob on c1; bob withdraws his labels of c2 by skipping it
    save_labels(session, study.id, ann(session, "ann"), c1, cb, full_labels(cb) | {"politeness": "Neutral"})
    skip_item(session, study.id, ann(session, "bob"), c2)
    got = status()
    assert got[(c1, "politeness")] == ("decided; annotators now agree", "Neutral", 2)
    assert got[(c2, "politeness")] == ("decided; fewer than 2 labels now", "Neutral", 1)
    df = disagreements_df(session, "pilot")
    assert df.set_index("conversation_id").loc[c1, "values"] == {
        "human:ann": "Neutral",
        "human:bob": "Neutral",
    }
    # both withdraw: the decision is still listed, with no annotator values
    skip_item(session, study.id, ann(session, "ann"), c2)
    assert status()[(c2, "politeness")] == ("decided; fewer than 2 labels now", "Neutral", 0)
    # the dimension filter applies to decisions too
    assert disagreements_df(session, "pilot", dimensions=["formality"]).empty
    agreed = disagreements_df(session, "pilot", include_agreed=True)
    assert set(agreed["status"]) == {
        "agreed",
        "decided; annotators now agree",
        "decided; fewer than 2 labels now",
    }


def test_blind_items_are_numbered_without_ids(session):
    from annotation.adjudication import blind_items

    study = make_study(session, n_per_cell=1, language="zh")
    cb = load_codebook()
    assign_items(session, "pilot", ["ann", "bob"], overlap=2, seed=0)
    convs = sorted({r.conversation_id for r in session.exec(select(AnnotationAssignment)).all()})
    for name, pol, hall in (("ann", "Polite", "yes"), ("bob", "Neutral", "no")):
        for cid in convs:
            save_labels(
                session,
                study.id,
                ann(session, name),
                cid,
                cb,
                full_labels(cb) | {"politeness": pol},
                turn_values={("hallucination", 3): hall},
            )
    blind = blind_items(session, "pilot", "salt-1", cb)
    items = blind.items
    assert len(items) == 2 * len(convs) and blind.language == "zh" and blind.n_conversations == len(convs)
    # one number per conversation, 1..n; within it the codebook's order (politeness before hallucination)
    assert sorted(set(items["item_no"])) == list(range(1, len(convs) + 1))
    assert list(items["item_no"]) == sorted(items["item_no"])
    assert list(items[items["item_no"] == 1]["dimension"]) == ["politeness", "hallucination"]
    # turn 3 is the conversation's second assistant reply
    hall = items[items["dimension"] == "hallucination"]
    assert set(hall["turn_role"]) == {"assistant"} and set(hall["turn_no"]) == {2}
    assert all(
        k.startswith("adj-") and not any(str(c) in k[4:].split("-") for c in convs) for k in items["key"]
    )
    assert len(set(items["key"])) == len(items)
    # the numbering follows the salt, not the ids; the same salt gives the same numbers
    again = blind_items(session, "pilot", "salt-1", cb).items
    assert list(again["key"]) == list(items["key"])
    orders = {
        tuple(
            blind_items(session, "pilot", f"salt-{i}", cb).items.drop_duplicates("item_no")["conversation_id"]
        )
        for i in range(12)
    }
    assert len(orders) > 1
    assert list(blind.of(["hallucination"])["dimension"]) == ["hallucination"] * len(convs)
    assert len(blind.of(open_only=True)) == len(items)


def test_one_display_language_for_the_queue(session):
    # As in the reference: agents in English with Chinese translations, people in Chinese only.
    study = make_study(session, n_per_cell=1, language="zh")
    study.language = "en"
    session.add(study)
    ids = [c.id for c in session.exec(select(Conversation)).all()]
    from annotation.labelling import language_coverage, preferred_language

    assert language_coverage(session, ids) == {"en": 2, "zh": 4}
    assert preferred_language(session, study, ids) == "zh"
    assert preferred_language(session, study, []) == "en"
    agents = [c.id for c in session.exec(select(Conversation).where(Conversation.user_kind == "agent")).all()]
    assert preferred_language(session, study, agents) == "en"  # tie: the study's language


def test_annotator_source_keeps_its_codebook_history(session):
    """Labels carry no codebook version of their own: the source records when each version took
    over, so a label's codebook follows from its time."""
    from annotation.codebook import load_codebook
    from annotation.labelling import annotator_source

    make_study(session, n_per_cell=1)
    cb = load_codebook()
    me = ann(session, "ann")
    src = annotator_source(session, me, cb)
    session.flush()
    assert src.codebook_version == cb.version and not (src.params or {}).get("codebook_history")
    newer = cb.model_copy(update={"version": f"{cb.version}+lab-2"})
    src = annotator_source(session, me, newer)
    history = src.params["codebook_history"]
    assert [h["version"] for h in history] == [cb.version, newer.version]
    assert history[0]["from"] <= history[1]["from"] and src.codebook_version == newer.version
    src = annotator_source(session, me, newer)  # unchanged: no new entry
    assert len(src.params["codebook_history"]) == 2


def test_top_up_for_a_late_annotator_and_reassign_a_dropout(session):
    from annotation.queue import reassign_items

    make_study(session, n_per_cell=5, annotators=("ann", "bob", "cy", "dee"))  # 20 conversations
    first = assign_items(session, "pilot", ["ann", "bob"], overlap=2, seed=3)
    assert first.n_items == 20
    again = assign_items(session, "pilot", ["ann", "bob", "cy"], overlap=2, seed=3)
    assert again.n_items == 0 and "top_up" in again.nothing_reason()
    # cy joins late: a third annotator on 8 items, half human, half agent.
    rep = assign_items(session, "pilot", ["cy"], overlap=3, per_annotator=8, seed=3, top_up=True)
    assert rep.n_items == 8 and rep.per_annotator == {"cy": 8} and "Topped up 8" in rep.summary()
    rows = session.exec(select(AnnotationAssignment)).all()
    cy = [r for r in rows if r.annotator_id == ann(session, "cy").id]
    kinds = Counter(session.get(Conversation, r.conversation_id).user_kind for r in cy)
    assert kinds == {"human": 4, "agent": 4} and sorted(r.position for r in cy) == list(range(8))
    per_item = Counter(r.conversation_id for r in rows)
    assert max(per_item.values()) == 3 and len({(r.annotator_id, r.conversation_id) for r in rows}) == len(
        rows
    )
    # Nothing more to add at overlap 3 for cy alone beyond the other 12 items; at overlap 2 nothing.
    assert assign_items(session, "pilot", ["cy"], overlap=2, top_up=True).n_items == 0
    # bob drops out after labelling one item: his pending items go to dee, the labelled one stays.
    bob = sorted((r for r in rows if r.annotator_id == ann(session, "bob").id), key=lambda r: r.position)
    bob[0].status = "done"
    session.add(bob[0])
    session.flush()
    moved, dropped = reassign_items(session, "pilot", "bob", "dee")
    assert (moved, dropped) == (19, 0)
    rows = session.exec(select(AnnotationAssignment)).all()
    assert [r.conversation_id for r in rows if r.annotator_id == ann(session, "bob").id] == [
        bob[0].conversation_id
    ]
    dee = sorted((r for r in rows if r.annotator_id == ann(session, "dee").id), key=lambda r: r.position)
    assert len(dee) == 19 and [r.position for r in dee] == list(range(19))
    # cy already has some of ann's items: moving ann's queue to cy drops those instead of doubling them.
    moved, dropped = reassign_items(session, "pilot", "ann", "cy")
    assert dropped == 8 and moved == 12


def test_adjudication_under_a_newer_codebook_is_recorded(session, tmp_path):
    """The adjudicated source keeps the codebook each decision was made under: a decision under an
    extended codebook updates the source's version and records when it took over."""
    study = make_study(session, n_per_cell=1)
    cb = load_codebook()
    assign_items(session, "pilot", ["ann", "bob"], overlap=2, seed=0)
    cid = sorted({r.conversation_id for r in session.exec(select(AnnotationAssignment)).all()})[0]
    for name, pol in (("ann", "Polite"), ("bob", "Neutral")):
        save_labels(session, study.id, ann(session, name), cid, cb, full_labels(cb) | {"politeness": pol})
    lab = adjudicate(session, "pilot", cid, "politeness", "Neutral", cb)
    src = session.get(LabelSource, lab.source_id)
    assert src.codebook_version == cb.version and "history" not in src.params
    cb2 = humour_codebook(tmp_path)
    adjudicate(session, "pilot", cid, "politeness", "Polite", cb2)
    session.refresh(src)
    assert src.codebook_version == "1.1+lab-1"
    assert [h["codebook_version"] for h in src.params["history"]] == [cb.version, "1.1+lab-1"]
    assert src.params["gold"] is True


def test_saving_again_under_a_smaller_codebook_keeps_the_other_dimensions(session, tmp_path):
    """An item labelled under an extended codebook, corrected later with the extension unloaded: the
    extension's label stays (the form did not show it, so the annotator did not clear it)."""
    study = make_study(session, n_per_cell=1)
    cb = load_codebook()
    cb2 = humour_codebook(tmp_path)
    assign_items(session, "pilot", ["ann"], overlap=1, seed=0)
    a = ann(session, "ann")
    cid = next_item(session, study.id, a.id).conversation_id
    save_labels(session, study.id, a, cid, cb2, full_labels(cb) | {"humour": "3", "politeness": "Polite"})
    save_labels(session, study.id, a, cid, cb, full_labels(cb) | {"politeness": "Neutral"})
    got = {
        lab.dimension: lab.value for lab in session.exec(select(Label).where(Label.conversation_id == cid))
    }
    assert got["humour"] == "3" and got["politeness"] == "Neutral"
