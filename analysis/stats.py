"""Two-sample statistics for human vs agent comparisons.

Each function takes the two samples (human first, agent second) and returns a plain dict with the
fixed keys of the comparison table (``test``, ``statistic``, ``p_value``, ``effect_size_name``,
``effect_size``, ``ci_low``, ``ci_high``, ``n_human``, ``n_agent``, ``note``). Every statistic is
checked against scipy / statsmodels or a published value in ``tests/test_analysis_stats.py``.

Signs: effect sizes are oriented *agent minus human* (a positive Cliff's delta or Hedges' g means
agents score higher), so one forest plot reads the same way for every dimension.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats

MIN_PER_GROUP = 2  # below this a two-sample test is meaningless: report "not enough data"
DEFAULT_BOOT = 1000
DEFAULT_CI = 0.95


def result(
    test: str,
    statistic=None,
    p_value=None,
    effect_size_name=None,
    effect_size=None,
    ci_low=None,
    ci_high=None,
    n_human=0,
    n_agent=0,
    note: str = "",
) -> dict:
    def f(x):
        return None if x is None or (isinstance(x, float) and not math.isfinite(x)) else float(x)

    return {
        "test": test,
        "statistic": f(statistic),
        "p_value": f(p_value),
        "effect_size_name": effect_size_name,
        "effect_size": f(effect_size),
        "ci_low": f(ci_low),
        "ci_high": f(ci_high),
        "n_human": int(n_human),
        "n_agent": int(n_agent),
        "note": note,
    }


def not_enough(test: str, n_human: int, n_agent: int, effect_size_name=None, why: str = "") -> dict:
    note = "not enough data" + (f": {why}" if why else f" (n_human={n_human}, n_agent={n_agent})")
    return result(test, effect_size_name=effect_size_name, n_human=n_human, n_agent=n_agent, note=note)


# --------------------------------------------------------------------------------------------------
# Categorical labels
# --------------------------------------------------------------------------------------------------


def contingency(
    human: Sequence, agent: Sequence, categories: Sequence[str] | None = None
) -> tuple[np.ndarray, list]:
    """2 x k table of counts (row 0 human, row 1 agent); categories seen in neither group are dropped."""
    h = pd.Series(human, dtype=object).astype(str).value_counts()
    a = pd.Series(agent, dtype=object).astype(str).value_counts()
    seen = set(h.index) | set(a.index)
    cats = [c for c in (categories or []) if c in seen]
    cats += sorted(seen - set(cats))
    table = np.vstack([h.reindex(cats, fill_value=0).to_numpy(), a.reindex(cats, fill_value=0).to_numpy()])
    return table.astype(np.int64).reshape(2, len(cats)), cats


def cramers_v(table: np.ndarray) -> float:
    """Cramer's V = sqrt(chi2 / (n (min(r, c) - 1))) from the uncorrected Pearson chi-square."""
    table = np.asarray(table, dtype=float)
    table = table[table.sum(axis=1) > 0][:, table.sum(axis=0) > 0]
    r, c = table.shape
    if min(r, c) < 2:
        return 0.0
    n = table.sum()
    expected = np.outer(table.sum(axis=1), table.sum(axis=0)) / n
    chi2 = ((table - expected) ** 2 / expected).sum()
    return float(math.sqrt(chi2 / (n * (min(r, c) - 1))))


