"""The batch runner through the real openai SDK against the fake server: resume after SIGKILL,
no duplicates, budget stop, failed conversations recorded, digital twins."""

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
from sqlalchemy import func
from sqlmodel import Session, select

from db.engine import make_engine
from db.errors import UserInputError
from db.migrate import upgrade
from db.models import Condition, Conversation, Label, LLMCall, SimulationRun, Turn
from db.types import utcnow
from tests.cli_helpers import run_cli
from workbench.simulation import SimulationSpec, plan_simulation, run_simulation
from workbench.studies import create_study
from workbench.testing.fake_llm_server import FakeLLMServer, FakeRequest

REPO = Path(__file__).resolve().parent.parent
FAST = {"max_retries": 1, "backoff_base": 0.01, "backoff_max": 0.02, "timeout": 5}


def responder(turns: int = 3, fail_on: str | None = None):
    """Simulator (its system prompt role-plays a user) ends after ``turns`` replies; the assistant echoes."""

    def fn(req: FakeRequest) -> str:
        msgs = req.messages
        if "study questionnaire" in msgs[0]["content"]:  # the simulated user's ratings (user-rating@1)
            if "hallucination" in msgs[-1]["content"]:
                return json.dumps({"hallucination": "no", "satisfaction": 4, "reason": "fine"})
            return json.dumps({"Memorization": "no", "Detail": "detailed", "Availability": "somewhat"})
        if "role-playing" in msgs[0]["content"]:
            seen = sum(1 for m in msgs[2:] if m["role"] == "user")
            return json.dumps({"message": f"question {seen}", "end": seen >= turns})
        if fail_on and fail_on in json.dumps(msgs):
            raise RuntimeError("assistant broke")
        return f"answer {sum(1 for m in msgs if m['role'] == 'user')}"

    return fn


def _study(engine, name="s", profiles=1, assistant="openai/fake-assistant"):
    with Session(engine) as s:
        st, n = create_study(
            s,
            name,
            assistant,
            scenarios=["travel_planning"],
            profiles=profiles,
            language="en",
            system_prompt="You are a travel assistant.",
            temperature=0.5,
            max_tokens=200,
        )
        s.commit()
    return n


def _counts(engine):
    with Session(engine) as s:
        return dict(
            s.exec(
                select(Conversation.status, func.count())
                .where(Conversation.user_kind == "agent")
                .group_by(Conversation.status)
            ).all()
        )


def test_run_records_everything_and_resumes(engine, monkeypatch):
    n = _study(engine)
    with FakeLLMServer(responder=responder(3)) as srv:
        monkeypatch.setenv("OPENAI_BASE_URL", srv.openai_base_url)
        plan = plan_simulation(
            engine, SimulationSpec(study="s", simulator_model="openai/fake-sim", n_per_condition=2)
        )
        assert plan.n_remaining == 2 * n and plan.calls > 0 and plan.cost_usd is None  # no price known
        seen = []
        summ = run_simulation(
            engine,
            SimulationSpec(study="s", simulator_model="openai/fake-sim", n_per_condition=2, concurrency=4),
            progress=lambda p: seen.append((p.done, p.failed)),
        )
        assert summ.completed == 2 * n and summ.failed == 0 and summ.status == "completed"
        assert seen[-1] == (2 * n, 0)
        with Session(engine) as s:
            convs = s.exec(select(Conversation)).all()
            assert len(convs) == 2 * n
            c = convs[0]
            assert c.user_kind == "agent" and c.prompt_version == "user@1" and c.end_reason == "user_ended"
            turns = s.exec(select(Turn).where(Turn.conversation_id == c.id).order_by(Turn.index)).all()
            assert [t.role for t in turns] == ["user", "assistant"] * 3 + ["user"]
            assert all(t.llm_call_id for t in turns)
            calls = s.exec(select(LLMCall).where(LLMCall.conversation_id == c.id)).all()
            assert {x.purpose for x in calls} == {"simulator", "assistant", "simulator_rating"}
            # each turn points at the call that produced it (rows are written in deferred batches)
            by_id = {x.id: x for x in calls}
            assert all(
                by_id[t.llm_call_id].purpose == ("simulator" if t.role == "user" else "assistant")
                for t in turns
            )
            # the simulated user rated every reply (tests/test_sim_ratings.py tests the ratings)
            assert all(by_id[t.meta["rating_call_id"]].purpose == "simulator_rating" for t in turns[1::2])
            assert all(by_id[t.llm_call_id].response == t.content for t in turns if t.role == "assistant")
            asst_call = next(x for x in calls if x.purpose == "assistant")
            assert asst_call.messages[0] == {"role": "system", "content": "You are a travel assistant."}
            assert (
                asst_call.params["call"]["temperature"] == 0.5
                and asst_call.params["call"]["max_tokens"] == 200
            )
            assert {x.run_id for x in calls} == {c.run_id}
            # replicates sample with different seeds
            seeds = {x.params["call"]["seed"] for x in s.exec(select(LLMCall)).all()}
            assert len(seeds) == 2
        n_requests = len(srv.requests)
        again = run_simulation(
            engine,
            SimulationSpec(study="s", simulator_model="openai/fake-sim", n_per_condition=2, concurrency=4),
        )
        assert again.skipped == 2 * n and again.calls == 0 and len(srv.requests) == n_requests
        with Session(engine) as s:
            assert len(s.exec(select(SimulationRun)).all()) == 1


