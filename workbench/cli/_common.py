"""Helpers shared by the CLI modules."""

from __future__ import annotations

import os
from pathlib import Path

from db.errors import UserInputError


def _nearest_existing(path: Path) -> Path:
    p = path.absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def _check_creatable(path: Path, option: str, start: Path) -> None:
    where = _nearest_existing(start)
    if not where.is_dir():
        raise UserInputError(f"{option} {path}: {where} is a file, not a directory; choose another path")
    if not os.access(where, os.W_OK | os.X_OK):
        raise UserInputError(
            f"{option} {path}: cannot write in {where} (permission denied); choose another path"
        )


def output_file(path: Path | None, option: str) -> Path | None:
    """Check, before any work, that ``path`` can be written as a file (its directory exists or can be
    created, and it is not a directory); nothing is created here."""
    if path is None:
        return None
    if path.is_dir():
        raise UserInputError(f"{option} {path} is a directory: give a file name")
    _check_creatable(path, option, path.parent)
    return path


def output_dir(path: Path, option: str) -> Path:
    """Check, before any work, that ``path`` is a directory or can be created as one."""
    if path.exists() and not path.is_dir():
        raise UserInputError(
            f"{option} {path} is an existing file: give a directory (it is created when absent)"
        )
    _check_creatable(path, option, path)
    return path


def write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` (checked with output_file), creating its directory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def at_least(value, minimum, option: str, meaning: str = "") -> None:
    """Refuse an option value below ``minimum`` (``meaning`` says what the smallest value does)."""
    if value is not None and value < minimum:
        raise UserInputError(f"{option} must be at least {minimum}{meaning}, got {value}")
