"""Agreement statistics against independent implementations.

References: scikit-learn ``cohen_kappa_score`` (Cohen 1960; weighted: Cohen 1968), statsmodels
``fleiss_kappa`` (Fleiss 1971), the ``krippendorff`` package (Krippendorff 2011, "Computing
Krippendorff's alpha-reliability"), statsmodels ``proportion_confint(method="wilson")`` and scipy
``binomtest`` for the indistinguishability figure.
"""

from __future__ import annotations

import json
import math

import krippendorff
import numpy as np
import pandas as pd
import pytest
from scipy.stats import binomtest
from sklearn.metrics import cohen_kappa_score
from statsmodels.stats.inter_rater import aggregate_raters
from statsmodels.stats.inter_rater import fleiss_kappa as sm_fleiss_kappa
from statsmodels.stats.proportion import proportion_confint

from annotation.agreement import (
    AGREEMENT_COLUMNS,
    Scale,
    agreement_records,
    annotators_agreement_df,
    bootstrap_alpha_ci,
    cohen_kappa,
    fleiss_kappa,
    indistinguishability_df,
    krippendorff_alpha,
    pair_agreement_df,
    raw_agreement,
    wilson_interval,
)

LIKERT = ["1", "2", "3", "4", "5"]
NOMINAL = ["NoFeedback", "Positive", "Negative", "Both"]


def _rand_pair(rng, labels, n, p_same=0.6):
    a = rng.choice(labels, size=n)
    b = np.where(rng.random(n) < p_same, a, rng.choice(labels, size=n))
    return list(a), list(b)


@pytest.mark.parametrize("seed", range(5))
def test_cohen_kappa_matches_sklearn(seed):
    rng = np.random.default_rng(seed)
    a, b = _rand_pair(rng, NOMINAL, 80)
    assert cohen_kappa(a, b, NOMINAL) == pytest.approx(cohen_kappa_score(a, b, labels=NOMINAL))
    x, y = _rand_pair(rng, LIKERT, 60, p_same=0.4)
    assert cohen_kappa(x, y, LIKERT, "quadratic") == pytest.approx(
        cohen_kappa_score(x, y, labels=LIKERT, weights="quadratic")
    )
    assert cohen_kappa(x, y, LIKERT, "linear") == pytest.approx(
        cohen_kappa_score(x, y, labels=LIKERT, weights="linear")
    )


def test_weighted_kappa_uses_codebook_order_not_alphabetical():
    order = ["Low", "Moderate", "High"]
    a = ["Low", "Moderate", "High", "High", "Low", "Moderate", "High"]
    b = ["Moderate", "Moderate", "High", "Moderate", "Low", "High", "Low"]
    assert cohen_kappa(a, b, order, "quadratic") == pytest.approx(
        cohen_kappa_score(a, b, labels=order, weights="quadratic")
    )
    assert cohen_kappa(a, b, order, "quadratic") != pytest.approx(
        cohen_kappa_score(a, b, weights="quadratic")
    )


@pytest.mark.parametrize("seed", range(4))
def test_fleiss_matches_statsmodels(seed):
    rng = np.random.default_rng(seed)
    truth = rng.choice(NOMINAL, size=40)
    ratings = [[t if rng.random() < 0.7 else rng.choice(NOMINAL) for _ in range(4)] for t in truth]
    codes = np.array([[NOMINAL.index(v) for v in r] for r in ratings])
    table, _ = aggregate_raters(codes, n_cat=len(NOMINAL))
    assert fleiss_kappa(ratings, NOMINAL) == pytest.approx(sm_fleiss_kappa(table, method="fleiss"))


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("level,labels", [("nominal", NOMINAL), ("ordinal", LIKERT)])
def test_alpha_matches_krippendorff_package_with_missing(seed, level, labels):
    rng = np.random.default_rng(seed)
    n_items, n_raters = 50, 4
    truth = rng.integers(0, len(labels), n_items)
    data = np.full((n_raters, n_items), np.nan)
    units = []
    for i in range(n_items):
        vals = []
        for r in range(n_raters):
            if rng.random() < 0.25:
                continue  # missing value
            code = truth[i] if rng.random() < 0.6 else rng.integers(0, len(labels))
            data[r, i] = code
            vals.append(labels[code])
        units.append(vals)
    ours = krippendorff_alpha(units, labels, level)
    ref = krippendorff.alpha(
        reliability_data=data, level_of_measurement=level, value_domain=list(range(len(labels)))
    )
    assert ours == pytest.approx(ref)


