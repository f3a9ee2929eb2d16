"""An annotator's labelling desk: their queues, the item open now, and submitting a form.

The labelling page reads widgets and calls these; the state itself (what is done, skipped or still
to go) lives in the database, so labelling is resumable and correctable from any browser.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import pandas as pd
from sqlmodel import Session

from annotation import labelling, queue
from annotation.codebook import Codebook
from annotation.labelling import ItemView, SavedItem
from db.errors import NotFoundError, WorkbenchError
from db.models import Annotator, Study


def annotator_queues_df(session: Session, annotator_id: int) -> pd.DataFrame:
    """One row per study in which the annotator has a queue: labelled, skipped, to go, total."""
    rows = []
    for study in queue.annotator_studies(session, annotator_id):
        prog = queue.queue_progress(session, study.id, annotator_id)
        rows.append(
            {
                "study": study.name,
                "labelled": prog.done,
                "skipped": prog.skipped,
                "to go": prog.pending,
                "total": prog.total,
            }
        )
    return pd.DataFrame(rows, columns=["study", "labelled", "skipped", "to go", "total"])


@dataclass(frozen=True)
class Desk:
    """The studies an annotator labels in: (id, name, language), newest first."""

    studies: list[tuple[int, str, str]] = field(default_factory=list)

    def study_id(self, name: str | None = None) -> int:
        """The id of the study named ``name`` (the only one when there is one)."""
        if name is None or len(self.studies) == 1:
            return self.studies[0][0]
        return next(i for i, n, _ in self.studies if n == name)

    def names(self) -> list[str]:
        return [name for _, name, _ in self.studies]


def open_desk(session: Session, annotator_id: int) -> Desk:
    """The annotator and their studies; NotFoundError when the account no longer exists."""
    if session.get(Annotator, annotator_id) is None:
        raise NotFoundError("Your account was not found; log in again.")
    studies = [(s.id, s.name, s.language) for s in queue.annotator_studies(session, annotator_id)]
    return Desk(studies=studies)


@dataclass(frozen=True)
class Worklist:
    """One annotator's queue in one study, as the page needs it at one moment."""

    study_id: int
    progress: queue.Progress
    items: list[tuple[int, int, str]]  # (position, conversation id, status) in queue order
    pending: int | None  # the conversation of the first pending item
    language: str  # the one display language for the whole queue (see preferred_language)
    coverage: dict[str, int]  # conversations that can be shown whole, per language

    def reviewable(self) -> list[tuple[int, int]]:
        """(position, conversation id) of the items already labelled or skipped."""
        return [(pos, conv) for pos, conv, status in self.items if status != "pending"]

    def current(self, revisit: int | None) -> int | None:
        """The conversation to show: the revisited one if it may be revisited, else the next pending."""
        return revisit if revisit in {c for _, c in self.reviewable()} else self.pending

    def position(self, conversation_id: int) -> int:
        return next(pos for pos, c, _ in self.items if c == conversation_id)

    def status(self, conversation_id: int) -> str:
        return next(s for _, c, s in self.items if c == conversation_id)

    def only_skipped(self) -> bool:
        """Nothing left to label and nothing labelled, only skips: not "finished"."""
        return self.progress.done == 0 and bool(self.progress.skipped)


def worklist(session: Session, study_id: int, annotator_id: int) -> Worklist:
    """The annotator's queue in the study with its progress and display language. One language for
    the whole queue, so that the language does not betray the source."""
    study = session.get(Study, study_id)
    items = queue.queue_items(session, study_id, annotator_id)
    ids = [a.conversation_id for a in items]
    pending = queue.next_item(session, study_id, annotator_id)
    return Worklist(
        study_id=study_id,
        progress=queue.queue_progress(session, study_id, annotator_id),
        items=[(a.position, a.conversation_id, a.status) for a in items],
        pending=pending.conversation_id if pending else None,
        language=labelling.preferred_language(session, study, ids),
        coverage=labelling.language_coverage(session, ids),
    )


def open_item(
    session: Session, study_id: int, annotator_id: int, conversation_id: int, language: str
) -> tuple[ItemView, SavedItem]:
    """The blind view of the item in ``language`` and what the annotator saved for it before."""
    me = session.get(Annotator, annotator_id)
    return (
        labelling.blind_view(session, conversation_id, language),
        labelling.load_saved(session, study_id, me, conversation_id),
    )


