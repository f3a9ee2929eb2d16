"""Accounts of the people who log in (annotators and researchers), with bcrypt-hashed passwords."""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta
from typing import NamedTuple

import bcrypt
import pandas as pd
from sqlmodel import Session, select

from db.errors import UserInputError
from db.models import Annotator
from db.models.accounts import StaffSession
from db.settings import DEFAULT_SESSION_HOURS, ENV_SESSION_HOURS  # noqa: F401  (re-exported)
from db.types import utcnow
from workbench.throttle import (
    LoginPolicy,
    LoginWait,
    account_key,
    clear_failures,
    client_key,
    login_wait,
    record_failure,
)

ROLES = ("annotator", "researcher")
MIN_PASSWORD_LENGTH = 8
# bcrypt only looks at the first 72 bytes; longer passwords are refused rather than silently cut.
MAX_PASSWORD_BYTES = 72


def hash_password(password: str) -> str:
    _check_password(password)
    return bcrypt.hashpw(password.encode("utf-8"), bcrypt.gensalt()).decode("ascii")


def check_password(password: str, password_hash: str | None) -> bool:
    if not password_hash or not password:
        return False
    data = password.encode("utf-8")
    if len(data) > MAX_PASSWORD_BYTES:
        return False
    try:
        return bcrypt.checkpw(data, password_hash.encode("ascii"))
    except ValueError:  # malformed hash in the database
        return False


def _check_password(password: str) -> None:
    if not password or len(password) < MIN_PASSWORD_LENGTH:
        raise UserInputError(f"the password must have at least {MIN_PASSWORD_LENGTH} characters")
    if len(password.encode("utf-8")) > MAX_PASSWORD_BYTES:
        raise UserInputError(f"the password must be at most {MAX_PASSWORD_BYTES} bytes long (a bcrypt limit)")


def add_user(session: Session, name: str, role: str, password: str, update: bool = False) -> Annotator:
    """Create an account (or, with ``update``, reset an existing one's role and password)."""
    name = (name or "").strip()
    if not name:
        raise UserInputError("the user name must not be empty")
    if role not in ROLES:
        raise UserInputError(f"unknown role {role!r}: use one of {', '.join(ROLES)}")
    pw_hash = hash_password(password)
    user = session.exec(select(Annotator).where(Annotator.name == name)).first()
    if user is not None and not update:
        raise UserInputError(f"a user named {name!r} already exists (use --update to reset the password)")
    if user is None:
        user = Annotator(name=name, role=role, password_hash=pw_hash)
    else:
        user.role, user.password_hash, user.active = role, pw_hash, True
        revoke_user_sessions(session, user.id)  # a reset password ends the old logins
        clear_failures(session, [account_key(name)])  # ... and lifts a lock after failed logins
    session.add(user)
    session.flush()
    return user


def authenticate(session: Session, name: str, password: str) -> Annotator | None:
    """The active account with this name and password, else None (same answer for both mistakes)."""
    user = session.exec(select(Annotator).where(Annotator.name == (name or "").strip())).first()
    if user is None or not user.active:
        # Spend the same time as a real check so user names cannot be probed by timing.
        bcrypt.checkpw(b"x", _DUMMY_HASH)
        return None
    return user if check_password(password, user.password_hash) else None


class LoginOutcome(NamedTuple):
    """What a login attempt gave: the account, or None with the wait before the next try
    (``refused``: the attempt came too soon, the password was not even checked)."""

    user: Annotator | None
    wait: LoginWait | None = None
    refused: bool = False


def log_in(
    session: Session, name: str, password: str, client: str, policy: LoginPolicy | None = None
) -> LoginOutcome:
    """A login attempt from ``client`` (its address, or the browser session). Failures are counted
    per account name and per client (``workbench.throttle``); while either has to wait, the password
    is not checked, so guessing gains nothing from ignoring the wait."""
    policy = policy or LoginPolicy()
    wait = login_wait(session, [account_key(name), client_key(client)], policy)
    if wait is not None:
        return LoginOutcome(None, wait, refused=True)
    user = authenticate(session, name, password)
    if user is None:
        return LoginOutcome(None, record_failure(session, name, client, policy))
    clear_failures(session, [account_key(name)])
    return LoginOutcome(user)


def hash_session_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def create_session(session: Session, user: Annotator, hours: float | None = None) -> str:
    """Start a login for ``user`` lasting ``hours`` (None: the default 12; the app passes
    ``Settings.session_hours``). Returns the token for the browser; the database keeps its hash only."""
    now = utcnow()
    # Expired logins are dropped here, so the table stays as small as the number of live logins.
    for old in session.exec(select(StaffSession).where(StaffSession.expires_at <= now)).all():
        session.delete(old)
    token = secrets.token_urlsafe(32)
    session.add(
        StaffSession(
            annotator_id=user.id,
            token_hash=hash_session_token(token),
            created_at=now,
            expires_at=now + timedelta(hours=DEFAULT_SESSION_HOURS if hours is None else hours),
        )
    )
    session.flush()
    return token


def user_for_session(session: Session, token: str | None) -> Annotator | None:
    """The active account whose unexpired login has this token, else None."""
    if not token or not isinstance(token, str) or len(token) > 200:
        return None
    row = session.exec(
        select(StaffSession).where(StaffSession.token_hash == hash_session_token(token))
    ).first()
    if row is None:
        return None
    if row.expires_at <= utcnow():
        session.delete(row)
        return None
    user = session.get(Annotator, row.annotator_id)
    if user is None or not user.active:
        return None
    return user


def end_session(session: Session, token: str | None) -> bool:
    """Log out: the token stops working. True if a login was ended."""
    if not token or not isinstance(token, str):
        return False
    rows = session.exec(
        select(StaffSession).where(StaffSession.token_hash == hash_session_token(token))
    ).all()
    for row in rows:
        session.delete(row)
    session.flush()
    return bool(rows)


def revoke_user_sessions(session: Session, user_id: int) -> int:
    rows = session.exec(select(StaffSession).where(StaffSession.annotator_id == user_id)).all()
    for row in rows:
        session.delete(row)
    session.flush()
    return len(rows)


_DUMMY_HASH = bcrypt.hashpw(b"dummy-password", bcrypt.gensalt(rounds=12))


def users_df(session: Session) -> pd.DataFrame:
    rows = [
        {
            "name": u.name,
            "role": u.role,
            "active": u.active,
            "created_at": u.created_at,
            "has_password": bool(u.password_hash),
        }
        for u in session.exec(select(Annotator).order_by(Annotator.name)).all()
    ]
    return pd.DataFrame(rows, columns=["name", "role", "active", "created_at", "has_password"])
