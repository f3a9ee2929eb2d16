"""The labelling page with Streamlit's AppTest: blindness, plain-text rendering, saving, resuming."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlmodel import Session, select
from streamlit.testing.v1 import AppTest

from annotation.codebook import load_codebook
from annotation.queue import assign_items
from db.engine import make_engine
from db.migrate import upgrade
from db.models import Annotator, Label, Turn
from db.models.annotation import AnnotationAssignment, HumanityGuess
from tests.annotation_data import SECRET_MODEL, SECRET_PATH, SECRET_SIMULATOR, make_study

PAGES = Path(__file__).resolve().parent.parent / "workbench" / "app" / "views"
INJECTED = "<script>alert('x')</script> ![x](http://evil.example/x.png) **bold** [link](http://evil.example)"
# Words that would tell the annotator who the user was.
KIND_WORDS = [
    "agent",
    "human",
    "llm_agent",
    "llm",
    "simulat",
    "gpt",
    "secretmodel",
    ".json",
    "real_human",
    "wave",
    "translat",
    "[zh]",
]


@pytest.fixture
def db(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'page.db'}"
    monkeypatch.setenv("WORKBENCH_DB_URL", url)
    eng = make_engine(url)
    upgrade(eng)
    with Session(eng, expire_on_commit=False) as s:
        make_study(s, n_per_cell=1, language="zh", annotators=("ann", "bob"))
        # Turn texts that do not themselves name the kind (the test data marks them for other tests).
        # Humans wrote Chinese; agents English with a Chinese translation, which the page must show.
        for t in s.exec(select(Turn)).all():
            t.content = f"message {t.id}" if t.translation else f"消息 {t.id}"
            if t.translation:
                t.translation = f"消息 {t.id}"
            s.add(t)
        first_user = s.exec(select(Turn).where(Turn.role == "user").order_by(Turn.id)).first()
        first_user.content = first_user.translation = INJECTED
        s.add(first_user)
        assign_items(s, "pilot", ["ann", "bob"], overlap=2, seed=3)
        s.commit()
        users = {a.name: a.id for a in s.exec(select(Annotator)).all()}
    yield eng, users
    eng.dispose()


def page(users, name="ann", role="annotator", file="annotate.py") -> AppTest:
    at = AppTest.from_file(str(PAGES / file), default_timeout=30)
    at.session_state["user"] = {"id": users[name], "name": name, "role": role}
    return at.run()


def all_texts(at: AppTest) -> list[str]:
    """Every text an element shows: values, labels, help, options, captions, titles."""
    out = []

    def walk(node):
        for attr in ("value", "label", "help", "body", "placeholder", "name"):
            v = (
                getattr(node, attr, None)
                if attr != "value"
                or node.type
                in (
                    "markdown",
                    "caption",
                    "title",
                    "header",
                    "subheader",
                    "text",
                    "code",
                    "alert",
                    "success",
                    "info",
                    "warning",
                    "error",
                    "exception",
                    "toast",
                )
                else None
            )
            if isinstance(v, str):
                out.append(v)
        for opt in getattr(node, "options", None) or []:
            out.append(str(opt))
        if node.type == "expandable":
            out.append(node.proto.expandable.label)
        for child in getattr(node, "children", {}).values():
            walk(child)

    walk(at._tree)
    return out


def test_page_is_blind_and_renders_text_safely(db):
    eng, users = db
    at = page(users)
    assert not at.exception, at.exception
    texts = all_texts(at)
    blob = "\n".join(texts).lower()
    # The scan sees turn texts, radio labels and options, help texts, expanders and buttons.
    for seen in ("消息", "礼貌程度", "一次性完整方案", "定义: ", "保存并继续", "用户对助手所用语言", "真人"):
        assert seen in blob, seen
    assert "message " not in blob  # an agent's English original is not shown beside the translation
    for word in KIND_WORDS:
        assert word not in blob, f"{word!r} shown on the labelling page"
    assert SECRET_MODEL.lower() not in blob and SECRET_SIMULATOR.lower() not in blob
    assert Path(SECRET_PATH).name not in blob
    # Every codebook dimension is in the form (radio labels), in the study language (zh).
    cb = load_codebook()
    radio_labels = [r.label for r in at.radio]
    for d in cb.conversation_dimensions():
        assert d.display_title("zh") in radio_labels
    assert any("幻觉" in lab for lab in radio_labels)  # per-turn hallucination
    assert "这位用户是真人还是 AI？（可选）" in radio_labels
    # optional choices (the guess, per-turn labels) start at "—", which also takes a misclick back
    for r in at.radio:
        if r.label == "这位用户是真人还是 AI？（可选）" or "幻觉" in r.label:
            assert r.options[0] == "—" and r.value is None, r.label
        if "幻觉" in r.label:  # values by their codebook display names in the page language
            assert r.options == ["—", "是", "否", "无法判断"]
    # Injected markup is shown as text: escaped in markdown, never as HTML.
    md = [m for m in at.markdown if "script" in m.value]
    if md:
        assert all("\\<script\\>" in m.value and "\\!\\[x\\]" in m.value for m in md)
        assert not any(m.proto.allow_html for m in at.markdown)
    else:  # the injected turn is in another annotator's first item
        assert not any("<script>" in m.value for m in at.markdown)
    assert at.get("progress")
    # Widget keys end up in the page (as CSS classes): they must not carry the conversation's id,
    # which tells the kinds apart on imported data.
    with Session(eng) as s:
        ids = {str(c) for c in s.exec(select(AnnotationAssignment.conversation_id)).all()}
    keys = [w.key for w in at.radio if w.key] + [w.key for w in at.text_area if w.key]
    assert sum(k.startswith("ann-") for k in keys) > 10
    for key in keys:
        assert not any(part in ids for part in key.replace("-", " ").split()), key


def test_injected_content_is_escaped_wherever_it_appears(db):
    eng, users = db
    with Session(eng) as s:
        for t in s.exec(select(Turn)).all():
            t.content, t.translation = INJECTED, INJECTED if t.translation else None
            s.add(t)
        s.commit()
    at = page(users)
    turn_md = [m.value for m in at.markdown if "script" in m.value]
    assert turn_md and all("\\<script\\>" in v and "![" not in v and "](" not in v for v in turn_md)
    assert any("\\!\\[x\\]\\(http" in v for v in turn_md)  # user turns: exactly as typed
    assert any("\\[image\\: x\\] **bold**" in v for v in turn_md)  # assistant turns: safe markdown
    assert not any(m.proto.allow_html for m in at.markdown)
    assert not any("<script>" in m.value for m in at.markdown)


MD_REPLY = ("### Picks\n**Dune** is great.\n\n- ![x](http://127.0.0.1:9/t.png)\n- <img src=x onerror=alert(1)> <script>\n"
            "- [click](javascript:alert(1)) :red[big] $x$")


def _markdown_replies(eng) -> None:
    """Assistant turns become a prompt-injected markdown reply, user turns the injected markup."""
    with Session(eng) as s:
        for t in s.exec(select(Turn)).all():
            text = MD_REPLY if t.role == "assistant" else INJECTED
            t.content, t.translation = text, text if t.translation else None
            s.add(t)
        s.commit()


def _assert_replies_safe(at: AppTest) -> None:
    replies = [m.value for m in at.markdown if "Picks" in m.value]
    assert replies
    for v in replies:
        assert v.startswith("### Picks") and "**Dune**" in v  # headings and bold ARE rendered
        assert "![" not in v and "](" not in v and "<" not in v.replace("\\<", "")
        assert "\\[image" in v and "\\:\u2060red" in v and "\\$x\\$" in v
    users = [m.value for m in at.markdown if "script" in m.value and "Picks" not in m.value]
    assert all("\\<script\\>" in v and "\\*\\*bold\\*\\*" in v and "\\!\\[x\\]" in v for v in users)
    assert not any(m.proto.allow_html for m in at.markdown)


def test_assistant_replies_render_as_safe_markdown(db):
    eng, users = db
    _markdown_replies(eng)
    at = page(users)
    assert not at.exception, at.exception
    _assert_replies_safe(at)


def fill(at: AppTest, skip_dims=()):
    cb = load_codebook()
    for d in cb.conversation_dimensions():
        if d.name in skip_dims:
            continue
        radio = next(r for r in at.radio if r.label == d.display_title("zh"))
        radio.set_value(d.labels[-1])
    return cb


def test_save_guess_progress_and_resume(db):
    eng, users = db
    at = page(users)
    with Session(eng) as s:
        first = (
            s.exec(
                select(AnnotationAssignment)
                .where(AnnotationAssignment.annotator_id == users["ann"])
                .order_by(AnnotationAssignment.position)
            )
            .first()
            .conversation_id
        )
    # Missing a label: an error, nothing saved.
    fill(at, skip_dims=("politeness",))
    save_btn = next(b for b in at.button if b.label == "保存并继续")
    save_btn.click().run()
    # named as the (Chinese) form names it, not by its codebook key
    assert any(load_codebook().get("politeness").display_title("zh") in e.value and "politeness" not in e.value
               for e in at.error), [e.value for e in at.error]
    with Session(eng) as s:
        assert s.exec(select(Label)).all() == []
    # Complete it, with a per-turn label and a guess.
    fill(at)
    turn_radio = next(r for r in at.radio if "幻觉" in r.label)
    turn_radio.set_value("yes")
    next(r for r in at.radio if r.label.startswith("这位用户")).set_value("ai")
    next(r for r in at.radio if r.label == "你有多确定？").set_value(4)
    at.text_area[0].input("clear requests")
    next(b for b in at.button if b.label == "保存并继续").click().run()
    assert not at.exception and not at.error
    with Session(eng) as s:
        labs = s.exec(select(Label).where(Label.conversation_id == first)).all()
        assert len([x for x in labs if x.turn_index == -1]) == 11
        assert [x.value for x in labs if x.dimension == "hallucination"] == ["yes"]
        g = s.exec(select(HumanityGuess)).one()
        assert (g.conversation_id, g.guess, g.confidence) == (first, "ai", 4)
        assert (
            s.exec(
                select(AnnotationAssignment).where(
                    AnnotationAssignment.conversation_id == first,
                    AnnotationAssignment.annotator_id == users["ann"],
                )
            )
            .one()
            .status
            == "done"
        )
    assert "已标注 1" in at.get("progress")[0].proto.text
    # Skip the next one.
    next(b for b in at.button if b.label == "跳过").click().run()
    # A fresh session (new login) resumes at the third item, with progress from the database.
    at2 = page(users)
    assert "已标注 1，已跳过 1，剩余 2" in at2.get("progress")[0].proto.text
    assert "第 3 条" in at2.subheader[0].value
    # Other annotators are unaffected.
    at3 = page(users, "bob")
    assert "已标注 0" in at3.get("progress")[0].proto.text


def test_no_queue_and_finished_queue(db):
    eng, users = db
    with Session(eng) as s:
        s.add(Annotator(name="cy", role="annotator"))
        s.commit()
        cy = s.exec(select(Annotator).where(Annotator.name == "cy")).one().id
    at = AppTest.from_file(str(PAGES / "annotate.py"), default_timeout=30)
    at.session_state["user"] = {"id": cy, "name": "cy", "role": "annotator"}
    at.run()
    assert not at.exception
    assert at.info and "workbench annotate assign" in at.info[0].value
    with Session(eng) as s:
        for a in s.exec(
            select(AnnotationAssignment).where(AnnotationAssignment.annotator_id == users["ann"])
        ).all():
            a.status = "done"
            s.add(a)
        s.commit()
    at = page(users)
    assert at.success and "谢谢" in at.success[0].value


def test_page_requires_login(db):
    at = AppTest.from_file(str(PAGES / "annotate.py"), default_timeout=30).run()
    assert not at.radio and at.warning


def test_adjudication_page(db):
    from annotation.labelling import save_labels
    from db.models import LabelSource
    from tests.annotation_data import full_labels

    eng, users = db
    cb = load_codebook()
    with Session(eng, expire_on_commit=False) as s:
        s.add(Annotator(name="res", role="researcher"))
        conv = s.exec(select(AnnotationAssignment.conversation_id).order_by(AnnotationAssignment.id)).first()
        for name, pol, form in (("ann", "Polite", "Oral"), ("bob", "Impolite", "Formal")):
            a = s.exec(select(Annotator).where(Annotator.name == name)).one()
            save_labels(s, 1, a, conv, cb, full_labels(cb) | {"politeness": pol, "formality": form})
        s.commit()
        res = s.exec(select(Annotator).where(Annotator.name == "res")).one().id
    denied = page(users, "ann", "annotator", file="adjudicate.py")
    assert denied.error and not denied.radio
    at = AppTest.from_file(str(PAGES / "adjudicate.py"), default_timeout=30)
    at.session_state["user"] = {"id": res, "name": "res", "role": "researcher"}
    _markdown_replies(eng)
    at.run()
    assert not at.exception, at.exception
    _assert_replies_safe(at)
    assert "0 of 2 disagreements settled" in at.get("progress")[0].proto.text
    box = at.selectbox(key="adj_item")  # options: the names shown; value: the item's stable id
    assert len(box.options) == 2 and box.value is not None
    if "politeness" not in box.value:
        box.set_value(f"{conv}|politeness|-1").run()
    labels_md = "\n".join(m.value for m in at.markdown)
    assert "- ann: **Polite**" in labels_md and "- bob: **Impolite**" in labels_md
    at.radio[0].set_value("Polite")
    at.text_input[0].input("thanks in turn 1")
    at.button[0].click().run()
    assert not at.exception and not at.error
    # the settled item leaves the list and the box names the item now shown, not the old one
    box = at.selectbox(key="adj_item")
    assert box.options == [f"conversation {conv}: formality"] and box.value == f"{conv}|formality|-1"
    assert box.index == 0
    assert "Formality" in at.subheader[0].value
    assert "1 of 2 disagreements settled" in at.get("progress")[0].proto.text
    with Session(eng) as s:
        src = s.exec(select(LabelSource).where(LabelSource.name == "adjudicated:pilot")).one()
        lab = s.exec(select(Label).where(Label.source_id == src.id)).one()
        assert (lab.conversation_id, lab.dimension, lab.value) == (conv, "politeness", "Polite")
        assert lab.rationale == "adjudicated by res: thanks in turn 1"
    at.radio[0].set_value("Oral")
    at.button[0].click().run()
    assert at.success and "settled" in at.success[0].value


def test_blind_on_the_reference_data(reference_db, tmp_path, monkeypatch):
    """On the imported reference dataset: one language for all items and no metadata on the page."""
    import re
    import shutil

    from sqlalchemy.engine import make_url

    from db.models import AssistantConfig, SimulatorConfig

    copy = tmp_path / "ref.db"
    shutil.copy(make_url(reference_db).database, copy)
    url = f"sqlite:///{copy}"
    monkeypatch.setenv("WORKBENCH_DB_URL", url)
    eng = make_engine(url)
    with Session(eng) as s:
        s.add(Annotator(name="ann", role="annotator"))
        s.commit()
        rep = assign_items(s, "recllmsim", ["ann"], overlap=1, per_annotator=16, seed=5)
        s.commit()
        assert set(k.split("/")[0] for k in rep.per_stratum) == {"agent", "human"}
        uid = s.exec(select(Annotator).where(Annotator.name == "ann")).one().id
        secrets = set(s.exec(select(AssistantConfig.model)).all())
        secrets |= {n for n in s.exec(select(SimulatorConfig.name)).all() if n}
        secrets |= {"LLM_agent_user", "real_human_user", "human_exp_V2", ".json", "User_", "agent_new_travel"}
    eng.dispose()
    at = AppTest.from_file(str(PAGES / "annotate.py"), default_timeout=60)
    at.session_state["user"] = {"id": uid, "name": "ann", "role": "annotator"}
    at.run()
    for _ in range(6):  # walk through items of both kinds by skipping
        assert not at.exception, at.exception
        blob = "\n".join(all_texts(at))
        for secret in secrets:
            assert secret.lower() not in blob.lower(), secret
        turns = [m.value for m in at.markdown if m.value and not m.value.startswith(("#", "*", "-"))]
        latin = sum(len(re.findall(r"[A-Za-z]{5,}", t)) for t in turns)
        han = sum(len(re.findall(r"[\u4e00-\u9fff]", t)) for t in turns)
        assert han > 10 * max(latin, 1), "conversation not shown in one language (Chinese)"
        next(b for b in at.button if b.label == "跳过").click().run()
