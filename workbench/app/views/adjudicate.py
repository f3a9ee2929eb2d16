"""Researcher: settle the items where annotators disagree; the decision is its own label source.

Blind like the labelling page: the conversation is shown through the same blind view, every item in
one display language (the study's preferred one, with a selector), and items are named by an opaque
number ("item 3: Politeness"), never by their database id (imported agents come before humans).
"""

import secrets

import streamlit as st

from annotation.adjudication import (
    OPEN,
    adjudicate,
    annotator_of,
    blind_items,
    decision_options,
    study_names_with_labels,
)
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
from workbench.app.texts import ADJUDICATE_UI as UI

user = require_role("researcher")
eng = engine()
codebook = codebook_or_stop()
with session_scope(eng) as s:
    studies = study_names_with_labels(s)
if not studies:
    st.title(UI["en"]["title"])
    st.info(UI["en"]["none"])
    st.stop()
study = st.sidebar.selectbox("Study / 研究", studies, key="adj_study")

# Salted per session: item numbers, their order and widget keys (CSS classes in the page) carry
# nothing of the database ids.
salt = st.session_state.setdefault("_adjudicate_key_salt", secrets.token_hex(8))
with session_scope(eng) as s:
    blind = blind_items(s, study, salt, codebook)
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
settled, n_all, n_stale = blind.progress(dims)
st.progress(settled / n_all if n_all else 1.0, text=T["progress"].format(settled=settled, total=n_all))
if n_stale:
    st.caption(T["stale"].format(n=n_stale))
df = blind.of(dims, open_only=open_only)
if df.empty:
    st.success(T["nothing"] if blind.of(dims).empty else T["settled"])
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
    status = "" if r["status"] == OPEN else T["status_suffix"].format(status=T["status"][r["status"]])
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
    st.header(escape_markdown(_title(row["dimension"])))
    if row["status"] != OPEN:
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
        st.markdown(f"- {escape_markdown(annotator_of(src))}: **{escape_markdown(_shown(value))}**")
    options = decision_options(row["values"], dim)
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
                    adjudicate(
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
