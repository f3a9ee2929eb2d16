"""The participants' instruments, people vs simulated users (analysis.instruments): comparison rows,
survey_mae with its human ceiling, per-reply alignment of twins, and the wiring into analyze."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from analysis.dataset import load_study
from analysis.instruments import (
    ITEM_PREFIX,
    ItemScale,
    _alignment,
    build_instruments,
    coded_items,
    instrument_comparisons_df,
    item_errors,
    item_scale,
    load_instruments,
    survey_mae_records,
    twin_alignment_records,
)
from analysis.synthetic import add_instruments, make_study


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    from db.engine import make_engine
    from db.migrate import upgrade

    eng = make_engine(f"sqlite:///{tmp_path_factory.mktemp('inst') / 'i.db'}")
    upgrade(eng)
    sid = make_study(
        eng,
        "inst",
        n_human=160,
        n_agent=320,
        simulators=2,
        assistants=3,
        twins=True,
        seed=3,
        n_participants=24,
        with_labels=False,
    )
    add_instruments(eng, sid, seed=3, modes={"sim-0": "copy", "sim-1": "positive"})
    data = load_study(eng, "inst", features=False)
    yield eng, data, load_instruments(eng, data)
    eng.dispose()


def test_items_discovered_from_the_data():
    # numbers -> ordinal over their range; ORDERED_ITEMS in their order; other choices nominal;
    # free text (many distinct answers) left out; a Likert definition gives the scale.
    assert item_scale("Ease", pd.Series(["2", "7", "5"])) == ItemScale(
        "Ease", "ordinal", [str(k) for k in range(2, 8)]
    )
    assert item_scale("Availability", pd.Series(["somewhat", "unusable"])).categories == [
        "unusable",
        "somewhat",
        "very_useful",
    ]
    assert item_scale("Memorization", pd.Series(["yes", "no"])).scale == "nominal"
    assert item_scale("Comment", pd.Series([f"text {i}" for i in range(30)])) is None
    assert item_scale("Calm", pd.Series(["3"]), {"type": "likert", "scale": [1, 7]}).categories[-1] == "7"
    assert item_scale("Hours", pd.Series(["1.5", "20"])).scale == "continuous"


def test_survey_error_hand_computed():
    # Two conditions. Ordinal item scored (0, 0.5, 1): condition 1 people mean 0.5 (0 and 1), the
    # simulator 1 -> 0.5; condition 2 people 0.5, simulator 0.5 -> 0; the item's error 0.25.
    # Nominal item: condition 1 people {a: 1}, simulator {b: 1} -> TVD 1; condition 2 both {a: 1} -> 0.
    frame = pd.DataFrame(
        {
            ITEM_PREFIX + "U": ["lo", "hi", "hi", "mid", "mid"],
            ITEM_PREFIX + "N": ["a", "a", "b", "a", "a"],
        }
    )
    items = {"U": ItemScale("U", "ordinal", ["lo", "mid", "hi"]), "N": ItemScale("N", "nominal", ["a", "b"])}
    cells = np.array([0, 0, 0, 1, 1])
    people, sim = np.array([0, 1, 3]), np.array([2, 4])
    errors = item_errors(coded_items(frame, items), cells, 2, people, sim)
    assert errors == pytest.approx({"U": 0.25, "N": 0.5})


def test_comparison_rows(study):
    _, _, inst = study
    comp = instrument_comparisons_df(inst, n_boot=100)
    assert set(comp["kind"]) == {"instrument"}
    assert comp["family"].str.startswith("instruments:").all()
    dims = set(comp["dimension"])
    assert {
        "satisfaction",
        "made_up_share",
        "post_task:Availability",
        "post_task:Ease",
        "post_task:Memorization",
    } <= dims
    assert {"pooled", "scenario", "simulator", "reply_position", "simulator_reply_position"} <= set(
        comp["slice_by"]
    )
    # the "positive" simulator is far more satisfied than people: the clustered row sees it
    row = comp[
        (comp["dimension"] == "satisfaction")
        & (comp["slice"] == "sim-1")
        & (comp["test"] == "ols_cluster_robust")
    ]
    assert row["effect_size"].iloc[0] > 1 and row["p_value"].iloc[0] < 1e-6
    copy = comp[
        (comp["dimension"] == "satisfaction")
        & (comp["slice"] == "sim-0")
        & (comp["test"] == "ols_cluster_robust")
    ]
    assert copy["ci_low"].iloc[0] < 0 < copy["ci_high"].iloc[0]


def test_clustered_row_matches_compare_on_the_same_frame(study):
    # The instrument rows run the label rows' tests: the same statsmodels cluster-robust estimate.
    import statsmodels.api as sm

    _, _, inst = study
    comp = instrument_comparisons_df(inst, n_boot=50)
    row = comp[
        (comp["dimension"] == "made_up_share")
        & (comp["slice_by"] == "pooled")
        & (comp["test"] == "ols_cluster_robust")
    ].iloc[0]
    c = inst.conversations.dropna(subset=["made_up_share"])
    h, a = c[c["user_kind"] == "human"], c[c["user_kind"] == "agent"]
    y = np.r_[h["made_up_share"], a["made_up_share"]]
    groups = np.r_[pd.factorize(h["participant"])[0], 1000 + np.arange(len(a))]
    fit = sm.OLS(y, sm.add_constant(np.r_[np.zeros(len(h)), np.ones(len(a))])).fit(
        cov_type="cluster", cov_kwds={"groups": groups}
    )
    assert row["effect_size"] == pytest.approx(fit.params[1])


def test_survey_mae_and_ceiling(study):
    _, _, inst = study
    recs = {(r["simulator"], r["group"]): r for r in survey_mae_records(inst, splits=20, n_boot=50)}
    copy, positive = recs[("sim-0", "survey")], recs[("sim-1", "survey")]
    assert copy["value"] < positive["value"]
    assert copy["human_ceiling"] is not None and copy["n_splits"] == 20
    assert copy["ci_low"] <= copy["value"] <= copy["ci_high"]
    assert positive["calibrated"] < copy["calibrated"]
    assert ("sim-0", "item:Availability") in recs and copy["note"] == "matched on conditions"


def test_twin_alignment_against_sklearn_and_krippendorff(study):
    from sklearn.metrics import cohen_kappa_score

    krippendorff = pytest.importorskip("krippendorff")
    rng = np.random.default_rng(0)
    h = rng.integers(1, 6, size=60)
    a = np.clip(h + rng.integers(-1, 2, size=60), 1, 5)
    kappa, alpha = _alignment(h, a)
    # independent implementations: sklearn's weighted kappa; the krippendorff package (Castro 2017)
    assert kappa == pytest.approx(cohen_kappa_score(h, a, weights="quadratic"))
    ref = krippendorff.alpha(
        reliability_data=np.vstack([h, a]).astype(float),
        level_of_measurement="ordinal",
        value_domain=[1, 2, 3, 4, 5],
    )
    assert alpha == pytest.approx(ref)
    _, _, inst = study
    recs = {(r["simulator"], r["metric"]): r for r in twin_alignment_records(inst, n_boot=50)}
    assert recs[("sim-0", "twin_weighted_kappa")]["value"] > 0.8  # a twin copying its person
    assert recs[("sim-1", "twin_weighted_kappa")]["value"] < 0.5  # always pleased


def test_without_instrument_data_says_so(tmp_path):
    from db.engine import make_engine
    from db.migrate import upgrade

    eng = make_engine(f"sqlite:///{tmp_path / 'e.db'}")
    upgrade(eng)
    make_study(eng, "bare", n_human=20, n_agent=20, seed=1, with_labels=False)
    data = load_study(eng, "bare", features=False)
    from analysis.instruments import study_instruments

    out = study_instruments(eng, data, n_boot=50, splits=20, fidelity_boot=20)
    assert out["comparisons"].empty
    assert out["note"].startswith("Participants' instruments: no per-reply ratings")
    recs = out["records"]
    assert set(recs["metric"]) == {
        "survey_mae",
        "twin_weighted_kappa",
        "twin_ordinal_alpha",
        "rank_spearman",
        "rank_kendall",
    }
    assert recs["value"].isna().all() and (recs["note"].str.len() > 0).all()


def test_pure_build_keeps_one_answer_per_item():
    convs = pd.DataFrame(
        {
            "conversation_id": [1, 2],
            "user_kind": ["human", "agent"],
            "participant": ["p", None],
            "scenario": ["s", "s"],
            "condition_id": [1, 1],
            "simulator": [None, "x"],
        }
    )
    replies = pd.DataFrame(
        {
            "conversation_id": [1, 1, 2],
            "reply_position": [1, 2, 1],
            "satisfaction": [4.0, 2.0, 5.0],
            "hallucination": ["yes", "cant_tell", "no"],
        }
    )
    answers = pd.DataFrame({"conversation_id": [1, 2], "item": ["Ease", "Ease"], "value": ["3", "5"]})
    inst = build_instruments(convs, replies, answers)
    c = inst.conversations.set_index("conversation_id")
    assert c.loc[1, "satisfaction"] == 3.0 and c.loc[1, "made_up_share"] == 0.5  # yes of yes + cant_tell
    assert c.loc[2, "population"] == "x" and c.loc[2, ITEM_PREFIX + "Ease"] == "5"


def test_analyze_writes_instrument_rows_and_records(study, tmp_path):
    from analysis.report import analyze, render_report, write_analysis

    eng, _, _ = study
    res = analyze(eng, "inst", n_boot=100, agreement=False)
    write_analysis(res, tmp_path)
    comp = json.loads((tmp_path / "comparisons.json").read_text())
    assert any(r["kind"] == "instrument" for r in comp)
    metrics = {r["metric"] for r in json.loads((tmp_path / "fidelity.json").read_text())}
    assert {"survey_mae", "twin_weighted_kappa", "rank_spearman", "rank_kendall"} <= metrics
    ranking = pd.read_csv(tmp_path / "fidelity_ranking.csv")
    assert {"survey", "rank_agreement"} <= set(ranking.columns)
    html = render_report(res, eng)
    assert "The participants&#39; instruments" in html or "The participants' instruments" in html
    assert "Post-task survey error" in html and "instrument_fidelity.csv" in html
