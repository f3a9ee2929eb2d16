"""Annotator: label the conversations of your queue, blind to who the user was.

Everything shown comes from ``annotation.labelling.blind_view`` (turn texts and the scenario) and
the codebook; the page never reads user kind, wave, file names, model or simulator names.
"""

import secrets

import streamlit as st

from annotation.labelling import CONFIDENCE_RANGE, GUESSES, SavedItem
from annotation.worklist import Action, desk_state, item_key
from db.engine import session_scope
from db.errors import WorkbenchError
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
from workbench.app.texts import ANNOTATE_UI as UI
from workbench.app.texts import COVERAGE_WARNING

user = require_role("annotator", "researcher")
show_flash()
codebook = codebook_or_stop()

# One action (save, skip, reopen, a widget change) is one page run with one database session: the
# buttons' callbacks only note what was asked (``Action``, the revisited item), and
# ``desk_state`` applies it and reads everything the page shows.
state = st.session_state
try:
    with session_scope(engine()) as s:
        desk = desk_state(
            s,
            user["id"],
            codebook,
            study=state.get("annotate_study") or st.query_params.get("annotate_study"),
            # One page language for every study: the annotator's choice, kept in the session and the
            # address (a reload keeps it); the first queue's language is only the starting choice.
            language=state.get("annotate_lang") or st.query_params.get("lang"),
            languages=tuple(UI),
            revisit=state.get("annotate_revisit"),
            action=state.pop("_annotate_action", None),
        )
except WorkbenchError as exc:
    st.error(escape_markdown(str(exc)))
    st.stop()

if desk.work is None:
    T = UI["en"]
    st.title(T["title"])
    st.info(T["none"])
    st.stop()
work, study_id, conv_id = desk.work, desk.work.study_id, desk.current
if desk.done in ("save", "skip"):
    state.pop("annotate_revisit", None)
state.setdefault("annotate_lang", desk.language)
lang = st.sidebar.radio(
    "Language / 语言",
    list(UI),
    horizontal=True,
    key="annotate_lang",
    help="Choose before you start an item: switching clears the choices of the item you have not saved yet. "
    "/ 请在开始标注前选择：切换语言会清除当前条目尚未保存的选择。",
)
st.query_params["lang"] = lang
T = UI[lang]
hide_input_hints(lang)
st.title(T["title"])
if desk.done in ("save", "skip"):
    st.toast(T["skipped_msg"] if desk.done == "skip" else T["saved"])
if len(desk.desk.studies) > 1:
    st.selectbox(
        T["study"], desk.desk.names(), key="annotate_study", help=T["study_help"], bind="query-params"
    )
if work.coverage.get(lang, 0) < len(work.items):
    st.warning(COVERAGE_WARNING[lang].format(lang=work.language))
prog = work.progress
st.progress(
    prog.fraction,
    text=T["progress"].format(done=prog.done, skipped=prog.skipped, pending=prog.pending, total=prog.total),
)


def _revisit(items: dict) -> None:
    state["annotate_revisit"] = items[state["annotate_review_pick"]]


def _act(kind: str, study: int, conversation: int | None = None, answers=None) -> None:
    """Note the action for the next run (``answers``: a function reading the form, called now, when
    the submitted values are in the session state)."""
    state["_annotate_action"] = Action(
        kind, study, conversation, answers() if answers else None, language=state.get("annotate_lang", lang)
    )


# Revisiting an earlier item (resumable and correctable; the state lives in the database).
done_items = work.reviewable()
revisit = state.get("annotate_revisit")
if done_items:
    with st.sidebar.expander(T["review"], key="annotate_review"):
        st.selectbox(
            T["review_pick"],
            [pos for pos, _ in done_items],
            format_func=lambda p: f"#{p + 1}",
            key="annotate_review_pick",
        )
        st.button(T["review_open"], key="annotate_review_open", on_click=_revisit, args=(dict(done_items),))

