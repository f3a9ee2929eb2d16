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


PERMUTATIONS = 10_000  # first batch of permutations for sparse r x c tables (chi_square_permutation_p)
MAX_PERMUTATIONS = 2_000_000  # the adaptive permutation p stops here at the latest
MIN_HITS = 10  # exceedances wanted before the permutation p is reported (about +-30% precision)
MC_LEVEL = 0.99  # confidence of the Monte Carlo interval that must clear the decision thresholds


def _chi2_of(t: np.ndarray) -> np.ndarray:
    """Pearson chi-square of a stack of tables (..., r, c); empty rows/columns contribute 0."""
    n = t.sum(axis=(-2, -1), keepdims=True)
    expected = t.sum(axis=-1, keepdims=True) * t.sum(axis=-2, keepdims=True) / n
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(expected > 0, (t - expected) ** 2 / expected, 0.0).sum(axis=(-2, -1))


def monte_carlo_interval(hits: int, n: int, level: float = MC_LEVEL) -> tuple[float, float]:
    """Clopper-Pearson interval of the exceedance probability from ``hits`` of ``n`` draws."""
    a = (1 - level) / 2
    lo = 0.0 if hits == 0 else float(stats.beta.ppf(a, hits, n - hits + 1))
    hi = 1.0 if hits == n else float(stats.beta.ppf(1 - a, hits + 1, n - hits))
    return lo, hi


def chi_square_permutation_p(
    table: np.ndarray,
    thresholds: Sequence[float] = (0.05,),
    seed: int = 0,
    start: int = PERMUTATIONS,
    max_perm: int = MAX_PERMUTATIONS,
) -> tuple[float, int, float, float]:
    """Permutation p-value of Pearson's chi-square for a 2 x k table, with permutations added until
    the decision is settled: (p, permutations, Monte Carlo interval low, high).

    Labels are reassigned to the two groups at random with the group sizes kept (a multivariate
    hypergeometric draw of the column totals, vectorised), p = (1 + #(chi2 >= observed)) / (1 + B)
    (Phipson & Smyth 2010). Starting from ``start`` draws, the number of draws doubles until the
    99% Clopper-Pearson interval of the exceedance probability lies clear of every threshold in
    ``thresholds`` (e.g. alpha and the family's Bonferroni level alpha/m, the smallest Holm step)
    and at least ``MIN_HITS`` permutations reached the statistic (or the interval lies below a tenth
    of every threshold), or ``max_perm`` is reached. Checked against R's ``chisq.test(simulate.p.value=TRUE)`` and
    ``fisher.test`` on the reference data (tests/test_reproduce.py) and scipy's permutation_test.
    """
    table = np.asarray(table, dtype=np.int64)
    cols = table.sum(axis=0)
    n0 = int(table[0].sum())
    rng = np.random.default_rng(seed)
    chi2 = float(_chi2_of(table.astype(float)[None])[0])
    observed = chi2 - 1e-9 * max(1.0, chi2)  # a permutation equal up to rounding counts as reaching it
    hits = done = 0
    batch = int(start)
    while True:
        for size in [min(200_000, batch - i) for i in range(0, batch, 200_000)]:
            first = rng.multivariate_hypergeometric(cols, n0, size=size)
            reps = np.stack([first, cols - first], axis=1).astype(float)  # (B, 2, k)
            hits += int((_chi2_of(reps) >= observed).sum())
        done += batch
        lo, hi = monte_carlo_interval(hits, done)
        clear = all(hi < t or lo > t for t in thresholds)
        # settled, and the p itself known to about +-30% (10 exceedances) unless it is far below
        # every threshold (then its size does not matter and no permutation may ever reach it)
        precise = hits >= MIN_HITS or hi < min(thresholds, default=1.0) / 10
        if (clear and precise) or done >= max_perm:
            return float((1 + hits) / (1 + done)), done, lo, hi
        batch = min(done, max_perm - done)


