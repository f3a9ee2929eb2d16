"""Human labelling: the blind view of a conversation, and saving labels, guesses, skips and flags.

Blind by construction: ``blind_view`` builds the only thing the labelling page shows, from the
turn texts and the scenario, and never reads user kind, wave, file names, external ids, model or
simulator names. Where the display language differs from the conversation's and translations
exist, the translation is shown *without marking it as one* (a mark would give agents away).

Labels are ordinary ``Label`` rows of the source ``human:<annotator>`` (kind "human").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import pandas as pd
from sqlmodel import Session, select

from annotation.codebook import Codebook
from db.errors import NotFoundError, UserInputError
from db.models import Annotator, Condition, Conversation, Label, LabelSource, Scenario, Study, Turn
from db.models.annotation import AnnotationAssignment, HumanityGuess
from db.repo import get_or_create_label_source
from db.types import utcnow

GUESSES = ("human", "ai")
CONFIDENCE_RANGE = (1, 5)


def source_name(annotator_name: str) -> str:
    return f"human:{annotator_name}"


def annotator_source(session: Session, annotator: Annotator, codebook: Codebook) -> LabelSource:
    src = get_or_create_label_source(
        session,
        source_name(annotator.name),
        "human",
        annotator_id=annotator.id,
        codebook_version=codebook.version,
        params={"human": True},
    )
    if src.kind != "human" or (src.annotator_id not in (None, annotator.id)):
        raise UserInputError(
            f"label source {src.name!r} exists but does not belong to annotator {annotator.name!r}"
        )
    if src.codebook_version != codebook.version or src.annotator_id is None:
        # The source records the codebook the annotator labels under now, and when each version took
        # over (params["codebook_history"]), so a label's codebook follows from its created_at.
        params = dict(src.params or {})
        history = list(params.get("codebook_history") or [])
        if not history and src.codebook_version:
            history.append({"version": src.codebook_version, "from": src.created_at.isoformat()})
        if src.codebook_version != codebook.version:
            history.append({"version": codebook.version, "from": utcnow().isoformat()})
        params["codebook_history"] = history
        src.params = params
        src.codebook_version, src.annotator_id = codebook.version, annotator.id
        session.add(src)
    return src


# --------------------------------------------------------------------------------------------------
# The blind view
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TurnView:
    index: int
    role: str  # user | assistant
    text: str


@dataclass(frozen=True)
class ItemView:
    """All the labelling page may show about a conversation."""

    conversation_id: int
    scenario_key: str
    scenario_name: str
    language: str  # language the turns are shown in
    turns: list[TurnView] = field(default_factory=list)

    def turns_with_role(self, role: str) -> list[TurnView]:
        return [t for t in self.turns if t.role == role]


def blind_view(session: Session, conversation_id: int, language: str) -> ItemView:
    """The conversation as the annotator sees it, in ``language`` where a translation exists."""
    conv = session.get(Conversation, conversation_id)
    if conv is None:
        raise NotFoundError(f"no conversation with id {conversation_id}")
    scen = session.exec(
        select(Scenario)
        .join(Condition, Condition.scenario_id == Scenario.id)
        .where(Condition.id == conv.condition_id)
    ).one()
    turns = session.exec(select(Turn).where(Turn.conversation_id == conv.id).order_by(Turn.index)).all()
    translate = bool(language) and conv.language != language
    shown = []
    for t in turns:
        if t.role not in ("user", "assistant"):
            continue  # system prompts would reveal the setup
        text = t.content
        if translate and t.translation and (t.translation_language or language) == language:
            text = t.translation
        shown.append(TurnView(index=t.index, role=t.role, text=text))
    if translate and any(t.translation for t in turns):
        shown_lang = language
    else:
        shown_lang = conv.language
    name = (scen.names or {}).get(language) or scen.name
    return ItemView(
        conversation_id=conv.id, scenario_key=scen.key, scenario_name=name, language=shown_lang, turns=shown
    )


def display_language(study: Study, annotator_language: str | None = None) -> str:
    """The language items are shown in: the annotator's choice, else the study's."""
    return annotator_language or study.language or "en"


def language_coverage(session: Session, conversation_ids: list[int]) -> dict[str, int]:
    """How many of the conversations can be shown entirely in each language (original or translated)."""
    if not conversation_ids:
        return {}
    convs = dict(
        session.exec(
            select(Conversation.id, Conversation.language).where(Conversation.id.in_(conversation_ids))
        ).all()
    )
    per_conv: dict[int, dict] = {cid: {"n": 0, "tr": {}} for cid in convs}
    rows = session.exec(
        select(Turn.conversation_id, Turn.translation_language, Turn.translation).where(
            Turn.conversation_id.in_(conversation_ids), Turn.role.in_(["user", "assistant"])
        )
    ).all()
    for cid, tl, tr in rows:
        per_conv[cid]["n"] += 1
        if tr and tl:
            per_conv[cid]["tr"][tl] = per_conv[cid]["tr"].get(tl, 0) + 1
    cover: dict[str, int] = {}
    for cid, lang in convs.items():
        langs = {lang} | {tl for tl, n in per_conv[cid]["tr"].items() if n == per_conv[cid]["n"]}
        for lg in langs:
            cover[lg] = cover.get(lg, 0) + 1
    return cover


def preferred_language(session: Session, study: Study, conversation_ids: list[int]) -> str:
    """The language in which most of these conversations can be shown whole (ties: the study's).

    Showing every item in one language keeps the language from betraying the source, e.g. in the
    reference data agents spoke English (with Chinese translations) and people Chinese.
    """
    cover = language_coverage(session, conversation_ids)
    if not cover:
        return study.language or "en"
    best = max(cover.values())
    if cover.get(study.language, 0) == best:
        return study.language
    return sorted(lg for lg, n in cover.items() if n == best)[0]


# --------------------------------------------------------------------------------------------------
# Saving and resuming
# --------------------------------------------------------------------------------------------------


@dataclass
class SavedItem:
    """What an annotator already entered for an item (to prefill the form when revisiting)."""

    values: dict[str, str] = field(default_factory=dict)  # dimension -> value
    turn_values: dict[tuple[str, int], str] = field(default_factory=dict)  # (dimension, turn index) -> value
    rationale: str | None = None
    guess: str | None = None
    confidence: int | None = None
    flagged: bool = False
    flag_note: str | None = None


def _assignment(
    session: Session, study_id: int, annotator_id: int, conversation_id: int
) -> AnnotationAssignment:
    a = session.exec(
        select(AnnotationAssignment).where(
            AnnotationAssignment.study_id == study_id,
            AnnotationAssignment.annotator_id == annotator_id,
            AnnotationAssignment.conversation_id == conversation_id,
        )
    ).first()
    if a is None:
        raise NotFoundError(f"conversation {conversation_id} is not in this annotator's queue")
    return a


def load_saved(session: Session, study_id: int, annotator: Annotator, conversation_id: int) -> SavedItem:
    saved = SavedItem()
    src = session.exec(select(LabelSource).where(LabelSource.name == source_name(annotator.name))).first()
    if src is not None:
        for lab in session.exec(
            select(Label).where(Label.source_id == src.id, Label.conversation_id == conversation_id)
        ).all():
            if lab.value is None:
                continue
            if lab.turn_index < 0:
                saved.values[lab.dimension] = lab.value
                saved.rationale = saved.rationale or lab.rationale
            else:
                saved.turn_values[(lab.dimension, lab.turn_index)] = lab.value
    g = session.exec(
        select(HumanityGuess).where(
            HumanityGuess.annotator_id == annotator.id, HumanityGuess.conversation_id == conversation_id
        )
    ).first()
    if g is not None:
        saved.guess, saved.confidence = g.guess, g.confidence
    a = session.exec(
        select(AnnotationAssignment).where(
            AnnotationAssignment.study_id == study_id,
            AnnotationAssignment.annotator_id == annotator.id,
            AnnotationAssignment.conversation_id == conversation_id,
        )
    ).first()
    if a is not None:
        saved.flagged, saved.flag_note = a.flagged, a.flag_note
    return saved


def _check_value(codebook: Codebook, dimension: str, value: str, level: str) -> str:
    dim = codebook.get(dimension)
    if dim.level != level:
        raise UserInputError(f"{dimension} is a {dim.level}-level dimension")
    value = str(value)
    if value not in dim.labels:
        raise UserInputError(f"{value!r} is not a label of {dimension} (use one of {', '.join(dim.labels)})")
    return value


def save_labels(
    session: Session,
    study_id: int,
    annotator: Annotator,
    conversation_id: int,
    codebook: Codebook,
    values: Mapping[str, str | None],
    turn_values: Mapping[tuple[str, int], str | None] | None = None,
    rationale: str | None = None,
    guess: str | None = None,
    confidence: int | None = None,
    flagged: bool = False,
    flag_note: str | None = None,
    language: str = "en",
) -> int:
    """Save an annotator's labels for one item of their queue and mark it done; returns labels written.

    Every conversation-level dimension of the codebook needs a value; turn-level labels are
    optional (one per turn of the dimension's ``turn_role``). Saving again replaces earlier labels of
    the codebook's dimensions; labels of dimensions it does not have (e.g. saved under an extension
    that is no longer loaded) are kept. Everything is validated before anything is written.
    """
    assignment = _assignment(session, study_id, annotator.id, conversation_id)
    turn_values = dict(turn_values or {})
    missing = [
        d.display_title(language) for d in codebook.conversation_dimensions() if not values.get(d.name)
    ]
    if missing:
        # Named as the form shows them (``language``: the page's), not by their codebook keys.
        msg = (
            "请为以下维度选择标签：{}（或跳过本条）"
            if language == "zh"
            else "Choose a label for: {} (or skip the item)"
        )
        raise UserInputError(msg.format("、".join(missing) if language == "zh" else ", ".join(missing)))
    clean = {dim: _check_value(codebook, dim, v, "conversation") for dim, v in values.items() if v}
    turns = {
        t.index: t for t in session.exec(select(Turn).where(Turn.conversation_id == conversation_id)).all()
    }
    clean_turns: dict[tuple[str, int], str] = {}
    for (dim, idx), v in turn_values.items():
        if not v:
            continue
        d = codebook.get(dim)
        value = _check_value(codebook, dim, v, "turn")
        if idx not in turns or turns[idx].role != d.turn_role:
            raise UserInputError(f"turn {idx} of conversation {conversation_id} is not a {d.turn_role} turn")
        clean_turns[(dim, idx)] = value
    guess = _check_guess(guess, confidence)
    rationale = (rationale or "").strip() or None

    src = annotator_source(session, annotator, codebook)
    existing = {
        (lab.dimension, lab.turn_index): lab
        for lab in session.exec(
            select(Label).where(Label.source_id == src.id, Label.conversation_id == conversation_id)
        ).all()
    }
    now = utcnow()
    written = 0
    wanted = {(dim, -1): v for dim, v in clean.items()} | clean_turns
    for (dim, idx), value in wanted.items():
        lab = existing.pop((dim, idx), None) or Label(
            conversation_id=conversation_id, dimension=dim, turn_index=idx, source_id=src.id
        )
        lab.value, lab.status, lab.flagged, lab.created_at = value, "ok", bool(flagged), now
        lab.turn_id = turns[idx].id if idx >= 0 else None
        lab.rationale = rationale if idx < 0 else None
        session.add(lab)
        written += 1
    for lab in existing.values():  # labels the annotator has now cleared (e.g. a turn flag) ...
        if lab.dimension in codebook:  # ... not those of dimensions this codebook does not show
            session.delete(lab)
    _save_guess(session, study_id, annotator.id, conversation_id, guess, confidence)
    assignment.status, assignment.completed_at = "done", now
    assignment.flagged, assignment.flag_note = bool(flagged), (flag_note or "").strip() or None
    session.add(assignment)
    session.flush()
    return written


def _check_guess(guess: str | None, confidence: int | None) -> str | None:
    if guess in (None, ""):
        return None
    if guess not in GUESSES:
        raise UserInputError(f"guess must be one of {', '.join(GUESSES)} (or none), not {guess!r}")
    lo, hi = CONFIDENCE_RANGE
    if confidence is not None and not (lo <= int(confidence) <= hi):
        raise UserInputError(f"confidence must be between {lo} and {hi}")
    return guess


def _save_guess(
    session: Session,
    study_id: int,
    annotator_id: int,
    conversation_id: int,
    guess: str | None,
    confidence: int | None,
) -> None:
    g = session.exec(
        select(HumanityGuess).where(
            HumanityGuess.annotator_id == annotator_id, HumanityGuess.conversation_id == conversation_id
        )
    ).first()
    if guess is None:
        if g is not None:
            session.delete(g)
        return
    if g is None:
        g = HumanityGuess(
            study_id=study_id, annotator_id=annotator_id, conversation_id=conversation_id, guess=guess
        )
    g.guess, g.confidence, g.created_at = guess, None if confidence is None else int(confidence), utcnow()
    session.add(g)


def skip_item(
    session: Session,
    study_id: int,
    annotator: Annotator,
    conversation_id: int,
    reason: str | None = None,
    flagged: bool = False,
    flag_note: str | None = None,
) -> None:
    """Skip an item (it can be reopened later); a flag marks it for the researchers. Skipping an item
    already labelled withdraws the annotator's labels and guess for it, so a skipped item never
    feeds the analysis or the agreement figures."""
    a = _assignment(session, study_id, annotator.id, conversation_id)
    if a.status == "done":
        src = session.exec(
            select(LabelSource).where(
                LabelSource.name == source_name(annotator.name), LabelSource.kind == "human"
            )
        ).first()
        if src is not None:
            for lab in session.exec(
                select(Label).where(Label.source_id == src.id, Label.conversation_id == conversation_id)
            ).all():
                session.delete(lab)
        _save_guess(session, study_id, annotator.id, conversation_id, None, None)
    a.status, a.completed_at = "skipped", utcnow()
    a.skip_reason = (reason or "").strip() or None
    a.flagged, a.flag_note = bool(flagged), (flag_note or "").strip() or None
    session.add(a)
    session.flush()


def guesses_df(session: Session, study_id: int) -> pd.DataFrame:
    """One row per "person or AI?" guess: conversation_id, annotator, guess (human|ai), confidence, created_at.

    Feed it to ``annotation.agreement.indistinguishability_df`` with ``db.repo.conversations_df``.
    """
    rows = session.exec(
        select(
            HumanityGuess.conversation_id,
            Annotator.name,
            HumanityGuess.guess,
            HumanityGuess.confidence,
            HumanityGuess.created_at,
        )
        .join(Annotator, Annotator.id == HumanityGuess.annotator_id)
        .where(HumanityGuess.study_id == study_id)
        .order_by(HumanityGuess.id)
    ).all()
    return pd.DataFrame(rows, columns=["conversation_id", "annotator", "guess", "confidence", "created_at"])


def flagged_df(session: Session, study_id: int) -> pd.DataFrame:
    """Items annotators flagged: conversation_id, annotator, status, flag_note, skip_reason."""
    rows = session.exec(
        select(
            AnnotationAssignment.conversation_id,
            Annotator.name,
            AnnotationAssignment.status,
            AnnotationAssignment.flag_note,
            AnnotationAssignment.skip_reason,
        )
        .join(Annotator, Annotator.id == AnnotationAssignment.annotator_id)
        .where(AnnotationAssignment.study_id == study_id, AnnotationAssignment.flagged == True)  # noqa: E712
        .order_by(AnnotationAssignment.conversation_id)
    ).all()
    return pd.DataFrame(rows, columns=["conversation_id", "annotator", "status", "flag_note", "skip_reason"])
