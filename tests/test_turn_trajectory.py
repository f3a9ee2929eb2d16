"""Per-turn trajectories: positions, n and means against pandas, intervals against scipy, the CSV
and the report section (with and without per-turn records)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sqlalchemy import select, update

from analysis.features import TURN_FEATURES, load_pipelines
from analysis.report import analyze, render_report, write_analysis
from analysis.synthetic import make_study
from analysis.trajectory import (
    MAX_POSITION,
    TRAJECTORY_COLUMNS,
    stored_turn_features_df,
    t_interval,
    turn_trajectory_df,
)
from db.models.analysis import ConversationFeatures


@pytest.fixture(scope="module")
def pipelines():
    return load_pipelines(trained=False)


def _scipy_interval(v: np.ndarray) -> tuple[float, float]:
    # Reference: scipy.stats.t.interval(confidence, df=n-1, loc=mean, scale=standard error of the
    # mean), the textbook t-interval of the mean (e.g. NIST/SEMATECH e-Handbook 7.2.2.1).
    return stats.t.interval(0.95, len(v) - 1, loc=np.mean(v), scale=stats.sem(v))


def test_t_interval_matches_scipy():
    rng = np.random.default_rng(0)
    for n in (2, 3, 7, 40):
        v = rng.normal(10, 3, size=n)
        assert np.allclose(t_interval(v), _scipy_interval(v), rtol=1e-12)
    assert all(np.isnan(t_interval(np.array([4.0]))))


def _statsmodels_cluster_interval(v, clusters, confidence=0.95):
    """Intercept-only OLS with CR1 cluster-robust errors (statsmodels), t with G-1 df."""
    import statsmodels.api as sm
    from scipy import stats as sps

    codes = pd.factorize(pd.Series(clusters).astype(str))[0]
    fit = sm.OLS(np.asarray(v, float), np.ones(len(v))).fit(cov_type="cluster", cov_kwds={"groups": codes})
    g = len(set(codes))
    half = sps.t.ppf((1 + confidence) / 2, g - 1) * float(fit.bse[0])
    return float(fit.params[0]) - half, float(fit.params[0]) + half


def test_clustered_interval_matches_statsmodels_and_t_interval():
    from analysis.trajectory import clustered_interval

    rng = np.random.default_rng(5)
    people = np.repeat(np.arange(8), 5)
    v = rng.normal(0, 1, 40) + rng.normal(0, 2, 8)[people]
    assert np.allclose(clustered_interval(v, people), _statsmodels_cluster_interval(v, people))
    assert np.allclose(clustered_interval(v, np.arange(40)), _scipy_interval(v))  # singletons: the t-interval
    wide, narrow = clustered_interval(v, people), t_interval(v)
    assert wide[1] - wide[0] > narrow[1] - narrow[0]
    assert all(np.isnan(clustered_interval(v, np.zeros(40))))


def test_positions_follow_turn_order_and_cap():
    convs = pd.DataFrame(
        {
            "conversation_id": [1, 2, 3, 4],
            "user_kind": ["human", "human", "agent", "agent"],
            "simulator": [None, None, "sim-a", None],
        }
    )
    # conversation 1's records are out of order; its first user turn (index 0) has 3 words.
    turns = pd.DataFrame(
        {
            "conversation_id": [1, 1, 2, 3, 4] + [2] * 12,
            "turn_index": [2, 0, 0, 0, 0] + [2 * k for k in range(1, 13)],
            "language": "en",
            **{f: 1 for f in TURN_FEATURES},
        }
    )
    turns["words"] = [9, 3, 5, 7, 2] + list(range(12))
    out = turn_trajectory_df(turns, convs, max_position=10)
    assert list(out.columns) == TRAJECTORY_COLUMNS
    assert set(out["feature"]) == set(TURN_FEATURES)
    w = out[out["feature"] == "words"].set_index(["population", "position"])
    assert w.loc[("human", 1), "n"] == 2 and w.loc[("human", 1), "mean"] == 4.0  # (3 + 5) / 2
    assert w.loc[("human", 2), "mean"] == pytest.approx((9 + 0) / 2)
    assert w.loc[("human", 10), "n"] == 1 and np.isnan(w.loc[("human", 10), "ci_low"])
    assert w.index.get_level_values("position").max() == 10  # capped
    assert set(w.index.get_level_values("population")) == {
        "human",
        "agent: sim-a",
        "agent: (unrecorded simulator)",
    }
    assert np.isnan(w.loc[("agent: sim-a", 1), "ci_high"])  # n = 1
    assert turn_trajectory_df(turns.iloc[0:0], convs).empty


def test_trajectory_from_feature_store_matches_pandas_and_scipy(sqlite_engine, pipelines, tmp_path):
    make_study(sqlite_engine, "traj", n_human=40, n_agent=40, seed=3, simulators=2, max_user_turns=12)
    result = analyze(sqlite_engine, "traj", n_boot=50, pipelines=pipelines, agreement=False)
    traj = result.turn_trajectory
    assert list(traj.columns) == TRAJECTORY_COLUMNS
    assert set(traj["feature"]) == set(TURN_FEATURES)
    assert set(traj["population"]) == {"human", "agent: sim-0", "agent: sim-1"}
    assert traj["position"].min() == 1 and traj["position"].max() == MAX_POSITION

    # Direct computation from the stored records (the feature store, not recomputed).
    data = result.data
    with sqlite_engine.connect() as conn:
        rows = conn.execute(
            select(ConversationFeatures.conversation_id, ConversationFeatures.turns).where(
                ConversationFeatures.version == data.feature_version
            )
        ).all()
    recs = pd.DataFrame([{**r, "conversation_id": cid} for cid, turns in rows for r in turns])
    conv = data.conversations.set_index("conversation_id")
    recs["population"] = [
        "human" if conv.at[c, "user_kind"] == "human" else f"agent: {conv.at[c, 'simulator']}"
        for c in recs["conversation_id"]
    ]
    recs["position"] = recs.groupby("conversation_id")["turn_index"].rank(method="first").astype(int)
    recs = recs[recs["position"] <= MAX_POSITION]
    for feature in ("words", "chars", "question"):
        expect = recs.groupby(["population", "position"])[feature].agg(["size", "mean"])
        got = traj[traj["feature"] == feature].set_index(["population", "position"])
        assert sorted(got.index) == sorted(expect.index)
        assert (got["n"] == expect["size"].reindex(got.index)).all()
        assert np.allclose(got["mean"], expect["mean"].reindex(got.index))
        for (pop, pos), r in got.iterrows():
            at = (recs["population"] == pop) & (recs["position"] == pos)
            v = recs.loc[at, feature].to_numpy(float)
            people = conv.loc[recs.loc[at, "conversation_id"], "participant"].to_numpy()
            if pop == "human" and len(set(people)) < len(people):
                # a participant's conversations are one cluster: statsmodels' cluster-robust mean
                if len(set(people)) < 2:
                    assert np.isnan(r["ci_low"])
                elif np.std(v) > 0:
                    assert np.allclose(
                        [r["ci_low"], r["ci_high"]], _statsmodels_cluster_interval(v, people)
                    ), pos
                continue
            if len(v) < 2:
                assert np.isnan(r["ci_low"]) and np.isnan(r["ci_high"])
            elif np.std(v) > 0:
                assert np.allclose([r["ci_low"], r["ci_high"]], _scipy_interval(v)), (pop, pos)
            else:
                assert r["ci_low"] == r["ci_high"] == r["mean"]

    files = write_analysis(result, tmp_path / "an")
    csv = tmp_path / "an" / "turn_trajectory.csv"
    assert csv in files
    back = pd.read_csv(csv)
    assert list(back.columns) == TRAJECTORY_COLUMNS and len(back) == len(traj)

    html = render_report(result, sqlite_engine)
    assert '<section id="trajectory">' in html and "Over the conversation" in html
    assert "Mean words per user turn by position" in html
    assert "Per-turn trajectories not available" not in html


def test_report_without_turn_records_says_not_available(sqlite_engine, pipelines):
    make_study(sqlite_engine, "notraj", n_human=20, n_agent=20, seed=4)
    result = analyze(sqlite_engine, "notraj", n_boot=50, pipelines=pipelines, agreement=False)
    assert not result.turn_trajectory.empty
    # Feature rows stored without per-turn records (e.g. written before they were kept).
    with sqlite_engine.begin() as conn:
        conn.execute(update(ConversationFeatures.__table__).values(turns=[]))
    ids = result.data.conversations["conversation_id"]
    assert stored_turn_features_df(sqlite_engine, ids, result.data.feature_version).empty
    again = analyze(sqlite_engine, "notraj", n_boot=50, pipelines=pipelines, agreement=False)
    assert again.turn_trajectory.empty
    html = render_report(again, sqlite_engine)
    assert '<section id="trajectory">' in html
    assert "Per-turn trajectories not available" in html
    html2 = render_report(dataclasses.replace(result, turn_trajectory=pd.DataFrame()), sqlite_engine)
    assert "Per-turn trajectories not available" in html2
