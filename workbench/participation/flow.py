"""The participant flow as a state machine kept in the database.

Everything a page needs to draw the participant's current step comes from ``participant_view``;
every action is one function that validates the step, writes, and moves the state on. Because
the state lives in ``Participant.state`` (not in the browser), a refresh, a closed tab or a server
restart resumes exactly where the participant was.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func
from sqlmodel import Session, select

from db.errors import UserInputError
from db.models import (
    Assignment,
    Condition,
    Conversation,
    Participant,
    Profile,
    QuestionnaireResponse,
    Scenario,
    Study,
    TaskContext,
    Turn,
)
from db.repo import profile_and_context
from db.types import utcnow
from workbench.participation import assignment as assign_mod
from workbench.participation.entry import participant_for_token
from workbench.participation.questionnaires import Answer, Item, check_answers, study_questionnaires
from workbench.participation.texts import ParticipantError, finish_hint
from workbench.studies import StudySettings, study_settings

STEPS = (
    "consent",
    "pre_study",
    "instructions",
    "profile",
    "task",
    "post_task",
    "post_study",
    "done",
    "screened_out",
    "full",
    "expired",
)
# The steps that ask the study's questionnaire items of the phase of the same name.
QUESTIONNAIRE_STEPS = ("consent", "pre_study", "post_task", "post_study")


@dataclass
class TurnView:
    index: int
    role: str
    content: str
    hallucination: str | None = None
    satisfaction: int | None = None
    satisfaction_reason: str | None = None
    created_at: datetime | None = None

    @property
    def rated(self) -> bool:
        return self.role != "assistant" or (self.hallucination is not None and self.satisfaction is not None)


@dataclass
class TaskView:
    position: int
    n_tasks: int
    scenario: str
    task_text: str
    profile_text: str | None
    turns: list[TurnView]
    n_user_turns: int
    min_turns: int
    max_turns: int
    pending_reply: bool  # the last message is the user's: the assistant still owes a reply
    unrated_index: int | None  # the assistant turn waiting for the participant's rating
    can_send: bool
    can_finish: bool
    at_max: bool


@dataclass
class ParticipantView:
    step: str
    language: str
    settings: StudySettings
    pseudonym: str
    task: TaskView | None = None
    code: str | None = None
    redirect_url: str | None = None
    redirect_seconds: int = 0  # > 0: send the browser to redirect_url after this many seconds
    ask_attention: bool = False
    # The questionnaire items this step asks (consent, pre_study, post_task, post_study), in order.
    questions: list[Item] = field(default_factory=list)
    profile_fields: list[dict] = field(default_factory=list)
    prolific: bool = (
        False  # came from Prolific (an expired session is sent back there with the screen-out code)
    )
    unsent: dict | None = (
        None  # a refused message kept until sent or discarded: text, error, n (chat.keep_unsent)
    )


# --------------------------------------------------------------------------------------------------
# Opening a session
# --------------------------------------------------------------------------------------------------


def open_participant(session: Session, token: str | None, now: datetime | None = None) -> Participant:
    """The participant of this token, expired first if idle too long, then marked as seen."""
    p = participant_for_token(session, token)
    now = now or utcnow()
    settings = study_settings(session.get(Study, p.study_id))
    if (
        p.status == "active"
        and p.last_seen_at is not None
        and now - p.last_seen_at > timedelta(minutes=settings.idle_timeout_minutes)
    ):
        abandon(session, p, now)
    elif p.status in ("invited", "active"):
        p.last_seen_at = now
        if p.status == "invited":
            p.status = "active"
        session.add(p)
    session.flush()
    return p


def get_participant(session: Session, participant_id: int) -> Participant:
    """The participant with this id (the page keeps only the id between reruns)."""
    p = session.get(Participant, participant_id)
    if p is None:
        raise UserInputError(f"no participant with id {participant_id}")
    return p


def abandon(session: Session, p: Participant, now: datetime | None = None) -> None:
    """Mark an idle participant abandoned: open conversations end, unfinished assignments are released."""
    now = now or utcnow()
    p.status = "abandoned"
    p.state = {**(p.state or {}), "step": "expired"}
    session.add(p)
    for a in session.exec(select(Assignment).where(Assignment.participant_id == p.id)).all():
        if a.status in ("assigned", "in_progress"):
            a.status = "released"
            session.add(a)
            if a.conversation_id:
                conv = session.get(Conversation, a.conversation_id)
                if conv is not None and conv.status == "in_progress":
                    conv.status, conv.ended_at, conv.end_reason, conv.ended_by = (
                        "abandoned",
                        now,
                        "idle",
                        "system",
                    )
                    session.add(conv)
    session.flush()


def expire_idle(session: Session, now: datetime | None = None, study_id: int | None = None) -> int:
    """Abandon every active participant idle beyond their study's idle timeout; returns how many."""
    now = now or utcnow()
    n = 0
    studies = session.exec(select(Study).where(Study.id == study_id) if study_id else select(Study)).all()
    for study in studies:
        limit = now - timedelta(minutes=study_settings(study).idle_timeout_minutes)
        for p in session.exec(
            select(Participant).where(
                Participant.study_id == study.id,
                Participant.status == "active",
                Participant.last_seen_at < limit,
            )
        ).all():
            abandon(session, p, now)
            n += 1
    return n


