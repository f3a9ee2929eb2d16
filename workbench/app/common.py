"""Helpers shared by the pages: the database, safe text rendering, one-call actions."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any

import streamlit as st
from sqlalchemy.engine import Engine

from db.engine import session_scope
from db.errors import WorkbenchError
from db.settings import Settings

# What the core logs (e.g. a failed assistant reply, with its details) goes to the server's stderr
# with a time stamp: Streamlit configures only its own logger.
_log = logging.getLogger("workbench")
if not _log.handlers:
    _handler = logging.StreamHandler()
    _handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    _log.addHandler(_handler)

_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$:=^&])")


def escape_markdown(text: str | None) -> str:
    """Text shown through st.markdown exactly as typed: no links, images, HTML, LaTeX or directives."""
    if not text:
        return ""
    escaped = _MD_SPECIAL.sub(r"\\\1", str(text))
    # Backslash escapes do not stop Streamlit's text-node rewrites (":material/x:", emoji codes,
    # bare-URL and e-mail autolinks); the same word joiners as in replies do.
    escaped = _WWW.sub(r"\1" + _WJ, _AT.sub("@" + _WJ, _SHORTCODE.sub(r"\1" + _WJ, escaped)))
    return escaped.replace("\r\n", "\n").replace("\n", "  \n")


def table(df, **kwargs) -> None:
    """``st.dataframe`` with empty text cells left empty (Streamlit prints a grey "None" for a
    missing value); numeric columns keep their type, so they still sort as numbers."""
    import pandas as pd

    shown = df.copy()
    for col in shown.columns:
        if pd.api.types.is_object_dtype(shown[col]) or pd.api.types.is_string_dtype(shown[col]):
            shown[col] = shown[col].astype(object).where(shown[col].notna(), "")
    st.dataframe(shown, **kwargs)


def show_text(text: str | None) -> None:
    st.markdown(escape_markdown(text))


# --- assistant replies: markdown structure kept, everything that could load or link neutralised ---
# Only these survive unescaped: line-leading headings, quotes, list markers and rules, emphasis
# (* and _), table pipes and delimiter rows, and code (literal by definition). Everything else is
# backslash-escaped, so no link, image, HTML, entity, LaTeX or directive can form.
_REPLY_SPECIAL = re.compile(r"([\\`{}\[\]()#+\-.!<>~$:=^&])")
# Streamlit and GFM also rewrite *text nodes* (after escapes are resolved) by regex: ":material/x:",
# ":streamlit:", emoji ":name:", bare "https://", "www." and e-mail autolinks. A word joiner
# (U+2060, invisible) after the colon / "@" and before "www"'s dot breaks those patterns.
_WJ = "\u2060"
_SHORTCODE = re.compile(r"(\\:)(?=[\w+\-/\\])")
_AT = re.compile(r"@(?=[\w\-])")
_WWW = re.compile(r"(www)(?=\\\.)", re.IGNORECASE)
_IMG_MD = re.compile(r"!\[((?:[^\[\]\n]|\[[^\[\]\n]*\])*)\](?:\([^)\n]*\)?|\[[^\]\n]*\])?")
_IMG_TAG = re.compile(r"<img\b[^>]*>?", re.IGNORECASE)
_IMG_ALT = re.compile(r"""\balt\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s>]+))""", re.IGNORECASE)
_LINK_MD = re.compile(r"\[((?:[^\[\]\n]|\[[^\[\]\n]*\])*)\]\(\s*<?([^)\s>]*)>?(?:\s+[\"'(][^)]*)?\)")
_FENCE_OPEN = re.compile(r"(`{3,})[^`]*$|(~{3,}).*$")
_LINE_PREFIX = re.compile(r"[ \t]*(?:>[ \t]?)*[ \t]*(?:(?:[-*+]|\d{1,9}[.)]|#{1,6})(?=[ \t]|$)[ \t]*)?")
_RULE = re.compile(r"[ \t]*(?:>[ \t]?)*[ \t]*([-*_])(?:[ \t]*\1){2,}[ \t]*$")
_TABLE_DELIM = re.compile(r"[ \t]*\|?[ \t]*:?-+:?[ \t]*(?:\|[ \t]*:?-+:?[ \t]*)*\|?[ \t]*$")
_TICKS = re.compile(r"`+")
# GFM strikethrough (~~text~~, no space inside the tildes) and task-list boxes after a list marker:
# both only format, so they are left to the parser.
_STRIKE = re.compile(r"(?<!~)~~(?=[^\s~])(.*?[^\s~\\])~~(?!~)")
_TASK = re.compile(r"\[[ xX]\](?=[ \t])")
_LIST_MARKER = re.compile(r"(?:[-*+]|\d{1,9}[.)])[ \t]+$")


def _plain(text: str) -> str:
    """Escape one run of inline text (no code in it); ~~strikethrough~~ pairs keep their tildes."""
    text, out, pos = _neutralise(text), [], 0
    for m in _STRIKE.finditer(text):
        out += [_escape_run(text[pos : m.start()]), "~~", _escape_run(m.group(1)), "~~"]
        pos = m.end()
    out.append(_escape_run(text[pos:]))
    return "".join(out)


def _escape_run(text: str) -> str:
    out = _REPLY_SPECIAL.sub(r"\\\1", text)
    out = _SHORTCODE.sub(r"\1" + _WJ, out)
    out = _AT.sub("@" + _WJ, out)
    return _WWW.sub(r"\1" + _WJ, out)


def _inline(text: str) -> str:
    """Escape a line's text, keeping `code spans` literal (paired exactly as CommonMark pairs them)."""
    out, pos, runs = [], 0, list(_TICKS.finditer(text))
    i = 0
    while i < len(runs):
        run = runs[i]
        closer = next((j for j in range(i + 1, len(runs)) if len(runs[j].group()) == len(run.group())), None)
        out.append(_plain(text[pos : run.start()]))
        if closer is None:  # an unmatched run is literal text; escaped so the parser agrees
            out.append("\\`" * len(run.group()))
            pos, i = run.end(), i + 1
        else:
            out.append(text[run.start() : runs[closer].end()])
            pos, i = runs[closer].end(), closer + 1
    out.append(_plain(text[pos:]))
    return "".join(out)


