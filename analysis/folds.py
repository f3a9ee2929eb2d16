"""Cross-validation folds that keep each group (participant) in one fold, fast at a million rows.

``stratified_group_folds`` returns exactly the folds of scikit-learn's
``StratifiedGroupKFold(n_splits, shuffle=True, random_state=seed)`` (scikit-learn 1.9's
definition: groups shuffled, then taken in the order of decreasing spread of their class counts,
each put in the fold that keeps the per-class shares most even, ties to the fold with fewer
samples). scikit-learn evaluates each candidate fold with several NumPy calls on a tiny array,
about 0.35 ms per group, which at a million simulated conversations (each its own group) is
minutes; here the same arithmetic runs on plain floats in the same order, so every comparison
and tie comes out the same (``tests/test_folds.py`` checks the folds against scikit-learn's on
many shapes of data).
"""

from __future__ import annotations

import math

import numpy as np

# NumPy sums fewer than 8 numbers one after the other; beyond that it sums in eight partial sums,
# which this port does not reproduce, so more folds go to scikit-learn itself.
_MAX_EXACT_SPLITS = 7


def stratified_group_folds(y, groups, n_splits: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train indices, test indices) per fold, as ``StratifiedGroupKFold.split`` gives them."""
    if n_splits > _MAX_EXACT_SPLITS:
        from sklearn.model_selection import StratifiedGroupKFold

        cv = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
        return [(np.asarray(a), np.asarray(b)) for a, b in cv.split(np.zeros(len(y)), y, groups)]
    _, y_inv, y_cnt = np.unique(np.asarray(y), return_inverse=True, return_counts=True)
    _, groups_inv, groups_cnt = np.unique(np.asarray(groups), return_inverse=True, return_counts=True)
    y_inv, groups_inv = y_inv.ravel(), groups_inv.ravel()
    if n_splits > len(groups_cnt):
        raise ValueError(f"cannot make {n_splits} folds from {len(groups_cnt)} groups")
    counts = np.zeros((len(groups_cnt), len(y_cnt)))
    np.add.at(counts, (groups_inv, y_inv), 1)
    perm = np.arange(len(groups_cnt))
    np.random.RandomState(seed).shuffle(perm)
    counts = counts[perm]
    inv_perm = np.empty_like(perm)
    inv_perm[perm] = np.arange(perm.size)
    groups_inv = inv_perm[groups_inv]
    order = np.argsort(-np.std(counts, axis=1), kind="stable")
    fold_of_group = np.empty(len(groups_cnt), dtype=np.int64)
    fold_of_group[order] = _greedy(counts[order].tolist(), [float(c) for c in y_cnt], n_splits)
    fold_of_row = fold_of_group[groups_inv]
    return [(np.flatnonzero(fold_of_row != i), np.flatnonzero(fold_of_row == i)) for i in range(n_splits)]


def _greedy(group_counts: list[list[float]], y_cnt: list[float], k: int) -> list[int]:
    """The fold of each group, in the order given (scikit-learn's ``_find_best_fold`` per group)."""
    folds = [[0.0] * len(y_cnt) for _ in range(k)]
    out = []
    for g in group_counts:
        best = _best_fold(folds, g, y_cnt)
        folds[best] = [a + b for a, b in zip(folds[best], g)]
        out.append(best)
    return out


def _best_fold(folds: list[list[float]], g: list[float], y_cnt: list[float]) -> int:
    best, min_eval, min_samples = 0, math.inf, math.inf
    for i in range(len(folds)):
        trial = [[a + b for a, b in zip(row, g)] if f == i else row for f, row in enumerate(folds)]
        stds = [_std([row[c] / y_cnt[c] for row in trial]) for c in range(len(y_cnt))]
        fold_eval = _seq_sum(stds) / len(stds)
        samples = _seq_sum(folds[i])
        # np.isclose(a, b): |a - b| <= 1e-8 + 1e-5 |b|, never true against infinity
        close = min_eval != math.inf and abs(fold_eval - min_eval) <= 1e-8 + 1e-5 * abs(min_eval)
        if fold_eval < min_eval or (close and samples < min_samples):
            best, min_eval, min_samples = i, fold_eval, samples
    return best


def _seq_sum(values: list[float]) -> float:
    total = 0.0
    for v in values:
        total += v
    return total


def _std(values: list[float]) -> float:
    """np.std (population) of fewer than 8 numbers, with NumPy's order of operations."""
    n = len(values)
    mean = _seq_sum(values) / n
    return math.sqrt(_seq_sum([(v - mean) * (v - mean) for v in values]) / n)
