"""Indistinguishability three ways: the annotators' blind guesses, an LLM judge, the discriminator.

Pure functions over frames (the judge's calls are made by ``workbench.judge``; this module only
counts). The judge follows MirrorBench's pairwise indistinguishability (github SAP/mirrorbench,
``mirrorbench/metrics/judge/pairwise_indistinguishability.py`` and ``calibration.py``; definitions
ported, not code):

- a pair is a human and a simulated conversation of the same condition; the judge sees both in random
  order (a fresh coin per sample) and says whose user is the real person: A, B or Tie;
- a sample's *win* is 1 when the judge picks the simulated conversation, 0.5 for a tie, 0 otherwise;
  a pair's score is the mean of its valid samples; the simulator's win rate ``s`` is the mean over
  pairs (0.5 = the judge cannot tell; MirrorBench's "parity gap" is ``s - 0.5``);
- anchors: the same procedure on human-vs-human pairs (HH, one human playing the simulator's part)
  and simulator-vs-simulator pairs (PP); each pair's score is calibrated as
  ``clip((s_i - PP) / max(1e-6, HH - PP), 0, 1)`` and the calibrated score is the mean over pairs
  (as the reference does: per pair, then the mean).

The interval of the win rate and of the calibrated score is a percentile bootstrap (``n_boot``
replicates): the simulator's pairs resampled by the human participant, the HH pairs by participant
and the PP pairs one by one, the anchors recomputed in every replicate (our choice; MirrorBench
bootstraps the per-pair scores without clusters).

Example::

    scores = pair_scores(judgements)                  # one row per judged pair
    summary = judge_summary(scores, n_boot=1000)      # one row per simulator
    table = three_way_df(guess_table, summary, records)
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from analysis.fidelity import RECORD_COLUMNS, Metric
from analysis.fidelity import calibrate as ceiling_share

VERDICTS = ("A", "B", "TIE")
MIN_GAP = 1e-6  # the reference's guard on HH - PP
SEPARATING_GAP = 0.05  # below this HH - PP the anchors barely separate: the note says so
DEFAULT_BOOT = 1000
UNRECORDED = "(unrecorded simulator)"

JUDGE_METRICS = (
    Metric("judge_pi", "judge", "half", "judge", "the judge's win rate of the simulator (0.5 = cannot tell)"),
    Metric("judge_pi_calibrated", "judge", "higher", "judge", "win rate calibrated by the HH and PP anchors"),
)

JUDGEMENT_COLUMNS = [
    "kind",  # sp (simulator vs human) | hh | pp
    "simulator",  # the simulator of an sp or pp pair; None for hh
    "pair_id",
    "candidate_id",  # the conversation whose win is counted (the simulated one in an sp pair)
    "other_id",
    "cluster",  # bootstrap unit (the human participant, else the conversation)
    "sample",
    "candidate_slot",  # A | B
    "verdict",  # A | B | TIE | None
    "error",  # why the sample has no verdict (failed call, refusal, malformed reply)
    "cost_usd",
    "cached",
]
PAIR_COLUMNS = ["kind", "simulator", "pair_id", "candidate_id", "other_id", "cluster"]
SUMMARY_COLUMNS = [
    "simulator",
    "win_rate",
    "ci_low",
    "ci_high",
    "calibrated",
    "cal_ci_low",
    "cal_ci_high",
    "hh",
    "pp",
    "gap",
    "hh_calibrated",
    "n_pairs",
    "n_hh",
    "n_pp",
    "n_samples",
    "n_ties",
    "n_errors",
    "n_excluded_pairs",
    "n_human",
    "n_agent",
    "note",
]
THREE_WAY_COLUMNS = [
    "simulator",
    "annotators_n",
    "annotators_balanced_accuracy",
    "annotators_ci_low",
    "annotators_ci_high",
    "judge_pairs",
    "judge_win_rate",
    "judge_ci_low",
    "judge_ci_high",
    "judge_calibrated",
    "classifier_auc",
    "classifier_ci_low",
    "classifier_ci_high",
    "annotators_index",
    "judge_index",
    "classifier_index",
    "annotators_verdict",
    "judge_verdict",
    "classifier_verdict",
    "n_measures",
    "index_spread",
    "agree",
    "note",
]
AGREEMENT_COLUMNS = [
    "measure_a",
    "measure_b",
    "n_simulators",
    "mean_abs_index_diff",
    "verdict_agreement",
    "kendall_tau",
    "kendall_p",
]
MEASURES = ("annotators", "judge", "classifier")


# --------------------------------------------------------------------------------------------------
# The judge: wins, pairs, anchors, calibration
# --------------------------------------------------------------------------------------------------


def win_value(verdict: str | None, candidate_slot: str) -> float | None:
    """1 when the judge calls the candidate (the simulated conversation) the real person, 0.5 for a
    tie, 0 otherwise; None without a verdict."""
    if verdict is None or verdict not in VERDICTS:
        return None
    if verdict == "TIE":
        return 0.5
    return 1.0 if verdict == candidate_slot else 0.0


def pair_scores(judgements: pd.DataFrame) -> pd.DataFrame:
    """One row per pair: ``score`` (mean win of its valid samples, NaN when none), ``n_valid``,
    ``n_ties``, ``n_errors`` and the pair columns."""
    j = judgements.copy()
    if j.empty:
        return pd.DataFrame(columns=[*PAIR_COLUMNS, "score", "n_valid", "n_ties", "n_errors"])
    j["win"] = [win_value(v, s) for v, s in zip(j["verdict"], j["candidate_slot"])]
    j["simulator"] = j["simulator"].astype(object).where(j["simulator"].notna(), None)
    rows = []
    for _pid, g in j.groupby("pair_id", sort=False):
        first = g.iloc[0]
        wins = g["win"].dropna().astype(float)
        rows.append(
            {
                **{c: first[c] for c in PAIR_COLUMNS},
                "score": float(wins.mean()) if len(wins) else float("nan"),
                "n_valid": len(wins),
                "n_ties": int((g["verdict"] == "TIE").sum()),
                "n_errors": int(g["win"].isna().sum()),
            }
        )
    return pd.DataFrame(rows)


def calibrate(scores, hh: float, pp: float) -> np.ndarray:
    """Per-pair calibrated scores clip((s - PP) / max(1e-6, HH - PP), 0, 1) (MirrorBench's
    ``apply_linear_calibration``)."""
    s = np.asarray(scores, dtype=float)
    return np.clip((s - pp) / max(MIN_GAP, hh - pp), 0.0, 1.0)


def _resample(values: np.ndarray, clusters: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A bootstrap draw of ``values``, whole clusters drawn with replacement."""
    uniq, inv = np.unique(clusters, return_inverse=True)
    if len(uniq) == len(values):
        return values[rng.integers(len(values), size=len(values))]
    members = [np.flatnonzero(inv == k) for k in range(len(uniq))]
    pick = rng.integers(len(uniq), size=len(uniq))
    return values[np.concatenate([members[k] for k in pick])]


