"""Annotator: label the conversations of your queue, blind to who the user was.

Everything shown comes from ``annotation.labelling.blind_view`` (turn texts and the scenario) and
the codebook; the page never reads user kind, wave, file names, model or simulator names.
"""

import hashlib
import secrets

import streamlit as st

from annotation import labelling as L
from annotation import queue as Q
from db.engine import session_scope
from db.errors import WorkbenchError
from db.models import Annotator, Study
from workbench.app.auth import require_role
from workbench.app.common import (
    codebook_or_stop,
    engine,
    escape_markdown,
    hide_input_hints,
    show_flash,
    show_text,
    show_turn,
)

UI = {
    "en": {
        "title": "Label conversations",
        "none": "No conversations are assigned to you yet. A researcher assigns them "
        "with `workbench annotate assign`.",
        "study": "Study",
        "lang": "Language",
        "progress": "{done} labelled, {skipped} skipped, {pending} to go (of {total})",
        "finished": "Your queue is finished. Thank you!",
        "reopen": "Revisit the {n} skipped items",
        "item": "Item {pos} of {total}",
        "scenario": "Task: {name}",
        "user": "User",
        "assistant": "Assistant",
        "definition": "Definition",
        "labels": "Labels",
        "aspects": "Aspects in this task",
        "examples": "Examples",
        "turn_label": {"assistant": "{title}, reply {n}", "user": "{title}, message {n}"},
        "rationale": "Rationale (optional)",
        "flag": "Flag this item for the researchers",
        "flag_note": "What is wrong? (optional)",
        "guess": "Was this user a person or an AI? (optional)",
        "guess_person": "A person",
        "guess_ai": "An AI",
        "confidence": "How sure are you?",
        "save": "Save and next",
        "skip": "Skip",
        "saved": "Saved.",
        "skipped_msg": "Skipped.",
        "review": "Review an earlier item",
        "review_pick": "Item",
        "review_open": "Open",
        "editing": "You are editing an item you already labelled. Skipping it withdraws your labels.",
        "editing_skipped": "You are revisiting an item you skipped. Save to label it.",
        "finished_skipped": "Nothing is left to label, but you skipped {n} item(s): revisit them below.",
        "unset": "—",
        "back": "Back to the queue",
        "turns_head": "Conversation",
        "conv_head": "Whole conversation",
        "groups": {
            "strategy": "Conversation strategy",
            "interaction_style": "Interaction style",
            "evaluation": "Answers of the assistant",
            "other": "Other",
        },
        "conf": {1: "1 pure guess", 2: "2", 3: "3", 4: "4", 5: "5 certain"},
    },
    "zh": {
        "title": "标注对话",
        "none": "还没有分配给你的对话。研究人员可用 `workbench annotate assign` 分配。",
        "study": "研究",
        "lang": "语言",
        "progress": "已标注 {done}，已跳过 {skipped}，剩余 {pending}（共 {total}）",
        "finished": "你的队列已完成，谢谢！",
        "reopen": "重新处理 {n} 个跳过的条目",
        "item": "第 {pos} 条，共 {total} 条",
        "scenario": "任务：{name}",
        "user": "用户",
        "assistant": "助手",
        "definition": "定义",
        "labels": "标签",
        "aspects": "本任务的方面",
        "examples": "示例",
        "turn_label": {"assistant": "{title}，第 {n} 条回复", "user": "{title}，第 {n} 条消息"},
        "rationale": "理由（可选）",
        "flag": "为研究人员标记此条目",
        "flag_note": "有什么问题？（可选）",
        "guess": "这位用户是真人还是 AI？（可选）",
        "guess_person": "真人",
        "guess_ai": "AI",
        "confidence": "你有多确定？",
        "save": "保存并继续",
        "skip": "跳过",
        "saved": "已保存。",
        "skipped_msg": "已跳过。",
        "review": "查看之前的条目",
        "review_pick": "条目",
        "review_open": "打开",
        "editing": "你正在修改已标注过的条目。跳过将撤回你的标注。",
        "editing_skipped": "你正在查看一个已跳过的条目。保存即为其标注。",
        "finished_skipped": "没有待标注的条目了，但你跳过了 {n} 个条目：可在下方重新处理。",
        "unset": "—",
        "back": "返回队列",
        "turns_head": "对话",
        "conv_head": "整段对话",
        "groups": {
            "strategy": "对话策略",
            "interaction_style": "交互风格",
            "evaluation": "助手的回答",
            "other": "其他",
        },
        "conf": {1: "1 纯属猜测", 2: "2", 3: "3", 4: "4", 5: "5 确定"},
    },
}

user = require_role("annotator", "researcher")
show_flash()
eng = engine()
codebook = codebook_or_stop()

with session_scope(eng) as s:
    studies = [(st_.id, st_.name, st_.language) for st_ in Q.annotator_studies(s, user["id"])]
    me = s.get(Annotator, user["id"])
