"""The participant's study page: everything comes from the database, keyed by the token in the URL.

What a participant typed never vanishes silently: a message the core refuses (too long, a reply
still owed, another tab was faster) is kept on the participant's record and stays on the page with
the reason, across reloads, until they send or discard it; an expired session shows the message
that was being sent; a message sent while the database cannot be reached is kept in this browser
session, shown at once and offered again once the database is back.
"""

import streamlit as st
from sqlalchemy.exc import InterfaceError, OperationalError

from db.engine import session_scope
from db.errors import DatabaseUnavailable, WorkbenchError
from workbench.app.a11y import CHAT_INPUT, FIRST_FORM_CONTROL, heading_id, move_focus
from workbench.app.common import (
    engine,
    escape_markdown,
    hide_input_hints,
    run_action,
    safe_markdown,
    show_flash,
    show_text,
    show_turn,
)
from workbench.app.questionnaire_widgets import questionnaire_widgets
from workbench.participation import (
    ReplyError,
    discard_unsent,
    enter_prolific,
    finish_instructions,
    finish_task,
    get_participant,
    give_consent,
    keep_unsent,
    open_participant,
    participant_view,
    rate_reply,
    redirect_tag,
    send_message,
    stream_reply,
    submit_post_study,
    submit_post_task,
    submit_pre_study,
    submit_profile,
)
from workbench.participation.questionnaires import phase_header
from workbench.participation.texts import (
    HALLUCINATION_VALUES,
    ParticipantError,
    finish_hint,
    ui,
)

# What was just sent from the chat box, read before anything else: Streamlit drops the value of a
# widget drawn disabled (this page disables the box when the database says the participant cannot
# send now: another tab sent first, the session expired), and a run that cannot reach the database
# stops before the box is drawn - either way the text would vanish unseen.
CHAT_KEY = "chat"
typed = st.session_state.get(CHAT_KEY)
# The database cannot be reached: at the start of a run (the engine's check), or mid-run (a lost
# connection). main.py shows the notice; this page first keeps what was being sent.
DB_DOWN = (DatabaseUnavailable, OperationalError, InterfaceError)
_LANG_KEY = "participant_language"


def keep_in_browser(text: str | None, reason: str | None = None) -> None:
    """Keep a message the database could not take in this browser session (offered again, prefilled,
    once the database is back) and show what is kept, to copy, beside the notice."""
    lang = st.session_state.get(_LANG_KEY, "en")
    if text:
        n = st.session_state.get("_local_unsent", 0) + 1
        st.session_state["_local_unsent"] = n
        error = reason or ui(lang)["db_unsent"]
        st.session_state["unsent"] = {"text": text, "error": error, "n": f"local{n}"}
    kept = st.session_state.get("unsent")
    if kept:
        st.warning(escape_markdown(f"{kept['error']} {ui(lang)['unsent_hint']}"))
        st.code(kept["text"], language=None, wrap_lines=True)


try:
    eng = engine()
except DB_DOWN:
    keep_in_browser(typed)
    raise
params = st.query_params

# Prolific entry: swap the Prolific ids in the URL for a session token of our own.
if "t" not in params and "PROLIFIC_PID" in params:
    try:
        with session_scope(eng) as s:
            _, new_token = enter_prolific(
                s,
                params.get("PROLIFIC_PID", ""),
                params.get("STUDY_ID", ""),
                params.get("SESSION_ID", ""),
                study_name=params.get("study"),
            )
    except ParticipantError as exc:  # worded in the study's language
        st.error(escape_markdown(str(exc)))
        st.stop()
    except WorkbenchError:  # no such study: say no more than for a bad invite link
        st.error(ui("en")["invalid_link"])
        st.stop()
    st.query_params.clear()
    st.query_params["t"] = new_token
    st.rerun()

token = params.get("t")
try:
    with session_scope(eng) as s:
        p = open_participant(s, token)
        view = participant_view(s, p)
        pid = p.id
except DB_DOWN:
    keep_in_browser(typed)
    raise  # the app's entry says "temporarily unavailable", not "invalid link"
except WorkbenchError:
    st.error(ui("en")["invalid_link"])
    st.stop()

T = ui(view.language)
S = view.settings
st.session_state[_LANG_KEY] = view.language
hide_input_hints(view.language)


def act(fn, *args, **kwargs):
    def run(session, *a, **kw):
        return fn(session, get_participant(session, pid), *a, **kw)

    run_action(run, *args, **kwargs)
    st.rerun()