def _percentile(draws: list[float], ci: float) -> tuple[float | None, float | None]:
    d = [x for x in draws if np.isfinite(x)]
    if len(d) < 10:
        return None, None
    lo, hi = np.percentile(d, [50 * (1 - ci), 50 * (1 + ci)])
    return float(lo), float(hi)


def _one_simulator(sim, sp: pd.DataFrame, hh: pd.DataFrame, pp: pd.DataFrame, n_boot: int, rng, ci) -> dict:
    s_val, s_cl = sp["score"].to_numpy(float), sp["cluster"].astype(str).to_numpy()
    h_val, h_cl = hh["score"].to_numpy(float), hh["cluster"].astype(str).to_numpy()
    p_val = pp["score"].to_numpy(float)
    row = {"simulator": sim, "win_rate": float(s_val.mean()) if len(s_val) else None}
    row.update(n_pairs=len(s_val), n_hh=len(h_val), n_pp=len(p_val))
    notes = []
    if not len(s_val):
        notes.append("no judged pair of this simulator with people")
    anchors = len(h_val) > 0 and len(p_val) > 0
    if anchors:
        a_hh, a_pp = float(h_val.mean()), float(p_val.mean())
        row.update(hh=a_hh, pp=a_pp, gap=a_hh - a_pp)
        row["hh_calibrated"] = float(calibrate(h_val, a_hh, a_pp).mean())
        if len(s_val):
            row["calibrated"] = float(calibrate(s_val, a_hh, a_pp).mean())
        if a_hh - a_pp < SEPARATING_GAP:
            notes.append(
                f"the anchors barely separate (HH {a_hh:.2f} - PP {a_pp:.2f} = {a_hh - a_pp:.2f} < "
                f"{SEPARATING_GAP}): the calibrated score is unstable"
            )
    else:
        notes.append("no calibration: " + ("no HH pair" if not len(h_val) else "no PP pair"))
    if len(s_val) >= 2 and n_boot > 0:
        wins, cals = [], []
        for _ in range(n_boot):
            s = _resample(s_val, s_cl, rng)
            wins.append(float(s.mean()))
            if anchors:
                h = _resample(h_val, h_cl, rng)
                p = p_val[rng.integers(len(p_val), size=len(p_val))]
                cals.append(float(calibrate(s, h.mean(), p.mean()).mean()))
        row["ci_low"], row["ci_high"] = _percentile(wins, ci)
        if anchors:
            row["cal_ci_low"], row["cal_ci_high"] = _percentile(cals, ci)
    row["note"] = "; ".join(notes)
    return row


