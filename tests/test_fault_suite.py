"""Fault injection: what the workbench does when things go wrong (huge inputs, killed processes, a
database that goes away, an LLM server that misbehaves). Each test's docstring says what it tried and
what it found. Kept lean: tiny studies, few turns, short timeouts."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import func, update
from sqlmodel import Session, select

from db.engine import dispose_engines, make_engine
from db.migrate import upgrade
from db.models import Condition, Conversation, LabelSource, LLMCall, QuestionnaireResponse, Turn
from tests.cli_helpers import run_cli
from workbench.dataio.jsonl import import_jsonl
from workbench.testing.fake_llm_server import FakeLLMServer


def _jsonl_line(i: int, kind: str, text: str) -> str:
    line = {
        "id": i,
        "user_kind": kind,
        "scenario": "travel",
        "messages": [
            {"role": "user", "content": text},
            {"role": "assistant", "content": "Sure, here is a plan."},
            {"role": "user", "content": "Thanks, that helps because it is cheap."},
            {"role": "assistant", "content": "Glad to help."},
        ],
        "task_context": {"text": "Plan a trip."},
        "assistant_model": "openai/gpt-4o-mini",
        "study": "big",
    }
    if kind == "agent":
        line["simulator"] = {"model": "openai/fake-sim"}
    return json.dumps(line)


def test_huge_turn_in_database_features_and_analyze(use_db, tmp_path, capsys):
    """Tried: a user turn of 1.2 million characters written straight into the database (past the
    import limit), then `features`, `analyze`, the rule labeller and the trained labeller's texts.
    Found before: `analyze` died with spaCy's E088 traceback (texts over 1,000,000 characters). Now:
    the pipelines read such a turn up to 100,000 characters and say how many they cut."""
    from analysis.features import features_df
    from annotation.labellers.rules import label_study
    from annotation.labellers.trained import user_texts_df
    from db.repo import conversations_df, get_study

    f = tmp_path / "c.jsonl"
    kinds = ["human", "human", "human", "agent", "agent", "agent"]
    f.write_text("\n".join(_jsonl_line(i, k, f"I want to go to Rome {i}") for i, k in enumerate(kinds)))
    eng = make_engine(use_db)
    upgrade(eng)
    assert import_jsonl(eng, f).imported == 6
    huge = "word " * 240_000  # 1.2M characters
    with Session(eng) as s:
        first = s.exec(select(Turn).where(Turn.role == "user").order_by(Turn.id)).first()
        s.exec(update(Turn).where(Turn.id == first.id).values(content=huge))
        s.commit()
    code, out, err = run_cli(["features", "--study", "big"], capsys)
    assert code == 0 and "Traceback" not in err, err
    code, out, err = run_cli(["analyze", "--study", "big", "--out", str(tmp_path / "an")], capsys)
    assert code == 0 and "Traceback" not in err, err
    with Session(eng) as s:
        study = get_study(s, "big")
        convs = conversations_df(s, study.id)
        texts = user_texts_df(s, study.id)
    feats = features_df(eng, study.id, convs, recompute=True)
    assert feats.attrs["texts_cut"] == 1 and "100,000 characters" in feats.attrs["note"]
    assert texts.attrs["texts_cut"] == 1 and texts["text"].str.len().max() < 100_100
    name, n, _ = label_study(eng, "big")
    with Session(eng) as s:
        assert s.exec(select(LabelSource).where(LabelSource.name == name)).one().params["texts_cut"] == 1
    eng.dispose()


def test_restarted_conversation_keeps_calls_apart(engine, monkeypatch, tmp_path, capsys):
    """Tried: a conversation whose assistant fails on its second turn, then the run again with
    --retry-failed. Found before: the restarted conversation carried the calls of the failed attempt
    too (its call count and cost were inflated). Now the failed attempt's calls are marked
    params["attempt"] = "abandoned" (still linked to the conversation) and counted apart in the
    run's cost (run_costs, the simulate summary, the exported run info)."""
    from tests.test_runner import _study, responder
    from workbench.dataio.export import export_study
    from workbench.simulation import SimulationSpec, run_simulation
    from workbench.simulation.runner import ABANDONED, run_costs

    _study(engine, name="r")
    with Session(engine) as s:
        key = s.exec(select(Condition.key).order_by(Condition.id)).first()
    spec = dict(study="r", simulator_model="openai/fake-sim", n_per_condition=1, conditions=[key])
    fail = {"on": True}
    ok = responder(2)

    def flaky(req):
        if fail["on"] and "role-playing" not in req.messages[0]["content"]:
            if sum(1 for m in req.messages if m["role"] == "user") >= 2:
                raise RuntimeError("assistant broke")
        return ok(req)

    fast = {"openai/fake-assistant": {"max_retries": 0}, "openai/fake-sim": {"max_retries": 0}}
    with FakeLLMServer(responder=flaky) as srv:
        monkeypatch.setenv("OPENAI_BASE_URL", srv.openai_base_url)
        first = run_simulation(engine, SimulationSpec(**spec), model_options=fast)
        assert first.failed == 1
        with Session(engine) as s:
            conv = s.exec(select(Conversation)).one()
            n_first = len(s.exec(select(LLMCall).where(LLMCall.conversation_id == conv.id)).all())
        assert conv.status == "failed" and n_first >= 3
        fail["on"] = False
        again = run_simulation(engine, SimulationSpec(**spec, retry_failed=True), model_options=fast)
        assert again.completed == 1
    with Session(engine) as s:
        calls = s.exec(select(LLMCall).where(LLMCall.conversation_id == conv.id)).all()
        abandoned = [c for c in calls if c.params.get("attempt") == ABANDONED]
        current = [c for c in calls if c.params.get("attempt") != ABANDONED]
        # 3 simulator + 2 assistant turns + the simulated user's 2 reply ratings and post-task answers
        assert len(abandoned) == n_first and len(current) == 8
        turns = s.exec(select(Turn).where(Turn.conversation_id == conv.id)).all()
        assert {t.llm_call_id for t in turns} <= {c.id for c in current}
        costs = run_costs(s, [conv.run_id])[conv.run_id]
    assert costs["calls"] == 8 and costs["abandoned_calls"] == n_first
    export_study(engine, "r", "jsonl", tmp_path / "out")
    line = json.loads((tmp_path / "out" / "conversations.jsonl").read_text().splitlines()[0])
    assert line["run"]["cost"]["abandoned_calls"] == n_first and line["run"]["cost"]["calls"] == 8


