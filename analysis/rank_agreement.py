"""Can the simulator stand in for people when evaluating assistants? (SimulatorArena, Dou et al.,
EMNLP 2025: rank the assistants by people's ratings and by the simulated users', and correlate.)

When a study has three or more assistant configurations with both people's and a simulator's
conversations, the assistants are ranked by each outcome, once from people's answers and once from
the simulator's:

- ``satisfaction``: the mean per-reply satisfaction (1-5) over every rated reply to the assistant;
- ``usefulness``: the mean post-task usefulness answer (the first of ``USEFULNESS_ITEMS`` in the
  data, scored on [0, 1] as ``analysis.instruments.ItemScale.score``);

and the two rankings are compared by Spearman's rho (Pearson correlation of average ranks) and
Kendall's tau-b, at assistant level (group ``assistant:<outcome>``) and at assistant x scenario
level (``assistant_x_scenario:<outcome>``, cells both populations reached). Intervals: percentile
bootstrap resampling participants (all of a person's conversations together; each simulated
conversation on its own). Human ceiling: the same correlation between two halves of the people
(split by participant, ``analysis.fidelity.participant_halves``), mean over the splits; calibrated
= value / ceiling, clipped to [0, 1].

Example::

    records = rank_agreement_df(load_instruments(engine, data))   # fidelity records
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from analysis.fidelity import (
    DEFAULT_BOOT,
    DEFAULT_SPLITS,
    RECORD_COLUMNS,
    calibrate,
    cluster_resample,
    participant_halves,
)
from analysis.instruments import ITEM_PREFIX, Instruments, record

MIN_ASSISTANTS = 3
USEFULNESS_ITEMS = ("Availability", "usefulness", "Usefulness", "useful", "Useful")
LEVELS = {"assistant": ["assistant"], "assistant_x_scenario": ["assistant", "scenario"]}
METRICS = {"rank_spearman": "spearman", "rank_kendall": "kendall"}


def spearman(x, y) -> float:
    """Spearman's rho: the Pearson correlation of the average ranks (NaN when one side is constant)."""
    rx, ry = rankdata(x), rankdata(y)
    if np.ptp(rx) == 0 or np.ptp(ry) == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


