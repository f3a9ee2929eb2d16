"""The labelling page with Streamlit's AppTest: blindness, plain-text rendering, saving, resuming."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlmodel import Session, select
from streamlit.testing.v1 import AppTest

from annotation.codebook import load_codebook
from annotation.queue import assign_items
from db.engine import make_engine
from db.migrate import upgrade
from db.models import Annotator, Conversation, Label, Turn
from db.models.annotation import AnnotationAssignment, HumanityGuess
from db.settings import Settings
from tests.annotation_data import SECRET_MODEL, SECRET_PATH, SECRET_SIMULATOR, make_study
from workbench.app.texts import ANNOTATE_UI

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


def _page_db(tmp_path, monkeypatch, first_id=None):
    url = f"sqlite:///{tmp_path / 'page.db'}"
    monkeypatch.setenv("WORKBENCH_DB_URL", url)
    eng = make_engine(url)
    upgrade(eng)
    with Session(eng, expire_on_commit=False) as s:
        if first_id:  # another study's conversation first, so that the study's ids start at first_id
            other = make_study(s, n_per_cell=1, name="other", annotators=())
            cond = s.exec(select(Conversation).where(Conversation.study_id == other.id)).first().condition_id
            s.add(
                Conversation(
                    id=first_id - 1,
                    study_id=other.id,
                    condition_id=cond,
                    user_kind="agent",
                    replicate=9,
                    status="completed",
                    language="en",
                )
            )
            s.flush()
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
    return eng, users


@pytest.fixture
def db(tmp_path, monkeypatch):
    eng, users = _page_db(tmp_path, monkeypatch)
    yield eng, users
    eng.dispose()


@pytest.fixture
def db_high_ids(tmp_path, monkeypatch):
    """As ``db``, with the study's conversation ids from 1001 (not confused with small numbers)."""
    eng, users = _page_db(tmp_path, monkeypatch, first_id=1001)
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


MD_REPLY = (
    "### Picks\n**Dune** is great.\n\n- ![x](http://127.0.0.1:9/t.png)\n- <img src=x onerror=alert(1)> <script>\n"
    "- [click](javascript:alert(1)) :red[big] $x$"
)


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
    assert any(
        load_codebook().get("politeness").display_title("zh") in e.value and "politeness" not in e.value
        for e in at.error
    ), [e.value for e in at.error]
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
    assert "第 3 条" in at2.header[0].value
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


EXTENSION = """
version: "t1"
extends: default
dimensions:
  - name: clarity            # a dimension of a group that appeared earlier, added at the end
    group: strategy
    title: {en: Clarity, zh: 清晰度}
    definition: {en: "How clear the user's requests are.", zh: "用户请求的清晰程度。"}
    labels: [Clear, Unclear]
  - name: asks_question      # per user turn
    level: turn
    turn_role: user
    title: {en: Question, zh: 提问}
    definition: {en: "Is this message a question?", zh: "这条消息是提问吗？"}
    labels: ["yes", "no"]
"""


@pytest.fixture
def extended_codebook(tmp_path, monkeypatch):
    path = tmp_path / "extension.yaml"
    path.write_text(EXTENSION, encoding="utf-8")
    monkeypatch.setenv("WORKBENCH_CODEBOOK", str(path))
    return load_codebook(extensions=Settings.from_env().codebook_extensions)


