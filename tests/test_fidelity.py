"""Label-free fidelity metrics (analysis/fidelity.py): each against a hand-computed example, the human
ceiling on synthetic populations, and the `workbench likeness` command on a real database."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy.stats import hypergeom

from analysis import fidelity as F
from analysis.synthetic import make_study
from tests.cli_helpers import run_cli

REQUIRED = [
    "simulator",
    "metric",
    "group",
    "value",
    "ci_low",
    "ci_high",
    "human_ceiling",
    "calibrated",
    "human_mean",
    "agent_mean",
    "n_human",
    "n_agent",
    "note",
]


def test_dice_and_english_fingerprint_by_hand():
    assert F.dice(0.2, 0.2) == 1.0 and F.dice(0, 0) == 1.0 and F.dice(1, 3) == pytest.approx(0.5)
    texts = ["Please help me \u2014 thanks", "ok", "I think maybe the other one instead"]
    fp = F.fingerprint(texts, F.tokenize(texts, ["en"] * 3), "en")
    # token counts 4, 1, 7
    assert fp["words_per_turn"] == pytest.approx(4.0)
    assert fp["verbosity_cv"] == pytest.approx(np.sqrt(6) / 4)  # population SD / mean
    assert fp["front_loading_ratio"] == pytest.approx(5 / 12)
    assert fp["opening_length"] == 4.0
    third = ["short_utterance_rate", "politeness_rate", "formality_rate", "acknowledgment_rate"]
    third += ["uncertainty_rate", "strategy_pivot_rate"]
    for f in third:
        assert fp[f] == pytest.approx(1 / 3), f
    zero = set(F.FINGERPRINT_FEATURES) - set(third) - {"words_per_turn", "verbosity_cv"}
    zero -= {"front_loading_ratio", "opening_length"}
    assert all(fp[f] == 0 for f in zero), {f: fp[f] for f in zero if fp[f]}
    assert F.fingerprint([], [], "en") == dict.fromkeys(F.FINGERPRINT_FEATURES, 0.0)
    assert F.repetition_rate([["a", "b", "c"]] * 4 + [["x"]]) == pytest.approx(
        0.8
    )  # trigram seen 4 > 3 times
    one = F.fingerprint(["order #W12345, mail a@b.com"], [["order", "w12345", "mail", "a", "b", "com"]])
    assert one["identifiers_per_turn"] == 2.0 and one["front_loading_ratio"] == 1.0


def test_chinese_fingerprint_uses_jieba_and_chinese_lexicons():
    texts = ["请问有什么推荐？谢谢", "好的", "我觉得太贵了，换一个吧"]
    toks = F.tokenize(texts, ["zh"] * 3)
    assert toks[1] == ["好", "的"] and "，" not in toks[2]  # jieba without HMM
    fp = F.fingerprint(texts, toks, "zh")
    for f in ["politeness_rate", "acknowledgment_rate", "uncertainty_rate", "strategy_pivot_rate"]:
        assert fp[f] == pytest.approx(1 / 3), f
    assert fp["short_utterance_rate"] == pytest.approx(1 / 3)
    assert fp["accusatory_rate"] == 0 and fp["identity_confusion_rate"] == 0


def test_lexical_measures_by_hand_and_against_scipy():
    assert F.yules_k(["a", "a", "b"]) == pytest.approx(1e4 * (5 - 3) / 9)
    assert np.isnan(F.yules_k([]))
    toks = ["a"] * 5 + ["b"] * 3 + [f"w{i}" for i in range(50)]
    n, s = len(toks), 42
    expected = sum(1 - hypergeom.pmf(0, n, f, s) for f in [5, 3] + [1] * 50) / s  # scipy's hypergeometric
    assert F.hdd(toks) == pytest.approx(expected)
    assert F.hdd(["a", "b", "a"]) == pytest.approx(2 / 3)  # sample = N: every type seen, 2 types / 3
    # z against people: human scores 1, 2, 3 (mean 2, SD 1), agent mean 3 -> z = 1
    P = _prepared_from(lexical=np.array([[1, 1, 1], [2, 2, 2], [3, 3, 3], [3, 3, 3]], float))
    est = F._lexical_family(P, np.array([0, 1, 2]), np.array([3]))
    assert est["mattr_z"].value == pytest.approx(1.0) and est["hdd_z"].agent_mean == 3.0


def _prepared_from(lexical=None, embedding=None, n=4) -> F.Prepared:
    convs = pd.DataFrame(
        {"conversation_id": range(n), "population": "human", "cluster": [f"c:{i}" for i in range(n)]}
    )
    return F.Prepared(
        convs,
        np.zeros((n, len(F.FINGERPRINT_FEATURES))),
        lexical if lexical is not None else np.zeros((n, 3)),
        embedding if embedding is not None else np.zeros((n, 2)),
        "test",
        pd.DataFrame(index=range(n)),
    )


def test_coverage_and_frechet_by_hand():
    # H = {0, 2}, S = {1}: nearest distances 1, 1 and 1 -> err = 2; d_ref = 2 -> 1 - 2 / 4
    assert F.chamfer_coverage(np.array([[0.0], [2.0]]), np.array([[1.0]]), 2.0) == pytest.approx(0.5)
    assert F.chamfer_coverage(np.array([[0.0], [2.0]]), np.array([[0.0], [2.0]]), 2.0) == 1.0
    rng = np.random.default_rng(0)
    A, B = rng.normal(0, 1, (400, 2)), rng.normal(0, 1, (300, 2)) * [2, 3] + [1, 0]
    # diagonal covariances: |mu_a - mu_b|^2 + sum (sqrt(var_a) - sqrt(var_b))^2
    va, vb = np.cov(A, rowvar=False), np.cov(B, rowvar=False)
    assert abs(va[0, 1]) < 0.15 and abs(vb[0, 1]) < 0.5
    da, db = np.diag(va), np.diag(vb)
    hand = float(((A.mean(0) - B.mean(0)) ** 2).sum() + ((np.sqrt(da) - np.sqrt(db)) ** 2).sum())
    assert F.frechet_distance(A, B) == pytest.approx(hand, rel=0.05)
    assert F.frechet_distance(A, A) == pytest.approx(0, abs=1e-6)


def test_participant_halves_and_cluster_bootstrap_keep_people_whole():
    rng = np.random.default_rng(1)
    idx = np.arange(100)
    clusters = np.array([f"p{i // 5}" for i in range(100)])
    a, b = F.participant_halves(idx, clusters, rng)
    assert not set(clusters[a]) & set(clusters[b]) and len(a) + len(b) == 100 and 40 <= len(a) <= 60
    draw = F.cluster_resample(idx, clusters, rng)
    assert len(draw) == 100 and all((clusters[draw] == c).sum() % 5 == 0 for c in set(clusters[draw]))
    assert F.calibrate("higher", 0.45, 0.9) == pytest.approx(0.5)
    assert F.calibrate("lower", 4.0, 1.0) == pytest.approx(0.25)
    assert F.calibrate("zero", -0.3, 0.1) == pytest.approx(0.8)
    assert F.calibrate("half", 1.0, 0.55) == 0.0 and F.calibrate("half", 0.52, 0.55) == 1.0


@pytest.mark.parametrize("people", [5, 1])  # clusters of several conversations; one each
def test_bootstrap_by_cluster_sums_equals_resampling_the_rows(people):
    """The fingerprint and lexical bootstraps from per-cluster sums give the draws of resampling the
    rows (``cluster_resample``, the same random numbers) and computing the family on them."""
    rng = np.random.default_rng(3)
    n = 120
    P = _prepared_from(lexical=rng.gamma(2.0, 1.0, (n, 3)) + 50, n=n)
    P.fingerprint = rng.random((n, len(F.FINGERPRINT_FEATURES))) * rng.integers(0, 2, (n, 1))
    P.lexical[rng.random((n, 3)) < 0.2] = np.nan  # conversations without user words
    clusters = np.array([f"p:{i // people}" for i in rng.permutation(n)])
    P.conversations["cluster"] = clusters
    ref, oth = np.arange(0, n, 2)[::-1], np.arange(1, n, 2)
    sides = [(i, F._cluster_index(i, clusters[i])) for i in (ref, oth)]
    for name, boot in F.BOOT_BY_SUMS.items():
        fam = F.FAMILIES[name][0]
        fast = boot(P, *sides, np.random.default_rng(7), 30)
        slow_rng = np.random.default_rng(7)
        for rep in fast:
            r, o = (F.cluster_resample(i, None, slow_rng, index) for i, index in sides)
            want = {k: e.value for k, e in fam(P, r, o).items() if e.value is not None}
            assert {k: e.value for k, e in rep.items() if e.value is not None} == pytest.approx(
                want, rel=1e-9, abs=1e-12
            )


WORDS = [f"w{i}" for i in range(80)]
POLITE = "please could you kindly suggest thank you so much that sounds great i would love".split()


def _population(rng, n_conv, kind, people=None, polite=False):
    convs, turns, feats = [], [], []
    for c in range(n_conv):
        cid = len(_population.ids)
        _population.ids.append(cid)
        n_turns = int(rng.integers(1, 5))
        lengths = []
        for t in range(n_turns):
            k = int(rng.integers(12, 20)) if polite else int(rng.integers(2, 9))
            bank = POLITE if polite else WORDS
            words = list(rng.choice(bank, size=k))
            turns.append((cid, 2 * t, " ".join(words), "en"))
            lengths.append(k)
        sim = None if kind == "human" else "sim"
        convs.append((cid, kind, sim, people[c] if people is not None else None))
        feats.append((cid, float(np.mean(lengths)), float(n_turns)))
    return convs, turns, feats


_population.ids = []


def _study(seed, polite_agents):
    rng = np.random.default_rng(seed)
    people = [f"p{i // 4}" for i in range(160)]  # 40 people, 4 conversations each
    h = _population(rng, 160, "human", people)
    a = _population(rng, 150, "agent", polite=polite_agents)
    convs = pd.DataFrame(h[0] + a[0], columns=["conversation_id", "user_kind", "simulator", "participant"])
    turns = pd.DataFrame(h[1] + a[1], columns=["conversation_id", "turn_index", "text", "lang"])
    feats = pd.DataFrame(h[2] + a[2], columns=["conversation_id", "user_words_per_turn", "n_user_turns"])
    return F.prepare(convs, turns, feats, embedder=F.EMBEDDERS["tfidf_svd"])


@pytest.mark.parametrize("polite_agents", [False, True])
def test_human_ceiling_near_one_for_one_distribution_and_below_when_they_differ(polite_agents):
    P = _study(3, polite_agents)
    records, ranking = F.fidelity_tables(P, splits=20, n_boot=20)
    cal = records.set_index("metric")["calibrated"]
    summary = ["usi_d", "mattr_z", "yules_k_z", "hdd_z", "coverage", "frechet", "classifier_auc"]
    if not polite_agents:
        assert all(cal[m] > 0.8 for m in summary), cal[summary].to_dict()
        assert ranking["fidelity_score"].iloc[0] > 0.85
    else:
        # Dice counts a marker both populations never use as equal, so the index moves less
        assert cal["usi_d1"] < 0.7 and cal["usi_d"] < 0.9, cal[summary].to_dict()
        assert all(cal[m] < 0.5 for m in summary[1:]), cal[summary].to_dict()
        assert ranking["fidelity_score"].iloc[0] < 0.3
    assert (records["n_splits"] == 20).all() and records["human_ceiling"].notna().all()
    assert set(records["metric"]) == {m.name for m in F.METRICS}
    usi = records.set_index("metric").loc["usi_d"]
    assert usi["ci_low"] <= usi["value"] <= usi["ci_high"]


def test_cli_likeness_writes_records_and_says_what_is_missing(use_db, tmp_path, capsys):
    from db.engine import get_engine
    from db.migrate import upgrade

    engine = get_engine(use_db)
    upgrade(engine)
    make_study(engine, "fid", n_human=40, n_agent=30, n_participants=10, seed=2)
    make_study(engine, "people", n_human=30, n_agent=0, n_participants=8, seed=3)
    out, extra = tmp_path / "out", tmp_path / "extra.json"
    code, stdout, err = run_cli(
        ["likeness", "--study", "fid", "--out", str(out), "--n-boot", "20", "--json", str(extra)], capsys
    )
    assert code == 0, err
    recs = json.loads((out / "fidelity.json").read_text())
    assert recs == json.loads(extra.read_text())
    assert all(list(r)[: len(REQUIRED)] == REQUIRED for r in recs)
    names = {r["metric"] for r in recs}
    assert {"usi_d1", "usi_d", "mattr_z", "coverage", "frechet", "classifier_auc"} <= names
    assert "feature:words_per_turn" in names and "judge_pi" not in names
    assert "fidelity score" in stdout and "Embedding: tfidf_svd" in stdout
    ranking = pd.read_csv(out / "fidelity_ranking.csv")
    assert ranking["labels"].notna().all()  # label-based distances join when labels exist
    code, stdout, _ = run_cli(["likeness", "--study", "people", "--out", str(tmp_path / "p")], capsys)
    assert code == 0 and "No simulated conversations in this study" in stdout
    recs = json.loads((tmp_path / "p" / "fidelity.json").read_text())
    assert all(r["value"] is None and "no simulated conversations" in r["note"] for r in recs)
    # the label-free metrics keep their ceiling; the instrument records (none in this study) say why not
    label_free = [r for r in recs if r["metric"] in F.METRIC_BY_NAME]
    assert all(r["human_ceiling"] is not None for r in label_free if r["metric"] != "classifier_auc")
    code, _, err = run_cli(["likeness", "--study", "fid", "--out", str(out), "--splits", "5"], capsys)
    assert code == 2 and "--splits" in err


def test_write_analysis_writes_fidelity_json(sqlite_engine, tmp_path):
    from analysis.report import analyze, write_analysis

    make_study(sqlite_engine, "an", n_human=30, n_agent=30, n_participants=8, seed=4)
    result = analyze(sqlite_engine, "an", n_boot=100, agreement=False)
    paths = write_analysis(result, tmp_path)
    assert tmp_path / "fidelity.json" in paths
    recs = json.loads((tmp_path / "fidelity.json").read_text())
    assert {r["simulator"] for r in recs} and all(r["metric"] for r in recs)