def judge_summary(
    pairs: pd.DataFrame, n_boot: int = DEFAULT_BOOT, seed: int = 0, ci: float = 0.95
) -> pd.DataFrame:
    """One row per simulator (``SUMMARY_COLUMNS``) from ``pair_scores``: win rate with its
    bootstrap interval, the HH anchor (all simulators share it) and the simulator's PP anchor, the
    calibrated score with its interval, and the counts (samples, ties, errors; pairs without a valid
    sample are left out and counted in ``n_excluded_pairs``)."""
    if pairs.empty:
        return pd.DataFrame(columns=SUMMARY_COLUMNS)
    valid = pairs[pairs["n_valid"] > 0]
    hh = valid[valid["kind"] == "hh"]
    sims = sorted({s for s in pairs.loc[pairs["kind"] != "hh", "simulator"] if s is not None})
    rows = []
    for i, sim in enumerate(sims):
        mine = pairs[(pairs["simulator"] == sim) | (pairs["kind"] == "hh")]
        sp = valid[(valid["kind"] == "sp") & (valid["simulator"] == sim)]
        pp = valid[(valid["kind"] == "pp") & (valid["simulator"] == sim)]
        row = _one_simulator(sim, sp, hh, pp, n_boot, np.random.default_rng([seed, i]), ci)
        sp_all = mine[mine["kind"] == "sp"]
        row.update(
            n_samples=int((mine["n_valid"] + mine["n_errors"]).sum()),
            n_ties=int(mine["n_ties"].sum()),
            n_errors=int(mine["n_errors"].sum()),
            n_excluded_pairs=int((mine["n_valid"] == 0).sum()),
            n_human=int(sp["other_id"].nunique()),
            n_agent=int(sp["candidate_id"].nunique()),
        )
        if row["n_errors"]:
            extra = f"{row['n_errors']} samples without a verdict excluded (failed call, refusal or malformed reply)"
            row["note"] = "; ".join(x for x in (row["note"], extra) if x)
        if len(sp_all) and not len(sp):
            row["note"] = "; ".join(x for x in (row["note"], "every pair failed") if x)
        rows.append(row)
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


def judge_records(summary: pd.DataFrame, model: str, prompt_version: str, samples: int) -> pd.DataFrame:
    """``judge_pi`` and ``judge_pi_calibrated`` rows of ``fidelity.json`` (``RECORD_COLUMNS``) per
    simulator. ``judge_pi``: value the win rate, ``human_ceiling`` the HH anchor, ``calibrated`` its
    share of the ceiling as for the classifier AUC (direction "half": 1 - the excess distance from
    0.5 over the HH anchor's, our definition, because the HH/PP formula is unstable when both anchors
    sit near 0.5), ``human_mean`` / ``agent_mean`` the HH / PP anchors. ``judge_pi_calibrated``:
    value the calibrated score, ``human_ceiling`` the HH pairs' own calibrated score."""
    rows = []
    for r in summary.to_dict("records"):
        base = f"judge {model}, prompt {prompt_version}, {samples} samples per pair; {r['n_pairs']} pairs, "
        base += f"HH {r['n_hh']} and PP {r['n_pp']} pairs; {r['n_ties']} ties"
        note = "; ".join(x for x in (base, r["note"]) if x)
        common = {
            "simulator": r["simulator"],
            "group": "judge",
            "n_human": r["n_human"],
            "n_agent": r["n_agent"],
            "note": note,
            "embedding": "",
            "n_splits": None,
        }
        rows.append(
            {
                **common,
                "metric": "judge_pi",
                "value": r["win_rate"],
                "ci_low": r["ci_low"],
                "ci_high": r["ci_high"],
                "human_ceiling": r["hh"],
                "calibrated": _half_share(r["win_rate"], r["hh"]),
                "human_mean": r["hh"],
                "agent_mean": r["pp"],
                "direction": "half",
            }
        )
        rows.append(
            {
                **common,
                "metric": "judge_pi_calibrated",
                "value": r["calibrated"],
                "ci_low": r["cal_ci_low"],
                "ci_high": r["cal_ci_high"],
                "human_ceiling": r["hh_calibrated"],
                "calibrated": r["calibrated"],
                "human_mean": r["hh"],
                "agent_mean": r["pp"],
                "direction": "higher",
            }
        )
    out = pd.DataFrame(rows, columns=RECORD_COLUMNS)
    return out.astype(object).where(out.notna(), None)


