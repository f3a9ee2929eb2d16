"""How users change over a conversation: per-turn features by user-turn position.

The per-user-turn records are the ones the feature store already keeps
(``ConversationFeatures.turns``, written by ``analysis.features.features_df``); they are read back,
never recomputed. Position = order of the user's turns within the conversation (1 = first user
turn). Populations are named as in ``analysis.likeness``: "human" and "agent: <simulator>".

Example::

    turns = stored_turn_features_df(engine, data.conversations["conversation_id"], data.feature_version)
    traj = turn_trajectory_df(turns, data.conversations)   # population, position, feature, n, mean, ci
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from analysis.features import TURN_FEATURES
from analysis.likeness import _simulator_names  # one naming of simulator populations

MAX_POSITION = 10
TRAJECTORY_COLUMNS = ["population", "position", "feature", "n", "mean", "ci_low", "ci_high"]
TURN_COLUMNS = ["conversation_id", "turn_index", "language"] + TURN_FEATURES


def stored_turn_features_df(
    engine, conversation_ids: Iterable[int], version: str | None, chunk: int = 5000
) -> pd.DataFrame:
    """Per-user-turn feature records of the given conversations from the feature store (this feature
    version), one row per user turn with ``TURN_COLUMNS``. Empty when nothing is stored."""
    ids = [int(c) for c in conversation_ids]
    if not ids or not version:
        return pd.DataFrame(columns=TURN_COLUMNS)
    from sqlalchemy import select

    from db.models.analysis import ConversationFeatures

    table = ConversationFeatures.__table__
    frames: list[pd.DataFrame] = []  # one per chunk: a million conversations' turns as dicts would not fit
    with engine.connect() as conn:
        for i in range(0, len(ids), chunk):
            q = select(table.c.conversation_id, table.c.turns).where(
                table.c.version == version, table.c.conversation_id.in_(ids[i : i + chunk])
            )
            rows = [
                {**rec, "conversation_id": int(cid)} for cid, turns in conn.execute(q) for rec in turns or []
            ]
            if rows:
                frames.append(pd.DataFrame(rows))
    out = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0] if frames else pd.DataFrame()
    for col in TURN_COLUMNS:
        if col not in out.columns:
            out[col] = pd.Series(dtype=float)
    return out[TURN_COLUMNS + [c for c in out.columns if c not in TURN_COLUMNS]]


def population_names(conversations: pd.DataFrame) -> pd.Series:
    """Population per conversation: "human", or "agent: <simulator>" ("(unrecorded simulator)"
    when the simulator is missing)."""
    convs = conversations if "simulator" in conversations.columns else conversations.assign(simulator=None)
    agent = "agent: " + _simulator_names(convs).astype(str)
    return agent.where(conversations["user_kind"] == "agent", conversations["user_kind"].astype(str))


def t_interval(values: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    """Two-sided t-interval of the mean: mean -/+ t_{(1+c)/2, n-1} * s / sqrt(n) (s with ddof=1);
    NaN when n < 2."""
    v = np.asarray(values, dtype=float)
    n = len(v)
    if n < 2:
        return float("nan"), float("nan")
    m = float(v.mean())
    half = float(stats.t.ppf((1 + confidence) / 2, n - 1)) * float(v.std(ddof=1)) / np.sqrt(n)
    return m - half, m + half


def clustered_interval(
    values: np.ndarray, clusters: Sequence, confidence: float = 0.95
) -> tuple[float, float]:
    """Interval of the mean when observations come in clusters (a participant's conversations):
    mean -/+ t_{(1+c)/2, G-1} * sqrt(G/(G-1) * sum_g (sum_{i in g} (y_i - mean))^2 / n^2), the CR1
    cluster-robust standard error of an intercept-only OLS (equals statsmodels'
    ``OLS(y, 1).fit(cov_type="cluster")``; tested). With every cluster a single observation it is
    ``t_interval``. NaN with fewer than 2 clusters."""
    v = np.asarray(values, dtype=float)
    codes, uniq = pd.factorize(pd.Series(list(clusters), dtype=object).astype(str))
    g = len(uniq)
    if g < 2:
        return float("nan"), float("nan")
    m = float(v.mean())
    sums = np.bincount(codes, weights=v - m, minlength=g)
    se = float(np.sqrt(g / (g - 1) * (sums**2).sum() / len(v) ** 2))
    half = float(stats.t.ppf((1 + confidence) / 2, g - 1)) * se
    return m - half, m + half


def turn_trajectory_df(
    turns: pd.DataFrame,
    conversations: pd.DataFrame,
    max_position: int = MAX_POSITION,
    features: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Mean of each numeric per-turn feature per population and user-turn position (1..``max_position``)
    with a 95% interval (NaN with fewer than 2 clusters): ``clustered_interval`` with a human
    participant's conversations as one cluster (column ``participant`` of ``conversations``; each
    agent conversation, and a human one without a participant, its own cluster, which makes it the
    plain t-interval). Only conversations in ``conversations`` with user kind human or agent are used."""
    if turns is None or turns.empty or conversations is None or conversations.empty:
        return pd.DataFrame(columns=TRAJECTORY_COLUMNS)
    convs = conversations[conversations["user_kind"].isin(["human", "agent"])]
    people = convs["participant"] if "participant" in convs.columns else pd.Series(None, index=convs.index)
    own = "conversation:" + convs["conversation_id"].astype(str)
    cluster = ("participant:" + people.astype(str)).where(
        people.notna() & (people.astype(str) != "") & (convs["user_kind"] == "human"), own
    )
    pops = pd.DataFrame(
        {
            "conversation_id": convs["conversation_id"].astype("int64"),
            "population": population_names(convs),
            "cluster": cluster,
        }
    )
    d = turns.merge(pops, on="conversation_id", how="inner")
    if d.empty:
        return pd.DataFrame(columns=TRAJECTORY_COLUMNS)
    d = d.sort_values(["conversation_id", "turn_index"], kind="stable")
    d["position"] = d.groupby("conversation_id").cumcount() + 1
    d = d[d["position"] <= max_position]
    names = [f for f in (features or TURN_FEATURES) if f in d.columns]
    numeric = {}
    for f in names:
        col = pd.to_numeric(d[f], errors="coerce")
        if col.notna().any():
            numeric[f] = col.astype(float)
    rows = []
    for f, col in numeric.items():
        sub = pd.DataFrame(
            {"population": d["population"], "position": d["position"], "cluster": d["cluster"], "v": col}
        ).dropna(subset=["v"])
        for (pop, pos), g in sub.groupby(["population", "position"], sort=True):
            v = g["v"].to_numpy()
            lo, hi = clustered_interval(v, g["cluster"].to_numpy())
            rows.append(
                {
                    "population": pop,
                    "position": pos,
                    "feature": f,
                    "n": len(v),
                    "mean": float(v.mean()),
                    "ci_low": lo,
                    "ci_high": hi,
                }
            )
    out = pd.DataFrame(rows, columns=TRAJECTORY_COLUMNS)
    # human first, then the simulator populations; features in TURN_FEATURES order
    order = {f: i for i, f in enumerate(TURN_FEATURES)}
    out["_h"] = out["population"] != "human"
    out["_f"] = out["feature"].map(order)
    out = out.sort_values(["_f", "_h", "population", "position"], kind="stable").drop(columns=["_h", "_f"])
    return out.reset_index(drop=True).astype({"position": "int64", "n": "int64"})
