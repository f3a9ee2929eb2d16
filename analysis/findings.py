"""The answer first: headline findings in plain words, the simulators' fidelity ranking and what
could not be computed (and why), built from the comparison and likeness tables for the report.

Also the readable names the report shows instead of snake_case ids: codebook titles of dimensions
and labels, plain names of tests, effect sizes and features, and the codebook's group order.

Example::

    names = Names.of(codebook)
    findings_df(result.comparisons, names)          # one row per label dimension, best evidence first
    gaps = not_computed(result.comparisons, names)   # ["Promise, Order (2 dimensions): not enough data ..."]
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

import pandas as pd

from analysis.features import FEATURES
from analysis.stats import MIN_PER_GROUP

# The conversation-level test whose effect size a finding quotes, best first (the
# participant-clustered rows are in the table; their point estimate of Cramer's V is the same).
FINDING_TESTS = ("chi_square", "chi_square_permutation", "fisher_exact", "mann_whitney", "welch_t")
TEST_NAMES = {
    "chi_square": "Chi-square",
    "chi_square_permutation": "Chi-square (permutation)",
    "fisher_exact": "Fisher's exact",
    "wald_cluster_robust": "Wald (clustered)",
    "ols_cluster_robust": "OLS (clustered)",
    "mann_whitney": "Mann-Whitney U",
    "welch_t": "Welch's t",
    "wilcoxon_paired": "Wilcoxon signed-rank (matched)",
    "mcnemar_bowker": "McNemar-Bowker (matched)",
}
EFFECT_NAMES = {
    "cramers_v": "Cramer's V",
    "cliffs_delta": "Cliff's delta",
    "hedges_g": "Hedges' g",
    "mean_difference": "mean difference",
    "rank_biserial": "rank-biserial r",
    "pair_agreement": "pair agreement",
}
SLICE_NAMES = {
    "pooled": "pooled",
    "scenario": "scenario",
    "assistant_model": "assistant",
    "simulator": "simulator",
    "paired": "matched",
}
# Conventional magnitude thresholds: Cohen (1988) for V with one degree of freedom and for g;
# Romano et al. (2006) for Cliff's delta.
MAGNITUDES = {
    "cramers_v": (0.1, 0.3, 0.5),
    "cliffs_delta": (0.147, 0.33, 0.474),
    "hedges_g": (0.2, 0.5, 0.8),
}
GROUP_ORDER = ("strategy", "interaction_style", "evaluation", "other")


@dataclass
class Names:
    """Readable names of a codebook's dimensions and labels (English titles), and their order."""

    titles: dict[str, str] = field(default_factory=dict)
    labels: dict[str, dict[str, str]] = field(default_factory=dict)
    scales: dict[str, list[str]] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, codebook, lang: str = "en") -> Names:
        if codebook is None:
            return cls()
        dims = list(codebook)
        rank = {g: i for i, g in enumerate(GROUP_ORDER)}
        ordered = sorted(range(len(dims)), key=lambda i: (rank.get(dims[i].group, len(rank)), i))
        return cls(
            titles={d.name: d.display_title(lang) for d in dims},
            labels={d.name: {v: d.label_title(v, lang) for v in d.labels} for d in dims},
            scales={d.name: list(d.labels) for d in dims},
            order=[dims[i].name for i in ordered],
        )

    def title(self, name: str) -> str:
        """A dimension's or feature's readable name (``promise`` -> "Promise")."""
        if name in self.titles:
            return self.titles[name]
        feat = FEATURES.get(name)
        text = feat.description if feat else name.replace("_", " ")
        return text[:1].upper() + text[1:]

    def label(self, dimension: str, value: str) -> str:
        return self.labels.get(dimension, {}).get(str(value), str(value))

    def sort(self, names) -> list[str]:
        """``names`` in the codebook's group order; others (features) after them, as given."""
        pos = {n: i for i, n in enumerate(self.order)}
        names = list(dict.fromkeys(names))
        return sorted(names, key=lambda n: (pos.get(n, len(pos)), names.index(n)))


