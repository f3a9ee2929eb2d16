"""axe-core (WCAG 2.1 A/AA) in the real browser: which rules a page breaks, and whether the app causes them.

axe-core comes from the npm registry; scripts/setup.sh installs it into .venv/axe once. A violation
counts as the app's unless every element it names lies inside Streamlit's own chrome (the toolbar,
the status widget, the sidebar navigation), which the app does not render.
"""

from __future__ import annotations

import os

import pytest

from tests.e2e.helpers import REPO

AXE = REPO / ".venv" / "axe" / "node_modules" / "axe-core" / "axe.min.js"
# Streamlit's own chrome, not the app's content: its toolbar and status, and the sidebar navigation
# it draws from st.navigation (its section markup puts <div>s between <ul> and <li>).
STREAMLIT_CHROME = (
    '[data-testid="stToolbar"]',
    '[data-testid="stStatusWidget"]',
    '[data-testid="stHeader"]',
    '[data-testid="stSidebarNav"]',
    '[data-testid="stSidebarNavItems"]',
)


def axe_source() -> str:
    if not AXE.exists():
        if os.environ.get("CI"):
            pytest.fail(f"axe-core is missing in CI ({AXE}; scripts/setup.sh installs it with npm)")
        pytest.skip("axe-core is not installed (scripts/setup.sh installs it with npm)")
    return AXE.read_text(encoding="utf-8")


def app_violations(page, source: str) -> list[dict]:
    """The WCAG 2.1 A/AA violations of the page as it is now, without those in Streamlit's chrome."""
    if not page.evaluate("() => typeof window.axe !== 'undefined'"):
        page.add_script_tag(content=source)
    result = page.evaluate(
        """async (chrome) => {
            const r = await axe.run(document, {runOnly: {type: 'tag',
                values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa']}});
            return r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,
                nodes: v.nodes.filter(n => !n.target.some(t => chrome.some(c => {
                    const el = document.querySelector(t);
                    return el && el.closest(c);
                }))).map(n => ({target: n.target.join(' '), summary: n.failureSummary,
                    html: n.html.slice(0, 200)}))})).filter(v => v.nodes.length);
        }""",
        list(STREAMLIT_CHROME),
    )
    return result


def describe(violations: list[dict]) -> str:
    lines = []
    for v in violations:
        lines.append(f"{v['id']} ({v['impact']}): {v['help']}")
        lines += [f"    {n['target']}: {n['html']}" for n in v["nodes"][:4]]
    return "\n".join(lines)
