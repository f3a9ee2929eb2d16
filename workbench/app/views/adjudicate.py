"""Researcher: settle the items where annotators disagree; the decision is its own label source.

Blind like the labelling page: the conversation is shown through the same blind view, every item in
one display language (the study's preferred one, with a selector), and items are named by an opaque
number ("item 3: Politeness"), never by their database id (imported agents come before humans).
"""

import secrets

import streamlit as st

from annotation import adjudication as A
from annotation.labelling import blind_view
from db.engine import session_scope
from db.errors import WorkbenchError
from workbench.app.auth import require_role
from workbench.app.common import (
    codebook_or_stop,
    engine,
    escape_markdown,
    hide_input_hints,
    show_text,
    show_turn,
)

UI = {
    "en": {
        "title": "Adjudicate disagreements",
        "none": "No human labels yet: annotators label on the Annotate page.",
        "dims": "Dimensions",
        "open": "Only open items",
        "progress": "{settled} of {total} disagreements settled",
        "stale": "{n} decided item(s) are no longer disputed (an annotator changed or withdrew a label); "
        "the decision still counts. They are listed with their status when *Only open items* is off.",
        "nothing": "Nothing to adjudicate.",
        "settled": "Every disagreement is settled.",
        "item": "Item",
        "item_label": "item {no}: {dim}{turn}{status}",
        "turn": {"assistant": ", reply {n}", "user": ", message {n}"},
        "status_suffix": " ({status})",
        "the_item": {"assistant": "⟶ reply {n} (the item)", "user": "⟶ message {n} (the item)"},
        "scenario": "Task: {name}",
        "definition": "Definition",
        "aspects": "Aspects",
        "labels_head": "Annotators' labels",
        "no_labels": "No annotator labels this item any more.",
        "status_line": "Status: {status}",
        "final": "Final label",
        "note": "Note (optional)",
        "save": "Save decision",
        "choose": "Choose the final label.",
        "saved": "Saved.",
        "coverage": "Some conversations cannot be shown in this language and appear in their original "
        "language. Choose {lang} to see every conversation in one language.",
        "status": {
            A.OPEN: "open",
            A.DECIDED: "decided",
            A.DECIDED_NOW_AGREED: "decided; annotators now agree",
            A.DECIDED_TOO_FEW: "decided; fewer than 2 labels now",
        },
    },
    "zh": {
        "title": "裁决分歧",
        "none": "还没有人工标注：标注员在“标注”页面进行标注。",
        "dims": "维度",
        "open": "只看待裁决的条目",
        "progress": "已裁决 {settled} / {total} 个分歧",
        "stale": "{n} 个已裁决的条目已不再有分歧（有标注员修改或撤回了标注）；裁决仍然有效。"
        "关闭“只看待裁决的条目”即可连同其状态一起查看。",
        "nothing": "没有需要裁决的条目。",
        "settled": "所有分歧均已裁决。",
        "item": "条目",
        "item_label": "条目 {no}：{dim}{turn}{status}",
        "turn": {"assistant": "，第 {n} 条回复", "user": "，第 {n} 条消息"},
        "status_suffix": "（{status}）",
        "the_item": {"assistant": "⟶ 第 {n} 条回复（本条目）", "user": "⟶ 第 {n} 条消息（本条目）"},
        "scenario": "任务：{name}",
        "definition": "定义",
        "aspects": "方面",
        "labels_head": "标注员的标签",
        "no_labels": "已没有标注员标注此条目。",
        "status_line": "状态：{status}",
        "final": "最终标签",
        "note": "备注（可选）",
        "save": "保存裁决",
        "choose": "请选择最终标签。",
        "saved": "已保存。",
        "coverage": "部分对话没有该语言版本，将以原文显示。选择 {lang} 可让所有对话使用同一种语言。",
        "status": {
            A.OPEN: "待裁决",
            A.DECIDED: "已裁决",
            A.DECIDED_NOW_AGREED: "已裁决；标注员现已一致",
            A.DECIDED_TOO_FEW: "已裁决；现不足 2 个标注",
        },
    },
}

user = require_role("researcher")
eng = engine()
codebook = codebook_or_stop()
with session_scope(eng) as s:
    studies = A.study_names_with_labels(s)
if not studies:
    st.title(UI["en"]["title"])
    st.info(UI["en"]["none"])
    st.stop()
study = st.sidebar.selectbox("Study / 研究", studies, key="adj_study")

# Salted per session: item numbers, their order and widget keys (CSS classes in the page) carry
# nothing of the database ids.
salt = st.session_state.setdefault("_adjudicate_key_salt", secrets.token_hex(8))
with session_scope(eng) as s:
    blind = A.blind_items(s, study, salt, codebook)
default_lang = blind.language if blind.language in UI else "en"
lang = st.sidebar.radio(
    "Language / 语言", list(UI), index=list(UI).index(default_lang), horizontal=True, key=f"adj_lang_{study}"
)
T = UI[lang]
hide_input_hints(lang)
st.title(T["title"])
if blind.coverage.get(lang, 0) < blind.n_conversations:
    st.warning(T["coverage"].format(lang=default_lang))

