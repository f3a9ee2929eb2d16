"""Human vs agent comparisons: one tidy table over every label dimension and feature, pooled and
per scenario (and per assistant model / simulator configuration where there are several), with
paired rows for matched conditions and a multiple-comparison correction over the whole table.

Which test for what (every variable also gets a row clustered by participant, because humans
contribute many conversations each and the conversation-level tests treat them as independent):
- nominal labels and categorical features: Pearson chi-square (no continuity correction; Fisher's
  exact test for a 2x2 table with an expected count < 5), Cramer's V with a bootstrap interval;
  clustered: a Wald test of the category shares with cluster-robust errors, Cramer's V with a
  cluster bootstrap interval;
- ordinal labels: Mann-Whitney U with Cliff's delta; clustered: an OLS mean difference with
  cluster-robust errors;
- continuous features: Welch's t with Hedges' g, and Mann-Whitney U with Cliff's delta; clustered:
  the OLS mean difference;
- matched pairs (a human session and its digital twins, or human and agent conversations of one
  condition): Wilcoxon signed-rank (ordinal/continuous) or McNemar-Bowker (nominal).

That mapping is the registry ``SCALES``: one ``ScaleTests`` entry per scale, listing its tests in
the order their rows appear.

Example::

    table = comparisons_df(load_study(engine, "recllmsim"), correction="holm")
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis import stats
from analysis.dataset import StudyData
from analysis.features import CONTINUOUS_FEATURES, NOMINAL_FEATURES

COLUMNS = [
    "dimension",
    "scenario",
    "test",
    "statistic",
    "p_value",
    "p_adjusted",
    "effect_size_name",
    "effect_size",
    "ci_low",
    "ci_high",
    "n_human",
    "n_agent",
]
EXTRA_COLUMNS = [
    "kind",
    "scale",
    "slice_by",
    "slice",
    "human_summary",
    "agent_summary",
    "label_source",
    "correction",
    "family",
    "note",
]
ALL_COLUMNS = COLUMNS + EXTRA_COLUMNS
MIN_PAIRS = 3
SMALL_GROUP = 5  # below this many conversations in a group the row says its figures are unreliable
VARIABLE_NOTES = {
    "hallucination_flag_rate": "share of assistant turns flagged; humans' live flags vs turn-level labels "
    "(post-hoc annotators for agents in the reference) are not the same measurement",
}


def _summary(values: pd.Series, scale: str, categories: list | None = None) -> str:
    values = values.dropna()
    if values.empty:
        return ""
    if scale == "nominal":
        share = values.astype(str).value_counts(normalize=True)
        order = [c for c in (categories or []) if c in share.index] + [
            c for c in share.index if c not in (categories or [])
        ]
        return json.dumps({c: float(share[c]) for c in order})  # full precision: n x share = counts
    v = values.astype(float)
    sd = v.std(ddof=1) if len(v) > 1 else float("nan")
    return f"mean={float(v.mean())!r}; sd={float(sd)!r}; median={float(v.median())!r}"


def _ranks(values: pd.Series, categories: list) -> pd.Series:
    """Ordinal labels as their rank in the codebook order (1-based); NaN outside the scale."""
    pos = {c: i + 1 for i, c in enumerate(categories)}
    return values.astype(str).map(pos).astype(float)


def _numeric(values: pd.Series, scale: str, categories: list) -> pd.Series:
    """Ordinal labels as their rank in the codebook order (1-based); continuous as floats."""
    if scale == "ordinal":
        return _ranks(values, categories)
    return pd.to_numeric(values, errors="coerce").astype(float)


@dataclass(frozen=True)
class Groups:
    """One variable's values in the two groups, on the scale the tests read (categories as text,
    ranks or floats), with each human value's participant (the cluster)."""

    human: pd.Series
    agent: pd.Series
    people: pd.Series
    categories: list
    n_boot: int
    ci: float
    thresholds: tuple = (0.05,)  # decision levels a Monte Carlo p must be clear of

    def clusters(self) -> np.ndarray:
        return self.people.loc[self.human.index].to_numpy()


