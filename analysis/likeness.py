"""How human-like is each simulator configuration?

- per dimension: Jensen-Shannon distance (base 2, in [0, 1]) between the simulator's and the
  humans' label distributions, with a bootstrap interval, the distance expected with no difference
  at these sample sizes (``js_null``, by permutation; the plug-in distance grows as samples shrink)
  and a permutation p-value; the **human-likeness index** is 1 - mean excess distance
  (max(0, distance - js_null)) over the label dimensions (1 = indistinguishable from people at this
  sample size), so simulators with different numbers of conversations compare fairly; the raw
  1 - mean distance is kept as ``human_likeness_index_raw``;
- a classifier two-sample test: cross-validated AUC of a logistic regression telling human from
  agent conversations on the features (0.5 = indistinguishable), with DeLong's interval;
- known simulator failures: early stopping, uniformly positive feedback, over-cooperation
  (accepting the assistant's proposal), persona facts contradicted in the user's turns;
- a ranking table of simulator configurations.

Example::

    tables = likeness_tables(load_study(engine, "recllmsim"))
    tables["ranking"]
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis import stats
from analysis.compare import analysis_frame
from analysis.dataset import StudyData
from analysis.features import CONTINUOUS_FEATURES, FEATURES
from analysis.folds import stratified_group_folds

LIKENESS_COLUMNS = [
    "simulator",
    "dimension",
    "js_distance",
    "ci_low",
    "ci_high",
    "js_null",
    "js_excess",
    "p_value",
    "n_human",
    "n_agent",
    "note",
]
RANKING_COLUMNS = [
    "rank",
    "simulator",
    "n_agent",
    "human_likeness_index",
    "human_likeness_index_raw",
    "classifier_auc",
    "auc_ci_low",
    "auc_ci_high",
    "early_stop_rate",
    "positive_feedback_rate",
    "over_cooperation",
    "persona_contradiction_rate",
]
FAILURE_COLUMNS = [
    "population",
    "n",
    "early_stop_rate",
    "positive_feedback_rate",
    "over_cooperation",
    "persona_contradiction_rate",
]
EARLY_STOP_USER_TURNS = 3  # fewer user turns than this counts as stopping early
# Features that tell the data source rather than the user's behaviour are left out of the classifier.
CLASSIFIER_EXCLUDE = {f.name for f in FEATURES.values() if not f.in_classifier}


def _simulator_names(agents: pd.DataFrame) -> pd.Series:
    return agents["simulator"].fillna("(unrecorded simulator)")


def js_distances_df(
    data: StudyData,
    frame: pd.DataFrame | None = None,
    n_boot: int = stats.DEFAULT_BOOT,
    ci: float = stats.DEFAULT_CI,
) -> pd.DataFrame:
    """JS distance per simulator configuration and label dimension."""
    frame = analysis_frame(data) if frame is None else frame
    hum = frame[frame["user_kind"] == "human"]
    age = frame[frame["user_kind"] == "agent"].assign(simulator=lambda d: _simulator_names(d))
    rows = []
    for sim, group in age.groupby("simulator", sort=True):
        for dim in data.dimensions:
            h, a = hum[dim].dropna().astype(str), group[dim].dropna().astype(str)
            if len(h) < stats.MIN_PER_GROUP or len(a) < stats.MIN_PER_GROUP:
                rows.append(
                    {
                        "simulator": sim,
                        "dimension": dim,
                        "js_distance": None,
                        "ci_low": None,
                        "ci_high": None,
                        "js_null": None,
                        "js_excess": None,
                        "p_value": None,
                        "n_human": len(h),
                        "n_agent": len(a),
                        "note": "not enough data",
                    }
                )
                continue
            table, _ = stats.contingency(h.tolist(), a.tolist(), data.scales.get(dim, ("", []))[1])
            d, lo, hi = stats.js_distance_ci(table[0], table[1], n_boot=n_boot, ci=ci)
            null, p = stats.js_null(table[0], table[1], n_perm=n_boot)
            rows.append(
                {
                    "simulator": sim,
                    "dimension": dim,
                    "js_distance": d,
                    "ci_low": lo,
                    "ci_high": hi,
                    "js_null": null,
                    "js_excess": max(0.0, d - null),
                    "p_value": p,
                    "n_human": len(h),
                    "n_agent": len(a),
                    "note": "",
                }
            )
    return pd.DataFrame(rows, columns=LIKENESS_COLUMNS)


def classifier_auc(
    human: pd.DataFrame,
    agent: pd.DataFrame,
    features: list[str] | None = None,
    folds: int = 5,
    seed: int = 0,
    ci: float = stats.DEFAULT_CI,
) -> dict:
    """Cross-validated AUC of a logistic regression separating agent from human conversations.

    Out-of-fold scores (stratified ``folds``-fold CV, grouped by participant where known) give one AUC over all conversations; its
    interval is DeLong's (AUC = (Cliff's delta + 1) / 2 on the scores). Missing features are
    imputed with the training median inside the pipeline.
    """
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    feats = [
        f for f in (features or CONTINUOUS_FEATURES) if f in human.columns and f not in CLASSIFIER_EXCLUDE
    ]
    feats = [f for f in feats if pd.concat([human[f], agent[f]]).notna().any()]
    n_h, n_a = len(human), len(agent)
    k = min(folds, n_h, n_a)
    if k < 2 or not feats:
        return {
            "auc": None,
            "ci_low": None,
            "ci_high": None,
            "n_human": n_h,
            "n_agent": n_a,
            "features": feats,
            "note": "not enough data",
        }
    X = pd.concat([human[feats], agent[feats]]).astype(float).to_numpy()
    y = np.r_[np.zeros(n_h), np.ones(n_a)]
    model = make_pipeline(
        SimpleImputer(strategy="median", keep_empty_features=True),
        StandardScaler(),
        LogisticRegression(max_iter=1000),
    )
    # A participant's conversations stay in one fold, so the classifier cannot score well by
    # recognising people it has seen in training (each agent conversation is its own group).
    people = human["participant"] if "participant" in human.columns else pd.Series(None, index=human.index)
    known = people.notna() & (people.astype(str) != "")
    human_groups = ("p:" + people.astype(str)).where(
        known, "h:" + pd.Series(range(n_h), index=human.index).astype(str)
    )
    groups = np.r_[
        human_groups.to_numpy(dtype=object), np.array([f"a:{i}" for i in range(n_a)], dtype=object)
    ]
    grouped = bool(known.any()) and human_groups.nunique() >= k
    cv = (
        stratified_group_folds(y, groups, k, seed)  # StratifiedGroupKFold's folds, faster
        if grouped
        else StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    )
    scores = cross_val_predict(model, X, y, cv=cv, method="predict_proba")[:, 1]
    delta, lo, hi = stats.cliffs_delta_ci(scores[y == 0], scores[y == 1], ci)
    return {
        "auc": (delta + 1) / 2,
        "ci_low": (lo + 1) / 2,
        "ci_high": (hi + 1) / 2,
        "n_human": n_h,
        "n_agent": n_a,
        "features": feats,
        "note": f"logistic regression, {k}-fold CV" + (", folds grouped by participant" if grouped else ""),
    }


def failure_checks_df(
    data: StudyData, frame: pd.DataFrame | None = None, early_stop_user_turns: int = EARLY_STOP_USER_TURNS
) -> pd.DataFrame:
    """Rates of known simulator failures per simulator configuration, with humans as the baseline.

    early_stop_rate: share of conversations with fewer than ``early_stop_user_turns`` user turns;
    positive_feedback_rate: share whose feedback label is "Positive" (only positive, never negative);
    over_cooperation: mean share of user turns after the first that accept the assistant's proposal
    (acceptance words, no objection words; see ``analysis.features.LEXICON``);
    persona_contradiction_rate: share where a user turn contradicts a persona fact
    (``analysis.features.PERSONA_RULES``: vegetarian vs meat, budget vs luxury, introvert vs
    nightlife, non-drinker vs alcohol).
    """
    frame = analysis_frame(data) if frame is None else frame
    pops = [("human", frame[frame["user_kind"] == "human"])]
    age = frame[frame["user_kind"] == "agent"].assign(simulator=lambda d: _simulator_names(d))
    pops += [(f"agent: {sim}", g) for sim, g in age.groupby("simulator", sort=True)]
    rows = []
    for name, g in pops:

        def mean(col, g=g):
            return float(g[col].astype(float).mean()) if col in g.columns and g[col].notna().any() else None

        fb = g["feedback"].dropna().astype(str) if "feedback" in g.columns else pd.Series(dtype=str)
        rows.append(
            {
                "population": name,
                "n": len(g),
                "early_stop_rate": float((g["n_user_turns"] < early_stop_user_turns).mean())
                if len(g) and "n_user_turns" in g
                else None,
                "positive_feedback_rate": float((fb == "Positive").mean()) if len(fb) else None,
                "over_cooperation": mean("acceptance_rate"),
                "persona_contradiction_rate": mean("persona_contradiction"),
            }
        )
    return pd.DataFrame(rows, columns=FAILURE_COLUMNS)


def likeness_tables(
    data: StudyData, n_boot: int = stats.DEFAULT_BOOT, ci: float = stats.DEFAULT_CI
) -> dict[str, pd.DataFrame]:
    """``{"distances", "failures", "ranking"}`` for the study's simulator configurations."""
    frame = analysis_frame(data)
    distances = js_distances_df(data, frame, n_boot, ci)
    failures = failure_checks_df(data, frame)
    hum = frame[frame["user_kind"] == "human"]
    age = frame[frame["user_kind"] == "agent"].assign(simulator=lambda d: _simulator_names(d))
    rows = []
    for sim, group in age.groupby("simulator", sort=True):
        mine = distances[(distances["simulator"] == sim)]
        d, excess = mine["js_distance"].dropna(), mine["js_excess"].dropna()
        auc = classifier_auc(hum, group, ci=ci)
        fail = failures[failures["population"] == f"agent: {sim}"].iloc[0]
        rows.append(
            {
                "simulator": sim,
                "n_agent": len(group),
                "human_likeness_index": float(1 - excess.mean()) if len(excess) else None,
                "human_likeness_index_raw": float(1 - d.mean()) if len(d) else None,
                "classifier_auc": auc["auc"],
                "auc_ci_low": auc["ci_low"],
                "auc_ci_high": auc["ci_high"],
                **{c: fail[c] for c in FAILURE_COLUMNS[2:]},
            }
        )
    ranking = pd.DataFrame(rows, columns=RANKING_COLUMNS[1:])
    if len(ranking):
        # Most human-like first: higher index, then AUC closer to 0.5.
        ranking["_auc_gap"] = (ranking["classifier_auc"].astype(float) - 0.5).abs()
        ranking = ranking.sort_values(
            ["human_likeness_index", "_auc_gap"], ascending=[False, True], na_position="last"
        ).drop(columns="_auc_gap")
    ranking.insert(0, "rank", range(1, len(ranking) + 1))
    return {"distances": distances, "failures": failures, "ranking": ranking.reset_index(drop=True)}