def _half_share(win_rate, hh) -> float | None:
    """The win rate as a share of the HH anchor's closeness to 0.5 (``fidelity.calibrate``, "half")."""
    if win_rate is None or hh is None or pd.isna(win_rate) or pd.isna(hh):
        return None
    return ceiling_share("half", float(win_rate), 0.5 + abs(float(hh) - 0.5))


def with_judge_records(records: pd.DataFrame, judge: pd.DataFrame) -> pd.DataFrame:
    """``records`` with its judge rows replaced by ``judge``."""
    keep = records[~records["metric"].isin([m.name for m in JUDGE_METRICS])]
    if judge is None or judge.empty:
        return keep.reset_index(drop=True)
    return pd.concat([keep, judge], ignore_index=True)[RECORD_COLUMNS]


# --------------------------------------------------------------------------------------------------
# Three ways
# --------------------------------------------------------------------------------------------------


def index_of(x) -> float | None:
    """How far a chance-centred figure (balanced accuracy, AUC, the judge's win rate) is from being
    told apart: 1 - 2 |x - 0.5| in [0, 1] (1 = cannot tell, 0 = always told apart, in either
    direction). Our definition, to set the three side by side."""
    if x is None or not np.isfinite(x):
        return None
    return float(min(1.0, max(0.0, 1.0 - 2.0 * abs(float(x) - 0.5))))


def verdict_of(lo, hi) -> str | None:
    """'tells apart' when the interval leaves out 0.5, 'cannot tell' when it holds it."""
    if lo is None or hi is None or not (np.isfinite(lo) and np.isfinite(hi)):
        return None
    return "cannot tell" if lo <= 0.5 <= hi else "tells apart"


def _num(x):
    return None if x is None or (isinstance(x, float) and not np.isfinite(x)) or pd.isna(x) else float(x)


def three_way_df(
    guesses: pd.DataFrame | None, judge: pd.DataFrame | None, records: pd.DataFrame | None
) -> pd.DataFrame:
    """One row per simulator configuration (``THREE_WAY_COLUMNS``): the annotators' blind guesses
    (balanced accuracy with its MOVER interval, ``annotation.agreement.indistinguishability_df``), the
    judge (win rate with its bootstrap interval, calibrated score: ``judge_summary``) and the
    discriminator (the feature classifier's AUC with DeLong's interval, the fidelity records'
    ``classifier_auc``). Each is also put on one scale (``index_of``) with a verdict from its interval
    (``verdict_of``); ``index_spread`` is the largest difference of the indices and ``agree`` whether
    the available verdicts are the same (None with fewer than two)."""
    by: dict[str, dict] = {}

    def row(sim) -> dict:
        return by.setdefault(str(sim), {"simulator": str(sim)})

    if guesses is not None and len(guesses):
        for g in guesses.to_dict("records"):
            if g["simulator"] == "all":
                continue
            r = row(g["simulator"])
            r.update(
                annotators_n=int(g["n"]),
                annotators_balanced_accuracy=_num(g["balanced_accuracy"]),
                annotators_ci_low=_num(g["balanced_ci_low"]),
                annotators_ci_high=_num(g["balanced_ci_high"]),
            )
    if judge is not None and len(judge):
        for j in judge.to_dict("records"):
            r = row(j["simulator"])
            r.update(
                judge_pairs=int(j["n_pairs"]),
                judge_win_rate=_num(j["win_rate"]),
                judge_ci_low=_num(j["ci_low"]),
                judge_ci_high=_num(j["ci_high"]),
                judge_calibrated=_num(j["calibrated"]),
            )
    if records is not None and len(records):
        auc = records[(records["metric"] == "classifier_auc") & records["simulator"].notna()]
        for a in auc.to_dict("records"):
            if _num(a["value"]) is None:
                continue
            r = row(a["simulator"])
            r.update(
                classifier_auc=_num(a["value"]),
                classifier_ci_low=_num(a["ci_low"]),
                classifier_ci_high=_num(a["ci_high"]),
            )
    for r in by.values():
        _compare(r)
    out = pd.DataFrame(list(by.values()), columns=THREE_WAY_COLUMNS)
    return out.sort_values("simulator", kind="stable").reset_index(drop=True)


