"""What the importers refuse: files over the size limit, text that is not UTF-8, overlong turns.

The limits come from ``Settings`` (``WORKBENCH_MAX_IMPORT_MB``, ``WORKBENCH_MAX_TURN_CHARS``); the
text pipelines downstream (spaCy, vectorisers) would fail or crawl on a turn of millions of
characters, so the importers keep such turns out with a clear reason instead.
"""

from __future__ import annotations

from pathlib import Path

from db.errors import UserInputError


def check_file_size(file: Path, max_mb: float) -> None:
    """Refuse a file over ``max_mb`` megabytes before reading it (WORKBENCH_MAX_IMPORT_MB)."""
    if file.is_file() and file.stat().st_size > max_mb * 1024 * 1024:
        raise UserInputError(
            f"{file} is {file.stat().st_size / 1024 / 1024:,.1f} MB, over the import limit of "
            f"{max_mb:g} MB (WORKBENCH_MAX_IMPORT_MB); nothing was imported"
        )


def decode_utf8(raw: bytes, file: Path, start: int = 0) -> str:
    """``raw`` as text, or a one-line error naming the file and the byte offset (in the file) of the
    first byte that is not UTF-8."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserInputError(
            f"{file}: not UTF-8 text (byte {raw[exc.start]:#04x} at byte offset {start + exc.start}); "
            "convert the file to UTF-8 (e.g. iconv -f <encoding> -t utf-8). Nothing was imported"
        ) from None


def check_turn_lengths(turns: list[dict], max_chars: int, error: type[Exception]) -> None:
    """Raise ``error`` (the importer's malformed-input exception) for the first turn over ``max_chars``."""
    for t in turns:
        if len(t["content"]) > max_chars:
            raise error(
                f"turn {t['index']} has {len(t['content']):,} characters, over the limit of "
                f"{max_chars:,} (WORKBENCH_MAX_TURN_CHARS)"
            )
