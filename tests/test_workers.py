"""Several worker processes on one simulation run: on PostgreSQL they share it (each conversation
claimed with FOR UPDATE SKIP LOCKED, heartbeats, a dead worker's claims taken over); on SQLite a
second process is refused in one line."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from datetime import timedelta

import pytest
from sqlalchemy import func, update
from sqlmodel import Session, select

from db.engine import make_engine
from db.migrate import upgrade
from db.models import Conversation, LLMCall, SimulationRun, Turn
from db.models.claims import SimulationClaim
from db.types import utcnow
from tests.cli_helpers import run_cli
from tests.test_runner import REPO, _counts, _study, responder
from workbench.simulation import claims
from workbench.testing.fake_llm_server import FakeLLMServer

pytestmark = pytest.mark.postgres
TURNS = 3


def _cmd(study: str, n: int, concurrency: int = 2) -> list[str]:
    return [
        sys.executable,
        "-c",
        "from workbench.cli import main; main()",
        "simulate",
        "--study",
        study,
        "--simulator-model",
        "openai/fake-sim",
        "--n-per-condition",
        str(n),
        "--concurrency",
        str(concurrency),
    ]


def _worker(cmd, env) -> subprocess.Popen:
    return subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _assert_each_job_once(eng, total: int) -> None:
    """Every job has exactly one completed conversation, whose turns were written once, and only
    the current attempt's calls count."""
    with Session(eng) as s:
        convs = s.exec(select(Conversation).where(Conversation.user_kind == "agent")).all()
        assert len(convs) == total and {c.status for c in convs} == {"completed"}
        keys = [(c.condition_id, c.replicate) for c in convs]
        assert len(set(keys)) == total
        for c in convs:
            idx = s.exec(select(Turn.index).where(Turn.conversation_id == c.id).order_by(Turn.index)).all()
            assert idx == list(range(2 * TURNS + 1)), (c.id, idx)
        assert (
            s.exec(select(func.count()).select_from(SimulationClaim).where(SimulationClaim.done)).one()
            == total
        )
        run = s.exec(select(SimulationRun)).one()
        assert (run.status, run.owner) == ("completed", None)


