"""Every statistic of analysis.stats against an independent implementation or a published value."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps
from scipy.spatial.distance import jensenshannon

from analysis import stats
from db.errors import UserInputError


def _cats(rng, probs, n, labels="ABC"):
    return list(rng.choice(list(labels[: len(probs)]), size=n, p=probs))


def test_chi_square_and_cramers_v_match_scipy():
    rng = np.random.default_rng(1)
    h, a = _cats(rng, [0.5, 0.3, 0.2], 300), _cats(rng, [0.2, 0.3, 0.5], 250)
    r = stats.chi_square_test(h, a, ["A", "B", "C"], n_boot=300)
    table, _ = stats.contingency(h, a, ["A", "B", "C"])
    chi2, p, dof, _ = sps.chi2_contingency(table, correction=False)
    assert (
        r["test"] == "chi_square"
        and r["statistic"] == pytest.approx(chi2)
        and r["p_value"] == pytest.approx(p)
    )
    # scipy.stats.contingency.association implements Cramer's V (uncorrected chi-square).
    assert r["effect_size"] == pytest.approx(sps.contingency.association(table, method="cramer"))
    assert r["ci_low"] < r["effect_size"] < r["ci_high"]
    assert (r["n_human"], r["n_agent"]) == (300, 250)


def test_cramers_v_published_value():
    # Agresti (2007), Table 2.1-style 2x2: V for a 2x2 equals |phi| = |ad - bc| / sqrt(r1 r2 c1 c2).
    t = np.array([[30, 10], [10, 30]])
    phi = (30 * 30 - 10 * 10) / math.sqrt(40 * 40 * 40 * 40)
    assert stats.cramers_v(t) == pytest.approx(phi) == pytest.approx(0.5)


def test_cramers_v_batch_equals_loop():
    rng = np.random.default_rng(9)
    tables = rng.integers(0, 6, size=(50, 2, 4))
    tables[3, :, 1] = 0  # an empty column
    tables[4, 1, :] = 0  # an empty row
    assert stats.cramers_v_batch(tables) == pytest.approx([stats.cramers_v(t) for t in tables])


def test_small_2x2_uses_fisher():
    h, a = ["A"] * 6 + ["B"] * 1, ["A"] * 1 + ["B"] * 5
    r = stats.chi_square_test(h, a, n_boot=200)
    table, _ = stats.contingency(h, a)
    odds, p = sps.fisher_exact(table)
    assert (
        r["test"] == "fisher_exact"
        and r["p_value"] == pytest.approx(p)
        and r["statistic"] == pytest.approx(odds)
    )


def test_bootstrap_interval_close_to_explicit_resampling():
    rng = np.random.default_rng(2)
    h, a = np.array(_cats(rng, [0.6, 0.4], 200, "AB")), np.array(_cats(rng, [0.4, 0.6], 200, "AB"))
    r = stats.chi_square_test(list(h), list(a), n_boot=2000)
    boot = []
    for _ in range(2000):
        hh, aa = rng.choice(h, len(h)), rng.choice(a, len(a))
        boot.append(stats.cramers_v(stats.contingency(list(hh), list(aa), ["A", "B"])[0]))
    lo, hi = np.quantile(boot, [0.025, 0.975])
    assert r["ci_low"] == pytest.approx(lo, abs=0.02) and r["ci_high"] == pytest.approx(hi, abs=0.02)


def test_mann_whitney_and_cliffs_delta():
    rng = np.random.default_rng(3)
    h, a = rng.integers(1, 6, 120), rng.integers(2, 6, 100)
    r = stats.mann_whitney_test(h, a)
    u, p = sps.mannwhitneyu(a, h, alternative="two-sided")
    assert r["statistic"] == pytest.approx(u) and r["p_value"] == pytest.approx(p)
    # Cliff (1993): delta = P(agent > human) - P(agent < human), by brute force over all pairs.
    brute = np.mean(np.sign(a[:, None] - h[None, :]))
    assert r["effect_size"] == pytest.approx(brute)
    assert r["ci_low"] < r["effect_size"] < r["ci_high"]
    assert stats.cliffs_delta([1, 2, 3], [4, 5, 6]) == 1.0 and stats.cliffs_delta([4, 5], [1, 2]) == -1.0


def test_cliffs_delta_interval_agrees_with_bootstrap():
    rng = np.random.default_rng(4)
    h, a = rng.normal(0, 1, 150), rng.normal(0.4, 1, 150)
    d, lo, hi = stats.cliffs_delta_ci(h, a)
    boot = [stats.cliffs_delta(rng.choice(h, 150), rng.choice(a, 150)) for _ in range(1500)]
    blo, bhi = np.quantile(boot, [0.025, 0.975])
    assert lo == pytest.approx(blo, abs=0.03) and hi == pytest.approx(bhi, abs=0.03)


def test_hedges_g_matches_statsmodels_and_welch_matches_scipy():
    from statsmodels.stats.meta_analysis import effectsize_smd

    rng = np.random.default_rng(5)
    h, a = rng.normal(10, 2, 40), rng.normal(11, 3, 35)
    g_sm, var_sm = effectsize_smd(a.mean(), a.std(ddof=1), len(a), h.mean(), h.std(ddof=1), len(h))
    g, lo, hi = stats.hedges_g_ci(h, a)
    assert g == pytest.approx(g_sm)
    half = 1.959964 * math.sqrt(var_sm)
    assert hi - lo == pytest.approx(2 * half, rel=0.02)  # variance formulas differ in n-3.94
    r = stats.welch_t_test(h, a)
    t, p = sps.ttest_ind(a, h, equal_var=False)
    assert r["statistic"] == pytest.approx(t) and r["p_value"] == pytest.approx(p)
    assert r["effect_size_name"] == "bonett_d"  # the effect size, like the test, allows unequal variances


def test_bonett_d_by_hand_and_its_se_against_a_simulation():
    """Bonett (2008) eq. 5-6 by hand (R statpsych::ci.stdmean2 uses the same formulas); its SE
    against the spread of d over 4,000 simulated samples with unequal variances and sizes."""
    rng = np.random.default_rng(3)
    h, a = rng.normal(0, 1, 30), rng.normal(1, 3, 90)
    d_adj, lo, hi = stats.bonett_d_ci(h, a)
    v1, v2 = h.var(ddof=1), a.var(ddof=1)
    d = (a.mean() - h.mean()) / math.sqrt((v1 + v2) / 2)
    assert d_adj == pytest.approx(d * (1 - 3 / (4 * 120 - 9)))
    assert (lo + hi) / 2 == pytest.approx(d)
    sims = np.array([stats.bonett_d_ci(rng.normal(0, 1, 30), rng.normal(1, 3, 90))[0] for _ in range(4000)])
    se_formula = (hi - lo) / 2 / 1.959964
    assert sims.std() == pytest.approx(se_formula, rel=0.1)


def test_assumption_and_disagreement_notes():
    """A constant group and heavy ties are named; a p-value and an interval that disagree about
    "no difference" are flagged (5 varied people against a constant agent group)."""
    r = stats.mann_whitney_test([1.0, 2.0, 3.0, 3.0, 3.0, 3.0], [3.0] * 40)
    assert "agent group constant" in r["note"] and "heavy ties" in r["note"]
    row = {"effect_size_name": "cliffs_delta", "p_value": 6e-13, "ci_low": -0.1, "ci_high": 0.4}
    assert "p < 0.05 but the interval includes 0" in stats.disagreement_note(row)
    row.update(p_value=0.2, ci_low=0.01)
    assert "p >= 0.05 but the interval excludes 0" in stats.disagreement_note(row)
    assert stats.disagreement_note(row | {"effect_size_name": "cramers_v"}) == ""  # unsigned
    assert stats.disagreement_note(row | {"p_value": 0.01}) == ""


def test_clustered_test_matches_hand_sandwich():
    rng = np.random.default_rng(6)
    people = np.repeat(np.arange(20), 6)
    h = rng.normal(0, 1, 120) + rng.normal(0, 1, 20)[people]
    a = rng.normal(0.5, 1, 80)
    r = stats.clustered_test(h, a, [f"p{i}" for i in people])
    # CR1 sandwich by hand (Cameron & Miller 2015, eq. 11, with the small-sample factor of Stata/statsmodels).
    y = np.concatenate([h, a])
    X = np.column_stack([np.ones(200), np.r_[np.zeros(120), np.ones(80)]])
    g = np.r_[people, 100 + np.arange(80)]
    beta = np.linalg.lstsq(X, y, rcond=None)[0]
    e = y - X @ beta
    bread = np.linalg.inv(X.T @ X)
    meat = sum(np.outer(X[g == c].T @ e[g == c], X[g == c].T @ e[g == c]) for c in np.unique(g))
    G, n, k = len(np.unique(g)), 200, 2
    V = G / (G - 1) * (n - 1) / (n - k) * bread @ meat @ bread
    assert r["effect_size"] == pytest.approx(beta[1])
    assert r["statistic"] == pytest.approx(beta[1] / math.sqrt(V[1, 1]))
    # Student's t with (human participants - 1) degrees of freedom, not the normal
    assert r["p_value"] == pytest.approx(2 * sps.t.sf(abs(r["statistic"]), 19))
    half = sps.t.ppf(0.975, 19) * math.sqrt(V[1, 1])
    assert (r["ci_low"], r["ci_high"]) == pytest.approx((beta[1] - half, beta[1] + half))
    assert "unreliable" not in r["note"]


def _clustered_sample(rng, n_people=12, per=8, n_agent=60, icc_sd=1.0):
    """Human categorical values with a strong per-person tendency, agents independent."""
    cats = np.array(["A", "B", "C"])
    people = np.repeat(np.arange(n_people), per)
    pref = rng.normal(0, icc_sd, (n_people, 3))
    logits = pref[people] + rng.normal(0, 0.5, (len(people), 3))
    h = cats[logits.argmax(1)]
    a = cats[rng.integers(0, 3, n_agent)]
    return h, a, [f"p{i}" for i in people]


def test_clustered_share_test_matches_hand_sandwich_and_clustered_test():
    rng = np.random.default_rng(11)
    h, a, people = _clustered_sample(rng)
    r = stats.clustered_share_test(h, a, people, ["A", "B", "C"], n_boot=300)
    # Hand CR1 sandwich (Cameron & Miller 2015, eq. 11) per category, stacked, in plain loops.
    y_all = np.r_[h, a]
    g = np.r_[[int(p[1:]) for p in people], 1000 + np.arange(len(a))]
    X = np.column_stack([np.ones(len(y_all)), np.r_[np.zeros(len(h)), np.ones(len(a))]])
    bread = np.linalg.inv(X.T @ X)
    betas, resid = [], []
    for c in ("A", "B"):
        yc = (y_all == c).astype(float)
        b = bread @ X.T @ yc
        betas.append(b)
        resid.append(yc - X @ b)
    n, G = len(y_all), len(np.unique(g))
    V = np.zeros((2, 2))
    for cl in np.unique(g):
        m = g == cl
        s_ = np.array([(bread @ X[m].T @ resid[j][m])[1] for j in range(2)])
        V += np.outer(s_, s_)
    V *= G / (G - 1) * (n - 1) / (n - 2)
    d = np.array([b[1] for b in betas])
    w = d @ np.linalg.inv(V) @ d
    assert r["statistic"] == pytest.approx(w, rel=1e-9)
    assert r["p_value"] == pytest.approx(sps.f.sf(w / 2, 2, 11))
    assert r["effect_size"] == pytest.approx(stats.cramers_v(stats.contingency(h, a, ["A", "B", "C"])[0]))
    assert r["ci_low"] <= r["effect_size"] <= r["ci_high"]
    # Two categories: the Wald statistic is the square of clustered_test's t on the indicator.
    hb, ab = np.where(h == "A", "A", "other"), np.where(a == "A", "A", "other")
    two = stats.clustered_share_test(hb, ab, people, ["A", "other"], n_boot=100)
    one = stats.clustered_test((hb == "A").astype(float), (ab == "A").astype(float), people)
    assert two["statistic"] == pytest.approx(one["statistic"] ** 2)
    assert two["p_value"] == pytest.approx(one["p_value"])


def test_clustered_rows_are_wider_than_conversation_rows_and_warn_with_few_people():
    rng = np.random.default_rng(12)
    h, a, people = _clustered_sample(rng, icc_sd=2.0)
    flat = stats.chi_square_test(h, a, ["A", "B", "C"], n_boot=500)
    clus = stats.clustered_share_test(h, a, people, ["A", "B", "C"], n_boot=500)
    assert clus["ci_high"] - clus["ci_low"] > flat["ci_high"] - flat["ci_low"]
    assert clus["p_value"] > flat["p_value"]  # the same data count as fewer independent units
    assert "12 participants: unreliable with fewer than" not in clus["note"]
    few = stats.clustered_test([1.0, 2, 3, 4, 5, 6], [3.0, 4, 5], ["x", "x", "y", "y", "z", "z"])
    assert "only 3 participants: unreliable" in few["note"] and "t(2)" in few["note"]
    assert few["p_value"] == pytest.approx(2 * sps.t.sf(abs(few["statistic"]), 2))


def test_paired_tests():
    from statsmodels.stats.contingency_tables import mcnemar

    rng = np.random.default_rng(7)
    h = rng.integers(1, 6, 40).astype(float)
    a = np.clip(h + rng.integers(-1, 3, 40), 1, 5)
    r = stats.wilcoxon_paired_test(h, a)
    w, p = sps.wilcoxon(a, h)
    assert r["statistic"] == pytest.approx(w) and r["p_value"] == pytest.approx(p)
    d = (a - h)[a != h]
    ranks = sps.rankdata(np.abs(d))
    assert r["effect_size"] == pytest.approx(
        (ranks[d > 0].sum() - ranks[d < 0].sum()) / ranks.sum()
    )  # Kerby 2014

    hh = ["A"] * 20 + ["B"] * 20
    aa = ["A"] * 12 + ["B"] * 8 + ["A"] * 2 + ["B"] * 18
    r = stats.mcnemar_bowker_test(hh, aa)
    ref = mcnemar(np.array([[12, 8], [2, 18]]), exact=False, correction=False)
    assert r["statistic"] == pytest.approx(ref.statistic) and r["p_value"] == pytest.approx(ref.pvalue)
    assert r["effect_size"] == pytest.approx(30 / 40)


def test_adjust_p_holm_and_bh():
    from statsmodels.stats.multitest import multipletests

    p = [0.01, 0.04, 0.03, None, 0.5]
    holm = stats.adjust_p(p, "holm")
    # Holm (1979) by hand: sorted 0.01, 0.03, 0.04, 0.5 times 4, 3, 2, 1 = 0.04, 0.09, 0.08, 0.5,
    # then the running maximum: 0.04, 0.09, 0.09, 0.5.
    assert [holm[i] for i in (0, 1, 2, 4)] == pytest.approx([0.04, 0.09, 0.09, 0.5])
    assert holm[3] is None
    bh = stats.adjust_p(p, "bh")
    ref = multipletests([0.01, 0.04, 0.03, 0.5], method="fdr_bh")[1]
    assert [bh[i] for i in (0, 1, 2, 4)] == pytest.approx(list(ref))
    with pytest.raises(UserInputError):
        stats.adjust_p(p, "bonferonni")
    rng = np.random.default_rng(1)
    for _ in range(50):  # ties and many sizes against statsmodels
        q = rng.uniform(0, 1, rng.integers(1, 40)) ** 3
        q[: len(q) // 2] = q[0]
        for method in ("holm", "fdr_bh"):
            assert stats._step_adjust(q, method) == pytest.approx(
                multipletests(q, method=method)[1], abs=1e-15
            )


def test_js_distance_matches_scipy():
    p, q = [10, 5, 0, 3], [2, 8, 4, 4]
    assert stats.js_distance(p, q) == pytest.approx(jensenshannon(p, q, base=2))
    d, lo, hi = stats.js_distance_ci(p, q, n_boot=500)
    assert d == pytest.approx(jensenshannon(p, q, base=2)) and lo <= hi
    assert stats.js_distance([1, 0], [1, 0]) == 0.0 and stats.js_distance([1, 0], [0, 1]) == pytest.approx(
        1.0
    )


def test_js_null_matches_a_brute_force_permutation_test():
    """js_null against scipy.stats.permutation_test on the raw labels (the same null: labels
    reassigned to groups of the observed sizes); both are Monte Carlo, so they agree to sampling error."""
    rng = np.random.default_rng(3)
    h = rng.choice(list("ABC"), 40, p=[0.5, 0.3, 0.2])
    a = rng.choice(list("ABC"), 25, p=[0.3, 0.3, 0.4])
    table, _ = stats.contingency(h, a, ["A", "B", "C"])
    null_mean, p = stats.js_null(table[0], table[1], n_perm=4000)

    def js(x, y):
        cx = [np.sum(x == c) for c in "ABC"]
        cy = [np.sum(y == c) for c in "ABC"]
        return jensenshannon(cx, cy, base=2)

    ref = sps.permutation_test(
        (h, a), js, n_resamples=4000, alternative="greater", random_state=4, vectorized=False
    )
    assert p == pytest.approx(ref.pvalue, abs=0.03)
    assert null_mean == pytest.approx(np.mean(ref.null_distribution), abs=0.01)
    # Two samples of one distribution: the plug-in distance is well above 0, the null about as large.
    same_h = rng.choice(list("ABC"), 10, p=[0.5, 0.3, 0.2])
    same_a = rng.choice(list("ABC"), 10, p=[0.5, 0.3, 0.2])
    t2, _ = stats.contingency(same_h, same_a, ["A", "B", "C"])
    assert stats.js_null(t2[0], t2[1])[0] > 0.1


def test_not_enough_data_rows():
    for r in (
        stats.chi_square_test(["A"], ["A", "B"]),
        stats.mann_whitney_test([], [1, 2]),
        stats.welch_t_test([1.0], [2.0, 3.0]),
        stats.clustered_test([1, 2], [3, 4], ["x", "x"]),
        stats.wilcoxon_paired_test([1], [2]),
    ):
        assert r["note"].startswith("not enough data") and r["p_value"] is None
    one = stats.chi_square_test(["A", "A"], ["A", "A", "A"])
    assert one["effect_size"] == 0.0 and "one category" in one["note"]


def test_sparse_tables_get_a_permutation_p_value():
    """A 2 x 4 table with small expected counts: the p-value comes from permutations, close to
    scipy's permutation_test of the chi-square statistic on the raw labels."""
    h = ["A"] * 12 + ["B"] * 6 + ["C"] * 1 + ["D"] * 1
    a = ["A"] * 4 + ["B"] * 6 + ["C"] * 3 + ["D"] * 2
    r = stats.chi_square_test(h, a, ["A", "B", "C", "D"], n_boot=200)
    assert r["test"] == "chi_square_permutation" and "p from 10,000 permutations" in r["note"]
    table, _ = stats.contingency(h, a, ["A", "B", "C", "D"])
    chi2 = sps.chi2_contingency(table, correction=False)[0]
    assert r["statistic"] == pytest.approx(chi2)

    def stat(x, y):
        t, _ = stats.contingency(list(x), list(y), ["A", "B", "C", "D"])
        return sps.chi2_contingency(t, correction=False)[0] if (t.sum(axis=0) > 0).all() else 0.0

    ref = sps.permutation_test(
        (np.array(h), np.array(a)),
        stat,
        n_resamples=2000,
        alternative="greater",
        random_state=1,
        vectorized=False,
    )
    assert r["p_value"] == pytest.approx(ref.pvalue, abs=0.03)
    big = stats.chi_square_test(["A"] * 50 + ["B"] * 50 + ["C"] * 40, ["A"] * 30 + ["B"] * 60 + ["C"] * 50)
    assert big["test"] == "chi_square"  # expected counts >= 5: the usual test
    # A large sample with one rare category: beyond every permutation; never the approximation's p.
    strong = stats.chi_square_test(["A"] * 900 + ["C"] * 2, ["B"] * 900, thresholds=(0.05, 1e-4))
    assert strong["test"] == "chi_square_permutation" and "no permutation reached" in strong["note"]
    assert strong["p_value"] < 1e-4  # permutations were added until the floor fell below 1e-4


