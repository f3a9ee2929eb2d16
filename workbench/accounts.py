"""Accounts of the people who log in (annotators and researchers), with bcrypt-hashed passwords."""

from __future__ import annotations

from typing import Optional

import bcrypt
import pandas as pd
from sqlmodel import Session, select

from db.models import Annotator
from workbench.errors import UserInputError

ROLES = ("annotator", "researcher")
MIN_PASSWORD_LENGTH = 8
# bcrypt only looks at the first 72 bytes; longer passwords are refused rather than silently cut.
MAX_PASSWORD_BYTES = 72


def hash_password(password: str) -> str:
    _check_password(password)
    return bcrypt.hashpw(password.encode("utf-8"), bcrypt.gensalt()).decode("ascii")


def check_password(password: str, password_hash: Optional[str]) -> bool:
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
    session.add(user)
    session.flush()
    return user


def authenticate(session: Session, name: str, password: str) -> Optional[Annotator]:
    """The active account with this name and password, else None (same answer for both mistakes)."""
    user = session.exec(select(Annotator).where(Annotator.name == (name or "").strip())).first()
    if user is None or not user.active:
        # Spend the same time as a real check so user names cannot be probed by timing.
        bcrypt.checkpw(b"x", _DUMMY_HASH)
        return None
    return user if check_password(password, user.password_hash) else None


_DUMMY_HASH = bcrypt.hashpw(b"dummy-password", bcrypt.gensalt(rounds=12))


def users_df(session: Session) -> pd.DataFrame:
    rows = [
        {"name": u.name, "role": u.role, "active": u.active, "created_at": u.created_at,
         "has_password": bool(u.password_hash)}
        for u in session.exec(select(Annotator).order_by(Annotator.name)).all()
    ]
    return pd.DataFrame(rows, columns=["name", "role", "active", "created_at", "has_password"])
