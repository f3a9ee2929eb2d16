"""How participants get in: invite tokens (only their hash is stored) and Prolific study links."""

from __future__ import annotations

import hashlib
import re
import secrets
from urllib.parse import urlencode

from sqlmodel import Session, select

from db.errors import NotFoundError, UserInputError
from db.models import Participant, Study
from db.repo import get_study
from workbench.participation.texts import ParticipantError

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
    """The participant holding this token; the same error for any unknown token."""
    if not token or len(token) > 200:
        raise NotFoundError("this link is not valid")
    p = session.exec(select(Participant).where(Participant.invite_token_hash == hash_token(token))).first()
    if p is None:
        raise NotFoundError("this link is not valid")
    return p


def enter_prolific(
    session: Session,
    prolific_pid: str,
    prolific_study_id: str,
    prolific_session_id: str,
    study_name: str | None = None,
) -> tuple[Participant, str]:
    """Find or create the participant of a Prolific entry; returns it and a fresh session token.

    The study is the one whose settings name this Prolific STUDY_ID (``prolific_study_id``), else
    the one named by ``study_name``. Re-entering with the same PID and SESSION_ID resumes the same
    participant (the old token stops working); another SESSION_ID for a known PID is refused.
    Refusals are ParticipantErrors in the study's language (an unknown study: NotFoundError).
    """
    from workbench.studies import study_settings

    study = None
    for s in session.exec(select(Study)).all():
        if prolific_study_id and (s.settings or {}).get("prolific_study_id") == prolific_study_id:
            study = s
            break
    if study is None:
        if not study_name:
            raise NotFoundError("this link is not valid")
        study = get_study(session, study_name)
    lang = study_settings(study).interface_language
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
    token = new_token()
    if p is None:
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
        p.invite_token_hash = hash_token(token)
        session.add(p)
    session.flush()
    return p, token
