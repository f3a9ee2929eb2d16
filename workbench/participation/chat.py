"""The participant's chat with the assistant: messages, streamed replies, live ratings.

The user's message is committed before the assistant is called and the reply is committed when
complete, so nothing typed is lost when the model fails or the server stops in between (the page
then offers to retry the missing reply).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from db.engine import session_scope
from db.errors import WorkbenchError
from db.models import Assignment, AssistantConfig, Condition, Conversation, Participant, Study, Turn
from db.types import utcnow
from workbench.participation.flow import _expect
from workbench.participation.texts import HALLUCINATION_VALUES, ParticipantError
from workbench.studies import StudySettings

MAX_MESSAGE_CHARS = 4000
log = logging.getLogger(__name__)

# (engine, assistant config, study id, conversation id) -> a ChatModel with .stream(messages, **params)
ModelFactory = Callable[[Engine, AssistantConfig, int, int], Any]


class ReplyError(WorkbenchError):
    """The assistant could not produce a reply; the user's message is kept and can be retried.

    The message holds the details (model, provider error) for the server log and tests; pages show
    participants only a short translated notice."""


_models: dict[str, Any] = {}
_models_lock = threading.Lock()


def default_model_factory(engine: Engine, cfg: AssistantConfig, study_id: int, conversation_id: int) -> Any:
    """The study's assistant model, every call recorded as an LLMCall (no response cache: each
    participant gets a freshly sampled reply)."""
    from workbench.llm import get_model, recorded

    # One model (and so one HTTP client) per model name for the process: building an SDK client
    # per reply costs CPU that every other participant's request then waits for.
    with _models_lock:
        model = _models.get(cfg.model)
        if model is None:
            model = _models[cfg.model] = get_model(cfg.model)
    return recorded(
        model,
        engine,
        purpose="assistant",
        study_id=study_id,
        conversation_id=conversation_id,
        prompt_version=cfg.version,
        cache=False,
    )


_factory: ModelFactory = default_model_factory


def set_model_factory(factory: ModelFactory | None) -> None:
    """Replace how the assistant model is made (tests pass a scripted model); None restores the default."""
    global _factory
    _factory = factory or default_model_factory


def _current_conversation(session: Session, p: Participant) -> Conversation:
    """The conversation of the participant's current task (one query: the assignment joined)."""
    pos = (p.state or {}).get("position", 0)
    conv = session.exec(
        select(Conversation)
        .join(Assignment, Assignment.conversation_id == Conversation.id)
        .where(Assignment.participant_id == p.id, Assignment.position == pos)
    ).first()
    if conv is None:
        raise ParticipantError("no_task", p.language)
    return conv


def send_message(session: Session, p: Participant, text: str, kept: bool = False) -> Turn:
    """Store the participant's message (the caller commits it before asking for the reply).

    A refusal is a ParticipantError in the participant's language; nothing is stored then (the page
    keeps the text with ``keep_unsent``). ``kept``: the text is the kept message (possibly edited),
    which is then dropped from the record."""
    _expect(p, "task")
    text = (text or "").strip()
    lang = p.language
    if not text:
        raise ParticipantError("msg_empty", lang)
    if len(text) > MAX_MESSAGE_CHARS:
        raise ParticipantError("msg_too_long", lang, length=len(text), limit=MAX_MESSAGE_CHARS)
    # A lean check (this runs on every message): one query for the task's conversation, the study's
    # settings and the turns' roles and ratings (no task card, no Turn objects).
    pos = (p.state or {}).get("position", 0)
    rows = session.exec(
        select(
            Conversation.id,
            Conversation.status,
            Study.settings,
            Turn.role,
            Turn.hallucination,
            Turn.satisfaction,
        )
        .join(Assignment, Assignment.conversation_id == Conversation.id)
        .join(Study, Study.id == Conversation.study_id)
        .outerjoin(Turn, Turn.conversation_id == Conversation.id)
        .where(Assignment.participant_id == p.id, Assignment.position == pos)
        .order_by(Turn.index)
    ).all()
    if not rows:
        raise ParticipantError("no_task", lang)
    conv_id, status, settings = rows[0][:3]
    if status != "in_progress":
        raise ParticipantError("task_ended", lang)
    turns = [r[3:] for r in rows if r[3] is not None]
    if turns and turns[-1][0] == "user":
        raise ParticipantError("reply_pending", lang)
    if any(role == "assistant" and (h is None or sat is None) for role, h, sat in turns):
        raise ParticipantError("rate_first", lang)
    if (
        sum(1 for role, _, _ in turns if role == "user")
        >= StudySettings.model_validate(settings or {}).max_turns
    ):
        raise ParticipantError("msg_limit", lang)
    now = utcnow()
    turn = Turn(
        conversation_id=conv_id, index=len(turns), role="user", content=text, created_at=now, completed_at=now
    )
    session.add(turn)
    p.last_seen_at = now
    if kept:  # the kept message (possibly edited) went out
        p.state = {k: v for k, v in (p.state or {}).items() if k != "unsent"}
    session.add(p)
    session.flush()
    return turn


# A refused message is kept on the participant's record up to this length (a paste of a whole book
# is cut here; the limit of a message is MAX_MESSAGE_CHARS).
MAX_KEPT_CHARS = 200_000


def keep_unsent(session: Session, p: Participant, text: str, reason: str) -> None:
    """Keep a message the core refused (too long, a reply still owed, another tab was faster) with the
    refusal's text, so that a reload, another tab or an expired session still shows it until the
    participant sends or discards it (``participant_view().unsent``)."""
    state = dict(p.state or {})
    n = int((state.get("unsent") or {}).get("n", 0)) + 1
    state["unsent"] = {"text": (text or "")[:MAX_KEPT_CHARS], "error": reason, "n": n}
    p.state = state
    session.add(p)


