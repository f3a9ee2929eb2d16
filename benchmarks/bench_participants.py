"""Load test of the participant flow: N simultaneous participant sessions on one database.

Each thread plays one participant through the app's own core code paths (the functions the
Streamlit pages call): consent, profile, two tasks of several turns with streamed assistant
replies from the fake OpenAI-compatible server (through the real openai SDK and the recorded
model, so LLMCall rows are written too), ratings, questionnaires. Prints lost turns, "database
is locked" errors and the time to persist a turn (median, p95, max); the target is p95 < 50 ms.

    python benchmarks/bench_participants.py --participants 50 --turns 4
    python benchmarks/bench_participants.py --participants 500 --db-url postgresql://user:pw@127.0.0.1:5432/db

The benchmark makes a study of its own (``bench-<random>``) and counts only its own participants and
turns, so it may run against a database that holds other studies. Its last line is machine-readable:
``participants=N turns=T lost=L errors=E p50_ms=.. p95_ms=..``.
    python benchmarks/bench_participants.py --think 0 --latency 0.2   # stress: no human pauses
"""

from __future__ import annotations

import argparse
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import func  # noqa: E402
from sqlalchemy.exc import OperationalError  # noqa: E402
from sqlmodel import Session, select  # noqa: E402

from db.engine import make_engine, session_scope  # noqa: E402
from db.migrate import upgrade  # noqa: E402
from db.models import Conversation, Participant, Turn  # noqa: E402
from tests.participation_helpers import POST_TASK, make_study, profile_answers  # noqa: E402
from workbench import participation as P  # noqa: E402


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for_port(port: int, timeout: float = 20) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"the fake LLM server did not start on port {port}")


def play(url: str, tokens: list[str], args: argparse.Namespace) -> dict:
    """Play these participants, one thread each, in this process; returns the timings and errors."""
    engine = make_engine(url, **({"pool_size": args.pool_size} if args.pool_size else {}))
    persist_ms: list[float] = []
    kinds: dict[str, list[float]] = {"user turn": [], "assistant turn": [], "rating": []}
    locked: list[str] = []
    errors: list[str] = []
    lock = threading.Lock()
    answers = profile_answers()

    def step(fn, *a):
        """One page action: a transaction on the participant, timed from start to commit."""
        if args.think:
            time.sleep(random.expovariate(1 / args.think))
        t0 = time.perf_counter()
        with session_scope(engine) as s:
            fn(s, s.get(Participant, pid_of[threading.get_ident()]), *a)
        return (time.perf_counter() - t0) * 1000

    pid_of: dict[int, int] = {}

    def participant(token: str) -> None:
        try:
            with session_scope(engine) as s:
                p = P.open_participant(s, token)
                pid_of[threading.get_ident()] = pid = p.id
            step(P.give_consent, True)
            step(P.finish_instructions)
            step(P.submit_profile, answers)
            for _task in range(args.tasks):
                for turn in range(args.turns):
                    ms = step(P.send_message, f"message {turn}")
                    with lock:
                        persist_ms.append(ms)
                        kinds["user turn"].append(ms)
                    for _piece in P.stream_reply(engine, pid):
                        pass
                    with lock:  # the assistant turn's write, timed by timed_scope below
                        persist_ms.append(reply_persist[threading.get_ident()])
                        kinds["assistant turn"].append(reply_persist.pop(threading.get_ident()))
                    with session_scope(engine) as s:
                        p = s.get(Participant, pid)
                        view = P.participant_view(s, p)
                        idx = view.task.unrated_index
                    ms = step(P.rate_reply, idx, "no", 4, "ok")
                    with lock:
                        persist_ms.append(ms)
                        kinds["rating"].append(ms)
                step(P.finish_task)
                step(P.submit_post_task, POST_TASK, "blue")
        except OperationalError as exc:
            with lock:
                (locked if "locked" in str(exc) else errors).append(str(exc)[:200])
        except Exception as exc:  # reported, never hidden
            with lock:
                errors.append(f"{exc.__class__.__name__}: {exc}"[:300])

    # Time the assistant turn's write inside stream_reply: from the last piece to the commit.
    reply_persist: dict[int, float] = {}
    original = P.chat.session_scope

    from contextlib import contextmanager

    @contextmanager
    def timed_scope(eng=None):
        t0 = time.perf_counter()
        with original(eng) as s:
            yield s
        reply_persist[threading.get_ident()] = (time.perf_counter() - t0) * 1000

    P.chat.session_scope = timed_scope

    threads = [threading.Thread(target=participant, args=(t,)) for t in tokens]
    cpu0 = time.process_time()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    engine.dispose()
    return {
        "persist_ms": persist_ms,
        "kinds": kinds,
        "locked": locked,
        "errors": errors,
        "cpu_s": time.process_time() - cpu0,
    }