def test_user_turn_labels_are_numbered_as_messages(db, extended_codebook):
    eng, users = db
    at = page(users)
    assert not at.exception, at.exception
    labels = [r.label for r in at.radio if r.label.startswith(("提问", "幻觉"))]
    # each conversation: user, assistant, user, assistant
    assert labels == ["提问，第 1 条消息", "幻觉，第 1 条回复", "提问，第 2 条消息", "幻觉，第 2 条回复"]
    next(r for r in at.sidebar.radio if r.key.startswith("annotate_lang")).set_value("en").run()
    labels = [r.label for r in at.radio if r.label.startswith(("Question,", "Hallucination,"))]
    assert labels == [
        "Question, message 1",
        "Hallucination, reply 1",
        "Question, message 2",
        "Hallucination, reply 2",
    ]
    # a label on the user's second message is stored on that turn (index 2)
    for d in extended_codebook.conversation_dimensions():
        next(r for r in at.radio if r.label == d.display_title("en")).set_value(d.labels[0])
    next(r for r in at.radio if r.label == "Question, message 2").set_value("yes")
    next(b for b in at.button if b.label == "Save and next").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    with Session(eng) as s:
        labs = s.exec(select(Label).where(Label.dimension == "asks_question")).all()
        assert [(lab.turn_index, lab.value) for lab in labs] == [(2, "yes")]


def test_group_headings_appear_once(db, extended_codebook):
    """The extension adds a strategy dimension after the others: it joins the strategy group."""
    _, users = db
    at = page(users)
    assert not at.exception, at.exception
    headings = [m.value for m in at.markdown if m.value.startswith("#### ")]
    assert headings == ["#### 对话策略", "#### 交互风格", "#### 助手的回答"]
    titles = [r.label for r in at.radio]
    strategy = [
        d.display_title("zh") for d in extended_codebook.conversation_dimensions() if d.group == "strategy"
    ]
    assert strategy[-1] == "清晰度"
    first_style = next(d for d in extended_codebook if d.group == "interaction_style").display_title("zh")
    # the strategy dimensions in codebook order, the extension's last among them, before the next group
    assert [titles.index(t) for t in strategy] == sorted(titles.index(t) for t in strategy)
    assert titles.index("清晰度") < titles.index(first_style)


def _disagree(eng):
    """ann and bob disagree on politeness, formality and the hallucination of the second reply of an
    agent's conversation and on politeness of a person's; returns (agent conversation, human
    conversation, the researcher's AppTest)."""
    from annotation.labelling import save_labels
    from db.repo import get_study
    from tests.annotation_data import full_labels

    cb = load_codebook()
    with Session(eng, expire_on_commit=False) as s:
        s.add(Annotator(name="res", role="researcher"))
        study_id = get_study(s, "pilot").id
        first = {}
        for c in s.exec(
            select(Conversation).where(Conversation.study_id == study_id).order_by(Conversation.id)
        ):
            first.setdefault(c.user_kind, c.id)
        agent, human = first["agent"], first["human"]
        for name, pol, form, hall in (("ann", "Polite", "Oral", "yes"), ("bob", "Impolite", "Formal", "no")):
            a = s.exec(select(Annotator).where(Annotator.name == name)).one()
            save_labels(
                s,
                study_id,
                a,
                agent,
                cb,
                full_labels(cb) | {"politeness": pol, "formality": form},
                turn_values={("hallucination", 3): hall},
            )
            save_labels(s, study_id, a, human, cb, full_labels(cb) | {"politeness": pol})
        s.commit()
        res = s.exec(select(Annotator).where(Annotator.name == "res")).one().id
    at = AppTest.from_file(str(PAGES / "adjudicate.py"), default_timeout=30)
    at.session_state["user"] = {"id": res, "name": "res", "role": "researcher"}
    return agent, human, at


def _pick(at: AppTest, label: str) -> None:
    box = at.selectbox(key="adj_item")
    box.select_index(box.options.index(label)).run()


def _by_label(widgets, label):
    return next(w for w in widgets if w.label == label)


POL_ZH, FORM_ZH, HALL_ZH = "礼貌程度", "正式程度", "幻觉，第 2 条回复"