def send(text: str, kept: bool = False) -> None:
    """Send a message; a refusal keeps the text with the reason on the participant's record (so a
    reload shows it too) until sent or discarded. Only when the database cannot take even that is it
    kept in this browser session alone."""
    try:
        with session_scope(eng) as s:
            send_message(s, get_participant(s, pid), text, kept=kept)
    except DB_DOWN:  # nothing was stored (the transaction is lost whole)
        keep_in_browser(text)
        raise
    except WorkbenchError as exc:
        try:
            with session_scope(eng) as s:
                keep_unsent(s, get_participant(s, pid), text, str(exc))
            st.session_state.pop("unsent", None)
        except DB_DOWN:
            keep_in_browser(text, str(exc))
            raise
        except WorkbenchError:
            keep_in_browser(text, str(exc))
    else:
        if kept:
            st.session_state.pop("unsent", None)
    st.rerun()


def discard_kept_message() -> None:
    st.session_state.pop("unsent", None)
    with session_scope(eng) as s:
        discard_unsent(s, get_participant(s, pid))
    st.rerun()


def auto_return(view) -> None:
    """Send a Prolific participant back automatically (the button stays for slow browsers)."""
    if view.redirect_seconds > 0:
        st.caption(T["prolific_redirecting"].format(seconds=view.redirect_seconds))
        st.markdown(redirect_tag(view.redirect_url, view.redirect_seconds), unsafe_allow_html=True)


st.title(T["title"])
show_flash()

if view.step == "consent":
    st.header(T["consent_header"], anchor=heading_id("consent"))
    move_focus("#" + heading_id("consent"), "consent")
    show_text(S.consent_text)
    consent_answers = questionnaire_widgets(view.questions, view.language)
    c1, c2 = st.columns(2)
    if c1.button(T["agree"], type="primary"):
        act(give_consent, True, consent_answers)
    if c2.button(T["decline"]):
        act(give_consent, False)

elif view.step == "instructions":
    st.header(T["instructions_header"], anchor=heading_id("instructions"))
    move_focus("#" + heading_id("instructions"), "instructions")
    show_text(S.instructions_text)
    if st.button(T["continue"], type="primary"):
        act(finish_instructions)

elif view.step == "profile":
    st.header(T["profile_header"], anchor=heading_id("profile"))
    move_focus("#" + heading_id("profile"), "profile")
    st.write(T["profile_intro"])
    with st.form("profile"):
        answers = {}
        for f in view.profile_fields:
            labels = dict(f["options"])
            key = f"profile_{f['name']}"
            if f["type"] == "choice":
                answers[f["name"]] = st.selectbox(
                    f["label"],
                    list(labels),
                    index=None,
                    key=key,
                    format_func=labels.get,
                    placeholder=T["placeholder_one"],
                )
            elif f["type"] == "multi_choice":
                answers[f["name"]] = st.multiselect(
                    f["label"],
                    list(labels),
                    key=key,
                    format_func=labels.get,
                    placeholder=T["placeholder_many"],
                )
            elif f["type"] == "integer":
                # No min/max on the widget: the browser would refuse an out-of-range number with an
                # English message and send nothing; the core says it in the participant's language.
                answers[f["name"]] = st.number_input(f["label"], value=None, step=1, key=key)
            else:
                answers[f["name"]] = st.text_input(f["label"], key=key, max_chars=500)
        if st.form_submit_button(T["continue"], type="primary"):
            act(submit_profile, answers)