if me is None:
    st.error("Your account was not found; log in again.")
    st.stop()

if not studies:
    T = UI["en"]
    st.title(T["title"])
    st.info(T["none"])
    st.stop()
if len(studies) > 1:
    names = [name for _, name, _ in studies]
    chosen = st.sidebar.selectbox("Study / 研究", names, key="annotate_study")
    study_id = next(i for i, name, _ in studies if name == chosen)
else:
    study_id = studies[0][0]

# One display language for the whole queue, so that the language does not betray the source.
with session_scope(eng) as s:
    study = s.get(Study, study_id)
    queue_ids = [a.conversation_id for a in Q.queue_items(s, study_id, me.id)]
    default_lang = L.preferred_language(s, study, queue_ids)
    coverage = L.language_coverage(s, queue_ids)
default_lang = default_lang if default_lang in UI else "en"
lang = st.sidebar.radio(
    "Language / 语言",
    list(UI),
    index=list(UI).index(default_lang),
    horizontal=True,
    key=f"annotate_lang_{study_id}",
    help="Choose before you start an item: switching clears the choices of the item you have not saved yet. "
    "/ 请在开始标注前选择：切换语言会清除当前条目尚未保存的选择。",
)
T = UI[lang]
hide_input_hints(lang)
st.title(T["title"])
if coverage.get(lang, 0) < len(queue_ids):
    st.warning(
        "Some conversations cannot be shown in this language and appear in their original language. "
        f"Choose {default_lang} to see every conversation in one language."
        if lang == "en"
        else f"部分对话没有该语言版本，将以原文显示。选择 {default_lang} 可让所有对话使用同一种语言。"
    )

with session_scope(eng) as s:
    prog = Q.queue_progress(s, study_id, me.id)
    items = [(a.position, a.conversation_id, a.status) for a in Q.queue_items(s, study_id, me.id)]
    pending = Q.next_item(s, study_id, me.id)
    pending_conv = pending.conversation_id if pending else None
st.progress(
    prog.fraction,
    text=T["progress"].format(done=prog.done, skipped=prog.skipped, pending=prog.pending, total=prog.total),
)

# Revisiting an earlier item (resumable and correctable; the state lives in the database).
done_items = [(pos, conv) for pos, conv, status in items if status != "pending"]
revisit = st.session_state.get("annotate_revisit")
if done_items:
    with st.sidebar.expander(T["review"]):
        pick = st.selectbox(
            T["review_pick"],
            [pos for pos, _ in done_items],
            format_func=lambda p: f"#{p + 1}",
            key="annotate_review_pick",
        )
        if st.button(T["review_open"], key="annotate_review_open"):
            st.session_state["annotate_revisit"] = dict(done_items)[pick]
            st.rerun()

conv_id = revisit if revisit in {c for _, c in done_items} else pending_conv
if conv_id is None:
    # "Finished" only when something was labelled; a queue of skips says so.
    if prog.done == 0 and prog.skipped:
        st.warning(T["finished_skipped"].format(n=prog.skipped))
    else:
        st.success(T["finished"])
    if prog.skipped:
        if st.button(T["reopen"].format(n=prog.skipped), key="annotate_reopen"):
            with session_scope(eng) as s:
                Q.reopen_skipped(s, study_id, me.id)
            st.rerun()
    st.stop()

position = next(pos for pos, c, _ in items if c == conv_id)
with session_scope(eng) as s:
    view = L.blind_view(s, conv_id, lang)
    saved = L.load_saved(s, study_id, me, conv_id)
if conv_id == revisit:
    st.info(
        T["editing_skipped"] if dict((c, s_) for _, c, s_ in items)[conv_id] == "skipped" else T["editing"]
    )
    if st.button(T["back"], key="annotate_back"):
        st.session_state.pop("annotate_revisit", None)
        st.rerun()

st.subheader(T["item"].format(pos=position + 1, total=prog.total))
st.caption(escape_markdown(T["scenario"].format(name=view.scenario_name)))


def _index(options, value):
    return options.index(value) if value in options else None


def _shown(dim):
    """The form's text for a value of ``dim`` (its codebook display name in the page language)."""
    return lambda value: dim.label_title(str(value), lang)


def _optional_radio(label: str, values, saved_value, key: str, fmt, **kw) -> None:
    """A radio for an optional answer: it starts at "—" (None), which also takes a misclick back."""
    opts = [None, *values]
    st.radio(
        label,
        opts,
        index=_index(opts, saved_value) or 0,
        horizontal=True,
        key=key,
        format_func=lambda value: T["unset"] if value is None else fmt(value),
        **kw,
    )