def test_permutations_are_added_until_the_decision_is_settled():
    """The skills_learning_planning ``order`` table of the reference data. R 4.2:
    chisq.test(t)$p.value = 1.36e-3 (the approximation); fisher.test(t) = 3.7e-4. The permutation
    p of the chi-square lies between (4.9e-4 from 400,000 draws here) and its Monte Carlo interval
    must clear both thresholds given, so more than the first 10,000 draws are needed."""
    table = np.array([[9, 9, 6, 448], [0, 12, 0, 461]])
    assert sps.chi2_contingency(table, correction=False)[1] == pytest.approx(1.36e-3, rel=0.01)
    p, n, lo, hi = stats.chi_square_permutation_p(table, thresholds=(0.05, 0.05 / 30))
    assert all(hi < t or lo > t for t in (0.05, 0.05 / 30)) and n > stats.PERMUTATIONS
    assert 3e-4 < p < 8e-4 and lo <= p <= hi
    # with a threshold inside the interval it keeps going up to the cap
    p2, n2, lo2, hi2 = stats.chi_square_permutation_p(table, thresholds=(p,), max_perm=40_000)
    assert n2 == 40_000 and lo2 < p < hi2
    # the Monte Carlo interval is Clopper-Pearson (statsmodels' "beta" method)
    from statsmodels.stats.proportion import proportion_confint

    assert stats.monte_carlo_interval(7, 1000) == pytest.approx(
        proportion_confint(7, 1000, alpha=0.01, method="beta")
    )