def _chi_square(g: Groups) -> dict:
    return stats.chi_square_test(
        g.human.tolist(), g.agent.tolist(), g.categories, n_boot=g.n_boot, ci=g.ci, thresholds=g.thresholds
    )


def _clustered_shares(g: Groups) -> dict:
    return stats.clustered_share_test(
        g.human.tolist(), g.agent.tolist(), g.clusters(), g.categories, n_boot=g.n_boot, ci=g.ci
    )


def _welch_t(g: Groups) -> dict:
    return stats.welch_t_test(g.human.values, g.agent.values, g.ci)


def _mann_whitney(g: Groups) -> dict:
    return stats.mann_whitney_test(g.human.values, g.agent.values, g.ci)


def _clustered_mean(g: Groups) -> dict:
    return stats.clustered_test(g.human.values, g.agent.values, g.clusters(), g.ci)


def _clustered_ordinal(g: Groups) -> dict:
    return stats.ordinal_cluster_test(g.human.values, g.agent.values, g.clusters(), g.n_boot, g.ci)


def _random_intercept(g: Groups) -> dict:
    return stats.random_intercept_test(g.human.values, g.agent.values, g.clusters(), g.ci)


def _modal_per_unit(vals: pd.DataFrame, scale: str, categories: list) -> pd.DataFrame:
    return _modal(vals.assign(v=vals["v"].astype(str))).unstack("user_kind")


def _mean_per_unit(vals: pd.DataFrame, scale: str, categories: list) -> pd.DataFrame:
    vals = vals.assign(v=_numeric(vals["v"], scale, categories)).dropna(subset=["v"])
    return vals.groupby(["unit", "user_kind"])["v"].mean().unstack("user_kind")


def _mcnemar_bowker(human: pd.Series, agent: pd.Series, categories: list, ci: float) -> dict:
    return stats.mcnemar_bowker_test(human.tolist(), agent.tolist(), categories, ci)


def _wilcoxon(human: pd.Series, agent: pd.Series, categories: list, ci: float) -> dict:
    return stats.wilcoxon_paired_test(human.to_numpy(float), agent.to_numpy(float), ci)


@dataclass(frozen=True)
class ScaleTests:
    """What is run for a variable of one scale. ``values``: the non-missing values as the tests read
    them (the row notes how many it drops as outside the scale; summaries are on these values);
    ``tests``: (role, test) pairs, one row each, in this order, on the two groups; ``recommended``:
    the role of the test to cite (its pooled rows form the ``primary`` family); ``per_unit`` and
    ``paired``: the matched analysis (one value per unit and kind, then one paired test)."""

    values: Callable[[pd.Series, list], pd.Series]
    tests: tuple[tuple[str, Callable[[Groups], dict]], ...]
    recommended: str
    per_unit: Callable[[pd.DataFrame, str, list], pd.DataFrame]
    paired: Callable[[pd.Series, pd.Series, list, float], dict]


SCALES: dict[str, ScaleTests] = {
    "nominal": ScaleTests(
        values=lambda v, cats: v.astype(str),
        tests=(("chi_square", _chi_square), ("clustered", _clustered_shares)),
        recommended="clustered",
        per_unit=_modal_per_unit,
        paired=_mcnemar_bowker,
    ),
    "ordinal": ScaleTests(
        values=lambda v, cats: _ranks(v, cats).dropna(),
        tests=(
            ("mann_whitney", _mann_whitney),
            ("clustered_linear", _clustered_mean),
            ("clustered", _clustered_ordinal),
            ("mixed", _random_intercept),
        ),
        recommended="clustered",
        per_unit=_mean_per_unit,
        paired=_wilcoxon,
    ),
    "continuous": ScaleTests(
        values=lambda v, cats: v.astype(float),
        tests=(
            ("welch_t", _welch_t),
            ("mann_whitney", _mann_whitney),
            ("clustered", _clustered_mean),
            ("mixed", _random_intercept),
        ),
        recommended="clustered",
        per_unit=_mean_per_unit,
        paired=_wilcoxon,
    ),
}
PRIMARY = "primary"  # the family to cite: the recommended test of every variable, pooled