def _definition(dim) -> None:
    with st.expander(f"{T['definition']}: {dim.display_title(lang)}"):
        show_text(dim.definition.get(lang))
        for value in dim.labels:
            text = dim.label_definition(value, lang)
            if text:
                st.markdown(f"**{escape_markdown(dim.label_title(value, lang))}**: {escape_markdown(text)}")
        aspects = dim.aspect_names(view.scenario_key, lang)
        if aspects:
            st.markdown(f"*{T['aspects']}*: " + escape_markdown(", ".join(aspects)))
        if dim.examples:
            st.markdown(f"*{T['examples']}*")
            for ex in dim.examples:
                st.markdown(
                    f"- **{escape_markdown(dim.label_title(ex.label, lang))}**: {escape_markdown(ex.text.get(lang))}"
                )


# Widget keys per item, so each item starts from its saved state. Opaque: keys become CSS classes in
# the page, and a database id would tell the kinds apart (imported agents come before humans).
_salt = st.session_state.setdefault("_annotate_key_salt", secrets.token_hex(8))
k = "ann-" + hashlib.sha256(f"{_salt}|{study_id}|{conv_id}".encode()).hexdigest()[:16]
turn_dims = codebook.turn_dimensions()
with st.form(key=f"{k}-form"):
    st.markdown(f"#### {T['turns_head']}")
    role_no: dict[str, int] = {}  # assistant turns are numbered as replies, user turns as messages
    for turn in view.turns:
        with st.chat_message(turn.role, avatar=None):
            st.caption(T[turn.role])
            show_turn(turn.role, turn.text)
            role_no[turn.role] = role_no.get(turn.role, 0) + 1
            for dim in turn_dims:
                if dim.turn_role == turn.role:
                    title, n = dim.display_title(lang), role_no[turn.role]
                    _optional_radio(
                        T["turn_label"][turn.role].format(title=title, n=n),
                        dim.labels,
                        saved.turn_values.get((dim.name, turn.index)),
                        f"{k}-t{turn.index}-{dim.name}",
                        _shown(dim),
                        help=dim.definition.get(lang),
                    )
    for dim in turn_dims:
        _definition(dim)

    st.markdown(f"#### {T['conv_head']}")
    # One heading per group (groups in order of first appearance, dimensions in codebook order within
    # a group): an extension codebook may add a dimension of an earlier group at the end.
    conv_dims = codebook.conversation_dimensions()
    for group in dict.fromkeys(d.group for d in conv_dims):
        st.markdown(f"##### {escape_markdown(T['groups'].get(group, group))}")
        for dim in (d for d in conv_dims if d.group == group):
            st.radio(
                dim.display_title(lang),
                dim.labels,
                index=_index(dim.labels, saved.values.get(dim.name)),
                horizontal=True,
                key=f"{k}-{dim.name}",
                help=dim.definition.get(lang),
                format_func=_shown(dim),
            )
            _definition(dim)
    st.text_area(T["rationale"], value=saved.rationale or "", key=f"{k}-rationale")
    c1, c2 = st.columns(2)
    c1.checkbox(T["flag"], value=saved.flagged, key=f"{k}-flag")
    c2.text_input(T["flag_note"], value=saved.flag_note or "", key=f"{k}-flag-note")
    st.divider()
    _optional_radio(
        T["guess"],
        L.GUESSES,
        saved.guess,
        f"{k}-guess",
        lambda g: T["guess_person"] if g == "human" else T["guess_ai"],
    )
    _optional_radio(
        T["confidence"],
        range(L.CONFIDENCE_RANGE[0], L.CONFIDENCE_RANGE[1] + 1),
        saved.confidence,
        f"{k}-confidence",
        T["conf"].get,
    )
    b1, b2 = st.columns(2)
    save = b1.form_submit_button(T["save"], type="primary", width="stretch")
    skip = b2.form_submit_button(T["skip"], width="stretch")

state = st.session_state
if save or skip:
    flagged, note = bool(state.get(f"{k}-flag")), state.get(f"{k}-flag-note")
    try:
        with session_scope(eng) as s:
            if skip:
                L.skip_item(s, study_id, me, conv_id, reason=note, flagged=flagged, flag_note=note)
            else:
                values = {d.name: state.get(f"{k}-{d.name}") for d in codebook.conversation_dimensions()}
                turn_values = {
                    (d.name, t.index): state.get(f"{k}-t{t.index}-{d.name}")
                    for d in turn_dims
                    for t in view.turns
                    if t.role == d.turn_role
                }
                guess = state.get(f"{k}-guess")
                L.save_labels(
                    s,
                    study_id,
                    me,
                    conv_id,
                    codebook,
                    values,
                    turn_values,
                    rationale=state.get(f"{k}-rationale"),
                    guess=guess,
                    confidence=state.get(f"{k}-confidence") if guess else None,
                    flagged=flagged,
                    flag_note=note,
                    language=lang,
                )
    except WorkbenchError as exc:
        st.error(escape_markdown(str(exc)))
    else:
        state.pop("annotate_revisit", None)
        st.toast(T["skipped_msg"] if skip else T["saved"])
        st.rerun()
