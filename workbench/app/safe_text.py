"""Text for ``st.markdown`` that cannot load, link or run anything.

``escape_markdown`` shows text exactly as typed (participants' messages, names, error messages);
``safe_markdown`` keeps an assistant reply's markdown structure but neutralises images, links, HTML,
LaTeX, Streamlit directives, emoji shortcodes and autolinks. Pure functions: no streamlit here.
"""

from __future__ import annotations

import re

# Assistant replies: markdown structure kept, everything that could load or link neutralised.
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