def _neutralise(line: str) -> str:
    """Turn images into a text placeholder and links into "text (url)" before escaping."""
    line = _IMG_TAG.sub(lambda m: _img_alt(m.group(0)), line)
    line = _IMG_MD.sub(lambda m: f"[image: {m.group(1)}]" if m.group(1).strip() else "[image]", line)
    return _LINK_MD.sub(lambda m: f"{m.group(1)} ({m.group(2)})" if m.group(2) else m.group(1), line)


def _img_alt(tag: str) -> str:
    m = _IMG_ALT.search(tag)
    alt = next((g for g in m.groups() if g), "") if m else ""
    return f"[image: {alt}]" if alt else "[image]"


def safe_markdown(text: str | None) -> str:
    """An assistant reply as markdown with its structure (headings, bold, lists, tables, code) but
    nothing that loads, links or runs (strikethrough and task lists are kept too): images become "[image: alt]", links "text (url)", and HTML,
    LaTeX, Streamlit directives, emoji shortcodes and bare URLs are shown as typed."""
    if not text:
        return ""
    lines = str(text).replace("\r\n", "\n").replace("\r", "\n").split("\n")
    out: list[str] = []
    fence: str | None = None  # the open fence's run, e.g. "```"
    for line in lines:
        if fence is not None:
            out.append(line)
            # CommonMark's closing fence exactly, so our idea of "inside code" never drifts from the parser's
            if re.fullmatch(r" {0,3}" + re.escape(fence[0]) + "{" + str(len(fence)) + r",}[ \t]*", line):
                fence = None
            continue
        m = _FENCE_OPEN.match(line)  # only at column 0; indented fences are escaped like any text
        if m:
            fence = m.group(1) or m.group(2)
            out.append(line)
            continue
        if not line.strip():
            out.append("")
        elif _RULE.fullmatch(line) or _TABLE_DELIM.fullmatch(line):
            out.append(line)
        else:
            prefix = _LINE_PREFIX.match(line).group(0)
            rest = line[len(prefix) :]
            task = _TASK.match(rest) if _LIST_MARKER.search(prefix) else None
            if task:  # "- [ ] item" / "- [x] item": a (disabled) checkbox, not a link
                prefix, rest = prefix + task.group(0), rest[task.end() :]
            out.append(prefix + _inline(rest) + "  ")
    return "\n".join(out)


def show_reply(text: str | None) -> None:
    """An assistant turn: readable markdown, nothing in it can load, link or run."""
    st.markdown(safe_markdown(text))


def show_turn(role: str, text: str | None) -> None:
    """A chat turn: assistant replies as safe markdown, everything else exactly as typed."""
    if role == "assistant":
        show_reply(text)
    else:
        show_text(text)


def hide_input_hints(language: str) -> None:
    """Hide Streamlit's own input hints ("Press Enter to submit form", "Press Ctrl+Enter to apply",
    character counters) on pages in a language other than English: Streamlit writes them in English
    only, which on a Chinese page is noise for the reader (and, on the labelling page, a hint of
    another language next to the conversation)."""
    if language != "en":
        st.html("<style>[data-testid='InputInstructions']{display:none}</style>")


def settings() -> Settings:
    """The settings from the environment, read afresh on each call (cheap), so every page run sees
    the environment the server runs in."""
    return Settings.from_env()


def engine() -> Engine:
    """The configured database with its schema up to date (checked once per URL and process)."""
    from db.engine import ready_engine

    return ready_engine(settings().db_url)


def run_action(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run one core function in a transaction; a user mistake becomes a message on the page."""
    try:
        with session_scope(engine()) as session:
            return fn(session, *args, **kwargs)
    except WorkbenchError as exc:
        st.session_state["_flash"] = str(exc)
        return None


def show_flash() -> None:
    msg = st.session_state.pop("_flash", None)
    if msg:
        st.error(escape_markdown(msg))


def study_names(eng: Engine) -> list[str]:
    """The studies' names; stops the page with a note when there are none yet."""
    from workbench.participation.console import study_names as names_of

    with session_scope(eng) as s:
        names = names_of(s)
    if not names:
        st.info("No studies yet.")
        st.stop()
    return names


def codebook_or_stop():
    """The configured codebook; a page that needs it stops with the loader's message (file and
    field) when it cannot be loaded."""
    from annotation.codebook import load_codebook

    try:
        return load_codebook(extensions=settings().codebook_extensions)
    except WorkbenchError as exc:
        st.error(escape_markdown(f"The codebook cannot be loaded: {exc}"))
        st.stop()