def discard_unsent(session: Session, p: Participant) -> None:
    state = dict(p.state or {})
    if state.pop("unsent", None) is not None:
        p.state = state
        session.add(p)


def _assistant_input(session: Session, conv: Conversation) -> tuple[list[dict], AssistantConfig, int]:
    """The messages for the assistant, its config and the number of turns so far (two queries: the
    config joined to the condition, and the turns' roles and texts without loading Turn objects)."""
    cfg = session.exec(
        select(AssistantConfig)
        .join(Condition, Condition.assistant_config_id == AssistantConfig.id)
        .where(Condition.id == conv.condition_id)
    ).one()
    rows = session.exec(
        select(Turn.role, Turn.content).where(Turn.conversation_id == conv.id).order_by(Turn.index)
    ).all()
    messages = [{"role": "system", "content": cfg.system_prompt}] if cfg.system_prompt else []
    messages += [
        {"role": role, "content": content} for role, content in rows if role in ("user", "assistant")
    ]
    return messages, cfg, len(rows)


def stream_reply(engine: Engine, participant_id: int, factory: ModelFactory | None = None) -> Iterator[str]:
    """Stream the assistant's reply to the participant's pending message and store it when complete.

    Yields text pieces. Raises ReplyError when the model fails (nothing is stored then); the failure
    is logged here with its details (the LLM layer also records a failed call as an LLMCall row
    with its error), so pages need not show participants any of it.
    """
    with Session(engine, expire_on_commit=False) as s:
        p = s.get(Participant, participant_id)
        conv = _current_conversation(s, p)
        messages, cfg, index = _assistant_input(s, conv)
        if not messages or messages[-1]["role"] != "user":
            return
        conv_id, study_id, pseudonym = conv.id, conv.study_id, p.pseudonym
    params = {
        k: v for k, v in (("temperature", cfg.temperature), ("max_tokens", cfg.max_tokens)) if v is not None
    }
    started, t0 = utcnow(), time.perf_counter()
    pieces: list[str] = []
    try:
        model = (factory or _factory)(engine, cfg, study_id, conv_id)
        stream = model.stream(messages, **params)
        for piece in stream:
            if piece:
                pieces.append(piece)
                yield piece
    except WorkbenchError as exc:
        raise _failed(str(exc), cfg.model, study_id, conv_id, pseudonym) from exc
    except Exception as exc:  # SDK or network failure: keep the message, offer a retry
        raise _failed(
            f"{exc.__class__.__name__}: {exc}", cfg.model, study_id, conv_id, pseudonym, traceback=True
        ) from exc
    completion = getattr(stream, "completion", None)
    text = (getattr(completion, "text", None) or "".join(pieces)).strip()
    if not text:
        raise _failed("the assistant returned an empty reply", cfg.model, study_id, conv_id, pseudonym)
    usage = getattr(completion, "usage", None)
    turn = Turn(
        conversation_id=conv_id,
        index=index,
        role="assistant",
        content=text,
        created_at=started,
        completed_at=utcnow(),
        latency_ms=(time.perf_counter() - t0) * 1000,
        prompt_tokens=getattr(usage, "prompt_tokens", None),
        completion_tokens=getattr(usage, "completion_tokens", None),
        llm_call_id=getattr(completion, "call_id", None),
    )
    try:
        with session_scope(engine) as s:
            s.add(turn)
    except IntegrityError:
        pass  # another tab stored this reply first; the conversation is still consistent


def _failed(
    detail: str, model: str, study_id: int, conv_id: int, pseudonym: str, traceback: bool = False
) -> ReplyError:
    """Log a failed reply with its details for the researchers and return the error to raise."""
    log.error(
        "assistant reply failed (study %s, conversation %s, participant %s, model %s): %s",
        study_id,
        conv_id,
        pseudonym,
        model,
        detail,
        exc_info=traceback,
    )
    return ReplyError(detail)


def rate_reply(
    session: Session,
    p: Participant,
    turn_index: int,
    hallucination: str | None,
    satisfaction: int | None,
    reason: str | None = None,
) -> None:
    """Store the participant's judgement of one assistant reply of the current task."""
    _expect(p, "task")
    if hallucination not in HALLUCINATION_VALUES:
        raise ParticipantError("rate_missing_hallucination", p.language)
    if satisfaction is None or int(satisfaction) not in range(1, 6):
        raise ParticipantError("rate_missing_satisfaction", p.language)
    pos = (p.state or {}).get("position", 0)
    turn = session.exec(  # the reply of the current task's conversation, found in one query
        select(Turn)
        .join(Assignment, Assignment.conversation_id == Turn.conversation_id)
        .where(Assignment.participant_id == p.id, Assignment.position == pos, Turn.index == int(turn_index))
    ).first()
    if turn is None:
        _current_conversation(session, p)  # no task at all: say so rather than "no such reply"
    if turn is None or turn.role != "assistant":
        raise ParticipantError("no_such_reply", p.language)
    turn.hallucination, turn.satisfaction = hallucination, int(satisfaction)
    turn.satisfaction_reason = (reason or "").strip()[:2000] or None
    turn.meta = {**(turn.meta or {}), "rated_at": utcnow().isoformat()}
    session.add(turn)
    p.last_seen_at = utcnow()
    session.add(p)
    session.flush()
