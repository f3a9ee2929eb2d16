"""`workbench label | labels sources | agreement` end to end (SQLite and PostgreSQL); rule labeller."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import pytest
from sklearn.metrics import cohen_kappa_score
from sqlmodel import Session

from annotation.labellers.rules import RuleLabeller, detect_language, load_lexicon
from annotation.store import LabelRecord, ensure_source, write_labels
from db.engine import make_engine
from db.errors import UserInputError
from db.repo import conversations_df, labels_df
from tests.annotation_data import make_study
from tests.cli_helpers import run_cli
from workbench.testing.fake_llm_server import FakeLLMServer


def run(args, capsys):
    code, out, err = run_cli(args, capsys)
    return code, out + err


@pytest.fixture
def cli_engine(use_db):
    eng = make_engine(use_db)
    from db.migrate import upgrade

    upgrade(eng)
    with Session(eng) as s:
        make_study(s, n_per_cell=3)
        s.commit()
    yield eng
    eng.dispose()


@pytest.fixture(scope="module")
def rules():
    return RuleLabeller.from_lexicons()


def test_rule_labeller_english(rules):
    out = rules.label(
        [
            "Hi, please plan a two-day trip for me because I love snow.",
            "Great, thanks! I'll book the second hotel. But the train is too expensive.",
            "Since my budget is small, could you find a cheaper option?",
        ]
    )
    assert out["promise"][0] == "HavePromise" and "i'll book" in out["promise"][1]
    assert out["feedback"][0] == "Both"
    assert out["politeness"][0] == "Polite"
    assert out["explanation"][0] == "Frequent"
    plain = rules.label(["Plan a trip.", "Next: hotels.", "Transport options."])
    assert {k: v[0] for k, v in plain.items()} == {
        "promise": "NoPromise",
        "feedback": "NoFeedback",
        "politeness": "Neutral",
        "formality": "Formal",
        "explanation": "NoExplanation",
    }
    # A promise answers a suggestion: cues in the opening request do not count; negation blocks praise.
    assert rules.label(["I'll try to plan a trip, help me."])["promise"][0] == "NoPromise"
    assert rules.label(["Plan a trip.", "That is not helpful."])["feedback"][0] == "Negative"
    assert (
        rules.label(["Plan a trip.", "This is useless, are you even listening?"])["politeness"][0]
        == "Impolite"
    )
    oral = rules.label(["hey yeah gonna need a trip lol", "ok cool!! what else", "hmm ok"])
    assert oral["formality"][0] == "Oral"


def test_rule_labeller_chinese_with_jieba(rules):
    assert detect_language("请帮我规划一个旅行") == "zh" and detect_language("plan a trip") == "en"
    assert rules.matchers["zh"].nlp.tokenizer.segmenter == "jieba"
    out = rules.label(
        [
            "你好，请帮我规划一个两天的旅行，因为我想去看雪。",
            "太贵了，不满意啊",
            "好的，那我就选第一个方案吧，谢谢！",
        ]
    )
    assert out["promise"][0] == "HavePromise"
    assert out["feedback"][0] == "Both"  # 谢谢 positive; 不满意 negative (not positive: negated)
    assert "满意" not in out["feedback"][1].split("- ")[0]
    assert out["politeness"][0] == "Polite"
    assert out["explanation"][0] == "Rare"
    assert rules.label(["帮我规划旅行", "你是不是傻，别废话"])["politeness"][0] == "Impolite"


def test_bad_lexicon_is_reported_with_file_and_field(tmp_path):
    (tmp_path / "en.yaml").write_text("version: '9'\npromise:\n  patterns: ['(unclosed']\n", encoding="utf-8")
    with pytest.raises(UserInputError, match=r"en.yaml: promise.patterns\[0\]"):
        load_lexicon("en", tmp_path)
    with pytest.raises(UserInputError, match="no rule lexicon"):
        load_lexicon("fr", tmp_path)


def test_cli_rule_labels_sources_and_agreement(cli_engine, capsys, tmp_path):
    code, out = run(["label", "--study", "pilot", "--labeller", "rule"], capsys)
    assert code == 0, out
    assert "rule:v1-en1.zh1: labelled 12 conversations (60 labels)" in out
    # A second source: a person who agrees on most items.
    with Session(cli_engine) as s:
        lab = labels_df(s, 1, sources=["rule:v1-en1.zh1"])
        src = ensure_source(s, "human:ann", "human")
        recs = [
            LabelRecord(
                int(r.conversation_id),
                r.dimension,
                ("Polite" if r.value != "Polite" else "Neutral") if r.conversation_id % 4 == 0 else r.value,
            )
            for r in lab.itertuples()
        ]
        write_labels(s, src, recs)
        s.commit()
        convs = conversations_df(s, 1)
    code, out = run(["labels", "sources", "--study", "pilot"], capsys)
    assert code == 0 and "rule:v1-en1.zh1" in out and "human:ann" in out and "60" in out
    path = tmp_path / "new-dir" / "agree.json"  # the directory is created
    code, out = run(
        [
            "agreement",
            "--study",
            "pilot",
            "--a",
            "rule:v1-en1.zh1",
            "--b",
            "human:ann",
            "--json",
            str(path),
            "--n-boot",
            "100",
        ],
        capsys,
    )
    assert code == 0, out
    assert "Krippendorff's alpha" in out
    recs = json.loads(path.read_text())
    assert {r["user_kind"] for r in recs} == {"all", "human", "agent"}
    pol = next(r for r in recs if r["dimension"] == "politeness" and r["user_kind"] == "all")
    assert pol["n"] == 12 and pol["ci_statistic"] == "krippendorff_alpha" and pol["weighted_kappa"] is None
    # Same number as scikit-learn on the same pairs.
    a = lab[lab.dimension == "politeness"].sort_values("conversation_id")
    b = [
        ("Polite" if v != "Polite" else "Neutral") if c % 4 == 0 else v
        for c, v in zip(a.conversation_id, a.value)
    ]
    expected = cohen_kappa_score(list(a.value), b) if len(set(a.value) | set(b)) > 1 else None
    assert pol["cohen_kappa"] == (
        pytest.approx(expected) if expected is not None and expected == expected else None
    )
    assert set(convs.user_kind) == {"human", "agent"}
    pair = ["agreement", "--study", "pilot", "--a", "rule:v1-en1.zh1", "--b", "human:ann"]
    code, out = run([*pair, "--dimensions", "politeness,bogus"], capsys)
    assert code == 2 and "unknown dimension 'bogus'" in out and "politeness" in out, out
    assert "No items" not in out
    code, out = run([*pair, "--n-boot", "0"], capsys)
    assert code == 2 and "--n-boot must be at least 100" in out, out


def test_cli_errors_are_clear(cli_engine, capsys):
    code, out = run(["label", "--study", "pilot", "--labeller", "magic"], capsys)
    assert code == 2 and "unknown --labeller" in out
    code, out = run(["label", "--study", "pilot", "--labeller", "trained"], capsys)
    assert code == 2 and "--train-source" in out
    code, out = run(["agreement", "--study", "pilot", "--a", "nope", "--b", "human:x"], capsys)
    assert code == 2 and "no label source 'nope'" in out
    code, out = run(["agreement", "--study", "pilot", "--a", "x"], capsys)
    assert code == 2 and "workbench labels sources" in out
    code, out = run(["label", "--study", "pilot", "--labeller", "rule", "--dimensions", "utility"], capsys)
    assert code == 2 and "no rules for" in out
    code, out = run(["label", "--study", "nostudy", "--labeller", "rule"], capsys)
    assert code == 2 and "no study named" in out
    code, out = run(
        ["label", "--study", "pilot", "--labeller", "trained", "--train-source", "x", "--cv", "1"], capsys
    )
    assert code == 2 and "--cv must be at least 2 folds (0 = off), got 1" in out, out
    code, out = run(["agreement", "--study", "pilot", "--a", "human:x", "--b", "human:x"], capsys)
    assert code == 2 and "(--a and --b are the same)" in out, out


def test_labeller_registry(cli_engine):
    """Every labeller is one registry entry; a run returns one LabelRun; errors name settings."""
    from annotation.codebook import load_codebook
    from annotation.labellers import LABELLERS, LabelSettings, check_settings, get_labeller, run_labeller

    assert list(LABELLERS) == ["llm", "rule", "trained"]
    with pytest.raises(UserInputError, match="unknown labeller 'magic': use one of llm, rule, trained"):
        get_labeller("magic")
    settings = LabelSettings(study="pilot", codebook=load_codebook(), samples=0)
    with pytest.raises(UserInputError, match="^samples must be at least 1, got 0$"):
        check_settings(LABELLERS["llm"], settings)
    with pytest.raises(UserInputError, match="^the trained labeller needs train_source$"):
        run_labeller(cli_engine, "trained", settings)
    # The rule labeller has nothing to project: a dry run runs it.
    run = run_labeller(cli_engine, "rule", settings, dry_run=True)
    assert (run.source, run.conversations, run.labels, run.planned) == ("rule:v1-en1.zh1", 12, 60, False)
    assert run.notes == ["rule:v1-en1.zh1: labelled 12 conversations (60 labels)."]
    # The LLM labeller plans from the model's name alone, priced by the caller's function.
    settings.samples = 2
    settings.model_name = "openai/gpt-4o"
    settings.cost_of = lambda _model, prompt, completion: (prompt + completion) / 1e6
    plan = run_labeller(cli_engine, "llm", settings, dry_run=True)
    assert plan.planned and plan.conversations == 12 and plan.cost_usd > 0
    assert plan.notes[0].startswith("Dry run for llm:openai/gpt-4o:v2: 12 conversations x 2 samples")
    with pytest.raises(UserInputError, match="needs model"):
        run_labeller(cli_engine, "llm", settings)


def test_cli_llm_dry_run_and_run(cli_engine, capsys, monkeypatch):
    code, out = run(
        ["label", "--study", "pilot", "--labeller", "llm", "--model", "openai/gpt-4o", "--dry-run"], capsys
    )
    assert code == 0, out
    assert "12 conversations x 3 samples = 36 calls" in out
    assert "needs an API key" in out  # no key here: only a note, projecting cost is the point
    assert "hallucination" in out and "(24 per turn)" in out  # every dimension: 2 assistant turns each
    reply = json.dumps({"promise": "NoPromise", "feedback": "Positive"})
    with FakeLLMServer(responder=lambda req: reply) as srv:
        monkeypatch.setenv("OPENAI_BASE_URL", srv.openai_base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
        code, out = run(
            [
                "label",
                "--study",
                "pilot",
                "--labeller",
                "llm",
                "--model",
                "openai/x",
                "--dimensions",
                "promise,feedback",
                "--samples",
                "2",
                "--concurrency",
                "3",
            ],
            capsys,
        )
    assert code == 0, out
    assert "llm:openai/x:v2: labelled 12 conversations (24 labels, 0 flagged" in out
    # A dry run now projects what a real run would call: nothing, all 12 being labelled.
    dry = [
        "label",
        "--study",
        "pilot",
        "--labeller",
        "llm",
        "--model",
        "openai/x",
        "--dimensions",
        "promise,feedback",
        "--samples",
        "2",
        "--dry-run",
    ]
    code, out = run(dry, capsys)
    assert code == 0 and "0 conversations x 2 samples = 0 calls" in out and "12 already labelled" in out, out
    code, out = run(dry + ["--overwrite"], capsys)
    assert code == 0 and "12 conversations x 2 samples = 24 calls" in out and "already" not in out, out
    code, out = run(["labels", "sources", "--study", "pilot", "--json"], capsys)
    src = next(r for r in json.loads(out) if r["name"] == "llm:openai/x:v2")
    assert (src["kind"], src["model"], src["prompt_version"], src["n_labels"]) == (
        "llm",
        "openai/x",
        "v2",
        24,
    )
    # provenance: the codebook version and when the source labelled (ISO 8601, UTC)
    assert src["codebook_version"] and src["first_label_at"] <= src["last_label_at"]
    assert datetime.fromisoformat(src["last_label_at"]).utcoffset() == timedelta(0)
    code, out = run(["labels", "sources", "--study", "pilot"], capsys)
    assert "codebook_version" in out and " UTC" in out


def test_cli_label_sources_json_is_strict_json(cli_engine, capsys):
    # A human source has no model: the JSON must say null, not NaN (which is not JSON).
    with Session(cli_engine) as s:
        conv_ids = sorted(conversations_df(s, 1)["conversation_id"])
        for name, kind, model in [("human:ann", "human", None), ("llm:openai/x:v2", "llm", "openai/x")]:
            src = ensure_source(s, name, kind, model=model)
            write_labels(s, src, [LabelRecord(int(c), "politeness", "Polite") for c in conv_ids])
        s.commit()
    code, out = run(["labels", "sources", "--study", "pilot", "--json"], capsys)
    assert code == 0, out

    def no_constants(name):
        raise AssertionError(f"{name} in the JSON output")

    human, llm = json.loads(out, parse_constant=no_constants)
    assert human["name"] == "human:ann" and human["model"] is None and human["n_labels"] == len(conv_ids)
    assert llm["model"] == "openai/x" and llm["prompt_version"] is None


def test_cli_agreement_of_an_annotator_set(cli_engine, capsys, tmp_path):
    values = ["Polite", "Neutral", "Impolite"]
    with Session(cli_engine) as s:
        conv_ids = sorted(conversations_df(s, 1)["conversation_id"])
        for k, name in enumerate(["human:ann", "human:bob", "human:cy"]):
            src = ensure_source(s, name, "human")
            # cy skips the last two items; bob disagrees on every third.
            recs = [
                LabelRecord(int(c), "politeness", values[(i + (k == 1 and i % 3 == 0)) % 3])
                for i, c in enumerate(conv_ids)
                if not (k == 2 and i >= len(conv_ids) - 2)
            ]
            write_labels(s, src, recs)
        s.commit()
    path = tmp_path / "set.json"
    code, out = run(
        [
            "agreement",
            "--study",
            "pilot",
            "--sources",
            "human:ann,human:bob,human:cy",
            "--json",
            str(path),
            "--n-boot",
            "100",
            "--no-split",
        ],
        capsys,
    )
    assert code == 0, out
    (rec,) = json.loads(path.read_text())
    assert rec["user_kind"] == "all" and rec["n_raters"] == 3
    assert rec["n"] == 12 and rec["n_complete"] == 10
    assert rec["cohen_kappa"] is None and rec["fleiss_kappa"] is not None
    code, out = run(["agreement", "--study", "pilot", "--a", "human:ann", "--sources", "human:bob"], capsys)
    assert code == 2 and "not both" in out


@pytest.mark.parametrize(
    "extra,words",
    [
        (["--model", "gpt4"], "provider/model"),
        (["--model", "nosuch/x"], "unknown model provider 'nosuch'"),
        (["--model", "openai/gpt-4o", "--samples", "0"], "--samples must be at least 1"),
        (["--model", "openai/gpt-4o", "--limit", "0"], "--limit must be at least 1"),
    ],
)
def test_cli_llm_dry_run_checks_inputs_like_a_real_run(cli_engine, capsys, extra, words):
    for dry in (["--dry-run"], []):
        code, out = run(["label", "--study", "pilot", "--labeller", "llm", *extra, *dry], capsys)
        assert code == 2 and words in out and "Traceback" not in out and "calls" not in out, out


def test_label_progress_bar_clock_starts_with_the_work():
    """The bar exists (its clock running) before the first conversation is done, and counts with
    update(): a bar made at the first tick showed no elapsed time and an absurd rate."""
    from workbench.cli._progress import progress_bar

    with progress_bar("labelling", unit="conversations") as tick:
        started = tick.task.start_time
        assert started is not None
        tick(0, 2)
        tick(1, 2)
        assert tick.task.start_time == started and (tick.task.completed, tick.task.total) == (1, 2)
        tick(2, 2)
        assert tick.task.completed == 2


def test_cli_llm_budget_is_never_passed(cli_engine, capsys, monkeypatch, tmp_path):
    """label --budget: no conversation starts whose projected cost, with the spend and the calls in
    flight, would pass the cap (simulate once overshot its budget by the calls in flight); a rerun
    continues where the budget stopped it."""
    import re

    prices = tmp_path / "prices.yaml"
    prices.write_text("models:\n  openai/x: {input: 1000, output: 1000}\n", encoding="utf-8")
    monkeypatch.setenv("WORKBENCH_PRICES", str(prices))
    reply = json.dumps({"promise": "NoPromise", "feedback": "Positive"})
    args = ["label", "--study", "pilot", "--labeller", "llm", "--model", "openai/x"]
    args += ["--dimensions", "promise,feedback", "--samples", "1", "--concurrency", "4", "--no-cache"]
    with FakeLLMServer(responder=lambda req: reply) as srv:
        monkeypatch.setenv("OPENAI_BASE_URL", srv.openai_base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
        code, out = run([*args, "--budget", "0"], capsys)
        assert code == 0 and "labelled 0 conversations" in out and "12 conversations not started" in out, out
        code, out = run([*args, "--dry-run"], capsys)
        per_conversation = float(re.search(r"cost \$([0-9]+\.[0-9]+)", out).group(1)) / 12
        budget = round(3.5 * per_conversation, 4)  # room for three conversations, not four
        code, out = run([*args, "--budget", str(budget)], capsys)
        spent = float(re.search(r"cost \$([0-9]+\.[0-9]+)", out).group(1))
        done = int(re.search(r"labelled (\d+) conversations", out).group(1))
        assert 0 < done < 12 and spent <= budget and "reached" in out, out
        code, out = run([*args, "--budget", "-1"], capsys)
        assert code == 2 and "--budget must be at least 0" in out
        code, out = run(args, capsys)  # no cap: the rest
        assert code == 0 and f"labelled {12 - done} conversations" in out, out