def chi_square_test(
    human: Sequence,
    agent: Sequence,
    categories: Sequence[str] | None = None,
    n_boot: int = DEFAULT_BOOT,
    ci: float = DEFAULT_CI,
    seed: int = 0,
    thresholds: Sequence[float] = (0.05,),
) -> dict:
    """Pearson chi-square without continuity correction, or Fisher's exact test for a 2x2 table with
    an expected count below 5, or for a larger table that breaks Cochran's rule (an expected count
    below 1, or more than 20% below 5) the chi-square's permutation p-value
    (``chi_square_permutation_p``, whose draws are added until the decision at ``thresholds`` is
    settled); Cramer's V with a percentile bootstrap interval."""
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
        # 5): the chi-square approximation is poor (it can be too small or too large), so the p-value
        # comes from the permutation distribution of the statistic, with permutations added until
        # its Monte Carlo interval is clear of the decision thresholds; never the approximation.
        p, n_perm, lo_mc, hi_mc = chi_square_permutation_p(table, thresholds=thresholds, seed=seed)
        test = "chi_square_permutation"
        levels = ", ".join(f"{t:.2g}" for t in thresholds)
        clear = all(hi_mc < t or lo_mc > t for t in thresholds)
        note = (
            f"dof={dof}; sparse table: p from {n_perm:,} permutations (99% Monte Carlo interval of "
            f"the exceedance probability [{lo_mc:.2g}, {hi_mc:.2g}], "
            + ("clear of" if clear else "NOT clear of")
            + f" {levels}"
            + ("; no permutation reached the statistic" if lo_mc == 0 else "")
            + ")"
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
    return result(
        "mann_whitney", u, p, "cliffs_delta", d, lo, hi, len(x), len(y), note=assumption_notes(x, y)
    )


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


def bonett_d_ci(human, agent, ci: float = DEFAULT_CI) -> tuple[float, float, float]:
    """Standardised mean difference for unequal variances (agent - human) with its interval, Bonett
    (2008, Psychol. Methods 13:99, eq. 5-6; R ``statpsych::ci.stdmean2``): the standardiser is
    sqrt((s1^2 + s2^2) / 2), so no equal variances are assumed, as in Welch's t. The estimate has
    the small-sample bias adjustment 1 - 3 / (4 (n1 + n2) - 9); the interval is
    d +- z SE, var(d) = d^2 (s1^4/df1 + s2^4/df2) / (8 s^4) + (s1^2/df1 + s2^2/df2) / s^2, centred on
    the unadjusted d as in statpsych. The SE is checked against a simulation in the tests."""
    x, y = np.asarray(human, float), np.asarray(agent, float)
    n1, n2 = len(x), len(y)
    v1, v2 = x.var(ddof=1), y.var(ddof=1)
    s2 = (v1 + v2) / 2
    if s2 == 0:
        return 0.0, 0.0, 0.0
    d = (y.mean() - x.mean()) / math.sqrt(s2)
    df1, df2 = n1 - 1, n2 - 1
    se = math.sqrt(d * d * (v1**2 / df1 + v2**2 / df2) / (8 * s2 * s2) + (v1 / df1 + v2 / df2) / s2)
    z = stats.norm.ppf(1 - (1 - ci) / 2)
    return float(d * (1 - 3 / (4 * (n1 + n2) - 9))), float(d - z * se), float(d + z * se)


def welch_t_test(human: Sequence[float], agent: Sequence[float], ci: float = DEFAULT_CI) -> dict:
    """Welch's t (unequal variances; statistic oriented agent - human) with Bonett's d, the
    standardised difference that, like the test, does not assume equal variances (``bonett_d_ci``;
    Hedges' g would pool the variances)."""
    x, y = np.asarray(human, float), np.asarray(agent, float)
    if len(x) < MIN_PER_GROUP or len(y) < MIN_PER_GROUP:
        return not_enough("welch_t", len(x), len(y), "bonett_d")
    if x.var() == 0 and y.var() == 0:
        same = x[0] == y[0]
        return result(
            "welch_t",
            0.0 if same else None,
            1.0 if same else None,
            "bonett_d",
            0.0 if same else None,
            n_human=len(x),
            n_agent=len(y),
            note="no variance in either group",
        )
    t, p = stats.ttest_ind(y, x, equal_var=False)
    g, lo, hi = bonett_d_ci(x, y, ci)
    return result("welch_t", t, p, "bonett_d", g, lo, hi, len(x), len(y), note=assumption_notes(x, y))


def assumption_notes(x: np.ndarray, y: np.ndarray) -> str:
    """What a two-sample test on these values should warn about: a constant group, and heavy ties
    (half of all values on one value; rank tests and their intervals then rest on few ranks)."""
    notes = []
    for name, v in (("human", x), ("agent", y)):
        if len(v) and np.ptp(v) == 0:
            notes.append(f"{name} group constant ({v[0]:g}): the test compares a spread against a point")
    both = np.concatenate([x, y])
    if len(both):
        _, counts = np.unique(both, return_counts=True)
        if counts.max() / len(both) >= 0.5:
            notes.append(f"heavy ties: {counts.max() / len(both):.0%} of the values are equal")
    return "; ".join(notes)


SIGNED_EFFECTS = {"cliffs_delta", "bonett_d", "hedges_g", "mean_difference", "rank_biserial"}


def disagreement_note(row: dict, alpha: float = 1 - DEFAULT_CI) -> str:
    """A row whose test and effect-size interval disagree about "no difference" (p < alpha with an
    interval that contains 0, or p >= alpha with an interval that excludes 0) says so; only for
    signed effect sizes (0 = no difference) and when the interval has the matching level."""
    p, lo, hi = row.get("p_value"), row.get("ci_low"), row.get("ci_high")
    if row.get("effect_size_name") not in SIGNED_EFFECTS or None in (p, lo, hi):
        return ""
    covers = lo <= 0 <= hi
    if p < alpha and covers:
        return f"test and interval disagree: p < {alpha:g} but the interval includes 0"
    if p >= alpha and not covers:
        return f"test and interval disagree: p >= {alpha:g} but the interval excludes 0"
    return ""


# Fewer human participants than this: the participant-clustered rows say their p-value is unreliable
# (cluster-robust errors need many clusters; with t(G-1) references they are still liberal below ~10).
FEW_CLUSTERS = 10


def cluster_codes(people: pd.Series) -> np.ndarray:
    """Each row's participant as an integer, the same for the same id (compared as text); a row
    without one ("" or missing) gets a code of its own. The comparison table computes these once for
    its frame (``analysis.compare``), so the clustered tests need not convert a million text ids
    for every variable and slice."""
    text = people.astype(str)
    known = (people.notna() & (text != "")).to_numpy()
    codes, _ = pd.factorize(text.where(known))
    solo = np.flatnonzero(codes < 0)
    codes[solo] = codes.max(initial=-1) + 1 + np.arange(len(solo))
    return codes


def _cluster_ids(human_clusters: Sequence, n_agent: int) -> tuple[np.ndarray, int]:
    """Cluster index per observation (humans by participant; each agent conversation its own) and the
    number of human clusters. Humans without a participant id are one cluster each as well.
    ``human_clusters``: ids, or integer codes (``cluster_codes``)."""
    codes = human_clusters
    if not (isinstance(codes, np.ndarray) and np.issubdtype(codes.dtype, np.integer)):
        codes = cluster_codes(pd.Series(np.asarray(human_clusters, dtype=object), dtype=object))
    codes, uniq = pd.factorize(codes)  # in order of first appearance
    return np.concatenate([codes, len(uniq) + np.arange(n_agent)]), len(uniq)


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


_WEIGHTS_CACHE: dict = {}


def cluster_weights(g: int, n_boot: int, seed: int) -> tuple[np.ndarray, np.random.Generator]:
    """How often each of ``g`` clusters is drawn in each of ``n_boot`` bootstrap replicates
    (``default_rng(seed).multinomial(g, [1/g] * g, size=n_boot)``, as floats), and that generator in
    the state after the draw. Every variable of a table resamples the same participants with the same
    seed, so the last draw is kept (at 20,000 participants it takes a second each time)."""
    key = (g, n_boot, seed)
    if key not in _WEIGHTS_CACHE:
        rng = np.random.default_rng(seed)
        weights = rng.multinomial(g, np.full(g, 1 / g), size=n_boot).astype(float)
        weights.flags.writeable = False  # shared by every caller with this key
        _WEIGHTS_CACHE.clear()
        _WEIGHTS_CACHE[key] = (weights, rng.bit_generator.state)
    weights, state = _WEIGHTS_CACHE[key]
    rng = np.random.default_rng()
    rng.bit_generator.state = state
    return weights, rng


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
    codes_h = pd.Categorical(h, categories=cats).codes
    per_cluster = np.zeros((g_h, k))
    np.add.at(per_cluster, (human_groups, codes_h), 1)
    weights, rng = cluster_weights(g_h, n_boot, seed)  # B x G_h
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


def _reml_random_intercept(
    y: np.ndarray, agent: np.ndarray, codes: np.ndarray
) -> tuple[float, float, float, float]:
    """REML fit of y = b0 + b1 agent + u_group + e (u ~ N(0, theta^2 s^2), e ~ N(0, s^2)):
    (b1, SE(b1), theta, s^2).

    The fixed effects and s^2 are profiled out in closed form (per group V^-1 = (I - c J) / s^2,
    c = theta^2 / (1 + n theta^2), so every quantity is a sum over groups), which leaves a bounded
    one-dimensional minimisation of the REML deviance over theta, lme4's parameterisation (Bates et
    al. 2015, eq. 42 for the profiled REML criterion). It cannot fail to converge, and thousands of
    singleton groups cost nothing; statsmodels' MixedLM (gradient search over the full covariance)
    did not converge on the reference data."""
    from scipy import optimize

    X = np.column_stack([np.ones(len(y)), agent])
    n_obs, k = X.shape
    n_groups = int(codes.max()) + 1
    n = np.bincount(codes, minlength=n_groups).astype(float)
    sx = np.column_stack([np.bincount(codes, X[:, j], n_groups) for j in range(k)])
    sy = np.bincount(codes, y, n_groups)
    xtx, xty, yty = X.T @ X, X.T @ y, float(y @ y)

    def parts(theta: float):
        c = theta * theta / (1 + n * theta * theta)
        a = xtx - (sx * c[:, None]).T @ sx
        b = xty - (sx * c[:, None]).T @ sy
        beta = np.linalg.solve(a, b)
        return a, beta, max(yty - float((c * sy * sy).sum()) - float(b @ beta), 1e-300), c

    def deviance(theta: float) -> float:
        a, _, rss, _ = parts(theta)
        logdet_v = np.log1p(n * theta * theta).sum()
        return (n_obs - k) * math.log(rss / (n_obs - k)) + logdet_v + np.linalg.slogdet(a)[1]

    fit = optimize.minimize_scalar(deviance, bounds=(0.0, 50.0), method="bounded", options={"xatol": 1e-9})
    theta = float(fit.x) if deviance(float(fit.x)) <= deviance(0.0) else 0.0  # the boundary theta = 0
    a, beta, rss, _ = parts(theta)
    sigma2 = rss / (n_obs - k)
    cov = sigma2 * np.linalg.inv(a)
    return float(beta[1]), math.sqrt(max(float(cov[1, 1]), 0.0)), theta, sigma2


def random_intercept_test(
    human: Sequence[float], agent: Sequence[float], human_clusters: Sequence, ci: float = DEFAULT_CI
) -> dict:
    """Mean difference (agent - human) from a linear mixed model with a random intercept per
    participant (each agent conversation its own group), fitted by REML: the model of
    ``lme4::lmer(y ~ kind + (1 | participant))``. Wald z test and interval, as
    ``confint(fit, method = "Wald")``. On the reference data it matches lme4 1.1 (R 4.2) to 1e-3
    (tests/test_reproduce.py); on small data statsmodels' MixedLM (tests/test_analysis_stats.py)."""
    x, y = np.asarray(human, float), np.asarray(agent, float)
    n_h, n_a = len(x), len(y)
    groups, g_h = _cluster_ids(human_clusters, n_a)
    name = "mixed_random_intercept"
    if n_h < MIN_PER_GROUP or n_a < MIN_PER_GROUP or g_h < 2:
        why = f"n_human={n_h}, n_agent={n_a}, human clusters={g_h}"
        return not_enough(name, n_h, n_a, "mean_difference", why=why)
    values = np.concatenate([x, y])
    if np.ptp(values) == 0:
        return result(name, 0.0, 1.0, "mean_difference", 0.0, 0.0, 0.0, n_h, n_a, note="all values equal")
    est, se, theta, sigma2 = _reml_random_intercept(values, np.r_[np.zeros(n_h), np.ones(n_a)], groups)
    if se == 0:
        return result(name, None, None, "mean_difference", est, n_human=n_h, n_agent=n_a, note="no variance")
    z = est / se
    half = float(stats.norm.ppf(0.5 + ci / 2)) * se
    icc = theta * theta / (1 + theta * theta)
    note = (
        f"REML, participant intercept SD {theta * math.sqrt(sigma2):.4g}, residual SD "
        f"{math.sqrt(sigma2):.4g} (ICC {icc:.3f}); groups: {g_h} participants + {n_a} agent "
        f"conversations; Wald z{_few(g_h)}"
    )
    return result(
        name,
        z,
        2 * stats.norm.sf(abs(z)),
        "mean_difference",
        est,
        est - half,
        est + half,
        n_h,
        n_a,
        note=note,
    )


def _ordinal_cells(alpha: np.ndarray, beta: float) -> tuple[np.ndarray, np.ndarray]:
    """Cell probabilities (2, k) of the cumulative logit model P(Y <= j | agent) =
    F(alpha_j - beta agent), and the score of each cell (2, k, k): d log p / d(alpha, beta)."""
    from scipy.special import expit

    k = len(alpha) + 1
    cum = np.hstack([np.zeros((2, 1)), np.vstack([expit(alpha), expit(alpha - beta)]), np.ones((2, 1))])
    prob = np.maximum(np.diff(cum, axis=1), 1e-300)
    dens = cum * (1 - cum)  # the logistic density at each cut point (0 at the ends)
    scores = np.zeros((2, k, k))  # (agent, category, parameter)
    j = np.arange(k)
    for a in (0, 1):
        scores[a, j[:-1], j[:-1]] += dens[a, 1:-1] / prob[a, :-1]
        scores[a, j[1:], j[:-1]] -= dens[a, 1:-1] / prob[a, 1:]
        scores[a, :, k - 1] = -a * (dens[a, 1:] - dens[a, :-1]) / prob[a]
    return prob, scores


def _ordered_logit(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Proportional-odds (cumulative logit) fit of a 2 x k table of counts (row 0 human, row 1
    agent): the parameters (alpha_1..alpha_k-1, beta), the per-cell scores (2, k, k) and the
    observed information (minus the Hessian, by central differences of the analytic gradient). The
    likelihood depends on the cells only, so the fit is on the table, not on the observations."""
    from scipy import optimize

    k = counts.shape[1]

    def unpack(free):
        return np.r_[free[0], free[0] + np.cumsum(np.exp(free[1 : k - 1]))], free[k - 1]

    def nll(free):
        return -float((counts * np.log(_ordinal_cells(*unpack(free))[0])).sum())

    pooled = np.cumsum(counts.sum(axis=0))[:-1] / counts.sum()
    start_alpha = np.log(pooled / (1 - pooled))
    start = np.r_[start_alpha[0], np.log(np.maximum(np.diff(start_alpha), 1e-3)), 0.0]
    fit = optimize.minimize(nll, start, method="BFGS", options={"gtol": 1e-10})
    alpha, beta = unpack(fit.x)
    params = np.r_[alpha, beta]

    def grad(theta):
        return np.einsum("aj,ajp->p", counts, _ordinal_cells(theta[:-1], theta[-1])[1])

    h = 1e-6
    info = -np.array([(grad(params + h * e) - grad(params - h * e)) / (2 * h) for e in np.eye(k)])
    return params, _ordinal_cells(alpha, beta)[1], (info + info.T) / 2


def _cluster_boot_cliffs_delta(
    per_person: np.ndarray, agent_counts: np.ndarray, n_boot: int, ci: float, seed: int
) -> tuple[float, float]:
    """Percentile interval of Cliff's delta for ordinal counts: whole participants resampled with
    all their conversations (rows of ``per_person``, G x k), agent conversations singly."""
    weights, rng = cluster_weights(len(per_person), n_boot, seed)
    h = weights @ per_person  # B x k
    n_a = int(agent_counts.sum())
    a = rng.multinomial(n_a, agent_counts / n_a, size=n_boot).astype(float)
    below = np.cumsum(h, axis=1) - h  # humans strictly below each category
    above = h.sum(axis=1, keepdims=True) - np.cumsum(h, axis=1)
    delta = (a * (below - above)).sum(axis=1) / (h.sum(axis=1) * n_a)
    return tuple(np.quantile(delta, [(1 - ci) / 2, 1 - (1 - ci) / 2]))


def ordinal_cluster_test(
    human: Sequence[float],
    agent: Sequence[float],
    human_clusters: Sequence,
    n_boot: int = DEFAULT_BOOT,
    ci: float = DEFAULT_CI,
    seed: int = 0,
) -> dict:
    """Participant-clustered test of an ordinal label that does not treat the levels as equally
    spaced: a proportional-odds (cumulative logit) model of the level on the kind, with CR1
    cluster-robust errors (clusters: participants; each agent conversation its own) and, as the
    other clustered rows, t(G_h - 1) for the p-value. Effect size: Cliff's delta with a participant
    cluster bootstrap interval; the log odds ratio and its interval are in the note. The estimate
    and robust SE equal statsmodels' ``OrderedModel(...).fit(cov_type="cluster")`` (tested)."""
    x, y = np.asarray(human, float), np.asarray(agent, float)
    n_h, n_a = len(x), len(y)
    groups, g_h = _cluster_ids(human_clusters, n_a)
    name = "ordinal_cluster_robust"
    if n_h < MIN_PER_GROUP or n_a < MIN_PER_GROUP or g_h < 2:
        why = f"n_human={n_h}, n_agent={n_a}, human clusters={g_h}"
        return not_enough(name, n_h, n_a, "cliffs_delta", why=why)
    levels, codes = np.unique(np.concatenate([x, y]), return_inverse=True)
    k = len(levels)
    if k < 2:
        return result(name, 0.0, 1.0, "cliffs_delta", 0.0, 0.0, 0.0, n_h, n_a, note="all values equal")
    counts = np.zeros((2, k))
    np.add.at(counts, (np.r_[np.zeros(n_h, int), np.ones(n_a, int)], codes), 1)
    per_person = np.zeros((g_h, k))
    np.add.at(per_person, (groups[:n_h], codes[:n_h]), 1)
    delta = cliffs_delta(x, y)
    lo_d, hi_d = _cluster_boot_cliffs_delta(per_person, counts[1], n_boot, ci, seed)
    if x.max() <= y.min() or y.max() <= x.min():
        # (quasi-)separation, e.g. a constant agent group at the top level: the odds ratio is infinite
        note = "one kind lies entirely at or beyond the other's extreme: the ordinal model has no finite estimate"
        return result(name, None, None, "cliffs_delta", delta, lo_d, hi_d, n_h, n_a, note=note)
    params, scores, info = _ordered_logit(counts)
    bread = np.linalg.pinv(info)
    sums = np.vstack([per_person @ scores[0], np.repeat(scores[1], counts[1].astype(int), axis=0)])
    n_obs, n_par, n_cl = n_h + n_a, k, g_h + n_a
    cov = n_cl / (n_cl - 1) * (n_obs - 1) / (n_obs - n_par) * bread @ (sums.T @ sums) @ bread
    beta, se = float(params[-1]), math.sqrt(max(float(cov[-1, -1]), 0.0))
    t = beta / se if se > 0 else float("nan")
    df = g_h - 1
    p = float(2 * stats.t.sf(abs(t), df)) if math.isfinite(t) else None
    half = float(stats.t.ppf(0.5 + ci / 2, df)) * se
    note = (
        f"proportional odds: log odds ratio (agent - human) {beta:.4g} [{beta - half:.4g}, {beta + half:.4g}]; "
        f"Cliff's delta interval: participant cluster bootstrap; t({df}); clusters: {g_h} participants + "
        f"{n_a} agent conversations{_few(g_h)}"
    )
    return result(name, t, p, "cliffs_delta", delta, lo_d, hi_d, n_h, n_a, note=note)


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


def _step_adjust(p: np.ndarray, method: str) -> np.ndarray:
    """Holm's step-down or Benjamini-Hochberg's step-up adjusted p-values (equal to statsmodels'
    ``multipletests(p, method="holm" | "fdr_bh")``, tested; done here because multipletests runs
    a garbage collection on every call, 0.2 s each for the table's many families)."""
    m = len(p)
    order = np.argsort(p, kind="stable")
    ranked = p[order]
    if method == "holm":
        adj = np.maximum.accumulate(np.minimum(1.0, (m - np.arange(m)) * ranked))
    else:
        adj = np.minimum.accumulate((m / np.arange(1, m + 1) * ranked)[::-1])[::-1]
        adj = np.minimum(1.0, adj)
    out = np.empty(m)
    out[order] = adj
    return out


def adjust_p(p_values: Sequence[float | None], method: str = "holm") -> list[float | None]:
    """Holm (default) or Benjamini-Hochberg over the non-missing p-values."""
    methods = {"holm": "holm", "bh": "fdr_bh", "fdr_bh": "fdr_bh", "none": None}
    if method not in methods:
        from db.errors import UserInputError

        raise UserInputError(f"unknown correction {method!r}: use holm, bh or none")
    p = np.array([np.nan if v is None else v for v in p_values], dtype=float)
    out: list[float | None] = [None] * len(p)
    ok = np.isfinite(p)
    if ok.any():
        adj = p[ok] if methods[method] is None else _step_adjust(p[ok], methods[method])
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
