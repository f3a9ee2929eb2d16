"""Agreement between label sources: Cohen's kappa, Fleiss' kappa, Krippendorff's alpha, raw agreement.

Every statistic is computed here from first principles (so one code path serves two sources, a set
of annotators and the bootstrap) and is checked in ``tests/test_agreement.py`` against an
independent implementation: scikit-learn's ``cohen_kappa_score``, statsmodels' ``fleiss_kappa`` and
the ``krippendorff`` package.

The frame builders return tidy DataFrames with fixed snake_case columns (``AGREEMENT_COLUMNS``);
one row per dimension x user kind, where ``user_kind == "all"`` pools both kinds.

Example::

    df = pair_agreement_df(labels, conversations, "imported:recllmsim-gpt4o", "imported:recllmsim-human",
                           scales=scales_from_codebook(load_codebook()))
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from annotation.codebook import load_codebook
from db.errors import UserInputError

AGREEMENT_COLUMNS = [
    "dimension",
    "user_kind",
    "scale",
    "source_a",
    "source_b",
    "sources",
    "n",
    "n_complete",
    "n_raters",
    "agreement",
    "cohen_kappa",
    "weighted_kappa",
    "fleiss_kappa",
    "krippendorff_alpha",
    "ci_statistic",
    "ci_low",
    "ci_high",
    "ci_level",
    "n_boot",
    "n_boot_undefined",
]

# What the bootstrap interval is for (stated in every record, so nobody reads it as a kappa CI).
CI_STATISTIC = "krippendorff_alpha"


@dataclass(frozen=True)
class Scale:
    """How a dimension's values are measured: ``nominal`` or ``ordinal`` with its ordered labels."""

    scale: str
    labels: tuple[str, ...] = ()

    def __post_init__(self):
        if self.scale not in ("nominal", "ordinal"):
            raise UserInputError(f"unknown scale {self.scale!r}: use nominal or ordinal")


def scales_from_codebook(codebook) -> dict[str, Scale]:
    """``{dimension name: Scale}`` from an ``annotation.codebook.Codebook``."""
    return {d.name: Scale(d.scale, tuple(str(v) for v in d.labels)) for d in codebook.dimensions}


# --------------------------------------------------------------------------------------------------
# Core statistics on coded data
# --------------------------------------------------------------------------------------------------


def _codes(values: Sequence, labels: Sequence[str]) -> np.ndarray:
    index = {v: i for i, v in enumerate(labels)}
    return np.array([index[v] for v in values], dtype=int)


def _ordered_labels(values: Iterable, scale: Scale | None) -> list[str]:
    """The category order: the scale's labels first (their order matters for ordinal statistics),
    then any value seen in the data but missing from the codebook, sorted."""
    seen = {str(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))}
    base = list(scale.labels) if scale else []
    return base + sorted(seen - set(base))


def raw_agreement(a: Sequence, b: Sequence) -> float:
    """Share of items on which the two raters give the same value."""
    if len(a) == 0:
        return float("nan")
    return float(np.mean([x == y for x, y in zip(a, b)]))


def _weight_matrix(k: int, weights: str | None) -> np.ndarray:
    idx = np.arange(k)
    if weights is None:
        return (idx[:, None] != idx[None, :]).astype(float)
    if weights == "linear":
        return np.abs(idx[:, None] - idx[None, :]).astype(float)
    if weights == "quadratic":
        return ((idx[:, None] - idx[None, :]) ** 2).astype(float)
    raise UserInputError(f"unknown kappa weights {weights!r}: use None, 'linear' or 'quadratic'")


def _kappa_from_confusion(cm: np.ndarray, w: np.ndarray) -> float:
    # Cohen (1960) / Cohen (1968) weighted form, as in sklearn.metrics.cohen_kappa_score.
    n = cm.sum()
    if n == 0:
        return float("nan")
    expected = np.outer(cm.sum(1), cm.sum(0)) / n
    denom = (w * expected).sum()
    if denom == 0:
        return float("nan")  # both raters constant on the same value: kappa undefined
    return float(1 - (w * cm).sum() / denom)