def test_two_workers_share_a_run(pg_url):
    eng = make_engine(pg_url)
    upgrade(eng)
    n = _study(eng, name="w")
    with FakeLLMServer(responder=responder(TURNS), latency=0.03) as srv:
        env = {**os.environ, "WORKBENCH_DB_URL": pg_url, "OPENAI_BASE_URL": srv.openai_base_url}
        procs = [_worker(_cmd("w", 4), env) for _ in range(2)]
        outs = [p.communicate(timeout=120) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err
        assert "by other processes" in out
    # both worked: each completed some, together all of them, none twice
    done_here = []
    for out, _ in outs:
        done, _total, others = map(int, re.search(r"(\d+)/(\d+) complete \((\d+) before", out).groups())
        done_here.append(done - others)
    assert all(d > 0 for d in done_here) and sum(done_here) == 4 * n, outs
    _assert_each_job_once(eng, 4 * n)
    with Session(eng) as s:  # no call of an abandoned attempt: nothing was simulated twice
        assert all((c.params or {}).get("attempt") != "abandoned" for c in s.exec(select(LLMCall)).all())
    eng.dispose()


def test_a_killed_workers_claims_are_taken_over(pg_url):
    eng = make_engine(pg_url)
    upgrade(eng)
    n = _study(eng, name="k")
    with FakeLLMServer(responder=responder(TURNS), latency=0.05) as srv:
        env = {**os.environ, "WORKBENCH_DB_URL": pg_url, "OPENAI_BASE_URL": srv.openai_base_url}
        victim, other = _worker(_cmd("k", 3), env), _worker(_cmd("k", 3, concurrency=1), env)
        held: list = []
        deadline = time.time() + 60
        while time.time() < deadline and (len(set(held)) < 2 or _counts(eng).get("completed", 0) < 2):
            with Session(eng) as s:
                held = s.exec(select(SimulationClaim.worker).where(SimulationClaim.worker.is_not(None))).all()
            time.sleep(0.02)
        victim.send_signal(signal.SIGKILL)  # both are in the middle of conversations
        victim.wait()
        out, err = other.communicate(timeout=120)
        assert other.returncode == 0, err
    assert len(set(held)) == 2, held
    _assert_each_job_once(eng, 3 * n)
    eng.dispose()


def test_claims_of_a_silent_worker_elsewhere_are_taken_over_after_the_timeout(pg_url):
    eng = make_engine(pg_url)
    upgrade(eng)
    _study(eng, name="t")
    with Session(eng) as s:
        from db.models import Condition, Study
        from db.repo import get_or_create_simulator_config

        st = s.exec(select(Study)).one()
        cond = s.exec(select(Condition)).first()
        cfg = get_or_create_simulator_config(s, "openai/fake-sim", prompt_template="x", prompt_version="1")
        run = SimulationRun(study_id=st.id, key="k" * 64, simulator_config_id=cfg.id, params={})
        s.add(run)
        s.commit()
        run_id, cond_id = run.id, cond.id
    claims.seed_claims(eng, run_id, [(cond_id, 0), (cond_id, 1)], set())
    me, far = f"{socket.gethostname()}:{os.getpid()}:me", "elsewhere.example:123:abc"
    with eng.begin() as conn:
        assert claims.claim_next(conn, run_id, far, [cond_id], 1) == (cond_id, 0)
        assert claims.claim_next(conn, run_id, me, [cond_id], 1) == (cond_id, 1)
        assert claims.claim_next(conn, run_id, me, [cond_id], 1) is None  # the other is alive
    with eng.begin() as conn:
        conn.execute(
            update(SimulationClaim.__table__)
            .where(SimulationClaim.worker == far)
            .values(heartbeat_at=utcnow() - claims.CLAIM_TIMEOUT - timedelta(seconds=1))
        )
        assert claims.claim_next(conn, run_id, me, [cond_id], 1) == (cond_id, 0)  # silent: taken over
    eng.dispose()


def test_sqlite_keeps_one_worker_per_run(sqlite_url, monkeypatch, capsys):
    eng = make_engine(sqlite_url)
    upgrade(eng)
    _study(eng, name="q")
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        with FakeLLMServer(responder=responder(1)) as srv:
            monkeypatch.setenv("WORKBENCH_DB_URL", sqlite_url)
            monkeypatch.setenv("OPENAI_BASE_URL", srv.openai_base_url)
            args = [
                "simulate",
                "--study",
                "q",
                "--simulator-model",
                "openai/fake-sim",
                "--n-per-condition",
                "1",
            ]
            assert run_cli(args, capsys)[0] == 0
            with Session(eng) as s:
                run = s.exec(select(SimulationRun)).one()
                run.owner, run.heartbeat_at, run.status = (
                    f"{socket.gethostname()}:{alive.pid}:x",
                    utcnow(),
                    "running",
                )
                s.add(run)
                s.commit()
            code, _out, err = run_cli(args, capsys)
    finally:
        alive.kill()
        alive.wait()
    assert code == 2
    assert "on SQLite one process works on a run" in err and len(err.strip().splitlines()) == 1
    eng.dispose()


def test_two_workers_share_the_runs_budget(pg_url, tmp_path):
    """--budget is the run's: two workers together stop before it is passed (each counts the other's
    recorded calls and the conversations it holds), and both stop."""
    eng = make_engine(pg_url)
    upgrade(eng)
    n = _study(eng, name="wb")
    prices = tmp_path / "prices.yaml"
    prices.write_text("models:\n  openai/fake-*: {input: 100, output: 100}\n")
    # One call costs about $0.12 here. A worker keeps two calls in reserve for each conversation the
    # other holds (up to 5 calls ahead), so a budget under ~$0.6 can stop both before any call when
    # they claim at the same instant; $1.5 leaves room for some calls whatever the timing.
    budget = 1.5
    with FakeLLMServer(responder=responder(TURNS), latency=0.03) as srv:
        env = {
            **os.environ,
            "WORKBENCH_DB_URL": pg_url,
            "OPENAI_BASE_URL": srv.openai_base_url,
            "WORKBENCH_PRICES": str(prices),
        }
        cmd = _cmd("wb", 4) + ["--budget", str(budget)]
        procs = [_worker(cmd, env) for _ in range(2)]
        outs = [p.communicate(timeout=120) for p in procs]
    for p, (_out, err) in zip(procs, outs):
        assert p.returncode == 0, err
    with Session(eng) as s:
        spent = s.exec(select(func.sum(LLMCall.cost_usd))).one()
        statuses = {c.status for c in s.exec(select(Conversation)).all()}
        run = s.exec(select(SimulationRun)).one()
    # alone, each worker would have spent up to the budget; together they stay under it
    assert 0 < spent <= budget, spent
    assert "stopped" in statuses and "in_progress" not in statuses
    assert run.status == "budget_stopped" and run.owner is None
    assert len(statuses) and n
    eng.dispose()