def test_raw_agreement_and_degenerate_cases():
    assert raw_agreement(["a", "b", "a"], ["a", "a", "a"]) == pytest.approx(2 / 3)
    assert math.isnan(cohen_kappa(["a", "a"], ["a", "a"], ["a", "b"]))  # undefined, not 1 or 0
    assert math.isnan(krippendorff_alpha([["a", "a"], ["a", "a"]], ["a", "b"]))


def test_bootstrap_ci_is_seeded_and_brackets_estimate():
    rng = np.random.default_rng(1)
    a, b = _rand_pair(rng, NOMINAL, 150)
    units = [[x, y] for x, y in zip(a, b)]
    ci1 = bootstrap_alpha_ci(units, NOMINAL, n_boot=400, seed=3)
    ci2 = bootstrap_alpha_ci(units, NOMINAL, n_boot=400, seed=3)
    assert ci1 == ci2
    est = krippendorff_alpha(units, NOMINAL)
    assert ci1[0] < est < ci1[1]
    assert ci1[1] - ci1[0] < 0.3
    from annotation.agreement import bootstrap_alpha_ci_detail

    assert bootstrap_alpha_ci_detail(units, NOMINAL, n_boot=400, seed=3) == (*ci1, 0)
    # Nearly no variation: many resamples have none at all, so alpha is undefined there; they are
    # left out of the interval and counted.
    x, y = NOMINAL[0], NOMINAL[1]
    rare = [[x, x]] * 40 + [[y, x]]
    lo, hi, undefined = bootstrap_alpha_ci_detail(rare, NOMINAL, n_boot=400, seed=3)
    assert 0 < undefined < 400 and undefined == pytest.approx(400 * (40 / 41) ** 41, rel=0.35)


def _tidy(a_vals, b_vals, kinds, dim="feedback", sa="A", sb="B"):
    rows, convs = [], []
    for i, (x, y, k) in enumerate(zip(a_vals, b_vals, kinds)):
        rows.append({"conversation_id": i, "turn_index": -1, "dimension": dim, "value": x, "source": sa})
        rows.append({"conversation_id": i, "turn_index": -1, "dimension": dim, "value": y, "source": sb})
        convs.append({"conversation_id": i, "user_kind": k})
    return pd.DataFrame(rows), pd.DataFrame(convs)


def test_pair_frame_splits_by_user_kind_and_matches_references():
    rng = np.random.default_rng(7)
    a, b = _rand_pair(rng, LIKERT, 120, p_same=0.5)
    kinds = ["human"] * 60 + ["agent"] * 60
    labels, convs = _tidy(a, b, kinds, dim="question_broadness")
    # An extra item labelled by A only is not compared.
    labels = pd.concat(
        [
            labels,
            pd.DataFrame(
                [
                    {
                        "conversation_id": 999,
                        "turn_index": -1,
                        "dimension": "question_broadness",
                        "value": "3",
                        "source": "A",
                    }
                ]
            ),
        ]
    )
    df = pair_agreement_df(
        labels, convs, "A", "B", scales={"question_broadness": Scale("ordinal", tuple(LIKERT))}, n_boot=200
    )
    assert list(df.columns) == AGREEMENT_COLUMNS
    assert list(df["user_kind"]) == ["all", "agent", "human"]
    for kind, sl in [("all", slice(0, 120)), ("human", slice(0, 60)), ("agent", slice(60, 120))]:
        row = df[df["user_kind"] == kind].iloc[0]
        x, y = a[sl], b[sl]
        assert row["n"] == len(x)
        assert row["cohen_kappa"] == pytest.approx(cohen_kappa_score(x, y, labels=LIKERT))
        assert row["weighted_kappa"] == pytest.approx(
            cohen_kappa_score(x, y, labels=LIKERT, weights="quadratic")
        )
        data = np.array([[LIKERT.index(v) for v in x], [LIKERT.index(v) for v in y]], dtype=float)
        assert row["krippendorff_alpha"] == pytest.approx(
            krippendorff.alpha(reliability_data=data, level_of_measurement="ordinal", value_domain=range(5))
        )
        assert row["ci_low"] <= row["krippendorff_alpha"] <= row["ci_high"]
        assert row["ci_statistic"] == "krippendorff_alpha"
    recs = agreement_records(df)
    json.dumps(recs)  # JSON-serialisable
    assert {
        "dimension",
        "user_kind",
        "n",
        "agreement",
        "cohen_kappa",
        "weighted_kappa",
        "krippendorff_alpha",
        "ci_low",
        "ci_high",
    } <= set(recs[0])