if conv_id is None:
    # "Finished" only when something was labelled; a queue of skips says so.
    if work.only_skipped():
        st.warning(T["finished_skipped"].format(n=prog.skipped))
    else:
        st.success(T["finished"])
    if prog.skipped:
        st.button(
            T["reopen"].format(n=prog.skipped),
            key="annotate_reopen",
            on_click=_act,
            args=("reopen", study_id),
        )
    st.stop()

view, saved = desk.view, desk.saved
if conv_id == revisit:
    st.info(T["editing_skipped"] if work.status(conv_id) == "skipped" else T["editing"])
    st.button(T["back"], key="annotate_back", on_click=lambda: state.pop("annotate_revisit", None))

st.header(T["item"].format(pos=work.position(conv_id) + 1, total=prog.total))
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


def _turns(k: str) -> None:
    """The conversation, with a radio under each turn for every turn-level dimension of its role."""
    st.markdown(f"### {T['turns_head']}")
    role_no: dict[str, int] = {}  # assistant turns are numbered as replies, user turns as messages
    for turn in view.turns:
        with st.chat_message(turn.role, avatar=None):
            st.caption(T[turn.role])
            show_turn(turn.role, turn.text)
            role_no[turn.role] = role_no.get(turn.role, 0) + 1
            for dim in codebook.turn_dimensions():
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
    for dim in codebook.turn_dimensions():
        _definition(dim)


def _conversation_dimensions(k: str) -> None:
    st.markdown(f"### {T['conv_head']}")
    # One heading per group (groups in order of first appearance, dimensions in codebook order within
    # a group): an extension codebook may add a dimension of an earlier group at the end.
    conv_dims = codebook.conversation_dimensions()
    for group in dict.fromkeys(d.group for d in conv_dims):
        st.markdown(f"#### {escape_markdown(T['groups'].get(group, group))}")
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


def _notes_and_guess(k: str) -> None:
    st.text_area(T["rationale"], value=saved.rationale or "", key=f"{k}-rationale")
    c1, c2 = st.columns(2)
    c1.checkbox(T["flag"], value=saved.flagged, key=f"{k}-flag")
    c2.text_input(T["flag_note"], value=saved.flag_note or "", key=f"{k}-flag-note")
    st.divider()
    _optional_radio(
        T["guess"],
        GUESSES,
        saved.guess,
        f"{k}-guess",
        lambda g: T["guess_person"] if g == "human" else T["guess_ai"],
    )
    _optional_radio(
        T["confidence"],
        range(CONFIDENCE_RANGE[0], CONFIDENCE_RANGE[1] + 1),
        saved.confidence,
        f"{k}-confidence",
        T["conf"].get,
    )


def _answers(k: str) -> SavedItem:
    """The form's answers, read from the widgets' state."""
    return SavedItem(
        values={d.name: state.get(f"{k}-{d.name}") for d in codebook.conversation_dimensions()},
        turn_values={
            (d.name, t.index): state.get(f"{k}-t{t.index}-{d.name}")
            for d in codebook.turn_dimensions()
            for t in view.turns
            if t.role == d.turn_role
        },
        rationale=state.get(f"{k}-rationale"),
        guess=state.get(f"{k}-guess"),
        confidence=state.get(f"{k}-confidence"),
        flagged=bool(state.get(f"{k}-flag")),
        flag_note=state.get(f"{k}-flag-note"),
    )


salt = state.setdefault("_annotate_key_salt", secrets.token_hex(8))
k = item_key(salt, study_id, conv_id)
with st.form(key=f"{k}-form"):
    _turns(k)
    _conversation_dimensions(k)
    _notes_and_guess(k)
    b1, b2 = st.columns(2)
    read = lambda: _answers(k)  # noqa: E731
    b1.form_submit_button(
        T["save"], type="primary", width="stretch", on_click=_act, args=("save", study_id, conv_id, read)
    )
    b2.form_submit_button(T["skip"], width="stretch", on_click=_act, args=("skip", study_id, conv_id, read))
if desk.error:
    st.error(escape_markdown(desk.error))