# --------------------------------------------------------------------------------------------------
# kill -9 in the middle of a command, then the same command again
# --------------------------------------------------------------------------------------------------

REPO = Path(__file__).resolve().parent.parent


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "workbench.cli", *args]


def _wait(predicate, seconds: float, what: str) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _count(eng, model, *where) -> int:
    with Session(eng) as s:
        return s.exec(select(func.count(model.id)).where(*where)).one()


def test_kill_9_during_simulate_then_rerun(tmp_path):
    """Tried: `python -m workbench.cli simulate` killed with SIGKILL once three conversations were
    complete, then the same command again. Found: the rerun restarts the conversations the killed
    process left in progress and completes the rest; no (condition, replicate) twice, every
    transcript whole (turn indexes 0..n without gaps), the killed attempts' calls marked abandoned."""
    from tests.test_runner import _study, responder
    from workbench.simulation.runner import ABANDONED

    url = f"sqlite:///{tmp_path / 'kill.db'}"
    eng = make_engine(url)
    upgrade(eng)
    n = _study(eng, name="k")
    with FakeLLMServer(responder=responder(2), latency=0.05) as srv:
        env = {**os.environ, "WORKBENCH_DB_URL": url, "OPENAI_BASE_URL": srv.openai_base_url}
        cmd = _cli("simulate", "--study", "k", "--simulator-model", "openai/fake-sim", "--concurrency", "3")
        proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        done = Conversation.status == "completed"
        _wait(lambda: _count(eng, Conversation, done) >= 3, 60, "three conversations")
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert _count(eng, Conversation, done) < n
        out = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
    with Session(eng) as s:
        convs = s.exec(select(Conversation)).all()
        assert len(convs) == n and {c.status for c in convs} == {"completed"}
        assert len({(c.condition_id, c.replicate) for c in convs}) == n
        for c in convs:
            idx = s.exec(select(Turn.index).where(Turn.conversation_id == c.id).order_by(Turn.index)).all()
            assert idx == list(range(5))  # 3 simulated user turns, 2 replies
        calls = s.exec(select(LLMCall)).all()
        live = [c for c in calls if c.params.get("attempt") != ABANDONED]
        # one call per turn of the current attempts, one per reply rated and one post-task questionnaire
        assert len(live) == 8 * n
        # the simulated user answered each post-task questionnaire once (none twice after the kill)
        answers = Counter(
            s.exec(select(QuestionnaireResponse.conversation_id, QuestionnaireResponse.item)).all()
        )
        assert set(answers.values()) == {1} and len(answers) == 3 * n
    eng.dispose()


