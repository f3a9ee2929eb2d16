"""The core stays free of Streamlit: only workbench/app/ imports it (pages read widgets, call one core
function, render). Checked on the syntax tree of every module, so lazy imports inside functions count."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORE = ["workbench", "annotation", "analysis", "db", "scenarios"]


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_only_the_app_imports_streamlit():
    offenders = []
    checked = 0
    for pkg in CORE:
        for path in (ROOT / pkg).rglob("*.py"):
            rel = path.relative_to(ROOT).as_posix()
            if rel.startswith("workbench/app/"):
                continue
            checked += 1
            if "streamlit" in _imports(path):
                offenders.append(rel)
    assert checked > 50  # the packages were found
    assert not offenders, f"only workbench/app/ may import streamlit: {offenders}"


def test_the_app_does_import_streamlit():
    assert "streamlit" in _imports(ROOT / "workbench" / "app" / "main.py")