def test_random_intercept_matches_statsmodels_mixedlm():
    """The REML random-intercept fit against statsmodels MixedLM on data where MixedLM converges
    (agents in groups of 3; MixedLM fails on thousands of singleton groups, the case lme4 handles
    and ``random_intercept_test`` matches on the reference data, tests/test_reproduce.py)."""
    import pandas as pd
    import statsmodels.formula.api as smf

    rng = np.random.default_rng(11)
    g = np.repeat(np.arange(45), np.r_[np.full(25, 6), np.full(20, 3)])
    agent = (g >= 25).astype(float)
    y = 3 - 0.4 * agent + rng.normal(0, 0.7, 45)[g] + rng.normal(0, 1, len(g))
    est, se, theta, sigma2 = stats._reml_random_intercept(y, agent, g)
    df = pd.DataFrame({"y": y, "agent": agent, "g": g})
    fit = smf.mixedlm("y ~ agent", df, groups=df["g"]).fit(reml=True)
    assert est == pytest.approx(fit.fe_params["agent"], abs=1e-5)
    assert se == pytest.approx(fit.bse_fe["agent"], rel=1e-3)
    assert sigma2 == pytest.approx(fit.scale, rel=1e-3)
    assert theta**2 * sigma2 == pytest.approx(float(fit.cov_re.iloc[0, 0]), rel=1e-2)
    people = np.repeat(np.arange(25), 6)
    r = stats.random_intercept_test(y[:150], y[150:], people)
    assert r["test"] == "mixed_random_intercept" and r["effect_size_name"] == "mean_difference"
    assert r["ci_low"] < r["effect_size"] < r["ci_high"] and 0 < r["p_value"] < 1