def kendall_tau_b(x, y) -> float:
    """Kendall's tau-b = (C - D) / sqrt((n0 - n1)(n0 - n2)), n0 = n(n-1)/2, n1 / n2 the pairs tied
    in x / y (Kendall 1945); NaN when one side is constant."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    i, j = np.triu_indices(len(x), 1)
    sx, sy = np.sign(x[i] - x[j]), np.sign(y[i] - y[j])
    n0 = len(i)
    n1, n2 = int((sx == 0).sum()), int((sy == 0).sum())
    denom = np.sqrt(float(n0 - n1) * float(n0 - n2))
    return float((sx * sy).sum() / denom) if denom > 0 else float("nan")


CORRELATIONS = {"spearman": spearman, "kendall": kendall_tau_b}


def outcomes(inst: Instruments) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """outcome -> (per-conversation sum, per-conversation count), aligned with ``inst.conversations``:
    satisfaction sums over the rated replies; usefulness is one scored answer per conversation."""
    conv = inst.conversations.reset_index(drop=True)
    out = {}
    rep = inst.replies.dropna(subset=["satisfaction"])
    if len(rep):
        g = rep.groupby("conversation_id")["satisfaction"]
        out["satisfaction"] = (
            conv["conversation_id"].map(g.sum()).fillna(0).to_numpy(float),
            conv["conversation_id"].map(g.count()).fillna(0).to_numpy(float),
        )
    item = next((n for n in USEFULNESS_ITEMS if n in inst.items and inst.items[n].scale != "nominal"), None)
    if item is not None:
        score = inst.items[item].score(conv[ITEM_PREFIX + item])
        out["usefulness"] = (score.fillna(0).to_numpy(float), score.notna().to_numpy(float))
    return out


def _cell_means(sums, counts, cells: np.ndarray, idx: np.ndarray, n_cells: int) -> np.ndarray:
    s = np.bincount(cells[idx], weights=sums[idx], minlength=n_cells)
    c = np.bincount(cells[idx], weights=counts[idx], minlength=n_cells)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(c > 0, s / np.where(c > 0, c, 1), np.nan)


def _corr(a: np.ndarray, b: np.ndarray, how: str) -> float | None:
    ok = ~(np.isnan(a) | np.isnan(b))
    if ok.sum() < MIN_ASSISTANTS:
        return None
    v = CORRELATIONS[how](a[ok], b[ok])
    return None if np.isnan(v) else v


def _ceiling(sums, counts, cells, hum, clusters, n_cells, splits, seed) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {h: [] for h in CORRELATIONS}
    if len(np.unique(clusters[hum])) < 2:
        return out
    rng = np.random.default_rng(seed)
    for _ in range(splits):
        a, b = participant_halves(hum, clusters[hum], rng)
        ma, mb = _cell_means(sums, counts, cells, a, n_cells), _cell_means(sums, counts, cells, b, n_cells)
        for how in CORRELATIONS:
            v = _corr(ma, mb, how)
            if v is not None:
                out[how].append(v)
    return out


def _level_records(inst, sims, outcome, sums, counts, level, splits, n_boot, seed) -> list[dict]:
    conv = inst.conversations.reset_index(drop=True)
    keys = conv[LEVELS[level]].astype(str).agg(" | ".join, axis=1)
    cells, names = pd.factorize(keys)
    n_cells = len(names)
    pops, clusters = conv["population"].to_numpy(), conv["cluster"].to_numpy()
    has = counts > 0
    hum = np.flatnonzero((pops == "human") & has)
    group = f"{level}:{outcome}"
    ceil = _ceiling(sums, counts, cells, hum, clusters, n_cells, splits, seed)
    rows = []
    for i, sim in enumerate(sims):
        oth = np.flatnonzero((pops == sim) & has)
        shared = np.intersect1d(np.unique(cells[hum]), np.unique(cells[oth]))
        base = {"n_human": len(hum), "n_agent": len(oth)}
        if len(shared) < MIN_ASSISTANTS:
            note = f"fewer than {MIN_ASSISTANTS} {level.replace('_x_', ' x ')} cells with {outcome} answers from both people and this simulator ({len(shared)})"
            rows += [record(sim, m, group, direction="higher", note=note, **base) for m in METRICS]
            continue
        mh, ma = (
            _cell_means(sums, counts, cells, hum, n_cells),
            _cell_means(sums, counts, cells, oth, n_cells),
        )
        rng = np.random.default_rng(seed + 1 + i)
        draws: dict[str, list[float]] = {h: [] for h in CORRELATIONS}
        for _ in range(n_boot):
            bh = _cell_means(sums, counts, cells, cluster_resample(hum, clusters[hum], rng), n_cells)
            ba = _cell_means(sums, counts, cells, cluster_resample(oth, clusters[oth], rng), n_cells)
            for how in CORRELATIONS:
                v = _corr(bh, ba, how)
                if v is not None:
                    draws[how].append(v)
        for metric, how in METRICS.items():
            rows.append(
                _finish(
                    sim, metric, group, _corr(mh, ma, how), draws[how], ceil[how], len(shared), outcome, base
                )
            )
    return rows


def _finish(sim, metric, group, value, draws, ceil, n_cells, outcome, base) -> dict:
    note = f"{n_cells} cells ranked by mean {outcome}"
    if value is None:
        note += "; the means do not vary on one side: no correlation"
    rec = record(sim, metric, group, value, direction="higher", note=note, **base)
    if value is not None and len(draws) >= 10:
        rec["ci_low"], rec["ci_high"] = (float(x) for x in np.percentile(draws, [2.5, 97.5]))
    if ceil:
        rec.update(
            human_ceiling=float(np.mean(ceil)),
            ceiling_sd=float(np.std(ceil, ddof=1)) if len(ceil) > 1 else None,
            ceiling_low=float(np.percentile(ceil, 2.5)),
            ceiling_high=float(np.percentile(ceil, 97.5)),
            n_splits=len(ceil),
        )
    elif value is not None:
        rec["note"] += "; no human ceiling (fewer than two participants, or halves rank fewer than 3 cells)"
    # a negative ceiling (people's halves disagree) makes the share meaningless
    c = rec["human_ceiling"]
    rec["calibrated"] = calibrate("higher", value, c) if c is not None and c > 0 else None
    return rec


def rank_agreement_df(
    inst: Instruments, splits: int = DEFAULT_SPLITS, n_boot: int = DEFAULT_BOOT, seed: int = 0
) -> pd.DataFrame:
    """``rank_spearman`` and ``rank_kendall`` records (``RECORD_COLUMNS``) per simulator, outcome and
    level; one record per metric with the reason in ``note`` when the study cannot rank assistants."""
    conv = inst.conversations
    sims = sorted(set(conv["population"]) - {"human"})
    outs = outcomes(inst)
    assistants = conv.groupby("assistant")["user_kind"].nunique()
    n_both = int((assistants == 2).sum())
    why = (
        "no simulated conversations in this study"
        if not sims
        else "no human conversations"
        if "human" not in set(conv["population"])
        else f"fewer than {MIN_ASSISTANTS} assistant configurations with both people's and simulated conversations ({n_both})"
        if n_both < MIN_ASSISTANTS
        else ""
        if outs
        else "no per-reply satisfaction or post-task usefulness answers"
    )
    if why:
        rows = [
            record(s, m, "assistant", direction="higher", note=why) for s in (sims or [None]) for m in METRICS
        ]
        return pd.DataFrame(rows, columns=RECORD_COLUMNS)
    rows = []
    for outcome, (sums, counts) in outs.items():
        for level in LEVELS:
            rows += _level_records(inst, sims, outcome, sums, counts, level, splits, n_boot, seed)
    return pd.DataFrame(rows, columns=RECORD_COLUMNS)