def _compare(r: dict) -> None:
    figures = {
        "annotators": ("annotators_balanced_accuracy", "annotators_ci_low", "annotators_ci_high"),
        "judge": ("judge_win_rate", "judge_ci_low", "judge_ci_high"),
        "classifier": ("classifier_auc", "classifier_ci_low", "classifier_ci_high"),
    }
    missing = []
    for m, (v, lo, hi) in figures.items():
        r[f"{m}_index"] = index_of(r.get(v))
        r[f"{m}_verdict"] = verdict_of(r.get(lo), r.get(hi))
        if r.get(v) is None:
            missing.append(m)
    idx = [r[f"{m}_index"] for m in MEASURES if r[f"{m}_index"] is not None]
    verdicts = [r[f"{m}_verdict"] for m in MEASURES if r[f"{m}_verdict"] is not None]
    r["n_measures"] = len(idx)
    r["index_spread"] = float(max(idx) - min(idx)) if len(idx) >= 2 else None
    r["agree"] = (len(set(verdicts)) == 1) if len(verdicts) >= 2 else None
    why = {
        "annotators": "no annotator guesses",
        "judge": "no judge (workbench likeness --judge MODEL)",
        "classifier": "no classifier AUC",
    }
    r["note"] = "; ".join(why[m] for m in missing)


def agreement_df(three_way: pd.DataFrame) -> pd.DataFrame:
    """How far the three measures agree across simulators, per pair of measures: the mean absolute
    difference of their indices, the share of simulators with the same verdict and, with three or
    more simulators, Kendall's tau of the indices (scipy.stats.kendalltau, tau-b)."""
    rows = []
    for i, a in enumerate(MEASURES):
        for b in MEASURES[i + 1 :]:
            both = three_way[three_way[f"{a}_index"].notna() & three_way[f"{b}_index"].notna()]
            if both.empty:
                continue
            x, y = both[f"{a}_index"].astype(float), both[f"{b}_index"].astype(float)
            va, vb = both[f"{a}_verdict"], both[f"{b}_verdict"]
            has = va.notna() & vb.notna()
            tau = p = None
            if len(both) >= 3 and x.nunique() > 1 and y.nunique() > 1:
                res = stats.kendalltau(x, y)
                tau, p = float(res.statistic), float(res.pvalue)
            rows.append(
                {
                    "measure_a": a,
                    "measure_b": b,
                    "n_simulators": len(both),
                    "mean_abs_index_diff": float((x - y).abs().mean()),
                    "verdict_agreement": float((va[has] == vb[has]).mean()) if has.any() else None,
                    "kendall_tau": tau,
                    "kendall_p": p,
                }
            )
    return pd.DataFrame(rows, columns=AGREEMENT_COLUMNS)


def study_guesses_table(engine, data) -> pd.DataFrame | None:
    """The annotators' "person or AI?" accuracy per simulator configuration of a loaded study
    (``annotation.agreement.indistinguishability_df``), None without guesses."""
    from sqlmodel import Session

    from annotation.agreement import indistinguishability_df
    from annotation.labelling import guesses_df

    with Session(engine) as session:
        g = guesses_df(session, data.study_id)
    if g.empty:
        return None
    convs = data.conversations.copy()
    convs["simulator"] = convs["simulator"].where(convs["simulator"].notna(), UNRECORDED)
    return indistinguishability_df(g, convs)


def indistinguishability_tables(engine, data, records, judge: pd.DataFrame | None = None) -> dict:
    """``{"three_way", "agreement"}`` of a loaded study: guesses from the store, the judge summary
    given (``workbench.judge`` computes it), the classifier from the fidelity ``records``."""
    three = three_way_df(study_guesses_table(engine, data), judge, records)
    return {"three_way": three, "agreement": agreement_df(three)}