# --------------------------------------------------------------------------------------------------
# Views
# --------------------------------------------------------------------------------------------------


def _settings(session: Session, p: Participant) -> StudySettings:
    return study_settings(session.get(Study, p.study_id))


def _step(p: Participant) -> str:
    return (p.state or {}).get("step", "consent")


def _set_step(session: Session, p: Participant, step: str, **extra: Any) -> None:
    p.state = {**(p.state or {}), "step": step, **extra}
    p.last_seen_at = utcnow()
    session.add(p)
    session.flush()


def _expect(p: Participant, *steps: str) -> None:
    if _step(p) not in steps:
        raise ParticipantError("step_done", p.language)


def current_assignment(session: Session, p: Participant) -> Assignment | None:
    pos = (p.state or {}).get("position", 0)
    return session.exec(
        select(Assignment).where(Assignment.participant_id == p.id, Assignment.position == pos)
    ).first()


def n_assignments(session: Session, p: Participant) -> int:
    return session.exec(
        select(func.count()).select_from(Assignment).where(Assignment.participant_id == p.id)
    ).one()


def conversation_turns(session: Session, conversation_id: int) -> list[Turn]:
    return list(
        session.exec(select(Turn).where(Turn.conversation_id == conversation_id).order_by(Turn.index)).all()
    )


def task_view(session: Session, p: Participant, settings: StudySettings) -> TaskView | None:
    # Every page rerun of a task draws this: three queries (the task joined in one, the turns as
    # columns, the number of tasks), not one per row, so it stays cheap with hundreds of participants.
    pos = (p.state or {}).get("position", 0)
    row = session.exec(
        select(Assignment, Conversation, Scenario, TaskContext, Profile)
        .join(Conversation, Conversation.id == Assignment.conversation_id)
        .join(Condition, Condition.id == Assignment.condition_id)
        .join(Scenario, Scenario.id == Condition.scenario_id)
        .join(TaskContext, TaskContext.id == Condition.task_context_id)
        .outerjoin(Profile, Profile.id == Condition.profile_id)
        .where(Assignment.participant_id == p.id, Assignment.position == pos)
    ).first()
    if row is None:
        return None
    a, conv, scen, ctx, prof = row
    lang = p.language
    turns = [
        TurnView(*t)
        for t in session.exec(
            select(
                Turn.index,
                Turn.role,
                Turn.content,
                Turn.hallucination,
                Turn.satisfaction,
                Turn.satisfaction_reason,
                Turn.created_at,
            )
            .where(Turn.conversation_id == conv.id)
            .order_by(Turn.index)
        ).all()
    ]
    n_user = sum(1 for t in turns if t.role == "user")
    pending = bool(turns) and turns[-1].role == "user"
    unrated = next((t.index for t in reversed(turns) if t.role == "assistant" and not t.rated), None)
    at_max = n_user >= settings.max_turns
    open_ = conv.status == "in_progress"
    task_text = (ctx.translations or {}).get(lang) or ctx.text
    scenario = (scen.names or {}).get(lang) or scen.name
    profile_text = None
    if settings.profile_mode == "assigned" and prof is not None:
        profile_text = (prof.translations or {}).get(lang) or prof.text
    return TaskView(
        position=a.position,
        n_tasks=n_assignments(session, p),
        scenario=scenario,
        task_text=task_text,
        profile_text=profile_text,
        turns=turns,
        n_user_turns=n_user,
        min_turns=settings.min_turns,
        max_turns=settings.max_turns,
        pending_reply=pending and open_,
        unrated_index=unrated,
        can_send=open_ and not pending and unrated is None and not at_max,
        can_finish=open_ and not pending and unrated is None and n_user >= settings.min_turns,
        at_max=at_max,
    )


