"""A second public corpus of people and a simulator: MirrorBench's released Chatbot Arena
conversations (github.com/SAP/mirrorbench, commit 2d4b802), converted by
``scripts/corpora/mirrorbench_to_jsonl.py``, imported through ``workbench import jsonl`` and measured
by ``workbench likeness``. The data is never committed: the tests read a copy of the repository's
tree at ``$WORKBENCH_CORPORA/mirrorbench`` (default ``../corpora/mirrorbench`` beside the repository)
and skip, saying why, where it is absent."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import func
from sqlmodel import Session, select

from db.engine import make_engine
from db.models import Conversation, Participant
from tests.cli_helpers import run_cli

REPO_ROOT = Path(__file__).resolve().parent.parent
CORPORA = Path(os.environ.get("WORKBENCH_CORPORA", REPO_ROOT.parent / "corpora"))
ROOT = CORPORA / "mirrorbench"
SCRIPT = REPO_ROOT / "scripts" / "corpora" / "mirrorbench_to_jsonl.py"
RUN = "scratch_pad/human_corr/runs/chatbot_arena_mirror-gemini-2.5-pro-user-gpt-4o-assistant-claude-4-sonnet-judge"


def _convert(root: Path, out: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), str(root), str(out)], capture_output=True, text=True, timeout=120
    )


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> Path:
    if not (ROOT / "scratch_pad" / "data" / "chatbot_arena" / "chatbot_arena_mirror.jsonl").is_file():
        pytest.skip(
            f"the MirrorBench corpus is not at {ROOT} (copy the tree of github.com/SAP/mirrorbench "
            "there, or set WORKBENCH_CORPORA to the folder holding mirrorbench/)"
        )
    out = tmp_path_factory.mktemp("mirrorbench")
    proc = _convert(ROOT, out)
    assert proc.returncode == 0, proc.stderr
    return out / "conversations.jsonl"


def test_converter_bad_root_is_one_line_and_writes_nothing(tmp_path):
    proc = _convert(tmp_path / "nowhere", tmp_path / "out")
    assert proc.returncode == 2
    assert (
        proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr
    )
    assert not (tmp_path / "out").exists()


def test_conversion_counts_and_the_peoples_blind_picks(converted):
    lines = [json.loads(x) for x in converted.read_text("utf-8").splitlines()]
    kinds = Counter(x["user_kind"] for x in lines)
    # 195 people of the released mirror file + 82 real sides of the labelled pairs; 143 proxy runs
    assert kinds == {"human": 277, "agent": 143}
    humans = {x["id"] for x in lines if x["user_kind"] == "human"}
    agents = [x for x in lines if x["user_kind"] == "agent"]
    assert all(a["twin_of"] in humans and a["simulator"]["model"] == "google/gemini-2.5-pro" for a in agents)
    assert len({x["participant"] for x in lines if x.get("participant")}) == 184
    # People's blind picks of the more human-like user in the 100 pairs: the proxy's win rate (a tie
    # counts 0.5) is the human_mean MirrorBench publishes for pi_pairwise in its correlation report.
    picks = Counter(a["meta"]["pi_human_pick"] for a in agents if "pi_human_pick" in a["meta"])
    assert picks == {"tie": 41, "proxy": 31, "real": 28}
    report = json.loads((ROOT / RUN / "correlation_report.json").read_text("utf-8"))
    published = {r["metric_name"]: r for r in report["results"]}["metric:judge/pi_pairwise"]["human_mean"]
    assert (picks["proxy"] + 0.5 * picks["tie"]) / 100 == pytest.approx(published)


def test_import_jsonl_and_fidelity_figures(converted, tmp_path, monkeypatch, capsys):
    url = f"sqlite:///{tmp_path / 'mb.db'}"
    monkeypatch.setenv("WORKBENCH_DB_URL", url)
    code, out, err = run_cli(["import", "jsonl", str(converted), "--study", "mirrorbench"], capsys)
    assert code == 0, err
    assert "420 conversations imported (agent 143, human 277)" in out
    code, out, _ = run_cli(["import", "jsonl", str(converted), "--study", "mirrorbench"], capsys)
    assert code == 0 and "0 conversations imported" in out and "420 already present" in out
    engine = make_engine(url)
    with Session(engine) as s:
        assert s.exec(select(func.count()).select_from(Participant)).one() == 184
        twins = s.exec(select(func.count()).where(Conversation.twin_of_id.is_not(None))).one()
        assert twins == 143
    engine.dispose()

    code, out, err = run_cli(
        ["likeness", "--study", "mirrorbench", "--out", str(tmp_path / "f"), "--n-boot", "50"], capsys
    )
    assert code == 0, err
    recs = {r["metric"]: r for r in json.loads((tmp_path / "f" / "fidelity.json").read_text())}
    assert all(r["n_human"] == 277 and r["n_agent"] == 143 for r in recs.values())
    assert all(r["human_ceiling"] is not None for r in recs.values())
    # The figures of the README (commit 2d4b802); the point estimates and ceilings are seeded, so
    # they repeat exactly. MirrorBench's own figure for gemini-2.5-pro on Chatbot Arena (paper Fig.,
    # figures/user_proxy_comprehensive_dataset_metric_grid.png, read off the bars): MATTR z about
    # -0.27, HD-D z about -0.26, Yule's K z about +0.02, with an LLM tokenizer where we use words.
    expected = {
        "mattr_z": -0.258,
        "hdd_z": -0.244,
        "yules_k_z": -0.032,
        "usi_d": 0.643,
        "coverage": 0.435,
        "frechet": 0.222,
        "classifier_auc": 0.723,
    }
    for metric, value in expected.items():
        assert recs[metric]["value"] == pytest.approx(value, abs=0.002), metric
    assert abs(recs["mattr_z"]["value"] - (-0.27)) < 0.1 and abs(recs["hdd_z"]["value"] - (-0.26)) < 0.1
    assert abs(recs["yules_k_z"]["value"] - 0.02) < 0.1
    # the proxy never writes a short turn (people: 1.7% of turns), as the User-Sim Index paper found
    short = recs["feature:short_utterance_rate"]
    assert short["agent_mean"] == 0 and short["human_mean"] > 0
    assert 0.5 < recs["classifier_auc"]["ci_low"] and recs["classifier_auc"]["calibrated"] < 1