def test_adjudication_page_is_blind_in_one_language(db_high_ids):
    eng, _ = db_high_ids
    agent, human, at = _disagree(eng)
    at.run()
    assert not at.exception, at.exception
    with Session(eng) as s:
        ids = {str(c.id) for c in s.exec(select(Conversation).where(Conversation.id > 1000)).all()}
    assert ids >= {str(agent), str(human)}
    box = at.selectbox(key="adj_item")
    # Opaque names: an item number per conversation (1 or 2), the dimension in the page's language.
    numbers = {o.split("：")[0] for o in box.options}
    assert numbers == {"条目 1", "条目 2"} and len(box.options) == 4
    # the per-turn item is named by the reply it is on (turn 3 is the second reply), not by its index
    agent_no = next(o for o in box.options if FORM_ZH in o).split("：")[0]
    assert f"{agent_no}：{HALL_ZH}" in box.options
    assert "已裁决 0 / 4 个分歧" in at.get("progress")[0].proto.text
    for i in range(len(box.options)):  # every item, of either kind: Chinese turns, no id, no kind word
        at.selectbox(key="adj_item").select_index(i).run()
        assert not at.exception, at.exception
        blob = "\n".join(all_texts(at)).lower()
        for word in KIND_WORDS:
            assert word not in blob, f"{word!r} shown on the adjudication page"
        assert not any(cid in blob for cid in ids), "a conversation id is shown"
        turns = [m.value for m in at.markdown if "消息" in m.value or "message" in m.value]
        assert len(turns) == 4 and all(t.startswith("消息 ") for t in turns), turns
        assert "任务：" in blob and "最终标签" in blob and "标注员的标签" in blob
        if HALL_ZH in at.selectbox(key="adj_item").options[i]:
            assert [c.value for c in at.caption if "⟶" in c.value] == ["⟶ 第 2 条回复（本条目）"]
        keys = [
            w.key
            for kind in ("radio", "text_input", "selectbox", "multiselect", "toggle")
            for w in getattr(at, kind)
            if w.key
        ]
        assert any(k.startswith("adj-") for k in keys)
        for key in keys:
            assert not any(part in ids for part in key.replace("-", " ").replace("_", " ").split()), key
    # The researcher can switch the language: UI in English; a person's Chinese conversation has no
    # English version, so a warning says the items are no longer all in one language.
    at.radio(key="adj_lang_pilot").set_value("en").run()
    assert not at.exception, at.exception
    assert "0 of 4 disagreements settled" in at.get("progress")[0].proto.text
    assert (
        f"{agent_no.replace('条目', 'item')}: Hallucination, reply 2" in at.selectbox(key="adj_item").options
    )
    assert {o.split(":")[0] for o in at.selectbox(key="adj_item").options} == {"item 1", "item 2"}
    assert at.warning and "original language" in at.warning[0].value


def test_adjudication_page(db):
    from db.models import LabelSource

    eng, users = db
    agent, _, at = _disagree(eng)
    denied = page(users, "ann", "annotator", file="adjudicate.py")
    assert denied.error and not denied.radio
    _markdown_replies(eng)
    at.run()
    assert not at.exception, at.exception
    _assert_replies_safe(at)
    assert "已裁决 0 / 4 个分歧" in at.get("progress")[0].proto.text
    box = at.selectbox(key="adj_item")
    assert len(box.options) == 4 and box.value is not None
    # the agent's conversation is the one with a formality item
    agent_no = next(o for o in box.options if FORM_ZH in o).split("：")[0]
    _pick(at, f"{agent_no}：{POL_ZH}")
    labels_md = "\n".join(m.value for m in at.markdown)
    assert "- ann: **礼貌**" in labels_md and "- bob: **不礼貌**" in labels_md
    final = _by_label(at.radio, "最终标签")
    assert final.options == ["礼貌", "中性", "不礼貌"]  # values by their names in the page language
    final.set_value("Polite")
    _by_label(at.text_input, "备注（可选）").input("thanks in turn 1")
    _by_label(at.button, "保存裁决").click().run()
    assert not at.exception and not at.error
    # the settled item leaves the list and the box names the item now shown, not the old one
    box = at.selectbox(key="adj_item")
    assert f"{agent_no}：{POL_ZH}" not in box.options and len(box.options) == 3
    assert box.index == 0 and box.options[0].split("：")[1].startswith(at.header[0].value)
    assert "已裁决 1 / 4 个分歧" in at.get("progress")[0].proto.text
    with Session(eng) as s:
        src = s.exec(select(LabelSource).where(LabelSource.name == "adjudicated:pilot")).one()
        lab = s.exec(select(Label).where(Label.source_id == src.id)).one()
        assert (lab.conversation_id, lab.dimension, lab.value) == (agent, "politeness", "Polite")
        assert lab.rationale == "adjudicated by res: thanks in turn 1"
    for _ in range(3):  # settle the rest
        value = {FORM_ZH: "Oral", POL_ZH: "Polite"}.get(at.header[0].value, "no")
        _by_label(at.radio, "最终标签").set_value(value)
        _by_label(at.button, "保存裁决").click().run()
        assert not at.exception and not at.error
    assert at.success and at.success[0].value == "所有分歧均已裁决。"