def test_kill_9_during_import_then_rerun(tmp_path):
    """Tried: `python -m workbench.cli import jsonl` of 4,000 conversations killed with SIGKILL once
    the first chunk was committed, then the same command again. Found: the killed import left whole
    chunks only (each conversation with all its turns); the rerun adds exactly the missing ones."""
    total = 4000
    f = tmp_path / "c.jsonl"
    f.write_text("\n".join(_jsonl_line(i, "human", f"trip {i}") for i in range(total)) + "\n")
    url = f"sqlite:///{tmp_path / 'imp.db'}"
    eng = make_engine(url)
    upgrade(eng)
    env = {**os.environ, "WORKBENCH_DB_URL": url}
    cmd = _cli("import", "jsonl", str(f))
    proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _wait(lambda: _count(eng, Conversation) > 0 or proc.poll() is not None, 60, "the first chunk")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = _count(eng, Conversation)
    assert 0 < partial < total, partial
    assert _count(eng, Turn) == 4 * partial  # no conversation without its turns
    out = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert (
        f"{total - partial} conversations imported" in out.stdout
        and f"{partial} already present" in out.stdout
    )
    with Session(eng) as s:
        ext = s.exec(select(Conversation.external_id)).all()
    assert len(ext) == len(set(ext)) == total and _count(eng, Turn) == 4 * total
    eng.dispose()


def test_kill_9_of_serve_then_restart(tmp_path):
    """Tried: `workbench serve` (the Streamlit app) killed with SIGKILL, then started again on the
    same port and database. Found: the port is free again at once and the app answers
    /_stcore/health."""
    import socket
    import urllib.request

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "WORKBENCH_DB_URL": f"sqlite:///{tmp_path / 'app.db'}"}
    cmd = _cli("serve", "--port", str(port))

    def healthy() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=1) as r:
                return r.status == 200
        except OSError:
            return False

    def serve_then_kill() -> None:
        proc = subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            _wait(lambda: healthy() or proc.poll() is not None, 60, "the app")
            assert healthy(), proc.stderr.read().decode()[-2000:] if proc.poll() is not None else ""
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        assert not healthy()

    serve_then_kill()
    serve_then_kill()  # the restart after the kill


# --------------------------------------------------------------------------------------------------
# the database goes away and comes back
# --------------------------------------------------------------------------------------------------


