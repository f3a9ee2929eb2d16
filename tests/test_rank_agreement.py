"""Ranking assistants by people's and by the simulator's outcomes (analysis.rank_agreement)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from analysis.dataset import load_study
from analysis.instruments import load_instruments
from analysis.rank_agreement import kendall_tau_b, rank_agreement_df, spearman
from analysis.synthetic import add_instruments, make_study


def test_hand_computed():
    # x = 1 2 3 4, y = 1 3 2 4: ranks differ in one adjacent pair. rho = 1 - 6*2/(4*15) = 0.8;
    # tau = (5 concordant - 1 discordant) / 6 = 2/3.
    assert spearman([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)
    assert kendall_tau_b([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(2 / 3)
    assert np.isnan(spearman([1, 2, 3], [2, 2, 2]))


@pytest.mark.parametrize("seed", range(5))
def test_against_scipy(seed):
    rng = np.random.default_rng(seed)
    x = rng.integers(1, 6, size=12).astype(float)  # with ties
    y = x + rng.normal(0, 2, size=12)
    assert spearman(x, y) == pytest.approx(stats.spearmanr(x, y).statistic)
    assert kendall_tau_b(x, y) == pytest.approx(stats.kendalltau(x, y).statistic)  # tau-b by default


@pytest.fixture(scope="module")
def ranked(tmp_path_factory):
    from db.engine import make_engine
    from db.migrate import upgrade

    eng = make_engine(f"sqlite:///{tmp_path_factory.mktemp('rank') / 'r.db'}")
    upgrade(eng)
    sid = make_study(
        eng,
        "rank",
        n_human=300,
        n_agent=600,
        simulators=2,
        assistants=6,
        seed=11,
        n_participants=40,
        with_labels=False,
    )
    add_instruments(eng, sid, seed=11, modes={"sim-0": "copy", "sim-1": "random"})
    inst = load_instruments(eng, load_study(eng, "rank", features=False))
    yield rank_agreement_df(inst, splits=20, n_boot=200)
    eng.dispose()


def _get(df, sim, metric, group):
    return df[(df["simulator"] == sim) & (df["metric"] == metric) & (df["group"] == group)].iloc[0]


def test_copying_simulator_near_one_random_near_zero(ranked):
    for group in ("assistant:satisfaction", "assistant:usefulness"):
        copy = _get(ranked, "sim-0", "rank_spearman", group)
        assert copy["value"] > 0.8 and copy["calibrated"] > 0.8
    for group in ("assistant_x_scenario:satisfaction", "assistant_x_scenario:usefulness"):
        copy = _get(ranked, "sim-0", "rank_spearman", group)
        rand = _get(ranked, "sim-1", "rank_spearman", group)
        assert copy["value"] > 0.7
        assert abs(rand["value"]) < 0.35 and rand["ci_low"] < 0 < rand["ci_high"]
        assert rand["human_ceiling"] > 0.5  # people agree with people
    kt = _get(ranked, "sim-0", "rank_kendall", "assistant_x_scenario:satisfaction")
    assert kt["ci_low"] <= kt["value"] <= kt["ci_high"] and kt["n_splits"] == 20


def test_fewer_than_three_assistants_says_so(tmp_path):
    from db.engine import make_engine
    from db.migrate import upgrade

    eng = make_engine(f"sqlite:///{tmp_path / 'two.db'}")
    upgrade(eng)
    sid = make_study(eng, "two", n_human=30, n_agent=30, assistants=2, seed=2, with_labels=False)
    add_instruments(eng, sid, seed=2)
    df = rank_agreement_df(
        load_instruments(eng, load_study(eng, "two", features=False)), splits=20, n_boot=20
    )
    assert set(df["metric"]) == {"rank_spearman", "rank_kendall"}
    assert df["value"].isna().all()
    assert df["note"].str.startswith("fewer than 3 assistant configurations").all()