def family_name(slice_by: str, slice_name: str, role: str, recommended: bool) -> str:
    """The multiple-comparison family of a row: ``primary`` for the recommended pooled test, else
    ``slice_by:slice:role`` (role ``recommended`` for the recommended test), so every family holds
    at most one row per variable and answers one question."""
    if slice_by == "pooled" and recommended:
        return PRIMARY
    return f"{slice_by}:{slice_name}:{'recommended' if recommended else role}"


LABEL_SCALES = ("nominal", "ordinal")  # a label dimension of any other scale is compared as nominal


def _add_note(row: dict, note: str) -> None:
    row["note"] = (row["note"] + "; " if row["note"] else "") + note


def _tests_for(
    variable: str,
    kind: str,
    scale: str,
    categories: list,
    human: pd.DataFrame,
    agent: pd.DataFrame,
    n_boot: int,
    ci: float,
    thresholds: tuple = (0.05,),
) -> list[dict]:
    spec = SCALES[scale]
    h, a = human[variable].dropna(), agent[variable].dropna()
    people = (
        human[CLUSTER] if CLUSTER in human else human.get("participant", pd.Series("", index=human.index))
    )
    hv, av = spec.values(h, categories), spec.values(a, categories)
    groups = Groups(hv, av, people, categories, n_boot, ci, thresholds)
    out = [test(groups) | {"role": role} for role, test in spec.tests]
    dropped = (len(h) - len(hv)) + (len(a) - len(av))
    missing_h, missing_a = int(human[variable].isna().sum()), int(agent[variable].isna().sum())
    for r in out:
        if dropped:
            _add_note(r, f"{dropped} values outside the scale ignored")
        if r["p_value"] is not None and min(r["n_human"], r["n_agent"]) < SMALL_GROUP:
            # e.g. 3 vs 3 fully separated: a bootstrap interval collapses to a point such as [1, 1]
            _add_note(r, f"small group (fewer than {SMALL_GROUP}): intervals and p-values are unreliable")
        if kind == "label" and (missing_h or missing_a):
            _add_note(
                r,
                f"left out without a label from this source (failed, skipped or not labelled): "
                f"{missing_h} human, {missing_a} agent",
            )
        if variable in VARIABLE_NOTES:
            _add_note(r, VARIABLE_NOTES[variable])
        if disagree := stats.disagreement_note(r, 1 - ci):
            _add_note(r, disagree)
        r.update(
            dimension=variable,
            kind=kind,
            scale=scale,
            human_summary=_summary(hv, scale, categories),
            agent_summary=_summary(av, scale, categories),
        )
    return out


def _variables(data: StudyData, include_features: bool) -> list[tuple[str, str, str, list]]:
    """(name, kind, scale, categories) for every label dimension and feature to compare."""
    out = []
    for dim in data.dimensions:
        scale, cats = data.scales.get(dim, ("nominal", []))
        out.append((dim, "label", scale if scale in LABEL_SCALES else "nominal", list(cats)))
    if include_features:
        for f in CONTINUOUS_FEATURES:
            if f in data.features.columns:
                out.append((f, "feature", "continuous", []))
        if "hallucination_flag_rate" in data.features.columns:
            out.append(("hallucination_flag_rate", "feature", "continuous", []))
        for f in NOMINAL_FEATURES:
            if f in data.features.columns:
                out.append((f, "feature", "nominal", []))
    return out


CLUSTER = "_cluster"  # the frame's column of participant codes (``stats.cluster_codes``)


def analysis_frame(data: StudyData) -> pd.DataFrame:
    """Conversations joined with their labels and features (one row per conversation)."""
    frame = data.conversations.merge(data.labels, on="conversation_id", how="left")
    feats = data.features.drop(
        columns=[c for c in data.features.columns if c in frame.columns and c != "conversation_id"]
    )
    return frame.merge(feats, on="conversation_id", how="left")