elif view.step == "task" and view.task is not None:
    task = view.task
    if typed:  # before anything below reruns the page (a pending reply streamed in this tab)
        send(typed)
    st.header(T["task_header"].format(position=task.position + 1, n=task.n_tasks), anchor=heading_id("task"))
    # After a reply: its rating form; after a rating (or on arrival): the message box.
    rating = task.unrated_index is not None and not task.pending_reply
    move_focus(
        FIRST_FORM_CONTROL if rating else CHAT_INPUT,
        ("task", task.position, len(task.turns), task.unrated_index, task.pending_reply),
    )
    card, chat = st.columns([1, 2], gap="large")
    with card:
        with st.container(border=True):
            st.caption(T["scenario"])
            show_text(task.scenario)
            st.caption(T["task_card"])
            show_text(task.task_text)
            if task.profile_text:
                st.caption(T["your_profile"])
                show_text(task.profile_text)
    with chat:
        h_labels = {v: T[f"hallucination_{v}"] for v in HALLUCINATION_VALUES}
        for turn in task.turns:
            with st.chat_message(turn.role):
                show_turn(turn.role, turn.content)
                if turn.role == "assistant" and turn.rated:
                    st.caption(T["rated"].format(h=h_labels[turn.hallucination], s=turn.satisfaction))
            if turn.role == "assistant" and turn.index == task.unrated_index:
                with st.form(f"rate_{turn.index}"):
                    st.markdown(f"**{T['rate_header']}**")
                    h = st.radio(
                        T["hallucination"],
                        list(h_labels),
                        format_func=h_labels.get,
                        index=None,
                        horizontal=True,
                        key=f"h_{turn.index}",
                    )
                    sat = st.radio(
                        T["satisfaction"], [1, 2, 3, 4, 5], index=None, horizontal=True, key=f"s_{turn.index}"
                    )
                    reason = st.text_input(T["reason"], key=f"r_{turn.index}", max_chars=2000)
                    if st.form_submit_button(T["save_rating"], type="primary"):
                        act(rate_reply, turn.index, h, sat, reason)
        if task.pending_reply:
            if st.session_state.get("reply_failed"):
                # The details are in the server log (and the failed call's LLMCall row), not for participants.
                st.error(T["llm_error"])
                if st.button(T["retry"], type="primary"):
                    st.session_state.pop("reply_failed", None)
                    st.rerun()
            else:
                with st.chat_message("assistant"):
                    box = st.empty()
                    box.caption(T["thinking"])
                    text = ""
                    try:
                        for piece in stream_reply(eng, pid):
                            text += piece
                            box.markdown(safe_markdown(text))
                    except ReplyError:
                        st.session_state["reply_failed"] = True
                st.rerun()
        if task.at_max and task.can_finish:  # only where the Finish button below is there to press
            st.info(T["max_reached"])
        if task.can_finish:
            if st.button(T["finish"], type="primary"):
                act(finish_task)
        elif task.n_user_turns < task.min_turns:
            st.caption(finish_hint(view.language, task.min_turns))
        kept = st.session_state.get("unsent") or view.unsent
        if kept:
            st.warning(escape_markdown(f"{kept['error']} {T['unsent_hint']}"))
            text = st.text_area(T["unsent_label"], kept["text"], key=f"unsent_{kept['n']}", height=150)
            c1, c2 = st.columns(2)
            if c1.button(T["send_again"], type="primary", disabled=not task.can_send, key="unsent_send"):
                send(text, kept=True)
            if c2.button(T["discard"], key="unsent_discard"):
                discard_kept_message()
    # No max_chars: the browser would drop an over-long paste without a word; the core refuses it
    # (chat.MAX_MESSAGE_CHARS) and the text stays on the page with the length and the limit.
    st.chat_input(T["chat_placeholder"], disabled=not task.can_send, key=CHAT_KEY)

elif view.step in ("pre_study", "post_task", "post_study"):
    st.header(phase_header(view.step, view.language), anchor=heading_id(view.step))
    move_focus("#" + heading_id(view.step), (view.step, view.task.position if view.task else None))
    submit = {"pre_study": submit_pre_study, "post_task": submit_post_task, "post_study": submit_post_study}
    with st.form(view.step):
        answers = questionnaire_widgets(view.questions, view.language)
        if st.form_submit_button(T["submit"], type="primary"):
            act(submit[view.step], answers)

elif view.step == "done":
    st.header(T["done_header"], anchor=heading_id("done"))
    move_focus("#" + heading_id("done"), "done")
    st.write(T["done_text"])
    st.code(view.code, language=None)
    if view.redirect_url:
        st.link_button(T["prolific_return"], view.redirect_url, type="primary")
        auto_return(view)

elif view.step in ("screened_out", "full"):
    st.header(T["screened_out_header"], anchor=heading_id("screened_out"))
    move_focus("#" + heading_id("screened_out"), "screened_out")
    st.write(T["screened_out_text"] if view.step == "screened_out" else T["full_text"])
    st.code(view.code, language=None)
    if view.redirect_url:
        st.link_button(T["prolific_return"], view.redirect_url)
        auto_return(view)

else:  # expired
    st.warning(T["expired_text"])
    typed = typed or (st.session_state.get("unsent") or view.unsent or {}).get("text")
    if typed:
        st.write(T["expired_unsent"])
        st.code(typed, language=None, wrap_lines=True)
    if view.prolific:
        st.write(T["expired_prolific"])
        st.code(view.code, language=None)
        if view.redirect_url:
            st.link_button(T["prolific_return"], view.redirect_url)
    elif S.contact_text:
        st.write(T["expired_contact"])
        # As typed, copyable: markdown would need its autolink guard (an invisible character after "@")
        st.code(S.contact_text, language=None, wrap_lines=True)
    else:
        st.write(T["expired_no_contact"])
