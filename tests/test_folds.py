"""The fast group folds are scikit-learn's StratifiedGroupKFold folds, exactly."""

import numpy as np
import pytest
from sklearn.model_selection import StratifiedGroupKFold

from analysis.folds import stratified_group_folds


def _data(rng, n_people, per_person, n_single_h, n_agent, mixed):
    groups, y = [], []
    for p in range(n_people):
        for _ in range(int(rng.integers(1, per_person + 1))):
            groups.append(f"p:{p}")
            y.append(int(rng.random() < 0.3) if mixed else 0)
    groups += [f"h:{i}" for i in range(n_single_h)] + [f"a:{i}" for i in range(n_agent)]
    y += [0] * n_single_h + [1] * n_agent
    return np.array(y), np.array(groups, dtype=object)


@pytest.mark.parametrize("case", range(40))
def test_folds_equal_scikit_learns(case):
    rng = np.random.default_rng(case)
    y, groups = _data(
        rng,
        n_people=int(rng.integers(3, 40)),
        per_person=int(rng.integers(1, 8)),
        n_single_h=int(rng.integers(0, 60)),
        n_agent=int(rng.integers(10, 150)),
        mixed=case % 3 == 0,
    )
    k = 2 + case % 4
    seed = int(rng.integers(0, 1000))
    expected = StratifiedGroupKFold(k, shuffle=True, random_state=seed).split(np.zeros(len(y)), y, groups)
    got = stratified_group_folds(y, groups, k, seed)
    for (train, test), (train_e, test_e) in zip(got, expected, strict=True):
        assert test.tolist() == list(test_e) and train.tolist() == list(train_e)


def test_more_folds_than_groups_is_refused():
    with pytest.raises(ValueError, match="3 folds from 2 groups"):
        stratified_group_folds([0, 1], ["a", "b"], 3, 0)


def test_many_folds_go_to_scikit_learn():
    y = np.r_[np.zeros(40), np.ones(40)]
    groups = np.array([f"g{i // 2}" for i in range(80)], dtype=object)
    expected = StratifiedGroupKFold(9, shuffle=True, random_state=1).split(np.zeros(80), y, groups)
    got = stratified_group_folds(y, groups, 9, 1)
    assert [t.tolist() for _, t in got] == [list(t) for _, t in expected]