@pytest.mark.postgres
def test_database_stopped_and_restarted(tmp_path, monkeypatch, capsys):
    """Tried: a PostgreSQL server stopped under a working CLI (its engine and pool cached in the
    process), a command during the outage, then the server started again. Found: the command in
    the outage is one line, exit 2 ("cannot open the database ... server is running"); the next
    command after the restart works without restarting anything."""
    from tests.pg import PgUnavailable, ThrowawayCluster

    if os.environ.get("WORKBENCH_TEST_PG_URL"):
        pytest.skip("needs a cluster of its own to stop (WORKBENCH_TEST_PG_URL names a shared server)")
    cluster = ThrowawayCluster()
    try:
        cluster.start()
    except (PgUnavailable, OSError) as exc:
        pytest.skip(f"PostgreSQL not available: {exc}")
    try:
        monkeypatch.setenv("WORKBENCH_DB_URL", cluster.url)
        code, _, err = run_cli(["users", "list"], capsys)
        assert code == 0, err
        data = os.path.join(cluster._dir, "data")
        pg_ctl = [*cluster._run_as, os.path.join(cluster._bindir, "pg_ctl"), "-D", data]
        subprocess.run(
            [*pg_ctl, "-m", "fast", "-w", "stop"], cwd=cluster._dir, capture_output=True, check=True
        )
        code, _, err = run_cli(["users", "list"], capsys)
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
        assert "cannot open the database" in lines[0] and "server is running" in lines[0]
        port = cluster.url.rsplit(":", 1)[1].split("/")[0]
        opts = f"-p {port} -k {cluster._dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        log = os.path.join(cluster._dir, "log")
        subprocess.run(
            [*pg_ctl, "-o", opts, "-l", log, "-w", "start"], cwd=cluster._dir, capture_output=True, check=True
        )
        code, _, err = run_cli(["users", "list"], capsys)
        assert code == 0, err
    finally:
        dispose_engines()
        cluster.stop()


# --------------------------------------------------------------------------------------------------
# the LLM server misbehaves during a simulation
# --------------------------------------------------------------------------------------------------


def test_llm_server_faults_during_simulate(engine, monkeypatch):
    """Tried: five conversations run one after another while the LLM server answers the first call
    of each with a fault: 429 (rate limited), 500, a malformed body, a reply slower than the timeout,
    and (the server gone) a refused connection; then a rerun with retry_failed against a healthy
    server. Found: each conversation fails with its reason recorded in Conversation.error, no turn
    is written for a failed call (no half turn), every failed call is an LLMCall row with its error;
    the rerun completes all five with whole transcripts."""
    from tests.test_runner import _study, responder
    from workbench.simulation import SimulationSpec, run_simulation

    _study(engine, name="f")
    with Session(engine) as s:
        key = s.exec(select(Condition.key).order_by(Condition.id)).first()
    spec = dict(
        study="f", simulator_model="openai/fake-sim", n_per_condition=4, conditions=[key], concurrency=1
    )
    opts = {"max_retries": 0, "timeout": 0.5}
    fast = {"openai/fake-sim": opts, "openai/fake-assistant": opts}
    with FakeLLMServer(responder=responder(2)) as srv:
        monkeypatch.setenv("OPENAI_BASE_URL", srv.openai_base_url)
        for fault in (
            {"status": 429, "retry_after": 0},
            {"status": 500},
            {"malformed": True},
            {"delay": 1.5},
        ):
            srv.push_fault(**fault)
        first = run_simulation(engine, SimulationSpec(**spec), model_options=fast)
        assert first.failed == 4 and first.completed == 0
        with Session(engine) as s:
            convs = s.exec(select(Conversation).order_by(Conversation.replicate)).all()
            errors = [c.error for c in convs]
            assert all(c.status == "failed" and c.end_reason == "error" for c in convs)
            assert _count(engine, Turn) == 0
            failed_calls = s.exec(select(LLMCall).where(LLMCall.error.is_not(None))).all()
            assert len(failed_calls) == 4
        reasons = " | ".join(errors)
        for word in ("429", "500", "timed out"):
            assert word in reasons, reasons
        srv_url = srv.openai_base_url
    # the server is gone: connections are refused
    monkeypatch.setenv("OPENAI_BASE_URL", srv_url)
    gone = run_simulation(engine, SimulationSpec(**spec, retry_failed=True), model_options=fast)
    assert gone.failed == 4
    with Session(engine) as s:
        assert all("connect" in c.error.lower() for c in s.exec(select(Conversation)).all())
    with FakeLLMServer(responder=responder(2)) as srv:
        monkeypatch.setenv("OPENAI_BASE_URL", srv.openai_base_url)
        again = run_simulation(engine, SimulationSpec(**spec, retry_failed=True), model_options=fast)
    assert again.completed == 4 and again.failed == 0
    with Session(engine) as s:
        for c in s.exec(select(Conversation)).all():
            idx = s.exec(select(Turn.index).where(Turn.conversation_id == c.id).order_by(Turn.index)).all()
            assert c.status == "completed" and c.error is None and idx == list(range(5))