def test_adjudication_page_keeps_a_stale_decision_visible(db):
    """Decided, then the annotators come to agree: the decision is listed with its status."""
    from annotation.adjudication import adjudicate
    from annotation.labelling import save_labels
    from db.repo import get_study
    from tests.annotation_data import full_labels

    eng, _ = db
    _, human, at = _disagree(eng)
    cb = load_codebook()
    with Session(eng) as s:
        adjudicate(s, "pilot", human, "politeness", "Impolite", cb, adjudicator="res")
        ann = s.exec(select(Annotator).where(Annotator.name == "ann")).one()
        save_labels(s, get_study(s, "pilot").id, ann, human, cb, full_labels(cb) | {"politeness": "Impolite"})
        s.commit()
    at.run()
    assert not at.exception, at.exception
    assert "已裁决 0 / 3 个分歧" in at.get("progress")[0].proto.text  # only current disagreements count
    assert any("不再有分歧" in c.value for c in at.caption)
    assert all(POL_ZH + "（" not in o for o in at.selectbox(key="adj_item").options)  # open items only
    at.toggle(key="adj_open").set_value(False).run()
    options = at.selectbox(key="adj_item").options
    stale = [o for o in options if o.endswith(f"{POL_ZH}（已裁决；标注员现已一致）")]
    assert len(options) == 4 and len(stale) == 1, options
    _pick(at, stale[0])
    assert any(c.value == "状态：已裁决；标注员现已一致" for c in at.caption)
    assert _by_label(at.radio, "最终标签").value == "Impolite"  # the decision, to be revisited
    labels_md = "\n".join(m.value for m in at.markdown)
    assert "- ann: **不礼貌**" in labels_md and "- bob: **不礼貌**" in labels_md


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


def test_adjudication_progress_and_choices_without_the_page():
    """The rules the Adjudicate page shows: stale decisions count apart; options and names."""
    import pandas as pd

    from annotation.adjudication import (
        DECIDED,
        DECIDED_NOW_AGREED,
        OPEN,
        BlindItems,
        annotator_of,
        decision_options,
    )

    items = pd.DataFrame(
        {"dimension": ["a", "a", "b", "b"], "status": [OPEN, DECIDED, DECIDED_NOW_AGREED, OPEN]}
    )
    blind = BlindItems(items, "en")
    assert blind.progress() == (1, 3, 1)  # settled, total disputed now, decided but no longer disputed
    assert blind.progress(["a"]) == (1, 2, 0)
    assert annotator_of("human:ann1") == "ann1" and annotator_of("llm:gpt") == "llm:gpt"
    assert decision_options({"x": "no", "y": "yes"}) == ["no", "yes"]


