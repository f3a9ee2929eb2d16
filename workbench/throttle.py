"""Slowing down password guessing: failed logins counted per account name and per client.

Each failure after the first makes the next attempt with the same key wait: 1, 2, 4... seconds (at most
``MAX_DELAY_SECONDS``), and the ``max_failures``-th failure locks the key for ``lock_minutes``,
each further failure doubling the lock (at most a day). A client (its address) gets
``CLIENT_FACTOR`` times as many failures before its own lock, so one person's typos lock the account
they mistyped, not their computer, while an address trying many accounts is stopped by its own
count. The counts live in the database (table ``loginthrottle``) so every app server that shares it
sees them; unknown account names are counted like known ones (the answer does not tell them apart).
A success clears the account's count; ``workbench users add NAME --update`` lifts its lock.

Example::

    policy = LoginPolicy(max_failures=5, lock_minutes=5)
    wait = login_wait(session, [account_key("rita"), client_key("10.0.0.7")], policy)
    if wait is None and not password_ok:
        wait = record_failure(session, "rita", "10.0.0.7", policy)
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import case, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from db.models.accounts import LoginThrottle
from db.settings import DEFAULT_LOGIN_LOCK_MINUTES, DEFAULT_LOGIN_MAX_FAILURES
from db.types import utcnow

log = logging.getLogger(__name__)

CLIENT_FACTOR = 4
MAX_DELAY_SECONDS = 30.0
MAX_LOCK = timedelta(days=1)
# A key with no failure for this long starts counting afresh.
FORGET_AFTER = timedelta(days=1)
_KEY_CHARS = 290


@dataclass(frozen=True)
class LoginPolicy:
    """How many failures lock an account, and for how long at first (``Settings.login_*``)."""

    max_failures: int = DEFAULT_LOGIN_MAX_FAILURES
    lock_minutes: float = DEFAULT_LOGIN_LOCK_MINUTES

    def threshold(self, key: str) -> int:
        return self.max_failures * (CLIENT_FACTOR if key.startswith("client:") else 1)

    def wait_after(self, key: str, failures: int) -> tuple[timedelta, bool]:
        """How long the key waits after its ``failures``-th failure, and whether that is a lock."""
        over = failures - self.threshold(key)
        if over < 0:
            # A single typo costs nothing; then 1, 2, 4... seconds.
            seconds = 0.0 if failures < 2 else min(2.0 ** (failures - 2), MAX_DELAY_SECONDS)
            return timedelta(seconds=seconds), False
        minutes = self.lock_minutes * 2.0 ** min(over, 20)
        return min(timedelta(minutes=minutes), MAX_LOCK), True


@dataclass(frozen=True)
class LoginWait:
    """A login refused before the password is looked at: how long until the next try."""

    until: datetime
    locked: bool

    def seconds(self, now: datetime | None = None) -> int:
        return max(1, math.ceil((self.until - (now or utcnow())).total_seconds()))

    def message(self, now: datetime | None = None) -> str:
        secs = self.seconds(now)
        if not self.locked:
            return f"Too many failed logins: wait {secs} second{'s' * (secs != 1)} and try again."
        minutes = math.ceil(secs / 60)
        return (
            f"Too many failed logins: logging in is locked for {minutes} minute{'s' * (minutes != 1)} "
            f"(until {self.until:%H:%M} UTC). A researcher can lift the lock by resetting the password."
        )


def account_key(name: str) -> str:
    return "account:" + (name or "").strip()[:_KEY_CHARS]


def client_key(client: str) -> str:
    return "client:" + (client or "")[:_KEY_CHARS]


def login_wait(
    session: Session, keys: list[str], policy: LoginPolicy, now: datetime | None = None
) -> LoginWait | None:
    """The longest wait among ``keys`` (None: a login may be tried now)."""
    now = now or utcnow()
    rows = session.exec(select(LoginThrottle).where(LoginThrottle.key.in_(keys))).all()
    waits = [r for r in rows if r.locked_until is not None and r.locked_until > now]
    if not waits:
        return None
    row = max(waits, key=lambda r: r.locked_until)
    return LoginWait(until=row.locked_until, locked=row.failures >= policy.threshold(row.key))


def record_failure(
    session: Session, name: str, client: str, policy: LoginPolicy, now: datetime | None = None
) -> LoginWait:
    """Count a failed login for the account name and the client; returns the wait it brings (a
    lock is logged as one warning line)."""
    now = now or utcnow()
    waits = [_count(session, key, policy, now) for key in (account_key(name), client_key(client))]
    session.flush()
    return max(waits, key=lambda w: w.until)


def _count(session: Session, key: str, policy: LoginPolicy, now: datetime) -> LoginWait:
    """One more failure for ``key`` (an atomic increment, so app servers sharing the database
    cannot lose one), and the wait it brings."""
    stale = now - FORGET_AFTER
    bump = (
        update(LoginThrottle)
        .where(LoginThrottle.key == key)
        .values(
            failures=case((LoginThrottle.last_failure < stale, 1), else_=LoginThrottle.failures + 1),
            last_failure=now,
        )
    )
    if session.execute(bump).rowcount == 0:
        try:
            with session.begin_nested():
                session.add(LoginThrottle(key=key, failures=1, last_failure=now))
        except IntegrityError:  # another server inserted it first
            session.execute(bump)
    row = session.exec(
        select(LoginThrottle).where(LoginThrottle.key == key).execution_options(populate_existing=True)
    ).one()
    wait, locked = policy.wait_after(key, row.failures)
    until = now + wait
    row.locked_until = max(until, row.locked_until) if row.locked_until else until
    session.add(row)
    if locked:
        log.warning(
            "login locked for %s after %d failed logins, until %s UTC",
            key,
            row.failures,
            f"{row.locked_until:%Y-%m-%d %H:%M:%S}",
        )
    return LoginWait(until=row.locked_until, locked=locked)


def clear_failures(session: Session, keys: list[str]) -> int:
    """Forget the failures (and so lift the lock) of ``keys``; returns how many were kept."""
    rows = session.exec(select(LoginThrottle).where(LoginThrottle.key.in_(keys))).all()
    for row in rows:
        session.delete(row)
    session.flush()
    return len(rows)