@pytest.mark.filterwarnings("ignore::statsmodels.tools.sm_exceptions.ConvergenceWarning")
def test_ordinal_cluster_test_matches_statsmodels_ordered_model():
    """Proportional-odds log odds ratio and its CR1 cluster-robust SE against statsmodels'
    OrderedModel(...).fit(cov_type="cluster"); the Cliff's delta cluster bootstrap against an
    explicit resampling of participants."""
    import pandas as pd
    from statsmodels.miscmodels.ordinal_model import OrderedModel

    rng = np.random.default_rng(4)
    people = np.repeat(np.arange(30), 5)
    shift = rng.normal(0, 0.8, 30)[people]
    h = np.digitize(rng.logistic(shift, 1, len(people)), [-1.5, 0, 1.5]) + 1.0
    a = np.digitize(rng.logistic(0.6, 1, 80), [-1.5, 0, 1.5]) + 1.0
    r = stats.ordinal_cluster_test(h, a, people, n_boot=2000)
    y = pd.Series(pd.Categorical(np.r_[h, a], ordered=True))
    x = np.r_[np.zeros(len(h)), np.ones(len(a))][:, None]
    groups = np.r_[people, 100 + np.arange(len(a))]
    fit = OrderedModel(y, x, distr="logit").fit(
        method="bfgs", disp=False, cov_type="cluster", cov_kwds={"groups": groups}, gtol=1e-10
    )
    beta, se = fit.params.iloc[0], fit.bse.iloc[0]
    assert r["statistic"] == pytest.approx(beta / se, rel=2e-3)
    assert f"log odds ratio (agent - human) {beta:.3g}"[:-1] in r["note"]
    assert r["p_value"] == pytest.approx(2 * sps.t.sf(abs(beta / se), 29), rel=1e-2)
    assert r["effect_size"] == pytest.approx(stats.cliffs_delta(h, a))
    boot = []
    for _ in range(2000):
        pick = rng.integers(0, 30, 30)
        hb = np.concatenate([h[people == i] for i in pick])
        boot.append(stats.cliffs_delta(hb, rng.choice(a, len(a))))
    lo, hi = np.quantile(boot, [0.025, 0.975])
    assert r["ci_low"] == pytest.approx(lo, abs=0.03) and r["ci_high"] == pytest.approx(hi, abs=0.03)
    sep = stats.ordinal_cluster_test([1.0, 2.0, 3.0, 3.0], [3.0] * 5, ["p", "p", "q", "q"])
    assert sep["p_value"] is None and "no finite estimate" in sep["note"]


