"""Reproduce the reference study's findings (reference-study.md section 4) from the imported labels.

Measured first on the released data (GPT-4o labels, all 3,980 conversations; Cramer's V pooled):
politeness 0.95, promise 0.82, feedback 0.76, explanation 0.73, formality 0.41, problem_solving 0.34,
order 0.22, utility 0.05, operability 0.02; Cliff's delta (agent - human) question_broadness -0.17,
context_dependency -0.28. The thresholds below leave room around those values.
"""

from __future__ import annotations

import json

import pytest

pytest.importorskip("workbench.dataio.recllmsim")

LARGE = ["problem_solving", "explanation", "promise", "feedback", "politeness", "formality"]
SMALL = ["order", "utility", "operability"]


@pytest.fixture(scope="module")
def table(reference_db):
    from analysis.compare import comparisons_df
    from analysis.dataset import load_study
    from db.engine import make_engine

    engine = make_engine(reference_db)
    data = load_study(engine, "recllmsim", features=False)
    comp = comparisons_df(data, n_boot=300, include_features=False)
    engine.dispose()
    return data, comp


def _primary(comp, scenario="all"):
    d = comp[
        (comp["scenario"] == scenario)
        & (comp["slice_by"].isin(["pooled", "scenario"]))
        & comp["test"].isin(["chi_square", "chi_square_permutation", "fisher_exact", "mann_whitney"])
    ]
    return d.set_index("dimension")


def test_default_label_source_has_coverage(table):
    data, comp = table
    assert data.label_source == "imported:recllmsim-gpt4o"
    assert "imported:recllmsim-human" in data.label_source_reason  # skipped: only 200 gold labels
    assert (comp["label_source"] == "imported:recllmsim-gpt4o").all()
    pooled = _primary(comp)
    assert pooled.loc["politeness", "n_human"] == 2124 and pooled.loc["politeness", "n_agent"] == 1856


def test_large_and_small_differences(table):
    _, comp = table
    v = _primary(comp)
    for dim in LARGE:
        assert v.loc[dim, "effect_size_name"] == "cramers_v"
        assert v.loc[dim, "ci_low"] > 0.28, dim  # at least a medium-to-large association
        assert v.loc[dim, "p_adjusted"] < 1e-10, dim
    for dim in ["explanation", "promise", "feedback", "politeness"]:
        assert v.loc[dim, "effect_size"] > 0.6, dim
    for dim in SMALL:
        assert v.loc[dim, "effect_size"] < 0.25, dim
    for dim in ["utility", "operability"]:
        assert v.loc[dim, "ci_high"] < 0.1, dim  # usefulness: consistent between the user kinds
    assert min(v.loc[d, "effect_size"] for d in LARGE) > max(v.loc[d, "effect_size"] for d in SMALL)


def _share(summary: str, value: str) -> float:
    return json.loads(summary).get(value, 0.0)


def test_directions(table):
    _, comp = table
    v = _primary(comp)
    # Agents: polite, formal, positive feedback, promises, frequent explanations.
    # Measured shares (agent vs human): Polite .998/.047, Formal .779/.498, Positive .996/.250,
    # HavePromise .956/.136, Frequent .731/.037.
    for dim, value, margin in [
        ("politeness", "Polite", 0.5),
        ("formality", "Formal", 0.2),
        ("feedback", "Positive", 0.5),
        ("promise", "HavePromise", 0.5),
        ("explanation", "Frequent", 0.5),
    ]:
        assert (
            _share(v.loc[dim, "agent_summary"], value) > _share(v.loc[dim, "human_summary"], value) + margin
        ), dim
    # Humans ask more specific and more context-dependent questions: agents score lower ...
    for dim in ["question_broadness", "context_dependency"]:
        assert v.loc[dim, "effect_size_name"] == "cliffs_delta" and v.loc[dim, "ci_high"] < -0.1, dim
    # ... except in skills learning for question broadness.
    skills = _primary(comp, "skills_learning_planning")
    assert skills.loc["question_broadness", "ci_low"] > 0
    # Agents prefer AllInOne except in gifts; humans StepByStep except in skills.
    for scen in ["travel_planning", "recipe_planning", "skills_learning_planning"]:
        assert _share(_primary(comp, scen).loc["problem_solving", "agent_summary"], "AllInOne") > 0.5, scen
    assert _share(_primary(comp, "preparing_gifts").loc["problem_solving", "agent_summary"], "AllInOne") < 0.5
    for scen in ["travel_planning", "recipe_planning", "preparing_gifts"]:
        assert _share(_primary(comp, scen).loc["problem_solving", "human_summary"], "StepByStep") > 0.5, scen
    assert _share(skills.loc["problem_solving", "human_summary"], "StepByStep") < 0.5
