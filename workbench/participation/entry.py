"""How participants get in: invite tokens (only their hash is stored) and Prolific study links."""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
from datetime import timedelta
from urllib.parse import urlencode

from sqlalchemy import func
from sqlmodel import Session, select

from db.errors import NotFoundError, UserInputError
from db.models import Participant, Study
from db.repo import get_study
from db.types import utcnow
from workbench.participation.texts import ParticipantError

log = logging.getLogger(__name__)
_PROLIFIC_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def new_token() -> str:
    """An unguessable URL-safe token (192 random bits)."""
    return secrets.token_urlsafe(24)


def hash_token(token: str) -> str:
    # Tokens are long random strings, so a plain SHA-256 is enough (no need for a slow hash).
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_pseudonym() -> str:
    return "p-" + secrets.token_hex(8)


def create_invites(session: Session, study_name: str, n: int, language: str | None = None) -> list[str]:
    """Create ``n`` participants with invite tokens; returns the tokens (shown once, never stored)."""
    if n < 1 or n > 10_000:
        raise UserInputError("the number of invites must be between 1 and 10000")
    if language is not None and language not in ("en", "zh"):
        raise UserInputError(f"interface language {language!r} is not supported; use en or zh")
    study = get_study(session, study_name)
    from workbench.studies import study_settings

    lang = language or study_settings(study).interface_language
    tokens = []
    for _ in range(n):
        token = new_token()
        session.add(
            Participant(
                study_id=study.id,
                pseudonym=new_pseudonym(),
                external_source="invite",
                invite_token_hash=hash_token(token),
                status="invited",
                language=lang,
                state={"step": "consent"},
            )
        )
        tokens.append(token)
    session.flush()
    return tokens


def invite_url(base_url: str, token: str) -> str:
    return f"{base_url.rstrip('/')}/?{urlencode({'t': token})}"


def prolific_url(base_url: str, study_name: str) -> str:
    """The study URL to paste into Prolific (Prolific fills in the three ids)."""
    return (
        f"{base_url.rstrip('/')}/?{urlencode({'study': study_name})}"
        "&PROLIFIC_PID={{%PROLIFIC_PID%}}&STUDY_ID={{%STUDY_ID%}}&SESSION_ID={{%SESSION_ID%}}"
    )


def participant_for_token(session: Session, token: str | None) -> Participant:
    """The participant holding this token; the same error for any unknown token.

    A Prolific participant who opens the study link again (a second tab, a reload of the Prolific
    page) gets a new token; the earlier ones of that participant keep working, so no open tab is
    stranded. Those tokens carry the participant's id before a dot; only their hashes are stored."""
    if not token or len(token) > 200:
        raise NotFoundError("this link is not valid")
    digest = hash_token(token)
    p = session.exec(select(Participant).where(Participant.invite_token_hash == digest)).first()
    if p is None and "." in token:
        head = token.split(".", 1)[0]
        other = session.get(Participant, int(head)) if head.isdigit() else None
        if other is not None and digest in (other.state or {}).get("token_hashes", []):
            p = other
    if p is None:
        raise NotFoundError("this link is not valid")
    return p


KEPT_TOKENS = 5  # earlier Prolific tokens of a participant that still open the session


def _prolific_study(session: Session, prolific_study_id: str, study_name: str | None) -> Study:
    """The study whose settings name this Prolific STUDY_ID. A link naming another study, or a study
    that takes no Prolific participants, is not valid: a forged ``?study=NAME&PROLIFIC_PID=...`` once
    created participants in invite-only studies and filled their quotas."""
    for study in session.exec(select(Study)).all():
        wanted = (study.settings or {}).get("prolific_study_id")
        if wanted and prolific_study_id and wanted == prolific_study_id:
            if study_name and study_name != study.name:
                break
            return study
    raise NotFoundError("this link is not valid")


def _check_entry_rate(session: Session, study: Study, limit: int, lang: str) -> None:
    """Refuse a new participant when ``limit`` already entered the study in the last minute."""
    since = utcnow() - timedelta(minutes=1)
    recent = session.exec(
        select(func.count(Participant.id)).where(
            Participant.study_id == study.id,
            Participant.external_source == "prolific",
            Participant.created_at >= since,
        )
    ).one()
    if recent >= limit:
        log.warning(
            "study %r: %d new Prolific participants in the last minute (limit %d); one more turned away",
            study.name,
            recent,
            limit,
        )
        raise ParticipantError("too_many_entries", lang)


def enter_prolific(
    session: Session,
    prolific_pid: str,
    prolific_study_id: str,
    prolific_session_id: str,
    study_name: str | None = None,
) -> tuple[Participant, str]:
    """Find or create the participant of a Prolific entry; returns it and a fresh session token.

    Only a study whose settings name this Prolific ``STUDY_ID`` (``prolific_study_id``) takes the
    entry; ``study_name`` (``?study=``), when given, must be that study. Re-entering with the same
    PID and SESSION_ID resumes the same participant (earlier tokens keep working); another
    SESSION_ID for a known PID is refused. New participants are limited per minute
    (``max_new_participants_per_minute``). Refusals are ParticipantErrors in the study's language
    (an unknown or not accepting study: NotFoundError, "this link is not valid").
    """
    from workbench.studies import study_settings

    study = _prolific_study(session, prolific_study_id, study_name)
    cfg = study_settings(study)
    lang = cfg.interface_language
    for value, what in (
        (prolific_pid, "PROLIFIC_PID"),
        (prolific_study_id, "STUDY_ID"),
        (prolific_session_id, "SESSION_ID"),
    ):
        if not value or not _PROLIFIC_ID.match(value):
            raise ParticipantError("prolific_bad_link", lang, what=what)
    p = session.exec(
        select(Participant).where(
            Participant.study_id == study.id,
            Participant.external_source == "prolific",
            Participant.external_id == prolific_pid,
        )
    ).first()
    if p is None:
        _check_entry_rate(session, study, cfg.max_new_participants_per_minute, lang)
        token = new_token()
        p = Participant(
            study_id=study.id,
            pseudonym=new_pseudonym(),
            external_source="prolific",
            external_id=prolific_pid,
            external_session=prolific_session_id,
            status="invited",
            language=lang,
            state={"step": "consent"},
            invite_token_hash=hash_token(token),
        )
        session.add(p)
    elif p.external_session != prolific_session_id:
        raise ParticipantError("prolific_other_session", lang)
    else:
        token = f"{p.id}.{new_token()}"
        kept = (p.state or {}).get("token_hashes", [])
        p.state = {**(p.state or {}), "token_hashes": [*kept, hash_token(token)][-KEPT_TOKENS:]}
        session.add(p)
    session.flush()
    return p, token