def _slices(frame: pd.DataFrame, by: Iterable[str]) -> list[tuple[str, str, str, pd.DataFrame, pd.DataFrame]]:
    """(slice_by, slice, scenario, human rows, agent rows)."""
    hum, age = frame[frame["user_kind"] == "human"], frame[frame["user_kind"] == "agent"]
    out = [("pooled", "all", "all", hum, age)]
    if "scenario" in by:
        for scen in sorted(frame["scenario"].dropna().unique()):
            out.append(("scenario", scen, scen, hum[hum["scenario"] == scen], age[age["scenario"] == scen]))
    # Only models (simulators) both kinds talked to are compared; the slice exists when there are several.
    shared = sorted(set(hum["assistant_model"].dropna()) & set(age["assistant_model"].dropna()))
    if "assistant_model" in by and len(shared) > 1:
        for model in shared:
            out.append(
                (
                    "assistant_model",
                    model,
                    "all",
                    hum[hum["assistant_model"] == model],
                    age[age["assistant_model"] == model],
                )
            )
    if "simulator" in by and age["simulator"].nunique() > 1:
        for sim in sorted(age["simulator"].dropna().unique()):
            # Each simulator configuration against all humans.
            out.append(("simulator", sim, "all", hum, age[age["simulator"] == sim]))
    return out


def matched_units_df(frame: pd.DataFrame) -> pd.DataFrame:
    """Matched units for paired analysis: rows (unit, conversation_id, user_kind, match).

    A human session and its digital twins (agent conversations whose ``twin_of_id`` points at it)
    form one unit; otherwise each condition with both human and agent conversations is one unit
    (conversations of a condition are pooled within their kind, so a condition counts once).
    """
    cols = ["unit", "conversation_id", "user_kind", "match"]
    if frame.empty:
        return pd.DataFrame(columns=cols)
    hum = frame[frame["user_kind"] == "human"]
    age = frame[frame["user_kind"] == "agent"]
    twins = age[age["twin_of_id"].notna() & age["twin_of_id"].isin(hum["conversation_id"])]
    parts = []
    if len(twins):
        t_units = "t" + twins["twin_of_id"].astype(int).astype(str)
        parts.append(
            pd.DataFrame(
                {
                    "unit": t_units.values,
                    "conversation_id": twins["conversation_id"].values,
                    "user_kind": "agent",
                    "match": "twin",
                }
            )
        )
        h_ids = twins["twin_of_id"].astype(int).unique()
        parts.append(
            pd.DataFrame(
                {
                    "unit": ["t" + str(i) for i in h_ids],
                    "conversation_id": h_ids,
                    "user_kind": "human",
                    "match": "twin",
                }
            )
        )
    covered = set(twins["conversation_id"]) | set(twins["twin_of_id"].astype(int))
    rest = frame[~frame["conversation_id"].isin(covered)]
    both = rest.groupby("condition_id")["user_kind"].nunique()
    conds = both[both == 2].index
    rest = rest[rest["condition_id"].isin(conds)]
    if len(rest):
        parts.append(
            pd.DataFrame(
                {
                    "unit": "c" + rest["condition_id"].astype(int).astype(str).values,
                    "conversation_id": rest["conversation_id"].values,
                    "user_kind": rest["user_kind"].values,
                    "match": "condition",
                }
            )
        )
    return pd.concat(parts, ignore_index=True)[cols] if parts else pd.DataFrame(columns=cols)


def _modal(values: pd.DataFrame) -> pd.Series:
    """Most frequent value per (unit, user_kind), ties broken by the value's sort order."""
    counts = values.groupby(["unit", "user_kind", "v"]).size().reset_index(name="n")
    counts = counts.sort_values(["unit", "user_kind", "n", "v"], ascending=[True, True, False, True])
    return counts.drop_duplicates(["unit", "user_kind"]).set_index(["unit", "user_kind"])["v"]