def test_language_stays_the_annotators_choice_across_studies(db):
    """A second queue in a study of another language must not switch the page's language; label
    values are shown by their codebook titles, never as codes (NoExplanation, HavePromise)."""
    eng, users = db  # "pilot": a Chinese study
    with Session(eng) as s:
        make_study(s, n_per_cell=1, name="second", language="en", annotators=())
        assign_items(s, "second", ["ann"], overlap=1, seed=1)
        s.commit()
    at = page(users)
    assert not at.exception, at.exception
    [study] = [b for b in at.selectbox if b.label == "Study"]
    assert study.options == ["second", "pilot"] and study.value == "second"
    lang = [r for r in at.sidebar.radio if r.label == "Language / 语言"][0]
    assert lang.value == "en"
    study.set_value("pilot").run()
    assert not at.exception, at.exception
    assert at.title[0].value == "Label conversations"
    assert [r for r in at.sidebar.radio if r.label == "Language / 语言"][0].value == "en"
    assert at.query_params["lang"] in ("en", ["en"])
    codebook = load_codebook()
    for language in ("en", "zh"):
        [r for r in at.sidebar.radio if r.label == "Language / 语言"][0].set_value(language).run()
        shown = {str(o) for r in at.radio for o in r.options}
        for dim in codebook:
            for value in dim.labels:
                if dim.label_title(value, language) != value:
                    assert value not in shown, (dim.name, value)
                    assert dim.label_title(value, language) in shown or dim.level == "turn"
    assert at.title[0].value == ANNOTATE_UI["zh"]["title"]


@contextmanager
def sessions_opened():
    """The database sessions that begin a transaction while the block runs (SQLAlchemy's
    ``after_begin`` event on every Session), as a list of distinct sessions."""
    from sqlalchemy import event
    from sqlalchemy.orm import Session as OrmSession

    seen: list = []

    def began(session, transaction, connection):
        if not any(x is session for x in seen):
            seen.append(session)

    event.listen(OrmSession, "after_begin", began)
    try:
        yield seen
    finally:
        event.remove(OrmSession, "after_begin", began)


def test_one_database_session_per_action(db):
    """Issue 14: each action on the labelling page (open, a refused save, save, skip, revisit, back,
    switch the language, reopen the skipped items) is one page run that opens one session."""
    eng, users = db
    at = AppTest.from_file(str(PAGES / "annotate.py"), default_timeout=30)
    at.session_state["user"] = {"id": users["ann"], "name": "ann", "role": "annotator"}

    def one_session(step, act):
        with sessions_opened() as seen:
            act()
        assert not at.exception, (step, at.exception)
        assert len(seen) == 1, f"{step}: {len(seen)} sessions"

    def click(label):
        return lambda: next(b for b in at.button if b.label == label).click().run()

    one_session("open", at.run)
    fill(at, skip_dims=("politeness",))
    one_session("refused save", click("保存并继续"))
    assert at.error
    fill(at)
    one_session("save", click("保存并继续"))
    assert not at.error and "已标注 1" in at.get("progress")[0].proto.text
    one_session("skip", click("跳过"))
    assert "已跳过 1" in at.get("progress")[0].proto.text
    one_session("revisit", click(ANNOTATE_UI["zh"]["review_open"]))
    assert at.info and at.info[0].value == ANNOTATE_UI["zh"]["editing"]
    one_session("back", click(ANNOTATE_UI["zh"]["back"]))
    assert not at.info
    lang = next(r for r in at.sidebar.radio if r.label == "Language / 语言")
    one_session("language", lambda: lang.set_value("en").run())
    assert at.title[0].value == ANNOTATE_UI["en"]["title"]
    with Session(eng) as s:  # leave only the skipped item, then take it back
        for a in s.exec(
            select(AnnotationAssignment).where(
                AnnotationAssignment.annotator_id == users["ann"], AnnotationAssignment.status == "pending"
            )
        ).all():
            a.status = "done"
            s.add(a)
        s.commit()
    one_session("finished", at.run)
    one_session("reopen", click(ANNOTATE_UI["en"]["reopen"].format(n=1)))
    assert "0 skipped" in at.get("progress")[0].proto.text and at.header