def magnitude(effect_name: str, value: float) -> str:
    """'negligible' | 'small' | 'medium' | 'large' by the conventional thresholds (MAGNITUDES)."""
    cuts = MAGNITUDES.get(effect_name)
    if cuts is None or value != value:
        return ""
    words = ("negligible", "small", "medium", "large")
    return words[sum(abs(value) >= c for c in cuts)]


def _num(x: float) -> str:
    return f"{x:.2f}"


def effect_text(row) -> str:
    """ "Cramer's V 0.82 [0.80, 0.83]"."""
    name = EFFECT_NAMES.get(row["effect_size_name"], str(row["effect_size_name"]))
    ci = "" if pd.isna(row["ci_low"]) else f" [{_num(row['ci_low'])}, {_num(row['ci_high'])}]"
    return f"{name} {_num(row['effect_size'])}{ci}"


def p_text(p: float) -> str:
    if p != p:
        return "p not computed"
    return "p < 1e-300" if p == 0 else (f"p = {p:.2g}" if p < 0.001 else f"p = {p:.3f}")


def _shares(summary) -> dict[str, float]:
    try:
        out = json.loads(summary) if isinstance(summary, str) and summary.startswith("{") else {}
    except ValueError:
        out = {}
    return {str(k): float(v) for k, v in out.items()}


def _mean(summary) -> float | None:
    m = re.search(r"mean=([-0-9.]+)", str(summary or ""))
    return float(m.group(1)) if m else None


def _contrast(row, names: Names) -> str:
    """The difference in plain words: the label whose share differs most, or the two means."""
    dim = row["dimension"]
    h, a = _shares(row["human_summary"]), _shares(row["agent_summary"])
    if h or a:
        # the label simulated users give most in excess of people (read: "they do X more often")
        cat = max(set(h) | set(a), key=lambda c: (a.get(c, 0) - h.get(c, 0), c))
        return (
            f"“{names.label(dim, cat)}” in {a.get(cat, 0):.0%} of simulated-user conversations "
            f"vs {h.get(cat, 0):.0%} of people's"
        )
    mh, ma = _mean(row["human_summary"]), _mean(row["agent_summary"])
    if mh is None or ma is None:
        return ""
    scale = names.scales.get(dim) or []
    lo, hi = (names.label(dim, scale[0]), names.label(dim, scale[-1])) if scale else ("", "")
    if not scale:
        of = ""
    elif lo == scale[0] and lo.isdigit():
        of = f" on a {lo}-{hi} scale"
    else:
        of = f" on a scale from {lo} (1) to {hi} ({len(scale)})"
    word = "higher" if ma > mh else "lower"
    return f"{word} for simulated users: mean {ma:.2f} vs {mh:.2f}{of}"


FINDING_COLUMNS = [
    "dimension",
    "title",
    "finding",
    "effect",
    "magnitude",
    "p_adjusted",
    "significant",
    "n_human",
    "n_agent",
    "test",
    "row",
]