def test_nominal_dimension_has_null_weighted_kappa():
    labels, convs = _tidy(
        ["Positive", "Both", "Negative"] * 5, ["Positive", "Both", "Both"] * 5, ["human"] * 15
    )
    df = pair_agreement_df(
        labels, convs, "A", "B", scales={"feedback": Scale("nominal", tuple(NOMINAL))}, n_boot=50
    )
    assert agreement_records(df)[0]["weighted_kappa"] is None


def test_annotator_set_fleiss_and_alpha():
    rng = np.random.default_rng(2)
    rows, convs = [], []
    truth = rng.choice(NOMINAL, 30)
    for i, t in enumerate(truth):
        convs.append({"conversation_id": i, "user_kind": "human" if i % 2 else "agent"})
        for s in ["h1", "h2", "h3"]:
            if i >= 25 and s == "h3":
                continue  # incomplete items: in alpha, not in Fleiss
            v = t if rng.random() < 0.7 else rng.choice(NOMINAL)
            rows.append(
                {"conversation_id": i, "turn_index": -1, "dimension": "feedback", "value": v, "source": s}
            )
    labels = pd.DataFrame(rows)
    df = annotators_agreement_df(
        labels,
        pd.DataFrame(convs),
        ["h1", "h2", "h3"],
        scales={"feedback": Scale("nominal", tuple(NOMINAL))},
        n_boot=100,
    )
    row = df[df["user_kind"] == "all"].iloc[0]
    assert row["n"] == 30 and row["n_complete"] == 25
    wide = labels.pivot(index="conversation_id", columns="source", values="value")
    complete = wide.dropna()
    table, _ = aggregate_raters(complete.map(NOMINAL.index).to_numpy(), n_cat=4)
    assert row["fleiss_kappa"] == pytest.approx(sm_fleiss_kappa(table))
    data = wide.T.map(lambda v: np.nan if pd.isna(v) else NOMINAL.index(v)).to_numpy(dtype=float)
    assert row["krippendorff_alpha"] == pytest.approx(
        krippendorff.alpha(reliability_data=data, level_of_measurement="nominal", value_domain=range(4))
    )


def test_wilson_matches_statsmodels():
    for k, n in [(0, 10), (7, 10), (55, 100), (100, 100)]:
        lo, hi = proportion_confint(k, n, alpha=0.05, method="wilson")
        assert wilson_interval(k, n) == pytest.approx((lo, hi))


def test_indistinguishability_per_simulator():
    convs = pd.DataFrame(
        [
            {
                "conversation_id": i,
                "user_kind": "agent" if i < 40 else "human",
                "simulator_config_id": (1 if i < 20 else 2) if i < 40 else None,
                "simulator": ("sim-a" if i < 20 else "sim-b") if i < 40 else None,
            }
            for i in range(60)
        ]
    )
    guesses = []
    for i in range(60):
        if i < 20:  # sim-a always detected
            g = "ai"
        elif i < 40:  # sim-b mistaken for a person half the time
            g = "person" if i % 2 else "ai"
        else:  # humans recognised 15 of 20 times
            g = "human" if i < 55 else "agent"
        guesses.append({"conversation_id": i, "guess": g})
    guesses.append({"conversation_id": 0, "guess": "unsure"})  # not a guess: dropped
    df = indistinguishability_df(pd.DataFrame(guesses), convs)
    assert list(df["simulator"]) == ["all", "sim-a", "sim-b"]
    a = df[df["simulator"] == "sim-a"].iloc[0]
    assert (a["n"], a["n_correct"]) == (40, 35)
    assert a["p_value"] == pytest.approx(binomtest(35, 40, 0.5).pvalue)
    assert (a["ci_low"], a["ci_high"]) == pytest.approx(proportion_confint(35, 40, method="wilson"))
    b = df[df["simulator"] == "sim-b"].iloc[0]
    assert b["agent_detected"] == pytest.approx(0.5)
    assert b["balanced_accuracy"] == pytest.approx((0.5 + 0.75) / 2)
    # Balanced accuracy: Fisher's exact test of kind x guess (scipy) and a MOVER interval built on
    # statsmodels' Wilson intervals (Zou & Donner 2008).
    from scipy.stats import fisher_exact

    assert b["balanced_p_value"] == pytest.approx(fisher_exact([[10, 10], [5, 15]]).pvalue)
    (la, ua), (lh, uh) = (
        proportion_confint(10, 20, method="wilson"),
        proportion_confint(15, 20, method="wilson"),
    )
    ba = (0.5 + 0.75) / 2
    assert b["balanced_ci_low"] == pytest.approx(ba - ((0.5 - la) ** 2 / 4 + (0.75 - lh) ** 2 / 4) ** 0.5)
    assert b["balanced_ci_high"] == pytest.approx(ba + ((ua - 0.5) ** 2 / 4 + (uh - 0.75) ** 2 / 4) ** 0.5)
    assert str(df["simulator_config_id"].dtype) == "Int64" and df["simulator_config_id"].isna().iloc[0]


