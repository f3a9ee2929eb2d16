"""safe_markdown: assistant replies keep their markdown structure; nothing in them loads, links or runs."""

from __future__ import annotations

import re

from workbench.app.safe_text import safe_markdown

UNSAFE = re.compile(r"(?<!\\)(<|!\[|\]\(|\[|\$|:[a-z])")  # an unescaped tag, image, link, math or directive


def test_structure_is_kept():
    md = safe_markdown(
        "## Top picks\n**Dune** and *Emma*\n\n1. one\n- two\n> quote\n---\n| a | b |\n|---|:-:|\n| 1 | 2 |"
    )
    lines = md.split("\n")
    assert lines[0].startswith("## Top picks") and "**Dune** and *Emma*" in lines[1]
    assert lines[3].startswith("1. one") and lines[4].startswith("- two") and lines[5].startswith("> quote")
    assert "---" in lines and "|---|:-:|" in lines and lines[7].startswith("| a | b |")


def test_images_links_html_math_and_directives_are_neutralised():
    evil = (
        '![x](http://127.0.0.1:9/t.png) ![r][ref] <img src=x alt="cat" onerror=alert(1)> <script>alert(1)</script> '
        "[click](javascript:alert(1)) <https://a.example> :red[big] :material/home: :streamlit: :smile: "
        "$x$ $$y$$ &#58;red https://b.example www.c.example d@e.example"
    )
    md = safe_markdown(evil)
    assert not UNSAFE.search(md), md
    assert "![" not in md and "](" not in md
    assert "\\[image\\: x\\]" in md and "\\[image\\: cat\\]" in md and "click \\(javascript" in md
    # text-node rewrites (icons, emoji, autolinks) are broken by an invisible word joiner
    for pattern in (":material/", ":streamlit:", ":smile:", "https://", "www.", "@e"):
        assert pattern not in md.replace("\\", "")


def test_code_is_literal_and_fences_match_commonmark():
    md = safe_markdown("Use `a[b](c)` here\n```\n![x](y)\n```\nafter ![z](w)")
    assert "`a[b](c)`" in md and "\n![x](y)\n" in md  # inside code: shown as typed, never rendered
    assert md.endswith("after \\[image\\: z\\]  ")
    # an indented or unmatched fence is escaped, so the parser never sees code where we see text
    md = safe_markdown(" ```\n![x](y)\n```` x")
    assert "![" not in md and "\\`\\`\\`" in md
    assert safe_markdown("a ` b ![x](y)").count("\\`") == 1


def test_empty_and_line_endings():
    assert safe_markdown(None) == "" and safe_markdown("") == ""
    assert safe_markdown("a\r\nb\rc") == "a  \nb  \nc  "


def test_user_text_breaks_streamlit_text_rewrites():
    """User turns stay literal: no icon shortcodes, emoji codes or autolinks can form."""
    from workbench.app.safe_text import escape_markdown

    out = escape_markdown(":material/home: :smile: me@x.org www.example.com https://a.b")
    for pattern in (":material/", ":smile:", "me@x", "www\\.", "https\\://"):
        assert pattern not in out, pattern
    assert (
        out.replace("\u2060", "").replace("\\", "")
        == ":material/home: :smile: me@x.org www.example.com https://a.b"
    )


def test_strikethrough_and_task_lists_render_but_cannot_link():
    md = safe_markdown(
        "was ~~40 EUR~~ now 30\n- [ ] book\n- [x] pack\n1. [X] go\n[ ] not a list\n~~ spaced ~~"
    )
    lines = md.split("\n")
    assert lines[0] == "was ~~40 EUR~~ now 30  "
    assert lines[1:4] == ["- [ ] book  ", "- [x] pack  ", "1. [X] go  "]
    assert lines[4].startswith("\\[ \\]") and lines[5].startswith("\\~\\~")
    # neither opens a way to a link: the box needs a space after it, the tildes' content is escaped
    md = safe_markdown("- [ ](javascript:alert(1))\n~~[x](http://127.0.0.1:9/)~~\n- [x] [y](z)")
    assert not UNSAFE.search(md.replace("- [ ] ", "").replace("- [x] ", "")), md
    assert "](" not in md
