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
    assert "<th>Krippendorff's alpha</th>" in html and "Agreement not available" not in html
    assert "Agreement between label sources (krippendorff alpha)" in html  # the heatmap


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


def test_report_leads_with_findings_readable_names_and_downloads(sqlite_engine, pipelines, tmp_path):
    make_study(sqlite_engine, "lead", n_human=40, n_agent=40, seed=4)
    result = analyze(sqlite_engine, "lead", n_boot=100, pipelines=pipelines)
    html = write_report(result, sqlite_engine, tmp_path / "report.html")[0].read_text(encoding="utf-8")
    # the answer first: findings with effect size, interval and the row they come from
    assert html.index('<section id="findings">') < html.index('<section id="summary">')
    findings = html[html.index('<section id="findings">') : html.index('<section id="summary">')]
    findings = " ".join(findings.split())
    assert re.search(r"Cramer&#39;s V \d\.\d\d \[\d\.\d\d, \d\.\d\d\]", findings)
    assert re.search(r"Row: politeness / chi_square(_permutation)? / all", findings)
    assert "40 of 40 people's and 40 of 40 simulated-user conversations have labels" in findings
    assert "Fidelity of the simulators" in findings and "human-likeness index" in findings
    # codebook titles, not ids, in table headers and figures; label titles, not codes
    assert "<th>effect_size_name</th>" not in html and "<th>Effect size</th>" in html
    assert "Problem-solving approach" in html and "No feedback" in html
    # dimensions in codebook group order (strategy before interaction style before evaluation)
    summary = html[html.index('<section id="summary">') : html.index('<section id="comparisons">')]
    assert summary.index("Problem-solving approach") < summary.index("Politeness") < summary.index("Utility")
    # every figure downloadable as SVG and PNG; every table as CSV and LaTeX
    n_figs = html.count('class="plotly-graph-div"')
    assert n_figs >= 10
    assert html.count("format: 'svg'") == n_figs and html.count("format: 'png'") == n_figs
    n_tables = html.count('class="tbl" id="t-')
    assert n_tables >= 5 and html.count('.csv" href="data:text/csv') == n_tables
    assert html.count('.tex" href="data:application/x-tex') == n_tables
    # no absolute paths in the provenance
    assert str(tmp_path) not in html and "/tmp/" not in html


def test_small_study_report_says_what_could_not_be_computed(sqlite_engine, pipelines, tmp_path):
    make_study(sqlite_engine, "few", n_human=4, n_agent=5, seed=3, n_participants=2)
    with Session(sqlite_engine) as s:
        first = s.exec(text("SELECT MIN(conversation_id) FROM label")).one()[0]
        s.exec(text(f"DELETE FROM label WHERE conversation_id <> {first}"))
        s.commit()
    result = analyze(sqlite_engine, "few", n_boot=50, pipelines=pipelines)
    html = write_report(result, sqlite_engine, tmp_path / "report.html")[0].read_text(encoding="utf-8")
    findings = html[html.index('<section id="findings">') : html.index('<section id="summary">')]
    findings = " ".join(findings.split())
    assert "1 of 4 people's and 0 of 5 simulated-user conversations have labels" in findings
    assert "Not computed, and why" in findings
    assert (
        "(11 label dimensions): not enough labelled conversations to compare (1 of people, 0 of simulated"
        in findings
    )
    assert "No simulator could be ranked" in findings


def test_findings_in_plain_words():
    import pandas as pd

    from analysis.findings import Names, findings_df, magnitude
    from annotation.codebook import load_codebook

    row = {
        "dimension": "promise",
        "scenario": "all",
        "test": "chi_square",
        "p_adjusted": 0.0,
        "effect_size_name": "cramers_v",
        "effect_size": 0.82,
        "ci_low": 0.80,
        "ci_high": 0.83,
        "n_human": 2124,
        "n_agent": 1856,
        "kind": "label",
        "slice_by": "pooled",
        "human_summary": '{"HavePromise": 0.14, "NoPromise": 0.86}',
        "agent_summary": '{"HavePromise": 0.96, "NoPromise": 0.04}',
    }
    out = findings_df(pd.DataFrame([row]), Names.of(load_codebook()))
    f = out.iloc[0]
    assert f["title"] == "Promise" and f["effect"] == "Cramer's V 0.82 [0.80, 0.83]"
    assert f["finding"] == (
        "large difference: “Makes a promise” in 96% of simulated-user conversations vs 14% of people's"
    )
    assert f["row"] == "promise / chi_square / all"
    # Romano et al. (2006) thresholds for Cliff's delta; Cohen (1988) for V
    assert [magnitude("cliffs_delta", x) for x in (0.1, -0.2, 0.4, 0.5)] == [
        "negligible",
        "small",
        "medium",
        "large",
    ]
    assert magnitude("cramers_v", 0.82) == "large"