def completion_redirect(settings: StudySettings, code: str, prolific: bool) -> str | None:
    url = settings.prolific_completion_url
    if not prolific or not url:
        return None
    if "{code}" in url:
        return url.replace("{code}", code)
    return url + code if url.endswith("=") else url


def redirect_tag(url: str, seconds: int) -> str:
    """An HTML meta refresh that sends the browser to ``url`` after ``seconds`` (the participant app
    has no other way to navigate the top window). ``url`` is escaped for the attribute."""
    return f'<meta http-equiv="refresh" content="{int(seconds)};url={html.escape(url, quote=True)}">'


def participant_view(session: Session, p: Participant) -> ParticipantView:
    settings = _settings(session, p)
    step = _step(p)
    prolific = p.external_source == "prolific"
    view = ParticipantView(
        step=step,
        language=p.language,
        settings=settings,
        pseudonym=p.pseudonym,
        prolific=prolific,
        unsent=(p.state or {}).get("unsent"),
    )
    if step in QUESTIONNAIRE_STEPS:
        view.questions = phase_items(settings, p, step)
    if step == "profile":
        view.profile_fields = profile_fields(p.language)
    elif step == "task":
        view.task = task_view(session, p, settings)
    elif step == "post_task":
        view.ask_attention = any(it.type == "attention" for it in view.questions)
        view.task = task_view(session, p, settings)
    elif step == "done":
        view.code = _code_shown(session, p, settings.completion_code)
        view.redirect_url = completion_redirect(settings, view.code, prolific)
    elif step in ("screened_out", "full"):
        view.code = _code_shown(session, p, settings.screenout_code)
        view.redirect_url = completion_redirect(settings, view.code, prolific)
    if view.redirect_url:
        view.redirect_seconds = settings.prolific_redirect_seconds
    if step == "expired" and prolific:
        # The return route of a screen-out, without the automatic return: the page shows the text the
        # participant had typed, to copy before leaving.
        view.code = _code_shown(session, p, settings.screenout_code)
        view.redirect_url = completion_redirect(settings, view.code, prolific)
    return view


def _code_shown(session: Session, p: Participant, current: str) -> str:
    """The completion / screen-out code this participant was first shown, kept in their state: a
    researcher changing the study's code later does not change what a finished participant sees
    (and may already have submitted)."""
    state = dict(p.state or {})
    if not state.get("code"):
        state["code"] = current
        p.state = state
        session.add(p)
    return state["code"]


# --------------------------------------------------------------------------------------------------
# Profile questionnaire fields
# --------------------------------------------------------------------------------------------------

_FALLBACK_FIELDS = [
    "gender",
    "age",
    "personality",
    "occupation",
    "daily_interests",
    "travel_habits",
    "dining_preferences",
    "spending_habits",
    "other_aspects",
]


def _get(obj: Any, name: str, default: Any = None) -> Any:
    if isinstance(obj, dict):
        return obj.get(name, default)
    return getattr(obj, name, default)


def _localised(value: Any, language: str) -> Any:
    if isinstance(value, dict) and ("en" in value or "zh" in value):
        return value.get(language) or value.get("en")
    return value


def profile_fields(language: str) -> list[dict]:
    """Normalised profile fields from ``scenarios.profile_fields()``:
    {name, label, type (choice|multi_choice|integer|text), options [(value, label)], min, max, required}.
    """
    try:
        from scenarios import profile_fields as pf  # the scenarios engineer's pack file

        raw = pf()
    except (ImportError, AttributeError, FileNotFoundError):
        raw = []
    if not raw:
        return [
            {
                "name": n,
                "label": n.replace("_", " ").capitalize(),
                "type": "text",
                "options": [],
                "min": None,
                "max": None,
                "required": True,
            }
            for n in _FALLBACK_FIELDS
        ]
    out = []
    for f in raw:
        names = _get(f, "names")
        label = (
            names.get(language)
            if hasattr(names, "get") and not isinstance(names, dict)
            else _localised(names, language)
            if names
            else _get(f, "key")
        )
        opts = []
        for o in _get(f, "options") or []:
            value = str(_get(o, "value"))
            text = (_get(o, "zh") if language == "zh" else None) or _get(o, "en") or value
            opts.append((value, str(text)))
        out.append(
            {
                "name": str(_get(f, "key")),
                "label": str(label),
                "type": _get(f, "type", "choice"),
                "options": opts,
                "min": _get(f, "min"),
                "max": _get(f, "max"),
                "required": bool(_get(f, "required", True)),
            }
        )
    return out


# --------------------------------------------------------------------------------------------------
# Actions
# --------------------------------------------------------------------------------------------------