def test_one_process_per_run(sqlite_engine, monkeypatch):
    """On SQLite two processes on one run would restart each other's conversations: while the run's
    owner is alive a second start is refused in one line; a dead owner (killed) or one silent for
    long on another machine is taken over at once. (On PostgreSQL they share it: test_workers.py.)"""
    engine = sqlite_engine
    import socket
    import threading
    from datetime import timedelta

    n = _study(engine)
    with FakeLLMServer(responder=responder(3), latency=0.05) as srv:
        monkeypatch.setenv("OPENAI_BASE_URL", srv.openai_base_url)
        # two starts at the same moment (threads of one process count as two owners)
        results, errors = [], []

        def start():
            try:
                results.append(
                    run_simulation(
                        engine,
                        SimulationSpec(
                            study="s", simulator_model="openai/fake-sim", n_per_condition=2, concurrency=2
                        ),
                    )
                )
            except UserInputError as exc:
                errors.append(str(exc))

        threads = [threading.Thread(target=start) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(results) == 1 and len(errors) == 1, (results, errors)
        assert "already running in another process" in errors[0] or "just started" in errors[0]
        assert results[0].completed == 2 * n and results[0].failed == 0
        with Session(engine) as s:
            convs = s.exec(select(Conversation)).all()
            assert len(convs) == 2 * n and {c.status for c in convs} == {"completed"}
            run = s.exec(select(SimulationRun)).one()
            assert run.owner is None and run.status == "completed"  # released at the end
            for c in convs:
                idx = s.exec(
                    select(Turn.index).where(Turn.conversation_id == c.id).order_by(Turn.index)
                ).all()
                assert idx == list(range(len(idx)))

        def set_owner(owner, heartbeat):
            with Session(engine) as s:
                run = s.exec(select(SimulationRun)).one()
                run.owner, run.heartbeat_at, run.status = owner, heartbeat, "running"
                s.add(run)
                s.commit()

        here = socket.gethostname()
        alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        try:
            set_owner(f"{here}:{alive.pid}:abc", utcnow())
            with pytest.raises(
                UserInputError, match=f"already running in another process \\(pid {alive.pid}"
            ):
                run_simulation(
                    engine, SimulationSpec(study="s", simulator_model="openai/fake-sim", n_per_condition=2)
                )
        finally:
            alive.kill()
            alive.wait()
        # the owner is gone (killed): resumed at once, nothing left to do
        assert (
            run_simulation(
                engine, SimulationSpec(study="s", simulator_model="openai/fake-sim", n_per_condition=2)
            ).skipped
            == 2 * n
        )
        # another machine: its owner counts as alive until it has been silent for db.leases.SILENCE
        set_owner("elsewhere.example:123:abc", utcnow())
        with pytest.raises(UserInputError, match="pid 123 on elsewhere.example"):
            run_simulation(
                engine, SimulationSpec(study="s", simulator_model="openai/fake-sim", n_per_condition=2)
            )
        with Session(engine) as s:  # its turns are old too
            for t in s.exec(select(Turn)).all():
                t.created_at = utcnow() - timedelta(hours=1)
                s.add(t)
            s.commit()
        set_owner("elsewhere.example:123:abc", utcnow() - timedelta(minutes=30))
        assert (
            run_simulation(
                engine, SimulationSpec(study="s", simulator_model="openai/fake-sim", n_per_condition=2)
            ).skipped
            == 2 * n
        )


def test_budget_stop_and_failures(engine, monkeypatch, tmp_path):
    n = _study(engine)
    prices = tmp_path / "prices.yaml"
    prices.write_text("models:\n  openai/fake-*: {input: 100, output: 100}\n")
    with FakeLLMServer(responder=responder(2, fail_on="question 1")) as srv:
        monkeypatch.setenv("OPENAI_BASE_URL", srv.openai_base_url)
        opts = {"openai/fake-sim": FAST, "openai/fake-assistant": FAST}
        summ = run_simulation(
            engine,
            SimulationSpec(
                study="s",
                simulator_model="openai/fake-sim",
                concurrency=2,
                budget=0.5,
                prices_file=str(prices),
            ),
            model_options=opts,
        )
        assert summ.budget_stopped and summ.status == "budget_stopped"
        # the calls in flight never carry the run past its budget
        assert summ.completed + summ.failed < n and 0 < summ.cost_usd <= 0.5
        with Session(engine) as s:
            statuses = Counter(s.exec(select(Conversation.status)).all())
            stopped = s.exec(select(Conversation).where(Conversation.status == "stopped")).all()
        # a conversation cut off by the budget is marked as such, not left "in_progress"
        assert "in_progress" not in statuses and stopped
        assert {(c.end_reason, c.ended_by) for c in stopped} == {("budget", "system")}
        # failing assistant: conversations are stored as failed with the error, the batch goes on
        summ = run_simulation(
            engine,
            SimulationSpec(study="s", simulator_model="openai/fake-sim", concurrency=3),
            model_options=opts,
        )
        assert summ.failed == n and summ.completed == 0 and not summ.budget_stopped
        with Session(engine) as s:
            failed = s.exec(select(Conversation).where(Conversation.status == "failed")).all()
            assert (
                len(failed) == n and "500" in failed[0].error and "failed after 2 attempts" in failed[0].error
            )
            assert failed[0].end_reason == "error"
            assert s.exec(select(LLMCall).where(LLMCall.error.is_not(None))).first() is not None
        # the summary counts the failed calls it recorded (it said "0 calls": issue 15, item 10)
        assert summ.failed_calls >= n and summ.calls >= summ.failed_calls
        assert f"({summ.failed_calls} failed)" in "\n".join(summ.lines())


def test_resuming_a_labelled_stopped_conversation(engine, monkeypatch, tmp_path):
    """A conversation stopped by the budget is not labelled (unfinished); if it was labelled anyway
    (e.g. by an older version), resuming drops those labels with its turns instead of crashing on
    the label -> turn foreign key."""
    from annotation.codebook import load_codebook
    from annotation.labellers.llm import plan_labelling
    from annotation.store import LabelRecord, ensure_source, write_labels

    n = _study(engine)
    prices = tmp_path / "prices.yaml"
    prices.write_text("models:\n  openai/fake-*: {input: 100, output: 100}\n")
    with FakeLLMServer(responder=responder(2)) as srv:
        monkeypatch.setenv("OPENAI_BASE_URL", srv.openai_base_url)
        opts = {"openai/fake-sim": FAST, "openai/fake-assistant": FAST}
        assert run_simulation(
            engine,
            SimulationSpec(
                study="s",
                simulator_model="openai/fake-sim",
                concurrency=2,
                budget=0.5,
                prices_file=str(prices),
            ),
            model_options=opts,
        ).budget_stopped
        with Session(engine) as s:
            stopped = [
                c
                for c in s.exec(select(Conversation.id).where(Conversation.status == "stopped")).all()
                if s.exec(select(Turn.id).where(Turn.conversation_id == c)).first() is not None
            ]
            assert stopped  # a stopped conversation with turns
            first_turn = s.exec(select(func.min(Turn.index)).where(Turn.conversation_id == stopped[0])).one()
            src = ensure_source(s, "human:old", "human")
            write_labels(
                s,
                src,
                [
                    LabelRecord(
                        conversation_id=stopped[0],
                        dimension="hallucination",
                        value="no",
                        turn_index=first_turn,
                    ),
                    LabelRecord(conversation_id=stopped[0], dimension="politeness", value="Polite"),
                ],
            )
            s.commit()
            assert s.exec(select(Label.turn_id).where(Label.dimension == "hallucination")).one() is not None
        summ = run_simulation(
            engine,
            SimulationSpec(study="s", simulator_model="openai/fake-sim", concurrency=2),
            model_options=opts,
        )
        assert summ.failed == 0
        with Session(engine) as s:
            assert set(s.exec(select(Conversation.status)).all()) == {"completed"}
            assert s.exec(select(Label).where(Label.conversation_id == stopped[0])).all() == []
    # the LLM labeller leaves unfinished conversations alone
    with Session(engine) as s:
        c = s.get(Conversation, stopped[0])
        c.status = "stopped"
        s.add(c)
        s.commit()
    plan = plan_labelling(
        engine, "s", "openai/fake-labeller", load_codebook(), dimensions=["politeness"], samples=1
    )
    assert plan.conversations == n - 1


def test_twins_and_condition_selection(sqlite_engine, monkeypatch):
    eng = sqlite_engine
    _study(eng)
    with pytest.raises(UserInputError, match="no human conversations yet"):
        run_simulation(eng, SimulationSpec(study="s", simulator_model="scripted/sim", twin_of=["all"]))
    with Session(eng) as s:
        assert not s.exec(select(SimulationRun)).all()  # nothing half-made
        conds = s.exec(select(Condition).order_by(Condition.id)).all()
        cond3 = conds[3].id
        human = Conversation(
            study_id=conds[0].study_id,
            condition_id=conds[3].id,
            user_kind="human",
            status="completed",
            started_at=utcnow(),
        )
        s.add(human)
        s.commit()
        hid, key = human.id, conds[1].key
    with pytest.raises(UserInputError, match="no condition 'nope'"):
        run_simulation(eng, SimulationSpec(study="s", simulator_model="scripted/sim", conditions=["nope"]))
    with FakeLLMServer(responder=responder(2)) as srv:
        monkeypatch.setenv("OPENAI_BASE_URL", srv.openai_base_url)
        summ = run_simulation(
            eng,
            SimulationSpec(
                study="s", simulator_model="openai/fake-sim", twin_of=[str(hid)], n_per_condition=2
            ),
        )
        assert summ.completed == 2
        summ = run_simulation(
            eng,
            SimulationSpec(
                study="s", simulator_model="openai/fake-sim", conditions=[key], assistant_model="openai/other"
            ),
        )
        assert summ.completed == 1
        assert "other" in {r.body["model"] for r in srv.requests}
    with Session(eng) as s:
        twins = s.exec(select(Conversation).where(Conversation.twin_of_id == hid)).all()
        assert len(twins) == 2 and {t.condition_id for t in twins} == {cond3}
        assert {t.replicate for t in twins} == {0, 1}


def test_resume_after_sigkill(tmp_path):
    db = tmp_path / "kill.db"
    url = f"sqlite:///{db}"
    eng = make_engine(url)
    upgrade(eng)
    n = _study(eng, name="k")
    with FakeLLMServer(responder=responder(3), latency=0.05) as srv:
        env = {**os.environ, "WORKBENCH_DB_URL": url, "OPENAI_BASE_URL": srv.openai_base_url}
        cmd = [
            sys.executable,
            "-c",
            "from workbench.cli import main; main()",
            "simulate",
            "--study",
            "k",
            "--simulator-model",
            "openai/fake-sim",
            "--n-per-condition",
            "2",
            "--concurrency",
            "3",
        ]
        proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.time() + 60
        while time.time() < deadline and _counts(eng).get("completed", 0) < 3:
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        before = _counts(eng)
        assert 3 <= before.get("completed", 0) < 2 * n, before
        out = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        assert "complete" in out.stdout
    with Session(eng) as s:
        convs = s.exec(select(Conversation)).all()
        assert len(convs) == 2 * n and all(c.status == "completed" for c in convs)
        keys = [(c.condition_id, c.replicate) for c in convs]
        assert len(set(keys)) == len(keys)
        for c in convs:
            idx = s.exec(select(Turn.index).where(Turn.conversation_id == c.id).order_by(Turn.index)).all()
            assert idx == list(range(7))
    eng.dispose()


def test_cli_dry_run(use_db, monkeypatch, capsys):
    from workbench.cli import main

    eng = make_engine(use_db)
    upgrade(eng)
    _study(eng, assistant="openai/gpt-4o-mini")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    with pytest.raises(SystemExit) as ok:
        main(
            [
                "simulate",
                "--study",
                "s",
                "--simulator-model",
                "openai/gpt-4o-mini",
                "--dry-run",
                "--n-per-condition",
                "3",
            ]
        )
    assert ok.value.code in (0, None)
    out = capsys.readouterr().out
    assert "36 to run" in out and "projected cost: $" in out
    with pytest.raises(SystemExit) as exc:
        main(["simulate", "--study", "nope", "--dry-run", "--simulator-model", "scripted/x"])
    assert exc.value.code == 2
    eng.dispose()


def test_simulation_runs_survive_a_jsonl_round_trip(engine, tmp_path, monkeypatch):
    """export jsonl carries each agent conversation's run; import re-creates the run (parameters,
    status, the exported key) and links the conversations with their replicates; a re-import adds
    nothing, and an import into the same database under another name gets a run key of its own."""
    from workbench.dataio.export import export_study
    from workbench.dataio.jsonl import import_jsonl

    _study(engine, profiles=1)
    with FakeLLMServer(responder=responder(2)) as srv:
        monkeypatch.setenv("OPENAI_BASE_URL", srv.openai_base_url)
        summ = run_simulation(
            engine,
            SimulationSpec(study="s", simulator_model="openai/fake-sim", n_per_condition=2, max_turns=3),
        )
    with Session(engine) as s:
        run = s.exec(select(SimulationRun)).one()
        orig = {
            c.external_id or f"export:{c.id}": (c.replicate, s.get(Condition, c.condition_id).key)
            for c in s.exec(select(Conversation)).all()
        }
        run_key, run_params, run_status = run.key, run.params, run.status
    assert summ.completed == len(orig) and {r for r, _ in orig.values()} == {0, 1}
    out = tmp_path / "out"
    export_study(engine, "s", "jsonl", out)
    line = json.loads((out / "conversations.jsonl").read_text("utf-8").splitlines()[0])
    assert line["run"]["key"] == run_key and line["run"]["params"]["simulator_model"] == "openai/fake-sim"

    fresh = make_engine(f"sqlite:///{tmp_path / 'fresh.db'}")
    upgrade(fresh)
    rep = import_jsonl(fresh, out)
    assert rep.imported == len(orig) and not rep.warnings

    def runs_of(engine, study):
        with Session(engine) as s:
            from db.models import Study

            sid = s.exec(select(Study.id).where(Study.name == study)).one()
            runs = s.exec(select(SimulationRun).where(SimulationRun.study_id == sid)).all()
            convs = s.exec(select(Conversation).where(Conversation.study_id == sid)).all()
            got = {
                c.external_id: (c.replicate, s.get(Condition, c.condition_id).key, c.run_id) for c in convs
            }
            return runs, got

    runs, got = runs_of(fresh, "s")
    assert len(runs) == 1 and runs[0].key == run_key and runs[0].status == run_status
    assert runs[0].params == {**run_params, "imported_from": run_key}
    assert {e: (r, k) for e, (r, k, _) in got.items()} == orig and {i for *_, i in got.values()} == {
        runs[0].id
    }
    assert (
        import_jsonl(fresh, out).imported == 0 and len(runs_of(fresh, "s")[0]) == 1
    )  # re-import: nothing new
    fresh.dispose()

    rep = import_jsonl(engine, out, study="copy")  # same database, another study
    runs, got = runs_of(engine, "copy")
    assert rep.imported == len(orig) and len(runs) == 1 and runs[0].key != run_key
    assert runs[0].key.startswith(run_key[:20]) and runs[0].params["imported_from"] == run_key
    assert {i for *_, i in got.values()} == {runs[0].id}


def test_runs_table_flags_a_run_whose_process_stopped(engine):
    """A run left 'running' by a killed process shows as stopped: at once when its process is known to be
    gone, or (a run without a recorded owner) once no turn came for a while."""
    from datetime import timedelta

    from workbench.simulation.runs import STALE_MINUTES, simulation_runs_df

    _study(engine)
    with Session(engine) as s:
        cond = s.exec(select(Condition)).first()
        from db.models import SimulatorConfig

        sim = SimulatorConfig(model="openai/fake-sim", name="t", fingerprint="f" * 64)
        s.add(sim)
        s.flush()
        runs = []
        for age in (1, STALE_MINUTES + 20):
            run = SimulationRun(
                study_id=cond.study_id, key=f"k{age}", simulator_config_id=sim.id, params={}, status="running"
            )
            s.add(run)
            s.flush()
            conv = Conversation(
                study_id=cond.study_id,
                condition_id=cond.id,
                user_kind="agent",
                run_id=run.id,
                simulator_config_id=sim.id,
                status="in_progress",
                started_at=utcnow(),
            )
            s.add(conv)
            s.flush()
            s.add(
                Turn(
                    conversation_id=conv.id,
                    index=0,
                    role="user",
                    content="hi",
                    created_at=utcnow() - timedelta(minutes=age),
                )
            )
            runs.append(run)
        s.commit()
        df = simulation_runs_df(s, cond.study_id).set_index("run")
    assert df.loc["k1", "status"] == "running"
    stale = df.loc[f"k{STALE_MINUTES + 20}", "status"]
    assert "may have stopped" in stale and "start it again to resume" in stale
    assert list(df["in_progress"]) == [1, 1] and df["last_turn_at"].notna().all()

    # Runs that record their owner are judged by it, not by the age of their last turn.
    import socket
    import subprocess
    import sys

    here = socket.gethostname()
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    try:
        with Session(engine) as s:
            old, new = (
                s.exec(select(SimulationRun).where(SimulationRun.key == k)).one()
                for k in (f"k{STALE_MINUTES + 20}", "k1")
            )
            old.owner, new.owner = f"{here}:{alive.pid}:a", f"{here}:{dead.pid}:b"
            s.add_all([old, new])
            s.commit()
            df = simulation_runs_df(s, cond.study_id).set_index("run")
    finally:
        alive.kill()
        alive.wait()
    assert df.loc[f"k{STALE_MINUTES + 20}", "status"] == "running"  # slow, but its process is there
    assert df.loc[f"k{STALE_MINUTES + 20}", "process"] == f"pid {alive.pid} on {here}"
    gone = df.loc["k1", "status"]  # its last turn is a minute old, but its process is gone
    assert gone.startswith("stopped?") and f"pid {dead.pid}" in gone and "start it again to resume" in gone


def test_study_of_per_conversation_conditions_points_to_twins(sqlite_engine):
    """An imported study's conditions each belong to one conversation: the error says to simulate twins."""
    _study(sqlite_engine)
    with Session(sqlite_engine) as s:
        for c in s.exec(select(Condition)).all():
            c.key = c.key + "|imported"
            s.add(c)
        s.commit()
    with pytest.raises(UserInputError, match=r"no designed conditions to simulate.*--twin-of all"):
        run_simulation(sqlite_engine, SimulationSpec(study="s", simulator_model="scripted/sim"))


_cli = run_cli


@pytest.mark.parametrize(
    "extra,words",
    [
        (["--temperature", "5"], "temperature 5.0 is outside 0..2"),
        (["--rpm", "-5"], "--rpm must be at least 0 (0 = no limit)"),
        (["--tpm", "-1"], "--tpm must be at least 0 (0 = no limit)"),
        (["--budget", "-1"], "--budget must be at least 0"),
        (["--concurrency", "0"], "--concurrency must be at least 1"),
        (["--min-turns", "5", "--max-turns", "2"], "min turns (5) is greater than max turns (2)"),
        (["--min-turns", "50"], "min turns (50) is greater than max turns"),
        (["--max-turns", "0"], "max_turns must be at least 1"),
    ],
)
@pytest.mark.parametrize("dry", [[], ["--dry-run"]])
def test_cli_simulate_refuses_bad_options(extra, words, dry, sqlite_url, monkeypatch, capsys):
    monkeypatch.setenv("WORKBENCH_DB_URL", sqlite_url)
    eng = make_engine(sqlite_url)
    upgrade(eng)
    _study(eng, assistant="scripted/a")
    code, out, err = _cli(
        ["simulate", "--study", "s", "--simulator-model", "scripted/x", *extra, *dry], capsys
    )
    assert code == 2 and words in err and "Traceback" not in err, (out, err)
    assert len(err.strip().splitlines()) == 1
    with Session(eng) as s:
        assert s.exec(select(func.count()).select_from(SimulationRun)).one() == 0
        assert s.exec(select(func.count()).select_from(LLMCall)).one() == 0
    eng.dispose()


def test_cli_simulate_dry_run_checks_model_names(sqlite_url, monkeypatch, capsys):
    monkeypatch.setenv("WORKBENCH_DB_URL", sqlite_url)
    eng = make_engine(sqlite_url)
    upgrade(eng)
    _study(eng, assistant="scripted/a")
    for model, words in [("nosuch/x", "unknown model provider 'nosuch'"), ("gpt4", "provider/model")]:
        code, _, err = _cli(["simulate", "--study", "s", "--simulator-model", model, "--dry-run"], capsys)
        assert code == 2 and words in err, err
    code, _, err = _cli(
        [
            "simulate",
            "--study",
            "s",
            "--simulator-model",
            "scripted/x",
            "--assistant-model",
            "nosuch/y",
            "--dry-run",
        ],
        capsys,
    )
    assert code == 2 and "unknown model provider 'nosuch'" in err
    # No key here: a dry run still projects (that is its point) and says a real run needs one.
    code, out, err = _cli(
        ["simulate", "--study", "s", "--simulator-model", "openai/gpt-4o-mini", "--dry-run"], capsys
    )
    assert code == 0 and "projected calls" in out and "needs an API key" in err, (out, err)
    eng.dispose()


def test_cli_simulate_exit_status_when_everything_failed(sqlite_url, monkeypatch, capsys):
    monkeypatch.setenv("WORKBENCH_DB_URL", sqlite_url)
    eng = make_engine(sqlite_url)
    upgrade(eng)
    n = _study(eng)
    with FakeLLMServer(responder=responder(1)) as srv:
        monkeypatch.setenv("OPENAI_BASE_URL", srv.openai_base_url)
        srv.push_fault(status=404)  # not retried: one conversation fails, the others complete
        code, out, err = _cli(["simulate", "--study", "s", "--simulator-model", "openai/fake-sim"], capsys)
        assert code == 0, (out, err)
        assert f"{n - 1}/{n} complete (0 before this run), 1 failed" in out
        for _ in range(10 * n):
            srv.push_fault(status=404)
        code, out, err = _cli(
            ["simulate", "--study", "s", "--simulator-model", "openai/fake-sim", "--seed", "7"], capsys
        )
    assert code == 1, (out, err)
    assert f"0/{n} complete (0 before this run), {n} failed" in out
    assert f"Every conversation this run started failed ({n}); first error:" in err and "404" in err
    eng.dispose()


@pytest.mark.parametrize(
    "settings,words",
    [
        ({"n_per_condition": 0}, "n_per_condition must be at least 1"),
        ({"temperature": 3.0}, "temperature 3.0 is outside 0..2"),
        ({"max_turns": 0}, "max_turns must be at least 1"),
        ({"min_turns": 0}, "min_turns must be at least 1"),
        ({"min_turns": 5, "max_turns": 2}, "min turns (5) is greater than max turns (2)"),
        ({"concurrency": 0}, "concurrency must be at least 1"),
        ({"rpm": -1}, "rpm must be at least 0"),
        ({"tpm": -1}, "tpm must be at least 0"),
        ({"budget": -0.5}, "budget must be at least 0"),
        ({"simulator_model": "gpt4"}, "the simulator model is a provider/model name"),
        ({"n_per_condition": "many"}, "n_per_condition: Input should be a valid integer"),
        ({"concurency": 2}, "concurency: Extra inputs are not permitted"),
    ],
)
def test_spec_refuses_bad_settings_naming_the_setting(settings, words):
    from pydantic import ValidationError

    from workbench.simulation import spec_error

    with pytest.raises(ValidationError) as exc:
        SimulationSpec(**{"study": "s", "simulator_model": "openai/x", **settings})
    message = spec_error(exc.value)
    assert words in message and "--" not in message and "\n" not in message, message


def test_spec_is_frozen_and_its_key_is_its_identity():
    from pydantic import ValidationError

    spec = SimulationSpec(study="s", simulator_model="openai/x", conditions=[3, "b", "a"])
    assert spec.conditions == ("3", "b", "a")  # ids as text, as the run key has always hashed them
    with pytest.raises(ValidationError):
        spec.seed = 2
    key = spec.run_key(1, "f" * 64, None)
    # how the run is carried out is not part of its identity: a resume may change it
    same = spec.model_copy(update={"concurrency": 9, "budget": 1.0, "rpm": 5, "cache": False})
    assert same.run_key(1, "f" * 64, None) == key
    assert (
        SimulationSpec(study="s", simulator_model="openai/x", conditions=["a", "b", "3"]).run_key(
            1, "f" * 64, None
        )
        == key
    )
    assert spec.model_copy(update={"conditions": ("a",)}).run_key(1, "f" * 64, None) != key
    assert spec.run_key(1, "f" * 64, 7) != key and spec.run_key(2, "f" * 64, None) != key


def test_twins_of_unfinished_sessions_are_skipped_unless_asked(engine):
    """A one-message abandoned session got a full twin (issue 15, item 13): "twin of all" skips
    abandoned, screened-out and running sessions and says how many; include_unfinished twins them."""
    from db.models import Participant

    _study(engine, assistant="scripted/assistant")
    with Session(engine) as s:
        conds = s.exec(select(Condition).order_by(Condition.id)).all()
        study_id = conds[0].study_id
        out = Participant(study_id=study_id, pseudonym="p-out", status="screened_out")
        s.add(out)
        s.flush()
        for i, (status, person) in enumerate(
            [("completed", None), ("abandoned", None), ("in_progress", None), ("completed", out.id)]
        ):
            s.add(
                Conversation(
                    study_id=study_id,
                    condition_id=conds[i].id,
                    user_kind="human",
                    status=status,
                    participant_id=person,
                    started_at=utcnow(),
                )
            )
        s.commit()
        abandoned = s.exec(select(Conversation.id).where(Conversation.status == "abandoned")).one()
    plan = plan_simulation(engine, SimulationSpec(study="s", simulator_model="scripted/sim", twin_of=["all"]))
    assert plan.n_conversations == 1 and plan.twins_skipped == 3
    assert any("3 unfinished human sessions were not twinned" in line for line in plan.lines())
    summ = run_simulation(engine, SimulationSpec(study="s", simulator_model="scripted/sim", twin_of=["all"]))
    assert summ.total == 1 and summ.twins_skipped == 3
    everyone = SimulationSpec(
        study="s", simulator_model="scripted/sim", twin_of=["all"], include_unfinished=True
    )
    assert plan_simulation(engine, everyone).n_conversations == 4
    with pytest.raises(UserInputError, match=f"conversation {abandoned} is unfinished"):
        plan_simulation(
            engine, SimulationSpec(study="s", simulator_model="scripted/sim", twin_of=[abandoned])
        )