def cramers_v_batch(tables: np.ndarray) -> np.ndarray:
    """Cramer's V of a stack of r x c tables (shape (B, r, c)) at once; empty rows/columns are
    ignored as in ``cramers_v``. Equals ``[cramers_v(t) for t in tables]`` (tested)."""
    t = np.asarray(tables, dtype=float)
    n = t.sum(axis=(1, 2))
    rows, cols = t.sum(axis=2), t.sum(axis=1)
    expected = rows[:, :, None] * cols[:, None, :] / np.where(n > 0, n, 1)[:, None, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(expected > 0, (t - expected) ** 2 / expected, 0.0)
    chi2 = terms.sum(axis=(1, 2))
    k = np.minimum((rows > 0).sum(axis=1), (cols > 0).sum(axis=1)) - 1
    with np.errstate(divide="ignore", invalid="ignore"):
        v = np.where((k > 0) & (n > 0), np.sqrt(chi2 / (n * np.maximum(k, 1))), 0.0)
    return v


def _multinomial_boot(table: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Bootstrap replicates of a 2 x k table: each group resampled with its own size.

    Resampling n observations with replacement from a group's categorical values is exactly a
    multinomial draw with the observed proportions, so this is the ordinary nonparametric
    bootstrap (stratified by group), done without materialising the samples.
    """
    reps = np.empty((n_boot,) + table.shape, dtype=np.int64)
    for i, row in enumerate(table):
        n = int(row.sum())
        reps[:, i, :] = rng.multinomial(n, row / n, size=n_boot)
    return reps


PERMUTATIONS = 2000  # for sparse r x c tables (chi_square_permutation_p)


def chi_square_permutation_p(table: np.ndarray, n_perm: int = PERMUTATIONS, seed: int = 0) -> float:
    """Permutation p-value of Pearson's chi-square for a 2 x k table: the labels are reassigned to
    the two groups at random with the group sizes kept (a multivariate hypergeometric draw of the
    column totals), p = (1 + #(chi2 >= observed)) / (1 + n_perm) (Phipson & Smyth 2010)."""
    table = np.asarray(table, dtype=np.int64)
    cols = table.sum(axis=0)
    n0 = int(table[0].sum())
    rng = np.random.default_rng(seed)
    first = rng.multivariate_hypergeometric(cols, n0, size=n_perm)
    reps = np.stack([first, cols - first], axis=1).astype(float)  # (B, 2, k)

    def chi2_of(t):
        n = t.sum(axis=(-2, -1), keepdims=True)
        expected = t.sum(axis=-1, keepdims=True) * t.sum(axis=-2, keepdims=True) / n
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(expected > 0, (t - expected) ** 2 / expected, 0.0).sum(axis=(-2, -1))

    observed = float(chi2_of(table.astype(float)[None])[0])
    null = chi2_of(reps)
    return float((1 + int((null >= observed - 1e-9).sum())) / (1 + n_perm))


def chi_square_test(
    human: Sequence,
    agent: Sequence,
    categories: Sequence[str] | None = None,
    n_boot: int = DEFAULT_BOOT,
    ci: float = DEFAULT_CI,
    seed: int = 0,
) -> dict:
    """Pearson chi-square without continuity correction, or Fisher's exact test for a 2x2 table with
    an expected count below 5, or for a larger table that breaks Cochran's rule (an expected count
    below 1, or more than 20% below 5) the chi-square's permutation p-value
    (``chi_square_permutation``); Cramer's V with a percentile bootstrap interval."""
    n_h, n_a = len(human), len(agent)
    if n_h < MIN_PER_GROUP or n_a < MIN_PER_GROUP:
        return not_enough("chi_square", n_h, n_a, "cramers_v")
    table, cats = contingency(human, agent, categories)
    if table.shape[1] < 2:
        return result(
            "chi_square",
            0.0,
            1.0,
            "cramers_v",
            0.0,
            0.0,
            0.0,
            n_h,
            n_a,
            note=f"one category only ({cats[0]!r}): no difference possible",
        )
    chi2, p, dof, expected = stats.chi2_contingency(table, correction=False)
    test, statistic, note = "chi_square", chi2, f"dof={dof}"
    if table.shape == (2, 2) and expected.min() < 5:
        odds, p = stats.fisher_exact(table)
        test, statistic, note = "fisher_exact", odds, "statistic = odds ratio; expected count < 5"
    elif expected.min() < 1 or (expected < 5).mean() > 0.2:
        # Sparse larger table (Cochran's rule broken: an expected count below 1, or more than 20% below
        # 5): the chi-square approximation is poor, so the p-value comes from the permutation
        # distribution of the statistic. Its floor is 1 / (permutations + 1); when no permutation
        # reaches the observed statistic the approximation's (smaller) p is kept, and the note says so.
        p_perm = chi_square_permutation_p(table, n_perm=PERMUTATIONS, seed=seed)
        test = "chi_square_permutation"
        if p_perm > 1 / (PERMUTATIONS + 1):
            p, note = p_perm, f"dof={dof}; sparse table: p from {PERMUTATIONS} permutations"
        else:
            note = (
                f"dof={dof}; sparse table: no permutation of {PERMUTATIONS} reached the statistic "
                f"(p < {1 / (PERMUTATIONS + 1):.1e}); the chi-square approximation's p shown"
            )
    v = cramers_v(table)
    rng = np.random.default_rng(seed)
    reps = _multinomial_boot(table, n_boot, rng)
    boot = cramers_v_batch(reps)
    alpha = (1 - ci) / 2
    lo, hi = np.quantile(boot, [alpha, 1 - alpha])
    return result(test, statistic, p, "cramers_v", v, lo, hi, n_h, n_a, note=note)


# --------------------------------------------------------------------------------------------------
# Ordinal scales and continuous features
# --------------------------------------------------------------------------------------------------


def cliffs_delta(human: Sequence[float], agent: Sequence[float]) -> float:
    """Cliff's delta = P(agent > human) - P(agent < human), via ranks (O(n log n))."""
    x, y = np.asarray(human, float), np.asarray(agent, float)
    if len(x) == 0 or len(y) == 0:
        return float("nan")
    ranks = stats.rankdata(np.concatenate([y, x]))
    u_agent = ranks[: len(y)].sum() - len(y) * (len(y) + 1) / 2  # counts agent > human + ties/2
    return float(2 * u_agent / (len(x) * len(y)) - 1)


def _placements(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """DeLong placement values: for each y, share of x below it (ties 1/2), and for each x the share
    of y above it."""
    xs, ys = np.sort(x), np.sort(y)
    below_y = (np.searchsorted(xs, y, "left") + np.searchsorted(xs, y, "right")) / 2 / len(x)
    above_x = 1 - (np.searchsorted(ys, x, "left") + np.searchsorted(ys, x, "right")) / 2 / len(y)
    return below_y, above_x


def cliffs_delta_ci(
    human: Sequence[float], agent: Sequence[float], ci: float = DEFAULT_CI
) -> tuple[float, float, float]:
    """Cliff's delta with a confidence interval from DeLong's variance of the AUC (delta = 2 AUC - 1).

    DeLong, DeLong & Clarke-Pearson (1988), Biometrics 44:837; the interval is computed on the
    AUC, then clipped to [-1, 1]. Checked against a bootstrap in the tests.
    """
    x, y = np.asarray(human, float), np.asarray(agent, float)
    m, n = len(x), len(y)
    below_y, above_x = _placements(x, y)
    auc = below_y.mean()
    var = (below_y.var(ddof=1) / n if n > 1 else 0) + (above_x.var(ddof=1) / m if m > 1 else 0)
    z = stats.norm.ppf(1 - (1 - ci) / 2)
    half = z * math.sqrt(max(var, 0.0))
    delta = 2 * auc - 1
    return float(delta), float(max(-1.0, delta - 2 * half)), float(min(1.0, delta + 2 * half))


def mann_whitney_test(human: Sequence[float], agent: Sequence[float], ci: float = DEFAULT_CI) -> dict:
    """Two-sided Mann-Whitney U (statistic = U of the agent sample) with Cliff's delta and interval."""
    x, y = np.asarray(human, float), np.asarray(agent, float)
    if len(x) < MIN_PER_GROUP or len(y) < MIN_PER_GROUP:
        return not_enough("mann_whitney", len(x), len(y), "cliffs_delta")
    if np.ptp(np.concatenate([x, y])) == 0:
        return result(
            "mann_whitney",
            len(x) * len(y) / 2,
            1.0,
            "cliffs_delta",
            0.0,
            0.0,
            0.0,
            len(x),
            len(y),
            note="all values equal",
        )
    u, p = stats.mannwhitneyu(y, x, alternative="two-sided")
    d, lo, hi = cliffs_delta_ci(x, y, ci)
    return result("mann_whitney", u, p, "cliffs_delta", d, lo, hi, len(x), len(y))


def hedges_g(human: Sequence[float], agent: Sequence[float]) -> float:
    """Hedges' g (agent - human) with the small-sample correction J = 1 - 3 / (4 df - 1)
    (Hedges & Olkin 1985, eq. 5.10)."""
    x, y = np.asarray(human, float), np.asarray(agent, float)
    n1, n2 = len(x), len(y)
    df = n1 + n2 - 2
    sp = math.sqrt(((n1 - 1) * x.var(ddof=1) + (n2 - 1) * y.var(ddof=1)) / df)
    if sp == 0:
        return 0.0
    return float((y.mean() - x.mean()) / sp * (1 - 3 / (4 * df - 1)))


def hedges_g_ci(human, agent, ci: float = DEFAULT_CI) -> tuple[float, float, float]:
    """g with the normal-approximation interval, var(g) = (n1+n2)/(n1 n2) + g^2 / (2 (n1+n2))
    (Hedges & Olkin 1985, eq. 5.15)."""
    n1, n2 = len(human), len(agent)
    g = hedges_g(human, agent)
    se = math.sqrt((n1 + n2) / (n1 * n2) + g * g / (2 * (n1 + n2)))
    z = stats.norm.ppf(1 - (1 - ci) / 2)
    return g, g - z * se, g + z * se


def welch_t_test(human: Sequence[float], agent: Sequence[float], ci: float = DEFAULT_CI) -> dict:
    """Welch's t (unequal variances; statistic oriented agent - human) with Hedges' g."""
    x, y = np.asarray(human, float), np.asarray(agent, float)
    if len(x) < MIN_PER_GROUP or len(y) < MIN_PER_GROUP:
        return not_enough("welch_t", len(x), len(y), "hedges_g")
    if x.var() == 0 and y.var() == 0:
        same = x[0] == y[0]
        return result(
            "welch_t",
            0.0 if same else None,
            1.0 if same else None,
            "hedges_g",
            0.0 if same else None,
            n_human=len(x),
            n_agent=len(y),
            note="no variance in either group",
        )
    t, p = stats.ttest_ind(y, x, equal_var=False)
    g, lo, hi = hedges_g_ci(x, y, ci)
    return result("welch_t", t, p, "hedges_g", g, lo, hi, len(x), len(y))


# Fewer human participants than this: the participant-clustered rows say their p-value is unreliable
# (cluster-robust errors need many clusters; with t(G-1) references they are still liberal below ~10).
FEW_CLUSTERS = 10


def _cluster_ids(human_clusters: Sequence, n_agent: int) -> tuple[np.ndarray, int]:
    """Cluster index per observation (humans by participant; each agent conversation its own) and the
    number of human clusters. Humans without a participant id are one cluster each as well."""
    hc = pd.Series(list(human_clusters), dtype=object)
    missing = hc.isna() | (hc.astype(str) == "")
    hc = hc.astype(str).where(~missing, [f"\x00solo{i}" for i in range(len(hc))])
    codes, uniq = pd.factorize(hc)
    g_h = len(uniq)
    return np.concatenate([codes, g_h + np.arange(n_agent)]), g_h


def _few(g_h: int) -> str:
    return (
        f"; only {g_h} participants: unreliable with fewer than {FEW_CLUSTERS}" if g_h < FEW_CLUSTERS else ""
    )


def clustered_test(
    human: Sequence[float], agent: Sequence[float], human_clusters: Sequence, ci: float = DEFAULT_CI
) -> dict:
    """Mean difference (agent - human) by OLS with cluster-robust (CR1) standard errors, clustered by
    participant; each agent conversation is its own cluster.

    This accounts for humans contributing many conversations each (the marginal counterpart of a
    random intercept per participant). A random-intercept MixedLM took ~30 s and failed to converge
    on the reference data (1,856 singleton agent groups), so the robust OLS is the default. The
    estimate and t statistic match ``statsmodels OLS.fit(cov_type="cluster")`` (tested); the p-value
    and interval use Student's t with G_h - 1 degrees of freedom, G_h the number of human
    participants (the variance of the human mean rests on them; Cameron & Miller 2015, section VI,
    recommend t(G-1) over the normal), so a pilot with few participants is not overconfident.
    """
    import statsmodels.api as sm

    x, y = np.asarray(human, float), np.asarray(agent, float)
    n_h, n_a = len(x), len(y)
    groups, g_h = _cluster_ids(human_clusters, n_a)
    if n_h < MIN_PER_GROUP or n_a < MIN_PER_GROUP or g_h < 2:
        return not_enough(
            "ols_cluster_robust",
            n_h,
            n_a,
            "mean_difference",
            why=f"n_human={n_h}, n_agent={n_a}, human clusters={g_h}",
        )
    values = np.concatenate([x, y])
    if np.ptp(values) == 0:
        return result(
            "ols_cluster_robust",
            0.0,
            1.0,
            "mean_difference",
            0.0,
            0.0,
            0.0,
            n_h,
            n_a,
            note="all values equal",
        )
    design = sm.add_constant(np.concatenate([np.zeros(n_h), np.ones(n_a)]))
    fit = sm.OLS(values, design).fit(cov_type="cluster", cov_kwds={"groups": groups})
    # The variance from the covariance matrix, clipped at 0: rounding can make a zero variance (e.g. a
    # constant group) slightly negative, and statsmodels' bse would then be NaN.
    est = float(fit.params[1])
    se = math.sqrt(max(float(np.asarray(fit.cov_params())[1, 1]), 0.0))
    t = est / se if se > 0 else (math.copysign(math.inf, est) if est else float("nan"))
    df = g_h - 1
    if math.isfinite(t):
        p = float(2 * stats.t.sf(abs(t), df))
    else:  # no variance left: a difference is certain, no difference is no evidence
        p = 0.0 if est else 1.0
        t = t if est else 0.0
    half = float(stats.t.ppf(0.5 + ci / 2, df)) * se
    return result(
        "ols_cluster_robust",
        t,
        p,
        "mean_difference",
        est,
        est - half,
        est + half,
        n_h,
        n_a,
        note=f"clusters: {g_h} participants + {n_a} agent conversations; t({df}){_few(g_h)}",
    )


def _share_differences_wald(
    h: np.ndarray, a: np.ndarray, cats: list, groups: np.ndarray
) -> tuple[np.ndarray, float]:
    """The k-1 share differences (agent - human) and their Wald statistic d' V^-1 d, V the CR1
    cluster-robust covariance."""
    k, n_h, n_a = len(cats), len(h), len(a)
    values = np.concatenate([h, a])
    y = (values[:, None] == np.asarray(cats[:-1], dtype=object)[None, :]).astype(float)  # N x (k-1)
    agent_ind = np.r_[np.zeros(n_h), np.ones(n_a)]
    X = np.column_stack([np.ones(n_h + n_a), agent_ind])
    # Per category an OLS of its indicator on (1, agent); stacked, the coefficient vector is
    # [b0_1, b1_1, b0_2, b1_2, ...] and its CR1 covariance is bread (x) I applied to the cluster
    # sums of the scores x_i (x) e_i.
    xtx_inv = np.linalg.inv(X.T @ X)
    beta = xtx_inv @ X.T @ y  # 2 x (k-1)
    e = y - X @ beta
    scores = (X[:, :, None] * e[:, None, :]).reshape(len(values), -1)  # N x 2(k-1), (param, category)
    sums = np.zeros((groups.max() + 1, scores.shape[1]))
    np.add.at(sums, groups, scores)
    meat = sums.T @ sums
    bread = np.kron(xtx_inv, np.eye(k - 1))  # order (param, category)
    n, g = len(values), groups.max() + 1
    cov = g / (g - 1) * (n - 1) / (n - 2) * bread @ meat @ bread
    idx = np.arange(k - 1) + (k - 1)  # the agent coefficients (param 1) of every category
    d = beta[1]
    v = cov[np.ix_(idx, idx)]
    return d, float(d @ np.linalg.pinv(v) @ d)


def _cluster_boot_cramers_v(
    h: np.ndarray,
    table: np.ndarray,
    cats: list,
    human_groups: np.ndarray,
    g_h: int,
    n_boot: int,
    ci: float,
    seed: int,
) -> tuple[float, float]:
    """Percentile interval of Cramer's V: whole participants resampled with all their
    conversations, agent conversations (row 1 of ``table``) resampled singly."""
    k = len(cats)
    rng = np.random.default_rng(seed)
    codes_h = pd.Categorical(h, categories=cats).codes
    per_cluster = np.zeros((g_h, k))
    np.add.at(per_cluster, (human_groups, codes_h), 1)
    weights = rng.multinomial(g_h, np.full(g_h, 1 / g_h), size=n_boot)  # B x G_h
    reps = np.empty((n_boot, 2, k))
    reps[:, 0, :] = weights @ per_cluster
    reps[:, 1, :] = _multinomial_boot(table[1:2], n_boot, rng)[:, 0, :]
    boot = cramers_v_batch(reps)
    alpha = (1 - ci) / 2
    lo, hi = np.quantile(boot, [alpha, 1 - alpha])
    return lo, hi


def clustered_share_test(
    human: Sequence,
    agent: Sequence,
    human_clusters: Sequence,
    categories: Sequence[str] | None = None,
    n_boot: int = DEFAULT_BOOT,
    ci: float = DEFAULT_CI,
    seed: int = 0,
) -> dict:
    """Participant-clustered test of a nominal variable: do the category shares differ between the
    kinds, when each human contributes several conversations?

    The k-1 share differences (agent - human; the last category is implied) come from OLS of the
    category indicators on the kind, with CR1 cluster-robust covariance (clusters: participants;
    each agent conversation its own), the same estimator as ``clustered_test`` per category. The
    joint Wald statistic W = d' V^-1 d is referred to F(k-1, G_h-1) as W/(k-1) (G_h: human
    participants). Effect size: Cramer's V with a cluster bootstrap interval (whole participants
    resampled with all their conversations; agent conversations resampled singly). Checked against a
    hand-computed sandwich and, for two categories, against ``clustered_test`` (tests)."""
    h = pd.Series(list(human), dtype=object).astype(str).to_numpy()
    a = pd.Series(list(agent), dtype=object).astype(str).to_numpy()
    n_h, n_a = len(h), len(a)
    groups, g_h = _cluster_ids(human_clusters, n_a)
    if n_h < MIN_PER_GROUP or n_a < MIN_PER_GROUP or g_h < 2:
        return not_enough(
            "wald_cluster_robust",
            n_h,
            n_a,
            "cramers_v",
            why=f"n_human={n_h}, n_agent={n_a}, human clusters={g_h}",
        )
    table, cats = contingency(h, a, categories)
    k = len(cats)
    if k < 2:
        return result(
            "wald_cluster_robust",
            0.0,
            1.0,
            "cramers_v",
            0.0,
            0.0,
            0.0,
            n_h,
            n_a,
            note=f"one category only ({cats[0]!r}): no difference possible",
        )
    d, w = _share_differences_wald(h, a, cats, groups)
    df1, df2 = k - 1, g_h - 1
    p = float(stats.f.sf(w / df1, df1, df2))
    lo, hi = _cluster_boot_cramers_v(h, table, cats, groups[:n_h], g_h, n_boot, ci, seed)
    diffs = ", ".join(f"{c} {x:+.3f}" for c, x in zip(cats[:-1], d))
    return result(
        "wald_cluster_robust",
        w,
        p,
        "cramers_v",
        cramers_v(table),
        lo,
        hi,
        n_h,
        n_a,
        note=f"share differences (agent - human): {diffs}; F({df1}, {df2}); "
        f"clusters: {g_h} participants + {n_a} agent conversations{_few(g_h)}",
    )


# --------------------------------------------------------------------------------------------------
# Paired (matched) comparisons
# --------------------------------------------------------------------------------------------------


def wilcoxon_paired_test(human: Sequence[float], agent: Sequence[float], ci: float = DEFAULT_CI) -> dict:
    """Wilcoxon signed-rank on matched pairs (agent - human) with the matched-pairs rank-biserial
    correlation r = (W+ - W-) / (W+ + W-) (Kerby 2014) and a percentile bootstrap interval."""
    x, y = np.asarray(human, float), np.asarray(agent, float)
    n = len(x)
    d = y - x
    nz = d[d != 0]
    if n < 3:
        return not_enough("wilcoxon_paired", n, n, "rank_biserial")
    if len(nz) == 0:
        return result(
            "wilcoxon_paired", 0.0, 1.0, "rank_biserial", 0.0, 0.0, 0.0, n, n, note="all pairs equal"
        )
    w, p = stats.wilcoxon(y, x, zero_method="wilcox")

    def rbc(diffs):
        diffs = diffs[diffs != 0]
        if len(diffs) == 0:
            return 0.0
        r = stats.rankdata(np.abs(diffs))
        return (r[diffs > 0].sum() - r[diffs < 0].sum()) / r.sum()

    rng = np.random.default_rng(0)
    boot = [rbc(d[rng.integers(0, n, n)]) for _ in range(500)]
    lo, hi = np.quantile(boot, [(1 - ci) / 2, 1 - (1 - ci) / 2])
    return result("wilcoxon_paired", w, p, "rank_biserial", rbc(d), lo, hi, n, n, note="pairs")


def mcnemar_bowker_test(
    human: Sequence, agent: Sequence, categories: Sequence[str] | None = None, ci: float = DEFAULT_CI
) -> dict:
    """Symmetry test of the human x agent table of matched pairs (McNemar for two categories,
    Bowker for more; statsmodels ``SquareTable.symmetry``); effect = share of pairs that agree,
    with a Wilson interval."""
    from statsmodels.stats.contingency_tables import SquareTable
    from statsmodels.stats.proportion import proportion_confint

    n = len(human)
    if n < 3:
        return not_enough("mcnemar_bowker", n, n, "pair_agreement")
    cats = list(categories or [])
    seen = set(map(str, human)) | set(map(str, agent))
    cats = [c for c in cats if c in seen] + sorted(seen - set(cats))
    idx = {c: i for i, c in enumerate(cats)}
    table = np.zeros((len(cats), len(cats)))
    for h, a in zip(human, agent):
        table[idx[str(h)], idx[str(a)]] += 1
    agree = int(np.trace(table))
    lo, hi = proportion_confint(agree, n, alpha=1 - ci, method="wilson")
    if len(cats) < 2 or agree == n:
        return result(
            "mcnemar_bowker", 0.0, 1.0, "pair_agreement", agree / n, lo, hi, n, n, note="all pairs agree"
        )
    sym = SquareTable(table, shift_zeros=False).symmetry()
    return result(
        "mcnemar_bowker",
        sym.statistic,
        sym.pvalue,
        "pair_agreement",
        agree / n,
        lo,
        hi,
        n,
        n,
        note=f"dof={int(sym.df)}",
    )


# --------------------------------------------------------------------------------------------------
# Multiple comparisons, Jensen-Shannon
# --------------------------------------------------------------------------------------------------


def adjust_p(p_values: Sequence[float | None], method: str = "holm") -> list[float | None]:
    """Holm (default) or Benjamini-Hochberg over the non-missing p-values (statsmodels multipletests)."""
    from statsmodels.stats.multitest import multipletests

    methods = {"holm": "holm", "bh": "fdr_bh", "fdr_bh": "fdr_bh", "none": None}
    if method not in methods:
        from db.errors import UserInputError

        raise UserInputError(f"unknown correction {method!r}: use holm, bh or none")
    p = np.array([np.nan if v is None else v for v in p_values], dtype=float)
    out: list[float | None] = [None] * len(p)
    ok = np.isfinite(p)
    if ok.any():
        adj = p[ok] if methods[method] is None else multipletests(p[ok], method=methods[method])[1]
        for i, v in zip(np.flatnonzero(ok), adj):
            out[i] = float(v)
    return out


def js_distance(p: Sequence[float], q: Sequence[float]) -> float:
    """Jensen-Shannon distance with base-2 logs (in [0, 1]); equals scipy's ``jensenshannon(p, q, 2)``."""
    p, q = np.asarray(p, float), np.asarray(q, float)
    p, q = p / p.sum(), q / q.sum()
    m = (p + q) / 2

    def kl(a, b):
        mask = a > 0
        return float((a[mask] * np.log2(a[mask] / b[mask])).sum())

    return math.sqrt(max(0.0, (kl(p, m) + kl(q, m)) / 2))


def js_distance_ci(
    human_counts: Sequence[int],
    agent_counts: Sequence[int],
    n_boot: int = DEFAULT_BOOT,
    ci: float = DEFAULT_CI,
    seed: int = 0,
) -> tuple[float, float, float]:
    """JS distance between the two label distributions with a percentile bootstrap interval
    (each group resampled with its own size). Note the plug-in distance is biased upwards for
    small samples: two samples of one distribution are not at distance 0."""
    table = np.array([human_counts, agent_counts], dtype=np.int64)
    d = js_distance(table[0], table[1])
    reps = _multinomial_boot(table, n_boot, np.random.default_rng(seed)).astype(float)
    reps /= reps.sum(axis=2, keepdims=True)
    m = (reps[:, 0] + reps[:, 1]) / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        kl_p = np.where(reps[:, 0] > 0, reps[:, 0] * np.log2(reps[:, 0] / m), 0).sum(axis=1)
        kl_q = np.where(reps[:, 1] > 0, reps[:, 1] * np.log2(reps[:, 1] / m), 0).sum(axis=1)
    boot = np.sqrt(np.maximum(0, (kl_p + kl_q) / 2))
    lo, hi = np.quantile(boot, [(1 - ci) / 2, 1 - (1 - ci) / 2])
    return d, float(lo), float(hi)


def _js_rows(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """JS distances (base 2) between the rows of two count arrays of shape (B, k)."""
    p = p / p.sum(axis=1, keepdims=True)
    q = q / q.sum(axis=1, keepdims=True)
    m = (p + q) / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        kl_p = np.where(p > 0, p * np.log2(p / m), 0).sum(axis=1)
        kl_q = np.where(q > 0, q * np.log2(q / m), 0).sum(axis=1)
    return np.sqrt(np.maximum(0, (kl_p + kl_q) / 2))


def js_null(
    human_counts: Sequence[int], agent_counts: Sequence[int], n_perm: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """(expected JS distance under no difference, permutation p-value) for two label samples.

    The plug-in distance is biased upwards in small samples (two samples of one distribution are
    not at distance 0, and the smaller they are the further apart): the null distribution comes from
    reassigning the pooled labels to groups of the observed sizes at random (an exact permutation
    draw: a multivariate hypergeometric sample of the pooled counts). p = (1 + #null >= observed) /
    (1 + n_perm) (Phipson & Smyth 2010)."""
    h = np.asarray(human_counts, dtype=np.int64)
    a = np.asarray(agent_counts, dtype=np.int64)
    observed = js_distance(h, a)
    pooled = h + a
    rng = np.random.default_rng(seed)
    draws = rng.multivariate_hypergeometric(pooled, int(h.sum()), size=n_perm)
    null = _js_rows(draws.astype(float), (pooled - draws).astype(float))
    p = (1 + int((null >= observed - 1e-12).sum())) / (1 + n_perm)
    return float(null.mean()), float(p)