def phase_items(settings: StudySettings, p: Participant, phase: str) -> list[Item]:
    """The study's items of ``phase`` that this participant is asked now: attention checks only while
    the study's ``attention_check`` setting is on, ``once`` items only the first time."""
    state = p.state or {}
    done = set(state.get("once_done", []))
    out = []
    for item in study_questionnaires(settings.questionnaires).items(phase):
        if item.type == "attention" and not settings.attention_check:
            continue
        # attention_done: sessions begun before the items came from a file
        if item.once and (item.name in done or (item.type == "attention" and state.get("attention_done"))):
            continue
        out.append(item)
    return out


def _store_answers(session: Session, p: Participant, rows: list[Answer], conversation_id: int | None) -> None:
    for row in rows:
        session.add(
            QuestionnaireResponse(
                study_id=p.study_id,
                conversation_id=conversation_id,
                participant_id=p.id,
                questionnaire=row.questionnaire,
                item=row.item,
                value=row.value,
                raw_value=row.raw_value,
                question=row.question,
            )
        )


def give_consent(
    session: Session, p: Participant, agreed: bool, answers: dict[str, Any] | None = None
) -> None:
    """Agree (with the answers to the study's consent items, required ones checked) or decline."""
    _expect(p, "consent")
    settings = _settings(session, p)
    rows = (
        check_answers(phase_items(settings, p, "consent"), answers or {}, p.language, "consent")
        if agreed
        else []
    )
    session.add(
        QuestionnaireResponse(
            study_id=p.study_id,
            participant_id=p.id,
            questionnaire="consent",
            item="consent",
            value="yes" if agreed else "no",
        )
    )
    _store_answers(session, p, rows, None)
    if agreed:
        _set_step(session, p, "pre_study" if phase_items(settings, p, "pre_study") else "instructions")
    else:
        p.status, p.completed_at = "screened_out", utcnow()
        _set_step(session, p, "screened_out")


def submit_pre_study(session: Session, p: Participant, answers: dict[str, Any]) -> None:
    """Store the pre-study questionnaire, then show the instructions."""
    _expect(p, "pre_study")
    items = phase_items(_settings(session, p), p, "pre_study")
    _store_answers(session, p, check_answers(items, answers, p.language, "pre_study"), None)
    _set_step(session, p, "instructions")


def finish_instructions(session: Session, p: Participant) -> None:
    _expect(p, "instructions")
    settings = _settings(session, p)
    if settings.profile_mode == "participant":
        _set_step(session, p, "profile")
    else:
        _start_tasks(session, p, settings)


def _blank(v: Any) -> bool:
    return v is None or (isinstance(v, str) and not v.strip()) or (isinstance(v, (list, tuple)) and not v)


def submit_profile(session: Session, p: Participant, answers: dict[str, Any]) -> None:
    """Store the participant's profile (as a Profile row and as questionnaire answers), then assign."""
    _expect(p, "profile")
    fields = profile_fields(p.language)
    # Every unanswered required field at once, by the label the participant sees (not one per submit).
    unanswered = [f["label"] for f in fields if f["required"] and _blank(answers.get(f["name"]))]
    if unanswered:
        raise ParticipantError("missing_profile", p.language, items=", ".join(unanswered))
    clean: dict[str, Any] = {}
    for f in fields:
        v = answers.get(f["name"])
        if isinstance(v, str):
            v = v.strip()[:2000]
        elif isinstance(v, (list, tuple)):
            v = [str(x)[:200] for x in v]
        if v in (None, "", []):
            continue
        allowed = {value for value, _ in f["options"]}
        lang = p.language
        if f["type"] == "choice" and allowed and v not in allowed:
            raise ParticipantError("choose_option", lang, label=f["label"])
        if f["type"] == "multi_choice" and allowed and not set(v) <= allowed:
            raise ParticipantError("choose_options", lang, label=f["label"])
        if f["type"] == "integer":
            try:
                v = int(v)
            except (TypeError, ValueError):
                raise ParticipantError("whole_number", lang, label=f["label"]) from None
            if (f["min"] is not None and v < f["min"]) or (f["max"] is not None and v > f["max"]):
                key = (
                    "number_range"
                    if f["min"] is not None and f["max"] is not None
                    else "number_min"
                    if f["min"] is not None
                    else "number_max"
                )
                raise ParticipantError(key, lang, label=f["label"], min=f["min"], max=f["max"])
        clean[f["name"]] = v
    text = "\n".join(f"{f['label']}: {_answer_text(clean[f['name']])}" for f in fields if f["name"] in clean)
    prof = Profile(
        key=f"participant-{p.pseudonym}", language=p.language, fields=clean, text=text, source="participant"
    )
    session.add(prof)
    session.flush()
    p.profile_id = prof.id
    for name, v in clean.items():
        session.add(
            QuestionnaireResponse(
                study_id=p.study_id,
                participant_id=p.id,
                questionnaire="profile",
                item=name,
                value=_answer_text(v),
            )
        )
    _start_tasks(session, p, _settings(session, p))