def cohen_kappa(
    a: Sequence, b: Sequence, labels: Sequence[str] | None = None, weights: str | None = None
) -> float:
    """Cohen's kappa of two raters over the same items; ``weights="quadratic"`` for ordinal scales
    (then ``labels`` gives the order). Equals ``sklearn.metrics.cohen_kappa_score``."""
    labels = list(labels) if labels is not None else sorted({*a, *b})
    k = len(labels)
    cm = np.zeros((k, k))
    np.add.at(cm, (_codes(a, labels), _codes(b, labels)), 1)
    return _kappa_from_confusion(cm, _weight_matrix(k, weights))


def fleiss_kappa(ratings: Sequence[Sequence], labels: Sequence[str] | None = None) -> float:
    """Fleiss' kappa for items x raters (every item rated by the same number of raters).
    Equals ``statsmodels.stats.inter_rater.fleiss_kappa(table, method="fleiss")``."""
    rows = [list(r) for r in ratings]
    if not rows:
        return float("nan")
    labels = list(labels) if labels is not None else sorted({v for r in rows for v in r})
    index = {v: i for i, v in enumerate(labels)}
    table = np.zeros((len(rows), len(labels)))
    for i, r in enumerate(rows):
        for v in r:
            table[i, index[v]] += 1
    m = table.sum(1)
    if not np.all(m == m[0]) or m[0] < 2:
        raise ValueError("Fleiss' kappa needs the same number (>= 2) of ratings for every item")
    n_items, m = table.shape[0], m[0]
    p_j = table.sum(0) / (n_items * m)
    p_i = ((table * table).sum(1) - m) / (m * (m - 1))
    p_bar, p_e = p_i.mean(), (p_j * p_j).sum()
    if p_e == 1:
        return float("nan")
    return float((p_bar - p_e) / (1 - p_e))


def _item_coincidences(units: Sequence[Sequence[int]], k: int) -> np.ndarray:
    """Per-item coincidence matrices (items x k*k) as in Krippendorff (2011), "Computing
    Krippendorff's alpha-reliability": each pairable item adds o_ck += n_uc*n_uk(-1 on c=k)/(m_u-1)."""
    out = np.zeros((len(units), k * k))
    for i, codes in enumerate(units):
        m = len(codes)
        if m < 2:
            continue
        counts = np.bincount(codes, minlength=k).astype(float)
        o = np.outer(counts, counts) - np.diag(counts)
        out[i] = (o / (m - 1)).ravel()
    return out


def _delta2(k: int, level: str, n_c: np.ndarray) -> np.ndarray:
    idx = np.arange(k)
    if level == "nominal":
        return (idx[:, None] != idx[None, :]).astype(float)
    if level == "ordinal":
        # Krippendorff's ordinal metric: (sum_{g=c..k} n_g - (n_c + n_k)/2)^2 over ranks.
        cum = np.concatenate([[0.0], np.cumsum(n_c)])
        lo, hi = np.minimum(idx[:, None], idx[None, :]), np.maximum(idx[:, None], idx[None, :])
        between = cum[hi + 1] - cum[lo]
        return (between - (n_c[:, None] + n_c[None, :]) / 2) ** 2
    raise UserInputError(f"unknown level of measurement {level!r}: use nominal or ordinal")


def _alpha_from_coincidence(o: np.ndarray, level: str) -> float:
    n_c = o.sum(1)
    n = n_c.sum()
    if n <= 1:
        return float("nan")
    d = _delta2(len(n_c), level, n_c)
    d_e = (np.outer(n_c, n_c) * d).sum()
    if d_e == 0:
        return float("nan")  # a single value used throughout: alpha undefined
    return float(1 - (n - 1) * (o * d).sum() / d_e)


def krippendorff_alpha(
    units: Sequence[Sequence], labels: Sequence[str] | None = None, level: str = "nominal"
) -> float:
    """Krippendorff's alpha over items, each a list of the values it received (any number; items
    with fewer than two are not pairable and are ignored). ``level`` nominal or ordinal, ``labels``
    giving the order. Equals ``krippendorff.alpha(..., level_of_measurement=level)``."""
    units = [list(u) for u in units]
    labels = list(labels) if labels is not None else sorted({v for u in units for v in u})
    k = len(labels)
    coded = [_codes(u, labels) for u in units]
    o = _item_coincidences(coded, k).sum(0).reshape(k, k)
    return _alpha_from_coincidence(o, level)