def test_participant_codes_cluster_as_the_ids_do():
    """stats.cluster_codes + the integer path of _cluster_ids give the clusters of the text ids
    (missing or empty ids one cluster each), so every clustered test gives the same result."""
    import pandas as pd

    cluster_codes = stats.cluster_codes
    rng = np.random.default_rng(4)
    ids = pd.Series(rng.choice(["a", "b", "c", "", None], size=300), dtype="string")
    codes = cluster_codes(ids)
    want, g_want = stats._cluster_ids(ids.to_numpy(dtype=object), 7)
    got, g_got = stats._cluster_ids(codes, 7)
    assert g_got == g_want and (got == want).all()
    x, y = rng.normal(size=300), rng.normal(0.3, 1, size=80)
    assert stats.clustered_test(x, y, codes) == stats.clustered_test(x, y, ids.to_numpy(dtype=object))


def test_cluster_weights_are_the_multinomial_draw_and_leave_the_generator_after_it():
    for _ in range(2):  # the second call is served from the cache
        weights, rng = stats.cluster_weights(50, 40, seed=9)
        ref = np.random.default_rng(9)
        assert (weights == ref.multinomial(50, np.full(50, 1 / 50), size=40)).all()
        assert rng.integers(1 << 30) == ref.integers(1 << 30)