def findings_df(
    comparisons: pd.DataFrame, names: Names, kind: str = "label", alpha: float = 0.05
) -> pd.DataFrame:
    """One finding per dimension (``kind`` "label" or "feature") from its pooled conversation-level
    test: a plain sentence, the effect size with its interval, Holm/BH-adjusted p, the group sizes
    and the table row it comes from (``row``: "dimension / test / all"). Differences that hold after
    adjustment come first, largest effect first; dimensions without statistics are left out
    (``not_computed`` says why)."""
    c = comparisons
    if c is None or c.empty:
        return pd.DataFrame(columns=FINDING_COLUMNS)
    d = c[
        (c["slice_by"] == "pooled")
        & (c["kind"] == kind)
        & c["test"].isin(FINDING_TESTS)
        & c["effect_size"].notna()
    ]
    rank = {t: i for i, t in enumerate(FINDING_TESTS)}
    d = d.assign(_r=d["test"].map(rank)).sort_values("_r", kind="stable").drop_duplicates("dimension")
    rows = []
    for _, r in d.iterrows():
        sig = bool(r["p_adjusted"] < alpha) if pd.notna(r["p_adjusted"]) else False
        contrast = _contrast(r, names)
        size = magnitude(r["effect_size_name"], r["effect_size"])
        lead = f"{size} difference" if sig else "no clear difference"
        rows.append(
            {
                "dimension": r["dimension"],
                "title": names.title(r["dimension"]),
                "finding": f"{lead}: {contrast}" if contrast else lead,
                "effect": effect_text(r),
                "magnitude": size,
                "p_adjusted": r["p_adjusted"],
                "significant": sig,
                "n_human": int(r["n_human"]),
                "n_agent": int(r["n_agent"]),
                "test": TEST_NAMES.get(r["test"], r["test"]),
                "row": f"{r['dimension']} / {r['test']} / all",
            }
        )
    out = pd.DataFrame(rows, columns=FINDING_COLUMNS)
    if out.empty:
        return out
    strength = d.set_index("dimension")["effect_size"].abs()
    out["_s"] = out["dimension"].map(strength)
    return (
        out.sort_values(["significant", "_s"], ascending=[False, False])
        .drop(columns="_s")
        .reset_index(drop=True)
    )


def _reason(note) -> str:
    """The first clause of a row's note in plain words, and how many conversations had no label."""
    parts = [p.strip() for p in str(note or "").split(";")]
    text = parts[0] or "no statistic (reason not recorded)"
    m = re.search(r"n_human=(\d+), n_agent=(\d+)", text)
    if m:
        text = (
            f"not enough labelled conversations to compare ({m[1]} of people, {m[2]} of simulated users; "
            f"each group needs at least {MIN_PER_GROUP})"
        )
    left = next((p for p in parts[1:] if p.startswith("left out")), "")
    m = re.search(r"(\d+) human, (\d+) agent", left)
    if m:
        text += f"; without a label from this source: {m[1]} of people's and {m[2]} of simulated users' conversations"
    return text


def not_computed(comparisons: pd.DataFrame, names: Names, kind: str = "label") -> list[str]:
    """What the pooled table could not compute, one line per reason, naming the dimensions."""
    c = comparisons
    if c is None or c.empty:
        return ["No comparison could be computed: the study has no analysed conversations."]
    d = c[(c["slice_by"] == "pooled") & (c["kind"] == kind)]
    by_dim = d.groupby("dimension")["effect_size"].apply(lambda s: s.notna().any())
    missing = [dim for dim in names.sort(by_dim.index) if not by_dim[dim]]
    groups: dict[str, list[str]] = {}
    for dim in missing:
        note = d[d["dimension"] == dim]["note"].dropna()
        groups.setdefault(_reason(note.iloc[0] if len(note) else ""), []).append(names.title(dim))
    lines = []
    for reason, dims in groups.items():
        many = f" ({len(dims)} {kind} dimensions)" if len(dims) > 1 else ""
        lines.append(f"{', '.join(dims)}{many}: {reason}.")
    return lines


def label_coverage(conversations: pd.DataFrame, labels: pd.DataFrame) -> dict[str, tuple[int, int]]:
    """Per user kind: (conversations with at least one label, conversations analysed)."""
    dims = [c for c in labels.columns if c != "conversation_id"]
    has = set(labels.loc[labels[dims].notna().any(axis=1), "conversation_id"]) if dims else set()
    out = {}
    for kind in ("human", "agent"):
        ids = conversations.loc[conversations["user_kind"] == kind, "conversation_id"]
        out[kind] = (int(ids.isin(has).sum()), len(ids))
    return out
