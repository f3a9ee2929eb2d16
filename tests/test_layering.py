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


# Floors, bottom to top: a package may import only those at or below its own floor.
FLOORS = ["db", "scenarios", "annotation", "analysis", "workbench"]


def _upward_imports(path: Path, floor: int, shown: str = "") -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            mods = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            mods = [node.module]
        else:
            continue
        for mod in mods:
            top = mod.split(".")[0]
            if top in FLOORS and FLOORS.index(top) > floor:
                found.append(f"{shown or path.relative_to(ROOT).as_posix()}:{node.lineno} imports {mod}")
    return found


def test_imports_run_one_way_between_packages():
    """db <- scenarios <- annotation <- analysis <- workbench: a lower package never imports a higher
    one, also not inside a function (what it needs from above comes in as an argument)."""
    offenders, checked = [], 0
    for floor, pkg in enumerate(FLOORS):
        for path in (ROOT / pkg).rglob("*.py"):
            checked += 1
            offenders += _upward_imports(path, floor)
    assert checked > 100
    assert not offenders, "imports against the floors:\n" + "\n".join(offenders)


def test_the_floor_check_sees_lazy_imports(tmp_path):
    sample = tmp_path / "probe.py"
    sample.write_text("def f():\n    from workbench.llm import get_model\n", encoding="utf-8")
    assert _upward_imports(sample, 0, "probe.py") == ["probe.py:2 imports workbench.llm"]


# Test support: imported by the tests and benchmarks only, never by the product.
TEST_SUPPORT = ("analysis.synthetic", "workbench.testing")
TEST_SUPPORT_FILES = ("analysis/synthetic.py", "workbench/testing/")


def _imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    mods = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            mods |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            mods.add(node.module)
            mods |= {f"{node.module}.{a.name}" for a in node.names}  # from analysis import synthetic
    return mods


def test_no_product_module_imports_test_support():
    offenders, checked = [], 0
    for pkg in FLOORS:
        for path in (ROOT / pkg).rglob("*.py"):
            rel = path.relative_to(ROOT).as_posix()
            if rel.startswith(TEST_SUPPORT_FILES):
                continue
            checked += 1
            for mod in _imported_modules(path):
                if any(mod == s or mod.startswith(s + ".") for s in TEST_SUPPORT):
                    offenders.append(f"{rel} imports {mod}")
    assert checked > 100
    assert not offenders, "test support imported by the product:\n" + "\n".join(offenders)
    for support in TEST_SUPPORT_FILES:
        for path in [ROOT / support] if support.endswith(".py") else (ROOT / support).rglob("*.py"):
            doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
            assert doc.startswith("Test support: not used by the product"), path


MAX_FUNCTION_LINES = 80


def test_functions_are_short_enough_to_read_at_once():
    """No function of the product over 80 lines unless a comment in its first lines says why it must
    be long (``# long: ...``). Migrations are generated history and stay as they are."""
    offenders = []
    for pkg in FLOORS:
        for path in (ROOT / pkg).rglob("*.py"):
            if "migrations" in path.parts:
                continue
            lines = path.read_text(encoding="utf-8").splitlines()
            for node in ast.walk(ast.parse("\n".join(lines))):
                if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    continue
                length = node.end_lineno - node.lineno + 1
                head = lines[node.lineno - 1 : node.lineno + 8]
                if length > MAX_FUNCTION_LINES and not any("# long:" in line for line in head):
                    offenders.append(
                        f"{path.relative_to(ROOT).as_posix()}:{node.lineno} {node.name} ({length})"
                    )
    assert not offenders, "split these (or say why they must be long):\n" + "\n".join(offenders)