def _paired_rows(frame: pd.DataFrame, variables, ci: float) -> list[dict]:
    units = matched_units_df(frame)
    if units.empty:
        return []
    idx = frame.set_index("conversation_id")
    rows = []
    for name, kind, scale, cats in variables:
        if name not in idx.columns:
            continue
        spec = SCALES[scale]
        vals = units.assign(v=idx[name].reindex(units["conversation_id"]).values).dropna(subset=["v"])
        per = spec.per_unit(vals, scale, cats)
        if "human" not in per.columns or "agent" not in per.columns:
            continue
        per = per.dropna(subset=["human", "agent"])
        r = spec.paired(per["human"], per["agent"], cats, ci)
        if r["n_human"] < MIN_PAIRS:
            continue
        if disagree := stats.disagreement_note(r, 1 - ci):
            _add_note(r, disagree)
        r.update(
            family=family_name("paired", ",".join(sorted(units["match"].unique())), "paired", True),
            dimension=name,
            kind=kind,
            scale=scale,
            slice_by="paired",
            slice=",".join(sorted(units["match"].unique())),
            scenario="all",
            human_summary="",
            agent_summary="",
        )
        rows.append(r)
    return rows


def comparisons_df(
    data: StudyData,
    correction: str = "holm",
    n_boot: int = stats.DEFAULT_BOOT,
    ci: float = stats.DEFAULT_CI,
    by: Iterable[str] = ("scenario", "assistant_model", "simulator"),
    include_features: bool = True,
    paired: bool = True,
) -> pd.DataFrame:
    """The comparison table (``COLUMNS`` first, then ``EXTRA_COLUMNS``); p_adjusted is corrected
    within each row's ``family`` (Holm by default, ``correction="bh"`` for Benjamini-Hochberg): the
    ``primary`` family holds the recommended test of every variable, pooled; the others one slice
    and one test each (``family_name``)."""
    stats.adjust_p([], correction)  # validate the method name before any work
    frame = analysis_frame(data)
    if "participant" in frame:
        frame[CLUSTER] = stats.cluster_codes(frame["participant"])
    variables = _variables(data, include_features)
    # A Monte Carlo p must settle the decision at alpha and at the family's Bonferroni level (its
    # smallest Holm threshold); a family holds one row per variable.
    alpha = 1 - ci
    thresholds = (alpha, alpha / max(1, len(variables)))
    rows: list[dict] = []
    if not frame.empty:
        for slice_by, slice_name, scenario, hum, age in _slices(frame, by):
            for name, kind, scale, cats in variables:
                for r in _tests_for(name, kind, scale, cats, hum, age, n_boot, ci, thresholds):
                    role = r.pop("role")
                    r.update(scenario=scenario, slice_by=slice_by, slice=slice_name)
                    r["family"] = family_name(slice_by, slice_name, role, role == SCALES[scale].recommended)
                    rows.append(r)
        if paired:
            rows.extend(_paired_rows(frame, variables, ci))
    out = pd.DataFrame(rows, columns=ALL_COLUMNS)
    out["p_adjusted"] = None
    for _family, idx in out.groupby("family", sort=False).groups.items():
        out.loc[idx, "p_adjusted"] = stats.adjust_p(out.loc[idx, "p_value"].tolist(), correction)
    out["p_adjusted"] = out["p_adjusted"].astype(float)
    out["label_source"] = data.label_source
    out["correction"] = correction
    out["note"] = out["note"].fillna("")
    hall = data.meta.get("hallucination_source")
    if hall:  # which source's turn labels the rates read (one source, never a mix)
        at = out["dimension"] == "hallucination_flag_rate"
        out.loc[at, "note"] = out.loc[at, "note"] + f"; turn labels: {hall}"
    return out


def comparison_records(df: pd.DataFrame) -> list[dict]:
    """JSON-ready records (NaN -> None) at full precision: Python floats, which ``json.dumps``
    writes with every digit (pandas' ``to_json`` rounds to 10 decimal places, so a p of 5e-15
    would be written as 0)."""
    out = df.astype(object).where(df.notna(), None)
    return [
        {k: (v.item() if isinstance(v, np.generic) else v) for k, v in r.items()}
        for r in out.to_dict("records")
    ]