def _answer_text(v: Any) -> str:
    return ", ".join(map(str, v)) if isinstance(v, list) else str(v)


def _start_tasks(session: Session, p: Participant, settings: StudySettings) -> None:
    # One participant at a time per study from here to the commit (quotas hold under concurrency).
    assign_mod.lock_study(session, p.study_id)
    # Release the assignments of participants who walked away before balancing on the counts.
    expire_idle(session, study_id=p.study_id)
    assignments = assign_mod.assign(session, p, settings)
    if not assignments:
        p.status, p.completed_at = "screened_out", utcnow()
        _set_step(session, p, "full")
        return
    _enter_task(session, p, 0)


def _enter_task(session: Session, p: Participant, position: int) -> None:
    _set_step(session, p, "task", position=position)
    a = current_assignment(session, p)
    if a.conversation_id is None:
        cond, _, _, _ = profile_and_context(session, a.condition_id)
        conv = Conversation(
            study_id=p.study_id,
            condition_id=cond.id,
            user_kind="human",
            participant_id=p.id,
            language=cond.language,
            source="collected",
            status="in_progress",
            meta={"position": position},
        )
        session.add(conv)
        session.flush()
        a.conversation_id = conv.id
    a.status = "in_progress"
    session.add(a)
    session.flush()


def finish_task(session: Session, p: Participant) -> None:
    """End the current task's conversation (after the minimum turns, all replies rated)."""
    _expect(p, "task")
    settings = _settings(session, p)
    view = task_view(session, p, settings)
    if view is None or not view.can_finish:
        if view is not None and view.unrated_index is not None:
            raise ParticipantError("rate_first", p.language)
        raise UserInputError(finish_hint(p.language, settings.min_turns))
    a = current_assignment(session, p)
    conv = session.get(Conversation, a.conversation_id)
    conv.status, conv.ended_at, conv.ended_by = "completed", utcnow(), "user"
    conv.end_reason = "max_turns" if view.at_max else "user_ended"
    session.add(conv)
    if phase_items(settings, p, "post_task"):
        _set_step(session, p, "post_task", position=a.position)
    else:  # a study without post-task items goes straight on
        _next_after_task(session, p, settings, a)


def submit_post_task(
    session: Session, p: Participant, answers: dict[str, Any], attention: str | None = None
) -> None:
    """Store the post-task questionnaire (``once`` items such as the attention check the first time
    only), then go on. ``attention``: the answer to the attention check, when not in ``answers``."""
    _expect(p, "post_task")
    settings = _settings(session, p)
    items = phase_items(settings, p, "post_task")
    answers = dict(answers)
    for item in items:
        if item.type == "attention" and attention is not None:
            answers.setdefault(item.name, attention)
    rows = check_answers(items, answers, p.language, "post_task")
    a = current_assignment(session, p)
    _store_answers(session, p, rows, a.conversation_id)
    state = dict(p.state or {})
    once = [it.name for it in items if it.once]
    if once:
        state["once_done"] = sorted({*state.get("once_done", []), *once})
    if any(it.type == "attention" for it in items):
        state["attention_done"] = True
    p.state = state
    _next_after_task(session, p, settings, a)


def _next_after_task(session: Session, p: Participant, settings: StudySettings, a: Assignment) -> None:
    """The task's assignment is done: the next task, else the post-study questionnaire, else done."""
    a.status = "completed"
    session.add(a)
    if a.position + 1 < n_assignments(session, p):
        _enter_task(session, p, a.position + 1)
    elif phase_items(settings, p, "post_study"):
        _set_step(session, p, "post_study")
    else:
        _complete(session, p)


def submit_post_study(session: Session, p: Participant, answers: dict[str, Any]) -> None:
    """Store the post-study questionnaire; the participant has finished (the completion code shows)."""
    _expect(p, "post_study")
    items = phase_items(_settings(session, p), p, "post_study")
    _store_answers(session, p, check_answers(items, answers, p.language, "post_study"), None)
    _complete(session, p)


def _complete(session: Session, p: Participant) -> None:
    p.status, p.completed_at = "completed", utcnow()
    _set_step(session, p, "done")