def test_an_annotator_who_always_says_person_is_not_better_than_chance():
    """100 human and 10 agent conversations, every guess "person": accuracy 0.91 "beats chance"
    by the binomial test, but the balanced accuracy is 0.5 and its test finds nothing."""
    convs = pd.DataFrame(
        [
            {
                "conversation_id": i,
                "user_kind": "agent" if i < 10 else "human",
                "simulator_config_id": 1 if i < 10 else None,
                "simulator": "s" if i < 10 else None,
            }
            for i in range(110)
        ]
    )
    guesses = pd.DataFrame([{"conversation_id": i, "guess": "person"} for i in range(110)])
    row = indistinguishability_df(guesses, convs).iloc[0]
    assert row["accuracy"] == pytest.approx(100 / 110) and row["p_value"] < 1e-10
    assert row["balanced_accuracy"] == pytest.approx(0.5) and row["balanced_p_value"] == pytest.approx(1.0)
    assert row["balanced_ci_low"] < 0.5 < row["balanced_ci_high"]


def test_balanced_accuracy_needs_guesses_on_both_kinds():
    """Guesses on human conversations only: plain accuracy is there, but a balanced accuracy (and its
    interval and test) would be the human detection rate alone, so it is missing."""
    convs = pd.DataFrame(
        [
            {"conversation_id": i, "user_kind": "human", "simulator_config_id": None, "simulator": None}
            for i in range(10)
        ]
    )
    guesses = pd.DataFrame([{"conversation_id": i, "guess": "person" if i < 8 else "ai"} for i in range(10)])
    row = indistinguishability_df(guesses, convs).iloc[0]
    assert row["simulator"] == "all" and row["accuracy"] == pytest.approx(0.8)
    assert row["human_detected"] == pytest.approx(0.8)
    assert pd.isna(row["balanced_accuracy"]) and pd.isna(row["balanced_ci_low"])
    assert pd.isna(row["balanced_p_value"])


def test_values_outside_an_ordinal_scale_make_the_dimension_nominal():
    """An imported value the codebook's ordinal scale lacks ("9") has no rank: ordinal statistics
    would put it after "5" arbitrarily, so the dimension is measured as nominal, and says so."""
    rng = np.random.default_rng(3)
    a, b = _rand_pair(rng, LIKERT, 60, p_same=0.5)
    b[0] = "9"
    labels, convs = _tidy(a, b, ["human"] * 60, dim="question_broadness")
    df = pair_agreement_df(
        labels,
        convs,
        "A",
        "B",
        n_boot=100,
        split_by_user_kind=False,
        scales={"question_broadness": Scale("ordinal", tuple(LIKERT))},
    )
    row = df.iloc[0]
    assert row["scale"] == "nominal" and row["weighted_kappa"] is None
    codes = {v: i for i, v in enumerate(LIKERT + ["9"])}
    data = np.array([[codes[v] for v in a], [codes[v] for v in b]], dtype=float)
    assert row["krippendorff_alpha"] == pytest.approx(
        krippendorff.alpha(reliability_data=data, level_of_measurement="nominal")
    )
    assert row["cohen_kappa"] == pytest.approx(cohen_kappa_score(a, b))