def bootstrap_alpha_ci(
    units: Sequence[Sequence],
    labels: Sequence[str],
    level: str = "nominal",
    n_boot: int = 1000,
    seed: int = 0,
    ci: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap interval of Krippendorff's alpha, resampling items with replacement
    (seeded, so the same call gives the same interval). Resamples in which alpha is undefined (no
    variation at all) are left out; ``bootstrap_alpha_ci_detail`` also says how many."""
    lo, hi, _ = bootstrap_alpha_ci_detail(units, labels, level, n_boot, seed, ci)
    return lo, hi


def bootstrap_alpha_ci_detail(
    units: Sequence[Sequence],
    labels: Sequence[str],
    level: str = "nominal",
    n_boot: int = 1000,
    seed: int = 0,
    ci: float = 0.95,
) -> tuple[float, float, int]:
    """``bootstrap_alpha_ci`` and the number of resamples whose alpha was undefined (left out: a
    share of them means the interval describes only the resamples that vary, and is optimistic)."""
    labels = list(labels)
    k = len(labels)
    per_item = _item_coincidences([_codes(list(u), labels) for u in units], k)
    per_item = per_item[per_item.sum(1) > 0]
    n = len(per_item)
    if n < 2 or n_boot <= 0:
        return float("nan"), float("nan"), 0
    rng = np.random.default_rng(seed)
    alphas = np.empty(n_boot)
    chunk = 200  # resample weights in blocks: (chunk x n) @ (n x k*k) stays small
    for start in range(0, n_boot, chunk):
        b = min(chunk, n_boot - start)
        weights = rng.multinomial(n, np.full(n, 1.0 / n), size=b).astype(float)
        o_all = weights @ per_item
        for j in range(b):
            alphas[start + j] = _alpha_from_coincidence(o_all[j].reshape(k, k), level)
    undefined = int(np.isnan(alphas).sum())
    alphas = alphas[~np.isnan(alphas)]
    if len(alphas) == 0:
        return float("nan"), float("nan"), undefined
    tail = (1 - ci) / 2 * 100
    lo, hi = np.percentile(alphas, [tail, 100 - tail])
    return float(lo), float(hi), undefined


# --------------------------------------------------------------------------------------------------
# Tidy frames
# --------------------------------------------------------------------------------------------------


def _nan_to_none(x):
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else x


def _user_kind_groups(items: pd.DataFrame, split: bool) -> list[tuple[str, pd.DataFrame]]:
    groups = [("all", items)]
    if split and "user_kind" in items:
        for kind in sorted(items["user_kind"].dropna().unique()):
            groups.append((str(kind), items[items["user_kind"] == kind]))
    return groups


def _prepare(
    labels: pd.DataFrame,
    conversations: pd.DataFrame | None,
    sources: Sequence[str],
    dimensions: Iterable[str] | None,
) -> pd.DataFrame:
    need = {"conversation_id", "dimension", "value", "source"}
    if missing := need - set(labels.columns):
        raise UserInputError(f"labels frame lacks columns {sorted(missing)}")
    lab = labels[labels["source"].isin(list(sources))].copy()
    if "status" in lab:
        lab = lab[lab["status"].fillna("ok") == "ok"]  # skipped/failed items carry no value
    lab = lab[lab["value"].notna()]
    if "turn_index" not in lab:
        lab["turn_index"] = -1
    if dimensions is not None:
        lab = lab[lab["dimension"].isin(list(dimensions))]
    lab["value"] = lab["value"].astype(str)
    if conversations is not None and "user_kind" in conversations:
        lab = lab.merge(conversations[["conversation_id", "user_kind"]], on="conversation_id", how="left")
    elif "user_kind" not in lab:
        lab["user_kind"] = None
    return lab


def pair_agreement_df(
    labels: pd.DataFrame,
    conversations: pd.DataFrame | None,
    a: str,
    b: str,
    scales: Mapping[str, Scale] | None = None,
    dimensions: Iterable[str] | None = None,
    split_by_user_kind: bool = True,
    n_boot: int = 1000,
    seed: int = 0,
    ci: float = 0.95,
) -> pd.DataFrame:
    """Agreement of two sources per dimension (and per user kind, plus pooled ``"all"``) over the
    items both labelled. ``labels``: tidy frame as ``db.repo.labels_df``; ``conversations`` gives
    ``user_kind`` per ``conversation_id``. The CI is a bootstrap interval of Krippendorff's alpha."""
    if a == b:
        raise UserInputError("compare two different sources (a and b are the same)")
    # Two sources are the two-rater case of a set of annotators: same items, same statistics.
    df = annotators_agreement_df(
        labels,
        conversations,
        [a, b],
        scales=scales,
        dimensions=dimensions,
        split_by_user_kind=split_by_user_kind,
        n_boot=n_boot,
        seed=seed,
        ci=ci,
    )
    # A dimension only one of the two sources labels has nothing to compare: no row for it.
    lab = labels[labels["source"].isin([a, b])]
    both = lab.groupby("dimension")["source"].nunique()
    return df[df["dimension"].isin(both[both == 2].index)].reset_index(drop=True)


def annotators_agreement_df(
    labels: pd.DataFrame,
    conversations: pd.DataFrame | None,
    sources: Sequence[str],
    scales: Mapping[str, Scale] | None = None,
    dimensions: Iterable[str] | None = None,
    split_by_user_kind: bool = True,
    n_boot: int = 1000,
    seed: int = 0,
    ci: float = 0.95,
) -> pd.DataFrame:
    """Agreement of a set of sources (e.g. the human annotators of a study). Krippendorff's alpha uses
    every item with at least two values (``n``); Fleiss' kappa and raw agreement (share of items on
    which all raters agree) use the items every source labelled (``n_complete``)."""
    sources = list(dict.fromkeys(sources))
    if len(sources) < 2:
        raise UserInputError("name at least two sources to compare")
    lab = _prepare(labels, conversations, sources, dimensions)
    scales = scales or {}
    rows = []
    # Each unit lists its values in the order of ``sources``, so pairwise (Cohen) statistics compare
    # the same rater against the same rater on every item, whatever order the database returned.
    lab = lab.assign(_rank=lab["source"].map({s: i for i, s in enumerate(sources)})).sort_values(
        ["conversation_id", "turn_index", "_rank"], kind="stable"
    )
    for dim in sorted(lab["dimension"].unique()):
        d = lab[lab["dimension"] == dim]
        scale = scales.get(dim)
        order = _ordered_labels(d["value"], scale)
        level = scale.scale if scale else "nominal"
        if level == "ordinal" and len(order) > len(scale.labels):
            # Values outside the codebook's scale (e.g. imported data) have no place in its order, so
            # ordinal statistics would rank them arbitrarily: this dimension is measured as nominal
            # (the record's ``scale`` says so; no weighted kappa).
            level = "nominal"
        items = (
            d.groupby(["conversation_id", "turn_index"], dropna=False)
            .agg(values=("value", list), n_values=("value", "size"), user_kind=("user_kind", "first"))
            .reset_index()
        )
        items = items[items["n_values"] >= 2]
        for kind, part in _user_kind_groups(items, split_by_user_kind):
            stats_ = _agreement_stats(list(part["values"]), sources, order, level, n_boot, seed, ci)
            rows.append({"dimension": dim, "user_kind": kind, "scale": level, **stats_})
    return pd.DataFrame(rows, columns=AGREEMENT_COLUMNS)


def _agreement_stats(
    units: list[list], sources: list[str], order, level: str, n_boot: int, seed: int, ci: float
) -> dict:
    """The statistics of one (dimension, user kind) cell: ``units`` are the items' values, each in
    the order of ``sources``."""
    complete = [u for u in units if len(u) == len(sources)]
    lo, hi, undefined = (
        bootstrap_alpha_ci_detail(units, order, level, n_boot=n_boot, seed=seed, ci=ci)
        if units
        else (float("nan"), float("nan"), 0)
    )
    pair = len(sources) == 2 and complete
    first = [u[0] for u in complete]
    second = [u[1] for u in complete] if pair else []
    return {
        "source_a": sources[0] if len(sources) == 2 else None,
        "source_b": sources[1] if len(sources) == 2 else None,
        "sources": sources,
        "n": len(units),
        "n_complete": len(complete),
        "n_raters": len(sources),
        "agreement": float(np.mean([len(set(u)) == 1 for u in complete])) if complete else float("nan"),
        "cohen_kappa": cohen_kappa(first, second, order) if pair else None,
        "weighted_kappa": cohen_kappa(first, second, order, "quadratic")
        if pair and level == "ordinal"
        else None,
        "fleiss_kappa": fleiss_kappa(complete, order) if complete else float("nan"),
        "krippendorff_alpha": krippendorff_alpha(units, order, level) if units else float("nan"),
        "ci_statistic": CI_STATISTIC,
        "ci_low": lo,
        "ci_high": hi,
        "ci_level": ci,
        "n_boot": n_boot,
        "n_boot_undefined": undefined,
    }


def agreement_records(df: pd.DataFrame) -> list[dict]:
    """JSON-ready records (NaN -> null) of an agreement frame."""
    out = []
    for rec in df.to_dict(orient="records"):
        out.append({k: _nan_to_none(v.item() if isinstance(v, np.generic) else v) for k, v in rec.items()})
    return out


def study_agreement_df(
    session,
    study_name: str,
    a: str | None = None,
    b: str | None = None,
    sources: Sequence[str] | None = None,
    codebook=None,
    **kw,
) -> pd.DataFrame:
    """Agreement of two sources (``a``, ``b``) or a set (``sources``) on a study in the database."""
    from db.repo import conversations_df, get_label_source, get_study, labels_df

    study = get_study(session, study_name)
    names = [a, b] if sources is None else list(sources)
    for name in names:
        if name is None:
            raise UserInputError("name two sources (a and b) or a set of sources")
        get_label_source(session, name)  # clear error listing the known sources
    if codebook is None:
        codebook = load_codebook()
    scales = scales_from_codebook(codebook)
    labels = labels_df(session, study.id, sources=names)
    wanted = kw.get("dimensions")
    if wanted:
        # A misspelt dimension used to give "no items labelled by both sources".
        known = {d.name for d in codebook} | set(labels["dimension"].unique() if not labels.empty else [])
        unknown = [d for d in wanted if d not in known]
        if unknown:
            raise UserInputError(
                f"unknown dimension {', '.join(map(repr, unknown))}: known dimensions are "
                f"{', '.join(sorted(known))}"
            )
    convs = conversations_df(session, study.id)
    if sources is None:
        return pair_agreement_df(labels, convs, a, b, scales=scales, **kw)
    return annotators_agreement_df(labels, convs, names, scales=scales, **kw)


# --------------------------------------------------------------------------------------------------
# Indistinguishability: "was this user a person or an AI?"
# --------------------------------------------------------------------------------------------------

INDISTINGUISHABILITY_COLUMNS = [
    "simulator_config_id",
    "simulator",
    "n",
    "n_correct",
    "accuracy",
    "ci_low",
    "ci_high",
    "ci_method",
    "p_value",
    "chance",
    "n_agent",
    "agent_detected",
    "n_human",
    "human_detected",
    "balanced_accuracy",
    "balanced_ci_low",
    "balanced_ci_high",
    "balanced_p_value",
]


def balanced_accuracy_ci(k_a: int, n_a: int, k_h: int, n_h: int, ci: float = 0.95) -> tuple[float, float]:
    """Interval for the mean of two independent proportions (the balanced accuracy) by the MOVER
    method on their Wilson intervals (Zou & Donner 2008, eq. 3, with weights 1/2); nan without
    guesses on one kind."""
    if not n_a or not n_h:
        return float("nan"), float("nan")
    a, h = k_a / n_a, k_h / n_h
    (la, ua), (lh, uh) = wilson_interval(k_a, n_a, ci), wilson_interval(k_h, n_h, ci)
    ba = (a + h) / 2
    return (
        float(ba - math.sqrt(((a - la) / 2) ** 2 + ((h - lh) / 2) ** 2)),
        float(ba + math.sqrt(((ua - a) / 2) ** 2 + ((uh - h) / 2) ** 2)),
    )


def wilson_interval(k: int, n: int, ci: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for k successes in n trials (Wilson 1927); equals
    ``statsmodels.stats.proportion.proportion_confint(k, n, method="wilson")``."""
    if n == 0:
        return float("nan"), float("nan")
    z = stats.norm.ppf(1 - (1 - ci) / 2)
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return float(centre - half), float(centre + half)


def _guess_kind(value) -> str | None:
    v = str(value).strip().lower() if value is not None else ""
    if v in ("human", "person", "people", "real"):
        return "human"
    if v in ("agent", "ai", "llm", "simulator", "bot"):
        return "agent"
    return None  # "unsure" or missing: not a guess


def indistinguishability_df(
    guesses: pd.DataFrame, conversations: pd.DataFrame, ci: float = 0.95, chance: float = 0.5
) -> pd.DataFrame:
    """Accuracy of annotators' "person or AI?" guesses per simulator configuration.

    ``guesses``: one row per guess with ``conversation_id`` and ``guess`` (``human``/``agent``, also
    ``person``/``ai``; anything else is dropped). Each simulator configuration is judged on the
    guesses about its own agent conversations pooled with those about all human conversations, so
    the test has both kinds; a row ``simulator == "all"`` pools every simulator. Accuracy has a
    Wilson interval and an exact two-sided binomial test against ``chance``; it rewards guessing the
    more frequent kind (an annotator who always says "person" is right on every human conversation).
    The figure to read is the balanced accuracy (mean of the two detection rates, 0.5 = cannot tell):
    its interval is MOVER on the two Wilson intervals (``balanced_accuracy_ci``) and its p-value is
    Fisher's exact test of the kind x guess table, since balanced accuracy = 0.5 exactly when the
    share of "AI" guesses is the same for both kinds. Guesses are counted as independent trials
    (several annotators on one conversation, or one annotator's many guesses, make the intervals
    somewhat too narrow).
    """
    g = guesses.copy()
    g["guess_kind"] = g["guess"].map(_guess_kind)
    g = g[g["guess_kind"].notna()]
    cols = ["conversation_id", "user_kind", "simulator_config_id", "simulator"]
    g = g.merge(conversations[[c for c in cols if c in conversations]], on="conversation_id", how="inner")
    g["correct"] = g["guess_kind"] == g["user_kind"]
    humans = g[g["user_kind"] == "human"]
    agents = g[g["user_kind"] == "agent"]
    groups: list[tuple[int | None, str, pd.DataFrame]] = []
    if not agents.empty:
        groups.append((None, "all", agents))
        for cfg_id, part in agents.groupby("simulator_config_id", dropna=False):
            name = part["simulator"].dropna().iloc[0] if part["simulator"].notna().any() else str(cfg_id)
            groups.append((None if pd.isna(cfg_id) else int(cfg_id), str(name), part))
    elif not humans.empty:
        groups.append((None, "all", agents))
    rows = []
    for cfg_id, name, ag in groups:
        both = pd.concat([ag, humans])
        n, k = len(both), int(both["correct"].sum())
        lo, hi = wilson_interval(k, n, ci)
        a_rate = float(ag["correct"].mean()) if len(ag) else float("nan")
        h_rate = float(humans["correct"].mean()) if len(humans) else float("nan")
        k_a, k_h = int(ag["correct"].sum()), int(humans["correct"].sum())
        b_lo, b_hi = balanced_accuracy_ci(k_a, len(ag), k_h, len(humans), ci)
        # rows: true kind (agent, human); columns: guessed "agent", guessed "human"
        table = [[k_a, len(ag) - k_a], [len(humans) - k_h, k_h]]
        b_p = float(stats.fisher_exact(table).pvalue) if len(ag) and len(humans) else float("nan")
        rows.append(
            {
                "simulator_config_id": cfg_id,
                "simulator": name,
                "n": n,
                "n_correct": k,
                "accuracy": k / n if n else float("nan"),
                "ci_low": lo,
                "ci_high": hi,
                "ci_method": "wilson",
                "p_value": float(stats.binomtest(k, n, chance).pvalue) if n else float("nan"),
                "chance": chance,
                "n_agent": len(ag),
                "agent_detected": a_rate,
                "n_human": len(humans),
                "human_detected": h_rate,
                # both kinds needed: with one, the "mean" is that kind's detection rate alone
                "balanced_accuracy": (a_rate + h_rate) / 2 if len(ag) and len(humans) else float("nan"),
                "balanced_ci_low": b_lo,
                "balanced_ci_high": b_hi,
                "balanced_p_value": b_p,
            }
        )
    out = pd.DataFrame(rows, columns=INDISTINGUISHABILITY_COLUMNS)
    return out.astype({"simulator_config_id": "Int64"})  # missing stays missing, ids print as integers
