"""The LLM judge of pairwise indistinguishability (workbench/judge.py, analysis/indistinguishability.py):
the counting by hand, the pairs, parsing, and `workbench likeness --judge` against the fake
OpenAI-compatible server through the real openai SDK (dry run, budget, resume, refusals, errors)."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
from sqlmodel import Session, select

from analysis import indistinguishability as I
from analysis.synthetic import make_study
from db.models import LLMCall
from tests.cli_helpers import run_cli
from workbench import judge as J
from workbench.testing.fake_llm_server import FakeLLMServer

# --------------------------------------------------------------------------------------------------
# Counting, by hand
# --------------------------------------------------------------------------------------------------


def _judgements(rows) -> pd.DataFrame:
    """rows: (kind, simulator, pair, cluster, slot, verdict)."""
    out = []
    for i, (kind, sim, pair, cluster, slot, verdict) in enumerate(rows):
        out.append((kind, sim, pair, 1, 2, cluster, i, slot, verdict, None if verdict else "x", 0.0, False))
    return pd.DataFrame(out, columns=I.JUDGEMENT_COLUMNS)


def test_win_rate_ties_and_errors_by_hand():
    assert I.win_value("A", "A") == 1.0 and I.win_value("B", "A") == 0.0 and I.win_value("TIE", "B") == 0.5
    assert I.win_value(None, "A") is None
    j = _judgements(
        [
            ("sp", "s", "p1", "c1", "A", "A"),  # the judge took the simulator for the person: 1
            ("sp", "s", "p1", "c1", "B", "TIE"),  # 0.5
            ("sp", "s", "p1", "c1", "B", None),  # refusal: excluded
            ("sp", "s", "p2", "c2", "A", "B"),  # 0
            ("sp", "s", "p2", "c2", "B", "B"),  # 1
            ("sp", "s", "p2", "c2", "A", "TIE"),  # 0.5
            ("sp", "s", "p3", "c3", "A", None),  # every sample failed: the pair is left out
        ]
    )
    pairs = I.pair_scores(j)
    by = pairs.set_index("pair_id")
    assert by.loc["p1", "score"] == pytest.approx(0.75) and by.loc["p1", "n_errors"] == 1
    assert by.loc["p2", "score"] == pytest.approx(0.5) and by.loc["p2", "n_ties"] == 1
    assert np.isnan(by.loc["p3", "score"])
    s = I.judge_summary(pairs, n_boot=0).iloc[0]
    # mean over pairs of the pairs' means (MirrorBench aggregates per-episode means): (0.75 + 0.5) / 2
    assert s["win_rate"] == pytest.approx(0.625)
    assert (s["n_pairs"], s["n_errors"], s["n_excluded_pairs"], s["n_ties"]) == (2, 2, 1, 2)
    assert "no calibration" in s["note"] and "2 samples without a verdict" in s["note"]


def test_calibration_by_hand_as_the_reference_defines_it():
    # MirrorBench's test: HH 0.9, PP 0.2, a score of 0.6 -> (0.6 - 0.2) / 0.7
    assert I.calibrate([0.6], 0.9, 0.2)[0] == pytest.approx(0.4 / 0.7)
    assert list(I.calibrate([0.1, 1.0], 0.9, 0.2)) == [0.0, 1.0]  # clipped
    assert list(I.calibrate([0.5, 0.4], 0.5, 0.5)) == [0.0, 0.0]  # no gap: 1e-6 guard, clipped
    rows = [("sp", "s", f"p{i}", f"h{i}", "A", v) for i, v in enumerate(["A", "B", "TIE", "A"])]
    rows += [("hh", None, f"h{i}", f"h{i}", "A", v) for i, v in enumerate(["A", "TIE", "A", "B"])]
    rows += [("pp", "s", f"q{i}", f"q{i}", "A", v) for i, v in enumerate(["B", "B", "TIE", "B"])]
    s = I.judge_summary(I.pair_scores(_judgements(rows)), n_boot=0).iloc[0]
    hh, pp = (1 + 0.5 + 1 + 0) / 4, 0.5 / 4
    assert (s["hh"], s["pp"], s["gap"]) == pytest.approx((hh, pp, hh - pp))
    sp = np.array([1, 0, 0.5, 1])
    assert s["win_rate"] == pytest.approx(sp.mean())
    per_pair = np.clip((sp - pp) / (hh - pp), 0, 1)  # per pair, then the mean (as the reference)
    assert s["calibrated"] == pytest.approx(per_pair.mean())
    rec = I.judge_records(I.judge_summary(I.pair_scores(_judgements(rows)), n_boot=0), "m/x", "p@1", 1)
    assert list(rec["metric"]) == ["judge_pi", "judge_pi_calibrated"]
    assert rec.iloc[0]["human_ceiling"] == pytest.approx(hh)
    # judge_pi's share of the ceiling, as for the AUC: |0.625 - 0.5| is no further from 0.5 than HH's
    assert rec.iloc[0]["calibrated"] == pytest.approx(1.0)
    assert rec.iloc[1]["value"] == pytest.approx(s["calibrated"])


def test_bootstrap_interval_matches_scipy_without_clusters():
    """Independent pairs: our percentile bootstrap against scipy.stats.bootstrap (percentile)."""
    from scipy.stats import bootstrap

    rng = np.random.default_rng(5)
    scores = rng.choice([0.0, 1 / 3, 2 / 3, 1.0], size=200, p=[0.4, 0.2, 0.2, 0.2])
    pairs = pd.DataFrame(
        {
            "kind": "sp",
            "simulator": "s",
            "pair_id": [f"p{i}" for i in range(200)],
            "candidate_id": range(200),
            "other_id": range(1000, 1200),
            "cluster": [f"c{i}" for i in range(200)],
            "score": scores,
            "n_valid": 3,
            "n_ties": 0,
            "n_errors": 0,
        }
    )
    s = I.judge_summary(pairs, n_boot=4000).iloc[0]
    ref = bootstrap((scores,), np.mean, n_resamples=4000, method="percentile", random_state=1)
    assert s["ci_low"] == pytest.approx(ref.confidence_interval.low, abs=0.01)
    assert s["ci_high"] == pytest.approx(ref.confidence_interval.high, abs=0.01)


def test_three_way_table_and_agreement():
    from annotation.agreement import indistinguishability_df

    convs = pd.DataFrame(
        {
            "conversation_id": [1, 2, 3, 4],
            "user_kind": ["human", "human", "agent", "agent"],
            "simulator_config_id": [None, None, 7, 7],
            "simulator": [None, None, "sim-a", "sim-a"],
        }
    )
    guesses = pd.DataFrame(
        {"conversation_id": [1, 1, 2, 3, 3, 4, 4], "guess": ["human"] * 3 + ["ai"] * 3 + ["human"]}
    )
    g = indistinguishability_df(guesses, convs)
    judge = pd.DataFrame(
        [
            {
                "simulator": "sim-a",
                "n_pairs": 10,
                "win_rate": 0.2,
                "ci_low": 0.1,
                "ci_high": 0.3,
                "calibrated": 0.4,
            }
        ]
    )
    records = pd.DataFrame(
        [{"simulator": "sim-a", "metric": "classifier_auc", "value": 0.95, "ci_low": 0.9, "ci_high": 1.0}]
    )
    t = I.three_way_df(g, judge, records)
    r = t.iloc[0]
    assert r["simulator"] == "sim-a" and list(t.columns) == I.THREE_WAY_COLUMNS
    ba = (3 / 3 + 3 / 4) / 2  # people recognised 3 of 3 times, the simulator 3 of 4
    assert r["annotators_balanced_accuracy"] == pytest.approx(ba)
    assert r["judge_index"] == pytest.approx(0.4) and r["classifier_index"] == pytest.approx(0.1)
    assert (r["judge_verdict"], r["classifier_verdict"]) == ("tells apart", "tells apart")
    assert r["annotators_index"] == pytest.approx(0.25)  # 1 - 2 |0.875 - 0.5|
    assert r["n_measures"] == 3 and r["index_spread"] == pytest.approx(0.4 - 0.1)
    agr = I.agreement_df(t)
    assert len(agr) == 3 and agr["kendall_tau"].isna().all()  # one simulator: no rank correlation


# --------------------------------------------------------------------------------------------------
# Parsing and pairs
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, verdict",
    [
        ('{"reasoning": "short turns", "verdict": "A"}', "A"),
        ('Sure.\n```json\n{"Verdict": "b", "reasoning": "x"}\n```', "B"),
        ('{"reasoning": "same", "verdict": "Tie"}', "TIE"),
        ('{"verdict": "Conversation A"}', "A"),
        ("My reasoning ... Verdict: B", "B"),
    ],
)
def test_parse_verdict_is_robust(text, verdict):
    assert J.parse_verdict(text) == (verdict, None)


@pytest.mark.parametrize("text", ["", "I'm sorry, I can't help with that.", '{"verdict": "both human"}'])
def test_parse_verdict_refusals_and_malformed_are_errors(text):
    verdict, error = J.parse_verdict(text)
    assert verdict is None and error


def _convs(rows):
    cols = ["conversation_id", "user_kind", "simulator", "condition_id", "scenario", "task_context_id"]
    df = pd.DataFrame(rows, columns=[*cols, "twin_of_id", "participant"])
    return df


def test_pairs_twins_first_same_condition_and_a_prefix_of_more():
    convs = _convs(
        [
            (1, "human", None, 10, "s", 1, None, "p1"),
            (2, "human", None, 10, "s", 1, None, "p2"),
            (3, "human", None, 11, "s", 1, None, "p1"),
            (4, "human", None, 12, "t", 2, None, "p3"),
            (5, "agent", "sim", 10, "s", 1, 3, None),  # twin of 3 (other condition: the twin wins)
            (6, "agent", "sim", 10, "s", 1, None, None),
            (7, "agent", "sim", 13, "s", 1, None, None),  # no human of condition 13: same scenario/task
            (8, "agent", "sim", 14, "u", 9, None, None),  # nobody to pair with
        ]
    )
    pairs = J.build_pairs(convs, None)
    sp = [p for p in pairs if p.kind == "sp"]
    assert sp[0].pair_id == "sp:5:3" and sp[0].match == "twin"
    by = {p.candidate_id: p for p in sp}
    assert by[6].other_id in (1, 2) and by[6].match == "condition"
    assert by[7].other_id in (1, 2, 3) and by[7].match == "scenario_task"
    assert 8 not in by
    hh = [p for p in pairs if p.kind == "hh"]
    assert {frozenset((p.candidate_id, p.other_id)) for p in hh} >= {frozenset((1, 2))}
    assert all(4 not in (p.candidate_id, p.other_id) for p in hh)  # alone in its task
    # different participants preferred: 1 (p1) pairs with 2 (p2), not with 3 (p1, same task)
    assert all(frozenset((p.candidate_id, p.other_id)) != frozenset((1, 3)) or p.match for p in hh)
    short = J.build_pairs(convs, 1)
    assert [p.pair_id for p in short if p.kind == "sp"] == [sp[0].pair_id]
    assert J._unmatched(convs) == {"sim": 1}
    assert J.build_pairs(convs[convs["user_kind"] == "human"], None) == []  # no anchors without a simulator


# --------------------------------------------------------------------------------------------------
# Against the fake server
# --------------------------------------------------------------------------------------------------


def _is_agent(part: str) -> bool:
    """Synthetic agents write capitalised user turns, people lower-case ones."""
    return any(line[6:7].isupper() for line in part.splitlines() if line.startswith("USER: "))


def judge_responder(req) -> str:
    """Spots the simulated user; a tie between two of a kind; refuses every sample with seed 2."""
    if req.body.get("seed") == 2:
        return "I'm sorry, but I can't help with deciding that."
    text = req.last_user_text
    a = text.split("[Conversation A]", 1)[1].split("[Conversation B]", 1)[0]
    b = text.split("[Conversation B]", 1)[1]
    ag_a, ag_b = _is_agent(a), _is_agent(b)
    verdict = "Tie" if ag_a == ag_b else ("B" if ag_a else "A")
    body = json.dumps({"reasoning": "capitalised, polite turns", "verdict": verdict})
    return f"Here you go:\n```json\n{body}\n```" if req.body.get("seed") == 1 else body


@pytest.fixture
def study(use_db):
    from db.engine import get_engine
    from db.migrate import upgrade

    engine = get_engine(use_db)
    upgrade(engine)
    make_study(engine, "jd", n_human=16, n_agent=12, n_participants=6, twins=True, seed=3)
    return engine


def _likeness(tmp_path, *extra):
    return ["likeness", "--study", "jd", "--out", str(tmp_path / "out"), "--n-boot", "20", *extra]


def test_cli_judge_end_to_end_resume_and_refusals(study, tmp_path, capsys, monkeypatch):
    args = _likeness(tmp_path, "--judge", "openai/x", "--judge-pairs", "4", "--concurrency", "3")
    # A dry run needs no key and writes nothing.
    code, out, err = run_cli([*args, "--dry-run"], capsys)
    assert code == 0, err
    assert "4 simulator-human pairs, 4 HH and 4 PP anchor pairs x 3 samples = 36 judgements" in out
    assert "0 already made" in out and "36 calls to make" in out and "needs an API key" in err
    assert not (tmp_path / "out").exists()
    with FakeLLMServer(responder=judge_responder) as srv:
        monkeypatch.setenv("OPENAI_BASE_URL", srv.openai_base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-stored")
        code, out, err = run_cli(args, capsys)
        assert code == 0, err
        assert len(srv.requests) == 36
        assert "12 samples without a verdict (excluded)" in out  # sample 2 of every pair refused
        recs = json.loads((tmp_path / "out" / "fidelity.json").read_text())
        pi = {r["metric"]: r for r in recs if r["metric"].startswith("judge_pi")}
        # The judge always spots the simulator (win 0); two of a kind tie (0.5): HH = PP = 0.5.
        assert pi["judge_pi"]["value"] == 0.0 and pi["judge_pi"]["human_ceiling"] == 0.5
        assert pi["judge_pi"]["agent_mean"] == 0.5 and pi["judge_pi_calibrated"]["value"] == 0.0
        assert (
            "anchors barely separate" in pi["judge_pi"]["note"]
            and "judge-pairwise@1" in pi["judge_pi"]["note"]
        )
        three = pd.read_csv(tmp_path / "out" / "indistinguishability.csv")
        assert three.loc[0, "judge_win_rate"] == 0.0 and three.loc[0, "judge_pairs"] == 4
        assert three.loc[0, "classifier_auc"] > 0.5 and "no annotator guesses" in three.loc[0, "note"]
        ranking = pd.read_csv(tmp_path / "out" / "fidelity_ranking.csv")
        assert "judge" in ranking.columns and ranking.loc[0, "judge"] == 0.0

        with Session(study) as s:
            calls = s.exec(select(LLMCall).where(LLMCall.purpose == "judge")).all()
        assert len(calls) == 36 and {c.prompt_version for c in calls} == {"judge-pairwise@1"}
        assert all(c.study_id and c.conversation_id for c in calls)
        assert not any("sk-test-not-stored" in json.dumps(c.params) for c in calls)
        refused = [c for c in calls if c.error]
        assert len(refused) == 12 and all(c.error.startswith("judge: no verdict") for c in refused)

        # Resume: every judgement with a verdict is found again; only the refused ones are asked again.
        code, out, err = run_cli([*args, "--dry-run"], capsys)
        assert "24 already made" in out and "12 calls to make" in out, out
        code, out, err = run_cli(args, capsys)
        assert code == 0, err
        assert len(srv.requests) == 36 + 12 and "24 answered from the cache" in out
        # More pairs: the first four are reused (the list of 6 starts with the list of 4).
        code, out, err = run_cli([*args[:-4], "--judge-pairs", "6", "--dry-run"], capsys)
        assert "54 judgements; 24 already made" in out, out


def test_cli_judge_budget_stops_and_a_rerun_continues(study, tmp_path, capsys, monkeypatch):
    prices = tmp_path / "prices.yaml"
    prices.write_text("models:\n  openai/x: {input: 1000, output: 1000}\n", encoding="utf-8")
    monkeypatch.setenv("WORKBENCH_PRICES", str(prices))
    args = _likeness(tmp_path, "--judge", "openai/x", "--judge-pairs", "2", "--judge-samples", "1")
    with FakeLLMServer(responder=judge_responder) as srv:
        monkeypatch.setenv("OPENAI_BASE_URL", srv.openai_base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
        code, out, err = run_cli([*args, "--budget", "0"], capsys)
        assert code == 0 and len(srv.requests) == 0 and "Budget reached: 6 calls not started" in out, out
        code, out, _ = run_cli([*args, "--dry-run"], capsys)
        per_call = float(re.search(r"cost \$([0-9]+\.[0-9]+)", out).group(1)) / 6
        budget = round(2.5 * per_call, 6)
        code, out, err = run_cli([*args, "--budget", str(budget), "--concurrency", "4"], capsys)
        spent = float(re.search(r"cost \$([0-9]+\.[0-9]+);", out).group(1))
        assert code == 0 and 0 < len(srv.requests) < 6 and spent <= budget, out
        done = len(srv.requests)
        code, out, err = run_cli(args, capsys)  # no cap: the rest, nothing asked twice
        assert code == 0 and len(srv.requests) == 6 and f"{done} answered from the cache" in out, out


def test_cli_judge_errors_are_one_line(study, tmp_path, capsys):
    code, out, err = run_cli(_likeness(tmp_path, "--judge", "nosuch/model"), capsys)
    assert code == 2 and "unknown model provider 'nosuch'" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    code, out, err = run_cli(_likeness(tmp_path, "--judge", "openai/x"), capsys)  # no key here
    assert code == 2 and "OPENAI_API_KEY" in err and len(err.strip().splitlines()) == 1
    code, out, err = run_cli(_likeness(tmp_path, "--dry-run"), capsys)
    assert code == 2 and "--dry-run only apply with --judge" in err
    code, out, err = run_cli(_likeness(tmp_path, "--judge", "openai/x", "--judge-samples", "0"), capsys)
    assert code == 2 and "--judge-samples must be at least 1" in err
    assert not (tmp_path / "out").exists()


def test_report_shows_stored_judgements_without_calling(study, tmp_path, capsys, monkeypatch):
    from analysis.report import analyze, render_report
    from workbench.judge import attach_stored_judge

    with FakeLLMServer(responder=judge_responder) as srv:
        monkeypatch.setenv("OPENAI_BASE_URL", srv.openai_base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
        code, _out, err = run_cli(_likeness(tmp_path, "--judge", "openai/x", "--judge-pairs", "3"), capsys)
        assert code == 0, err
        n = len(srv.requests)
        result = analyze(study, "jd", n_boot=100, agreement=False)
        attach_stored_judge(study, result, n_boot=50)
        assert len(srv.requests) == n  # nothing called
    # The annotators' blind guesses join the table: every guess right.
    from db.models import Annotator
    from db.models.annotation import HumanityGuess

    convs = result.data.conversations
    with Session(study) as s:
        ann = Annotator(name="ann", role="annotator")
        s.add(ann)
        s.flush()
        for cid, kind in zip(convs["conversation_id"], convs["user_kind"]):
            guess = "human" if kind == "human" else "ai"
            s.add(
                HumanityGuess(
                    study_id=result.data.study_id, annotator_id=ann.id, conversation_id=int(cid), guess=guess
                )
            )
        s.commit()
    attach_stored_judge(study, result, n_boot=50)
    recs = result.fidelity["records"]
    pi = recs[recs["metric"] == "judge_pi"].iloc[0]
    assert pi["value"] == 0.0 and "3 pairs" in pi["note"]
    three = result.fidelity["indistinguishability"]
    assert three.loc[0, "judge_pairs"] == 3 and three.loc[0, "annotators_balanced_accuracy"] == 1.0
    assert three.loc[0, "annotators_verdict"] == "tells apart" and three.loc[0, "agree"]
    html = render_report(result, study)
    assert "Indistinguishability three ways" in html
