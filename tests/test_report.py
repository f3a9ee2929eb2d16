"""The HTML report renders offline with every section; CSV/LaTeX beside it; agreement optional."""

from __future__ import annotations

import re

import pytest
from sqlmodel import Session, text

from analysis.features import load_pipelines
from analysis.report import REPORT_SECTIONS, analyze, latex_table, write_analysis, write_report
from analysis.synthetic import make_study


@pytest.fixture(scope="module")
def pipelines():
    return load_pipelines(trained=False)


def test_report_has_every_section_and_is_offline(sqlite_engine, pipelines, tmp_path):
    make_study(
        sqlite_engine,
        "rep",
        n_human=60,
        n_agent=60,
        seed=1,
        simulators=2,
        human_scenarios=["travel_planning", "recipe_planning"],
    )
    result = analyze(sqlite_engine, "rep", n_boot=200, pipelines=pipelines)
    paths = write_report(result, sqlite_engine, tmp_path / "report.html")
    html = paths[0].read_text(encoding="utf-8")
    for section in REPORT_SECTIONS:
        assert f'<section id="{section}">' in html, section
    # plotly.js embedded exactly once; nothing fetched from the network.
    assert html.count("plotly.js v") == 1
    assert not re.search(r"<script[^>]+src=[\"']https?:", html)
    assert "not enough data" in html  # gifts/skills have no humans
    assert "<td>None</td>" not in html and ">nan<" not in html  # empty cells are empty
    assert "Agreement not available" in html  # one label source only
    for field in (
        "llm-user-workbench",
        "codebook version",
        "feature version",
        "scripted/assistant",
        "scripted/sim-0",
        "conversations_human",
        "generated (UTC)",
        "llm:synthetic",
    ):
        assert field in html, field
    assert paths[1].suffix == ".csv" and paths[2].read_text().startswith("\\begin{tabular}")
    files = write_analysis(result, tmp_path / "an")
    assert {p.name for p in files} >= {
        "comparisons.csv",
        "comparisons.json",
        "comparisons.tex",
        "meta.json",
        "likeness_ranking.csv",
    }


def test_report_with_two_sources_shows_agreement(sqlite_engine, pipelines, tmp_path):
    from db.models import Label, LabelSource

    make_study(sqlite_engine, "agr", n_human=40, n_agent=40, seed=2)
    with Session(sqlite_engine) as s:
        src = LabelSource(name="human:alice", kind="human")
        s.add(src)
        s.flush()
        rows = s.exec(text("SELECT conversation_id, dimension, value FROM label")).all()
        for i, (cid, dim, val) in enumerate(rows):
            if i % 2 == 0:  # alice labels about half, agreeing mostly
                s.add(
                    Label(
                        conversation_id=cid, dimension=dim, value=val if i % 10 else "Other", source_id=src.id
                    )
                )
        s.commit()
    result = analyze(sqlite_engine, "agr", n_boot=200, pipelines=pipelines)
    assert result.agreement is not None and len(result.agreement)
    html = write_report(result, sqlite_engine, tmp_path / "r.html")[0].read_text(encoding="utf-8")
    assert "krippendorff_alpha" in html and "Agreement not available" not in html


def test_latex_table_of_empty_comparisons():
    import pandas as pd

    from analysis.compare import ALL_COLUMNS

    assert "tabular" in latex_table(pd.DataFrame(columns=ALL_COLUMNS))


def test_notebook_has_no_outputs_and_valid_code():
    import ast
    from pathlib import Path

    import nbformat

    nb = nbformat.read(Path(__file__).resolve().parent.parent / "analysis" / "notebook.ipynb", as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code)
    for c in code:
        ast.parse(c.source.replace("display(", "print("))


def test_p_values_read_as_numbers_and_underflow_is_not_zero():
    import pandas as pd

    from analysis.compare import ALL_COLUMNS
    from analysis.report import _table_html, format_p

    assert (format_p(0.0), format_p(1.23456e-72), format_p(0.04567), format_p(float("nan"))) == (
        "<1e-300",
        "1.23e-72",
        "0.0457",
        "",
    )
    d = pd.DataFrame({"dimension": ["a"], "p_value": [0.0], "p_adjusted": [2.5e-9], "statistic": [3.14159]})
    html = _table_html(d)
    assert "&lt;1e-300" in html and "2.5e-09" in html and "3.142" in html
    row = pd.DataFrame(
        [
            {c: None for c in ALL_COLUMNS}
            | {"slice_by": "pooled", "dimension": "x", "p_value": 0.0, "p_adjusted": 0.0, "statistic": 1.0}
        ]
    )
    assert "<1e-300" in latex_table(row)


def test_report_of_a_tiny_study_has_empty_cells_not_none(sqlite_engine, pipelines, tmp_path):
    make_study(sqlite_engine, "tiny", n_human=1, n_agent=1, seed=3)
    result = analyze(sqlite_engine, "tiny", n_boot=200, pipelines=pipelines)
    html = write_report(result, sqlite_engine, tmp_path / "report.html")[0].read_text(encoding="utf-8")
    assert "not enough data" in html
    assert "<td>None</td>" not in html and "<td>nan</td>" not in html
    provenance = html[
        html.index('<section id="provenance">') : html.index("<details><summary>all provenance")
    ]
    assert "None" not in provenance and "{" not in provenance, provenance