def _play_child(job: tuple) -> dict:
    url, tokens, args, base_url = job
    os.environ["OPENAI_BASE_URL"] = base_url
    os.environ.setdefault("OPENAI_API_KEY", "sk-bench")
    return play(url, tokens, args)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--participants", type=int, default=50)
    ap.add_argument("--turns", type=int, default=4, help="user turns per task")
    ap.add_argument("--tasks", type=int, default=2)
    ap.add_argument("--latency", type=float, default=1.0, help="fake LLM latency per reply (s)")
    ap.add_argument(
        "--think",
        type=float,
        default=1.0,
        help="mean seconds a participant takes before each action (reading, typing); 0 = stress test",
    )
    ap.add_argument("--db", default=None, help="SQLite file (default: a temporary one)")
    ap.add_argument("--db-url", default=None, help="database URL (SQLite or PostgreSQL); overrides --db")
    ap.add_argument("--pool-size", type=int, default=None, help="connection pool size (PostgreSQL)")
    ap.add_argument(
        "--processes",
        type=int,
        default=1,
        help="split the participants over this many processes (as over several app servers)",
    )
    args = ap.parse_args()

    url = args.db_url or f"sqlite:///{args.db or Path(tempfile.mkdtemp()) / 'bench.db'}"
    engine = make_engine(url, **({"pool_size": args.pool_size} if args.pool_size else {}))
    upgrade(engine)
    study_name = f"bench-{random.randrange(16**8):08x}"
    with session_scope(engine) as s:
        study = make_study(
            s,
            name=study_name,
            model="openai/fake",
            contexts=5,
            scenarios=("travel_planning", "recipe_planning", "preparing_gifts", "skills_learning_planning"),
            settings={"tasks_per_participant": args.tasks, "min_turns": 1, "max_turns": args.turns},
        )
        tokens = P.create_invites(s, study_name, args.participants)
        study_id = study.id

    # The fake LLM runs in its own process, as a real provider would be elsewhere: in this process
    # it would compete with the participants' threads for the interpreter lock.
    port = _free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "workbench.testing.fake_llm_server",
            "--port",
            str(port),
            "--latency",
            str(args.latency),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _wait_for_port(port)
    os.environ["OPENAI_BASE_URL"] = f"http://127.0.0.1:{port}/v1"
    os.environ.setdefault("OPENAI_API_KEY", "sk-bench")

    t0 = time.perf_counter()
    if args.processes > 1:  # like several app servers: each process its own interpreter lock and pool
        import multiprocessing

        chunks = [tokens[i :: args.processes] for i in range(args.processes)]
        jobs = [(url, chunk, args, os.environ["OPENAI_BASE_URL"]) for chunk in chunks]
        with multiprocessing.get_context("spawn").Pool(args.processes) as pool:
            parts = pool.map(_play_child, jobs)
    else:
        parts = [play(url, tokens, args)]
    wall = time.perf_counter() - t0
    persist_ms = [ms for part in parts for ms in part["persist_ms"]]
    kinds = {k: [ms for part in parts for ms in part["kinds"][k]] for k in parts[0]["kinds"]}
    locked = [e for part in parts for e in part["locked"]]
    errors = [e for part in parts for e in part["errors"]]
    cpu_s = sum(part["cpu_s"] for part in parts)
    server.terminate()
    server.wait(10)

    expected = args.participants * args.tasks * args.turns * 2
    with Session(engine) as s:  # this run's participants only: the database may hold other studies
        stored = s.exec(
            select(func.count(Turn.id))
            .join(Conversation, Conversation.id == Turn.conversation_id)
            .where(Conversation.study_id == study_id)
        ).one()
        done = s.exec(
            select(func.count(Participant.id)).where(
                Participant.study_id == study_id, Participant.status == "completed"
            )
        ).one()
    persist_ms.sort()
    p95 = persist_ms[int(0.95 * (len(persist_ms) - 1))] if persist_ms else float("nan")
    print(
        f"participants: {args.participants} simultaneous, {args.tasks} tasks x {args.turns} turns, "
        f"fake LLM latency {args.latency}s, think time {args.think}s, {engine.url.render_as_string()}"
    )
    print(
        f"wall time: {wall:.1f} s; participants completed: {done}/{args.participants}; "
        f"CPU of the participant processes: {cpu_s:.1f} s in {args.processes} process(es)"
    )
    print(f"turns expected: {expected}, stored: {stored}, lost: {expected - stored}")
    print(f"'database is locked' errors: {len(locked)}; other errors: {len(errors)}")
    for e in (locked + errors)[:5]:
        print("  ", e)
    print(
        f"time to persist a turn or rating (ms): n={len(persist_ms)} median={statistics.median(persist_ms):.1f} "
        f"p95={p95:.1f} max={persist_ms[-1]:.1f} (target p95 < 50 ms)"
    )
    for kind, values in kinds.items():
        values.sort()
        if values:
            print(
                f"  {kind}: n={len(values)} median={statistics.median(values):.1f} "
                f"p95={values[int(0.95 * (len(values) - 1))]:.1f}"
            )
    p50 = statistics.median(persist_ms) if persist_ms else float("nan")
    print(
        f"participants={args.participants} turns={stored} lost={expected - stored} "
        f"errors={len(locked) + len(errors)} p50_ms={p50:.1f} p95_ms={p95:.1f}"
    )


if __name__ == "__main__":
    main()