c1, c2 = st.columns([3, 1])
dims = c1.multiselect(
    T["dims"], codebook.names, key="adj_dims", format_func=lambda n: codebook.get(n).display_title(lang)
)
open_only = c2.toggle(T["open"], value=True, key="adj_open")
listed = blind.of(dims)
# Progress counts the items the annotators disagree on now; decisions on items they no longer
# disagree on (one changed or withdrew a label) stay listed with their status, to be revisited.
n_all = int(listed["status"].isin([A.OPEN, A.DECIDED]).sum())
n_open = int((listed["status"] == A.OPEN).sum())
st.progress(
    (n_all - n_open) / n_all if n_all else 1.0, text=T["progress"].format(settled=n_all - n_open, total=n_all)
)
n_stale = len(listed) - n_all
if n_stale:
    st.caption(T["stale"].format(n=n_stale))
df = blind.of(dims, open_only=open_only)
if df.empty:
    st.success(T["nothing"] if listed.empty else T["settled"])
    st.stop()

# Items are chosen by their opaque key, not by position: after a decision the list shrinks, and a
# position would silently point at another item under the old name.
row_of = {key: i for i, key in enumerate(df["key"])}
if st.session_state.get("adj_item") not in row_of:
    st.session_state["adj_item"] = df["key"].iloc[0]  # the item just settled (or a filter) is gone


def _title(name: str) -> str:
    return codebook.get(name).display_title(lang) if name in codebook else name


def _describe(key: str) -> str:
    r = df.iloc[row_of[key]]
    turn = T["turn"][r["turn_role"]].format(n=r["turn_no"]) if r["turn_role"] else ""
    status = "" if r["status"] == A.OPEN else T["status_suffix"].format(status=T["status"][r["status"]])
    return T["item_label"].format(no=r["item_no"], dim=_title(r["dimension"]), turn=turn, status=status)


pick = st.selectbox(T["item"], list(df["key"]), format_func=_describe, key="adj_item")
row = df.iloc[row_of[pick]]
dim = codebook.get(row["dimension"]) if row["dimension"] in codebook else None
with session_scope(eng) as s:
    view = blind_view(s, int(row["conversation_id"]), lang)


def _shown(value: str) -> str:
    return dim.label_title(value, lang) if dim else value


left, right = st.columns([3, 2])
with left:
    st.caption(escape_markdown(T["scenario"].format(name=view.scenario_name)))
    count: dict[str, int] = {}
    for turn in view.turns:
        count[turn.role] = count.get(turn.role, 0) + 1
        with st.chat_message(turn.role):
            if turn.index == row["turn_index"]:
                st.caption(T["the_item"][turn.role].format(n=count[turn.role]))
            show_turn(turn.role, turn.text)
with right:
    st.subheader(escape_markdown(_title(row["dimension"])))
    if row["status"] != A.OPEN:
        st.caption(escape_markdown(T["status_line"].format(status=T["status"][row["status"]])))
    if dim:
        with st.expander(T["definition"], expanded=True):
            show_text(dim.definition.get(lang))
            for value in dim.labels:
                text = dim.label_definition(value, lang)
                if text:
                    st.markdown(f"**{escape_markdown(_shown(value))}**: {escape_markdown(text)}")
            aspects = dim.aspect_names(view.scenario_key, lang)
            if aspects:
                st.markdown(f"*{T['aspects']}*: " + escape_markdown(", ".join(aspects)))
    st.markdown(f"**{T['labels_head']}**")
    if not row["values"]:
        st.caption(T["no_labels"])
    for src, value in sorted(row["values"].items()):
        who = src.split(":", 1)[-1] if src.startswith("human:") else src  # annotator name
        st.markdown(f"- {escape_markdown(who)}: **{escape_markdown(_shown(value))}**")
    options = dim.labels if dim else sorted(set(row["values"].values()))
    with st.form(key=f"{row['key']}-form"):
        current = row["adjudicated"]
        final = st.radio(
            T["final"],
            options,
            index=options.index(current) if current in options else None,
            horizontal=True,
            format_func=_shown,
            key=f"{row['key']}-final",
        )
        note = st.text_input(T["note"], key=f"{row['key']}-note")
        done = st.form_submit_button(T["save"], type="primary")
    if done:
        if final is None:
            st.error(T["choose"])
        else:
            try:
                with session_scope(eng) as s:
                    A.adjudicate(
                        s,
                        study,
                        int(row["conversation_id"]),
                        row["dimension"],
                        final,
                        codebook,
                        turn_index=int(row["turn_index"]),
                        adjudicator=user["name"],
                        note=note,
                    )
            except WorkbenchError as exc:
                st.error(escape_markdown(str(exc)))
            else:
                st.toast(T["saved"])
                st.rerun()