def item_key(salt: str, study_id: int, conversation_id: int) -> str:
    """An opaque key for an item's widgets, so each item starts from its saved state. Opaque because
    widget keys become CSS classes in the page, and a database id would tell the kinds apart
    (imported agents come before humans)."""
    return "ann-" + hashlib.sha256(f"{salt}|{study_id}|{conversation_id}".encode()).hexdigest()[:16]


def submit_item(
    session: Session,
    study_id: int,
    annotator_id: int,
    conversation_id: int,
    codebook: Codebook,
    answers: SavedItem,
    skip: bool = False,
    language: str = "en",
) -> None:
    """Save the form's answers (``skip``: skip the item, keeping only the flag and its note, which is
    also the reason). A confidence without a guess is dropped: it rates nothing."""
    me = session.get(Annotator, annotator_id)
    if skip:
        labelling.skip_item(
            session,
            study_id,
            me,
            conversation_id,
            reason=answers.flag_note,
            flagged=answers.flagged,
            flag_note=answers.flag_note,
        )
        return
    labelling.save_labels(
        session,
        study_id,
        me,
        conversation_id,
        codebook,
        answers.values,
        answers.turn_values,
        rationale=answers.rationale,
        guess=answers.guess,
        confidence=answers.confidence if answers.guess else None,
        flagged=answers.flagged,
        flag_note=answers.flag_note,
        language=language,
    )


def reopen_skipped(session: Session, study_id: int, annotator_id: int) -> int:
    """Put the annotator's skipped items back in the queue; returns how many."""
    return queue.reopen_skipped(session, study_id, annotator_id)


@dataclass(frozen=True)
class Action:
    """What the annotator did on the labelling page: ``kind`` "save" or "skip" (with the form's
    ``answers``) for a conversation, or "reopen" the skipped items of a study."""

    kind: str
    study_id: int
    conversation_id: int | None = None
    answers: SavedItem | None = None
    language: str = "en"


@dataclass
class DeskState:
    """Everything the labelling page shows after one action, read in one session."""

    desk: Desk
    work: Worklist | None = None  # None: no queue in any study
    language: str = "en"  # the page language
    current: int | None = None  # the conversation open now (None: nothing left to label)
    view: ItemView | None = None
    saved: SavedItem | None = None
    done: str | None = None  # the action applied ("save", "skip", "reopen")
    error: str | None = None  # why the action was refused (nothing of it is stored)


def _apply(session: Session, annotator_id: int, codebook: Codebook, action: Action, state: DeskState) -> None:
    try:
        if action.kind == "reopen":
            reopen_skipped(session, action.study_id, annotator_id)
        elif action.kind in ("save", "skip"):
            answers = action.answers or SavedItem()
            submit_item(
                session,
                action.study_id,
                annotator_id,
                action.conversation_id,
                codebook,
                answers,
                skip=action.kind == "skip",
                language=action.language,
            )
        else:
            raise ValueError(f"unknown labelling action {action.kind!r}")
        session.flush()
    except WorkbenchError as exc:
        session.rollback()  # nothing of a refused action stays; the page is read afresh below
        state.error = str(exc)
    else:
        state.done = action.kind


def desk_state(
    session: Session,
    annotator_id: int,
    codebook: Codebook,
    study: str | None = None,
    language: str | None = None,
    languages: tuple[str, ...] = ("en", "zh"),
    revisit: int | None = None,
    action: Action | None = None,
) -> DeskState:
    """Apply the annotator's ``action`` (if any), then read the page: their studies, the queue of
    ``study`` (the newest when None or unknown), the item open now (``revisit``, an item already
    labelled or skipped, when it may be revisited and no save or skip just happened; else the next
    pending one) in ``language`` (when one of ``languages``; else the queue's language, else the
    first of ``languages``), with what was saved for it. One session for the whole page run."""
    desk = open_desk(session, annotator_id)
    state = DeskState(desk=desk, language=language if language in languages else languages[0])
    if action is not None:
        _apply(session, annotator_id, codebook, action, state)
    if not desk.studies:
        return state
    work = worklist(session, desk.study_id(study if study in desk.names() else None), annotator_id)
    state.work = work
    if language not in languages and work.language in languages:
        state.language = work.language
    state.current = work.current(None if state.done in ("save", "skip") else revisit)
    if state.current is not None:
        state.view, state.saved = open_item(
            session, work.study_id, annotator_id, state.current, state.language
        )
    return state
