"""Benchmark: one simulation run worked on by one and by two worker processes (PostgreSQL).

Each worker is `workbench simulate` with the same per-worker --concurrency cap, against the fake
OpenAI-compatible server (`python -m workbench.testing.fake_llm_server --latency ...`, its own
process) on a throw-away PostgreSQL cluster (tests/pg.py; or WORKBENCH_TEST_PG_URL). The run is
latency-bound, so with the cap a second worker should about halve the wall time. Prints both wall
times (whole processes, start-up included) and the ratio. Issue 17's target: about 0.5.

    python benchmarks/bench_workers.py [--n 4] [--turns 3] [--latency 0.2] [--concurrency 4]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def _study(url: str, name: str) -> None:
    from sqlmodel import Session

    from db.engine import make_engine
    from db.migrate import upgrade
    from workbench.studies import create_study

    eng = make_engine(url)
    upgrade(eng)
    with Session(eng) as s:
        create_study(
            s, name, "openai/fake-assistant", scenarios=["travel_planning"], profiles=1, language="en"
        )
        s.commit()
    eng.dispose()


def _workers(url: str, base_url: str, name: str, k: int, args) -> tuple[float, int]:
    """Wall seconds of ``k`` worker processes on one run, started together, until the last ends,
    and the run's number of conversations."""
    env = {**os.environ, "WORKBENCH_DB_URL": url, "OPENAI_BASE_URL": base_url, "OPENAI_API_KEY": "sk-fake"}
    cmd = [sys.executable, "-m", "workbench.cli", "simulate", "--study", name]
    cmd += ["--simulator-model", "openai/fake-sim", "--n-per-condition", str(args.n), "--no-cache"]
    cmd += ["--no-ratings"]  # 2 calls per turn, as the figures in the README
    cmd += [
        "--concurrency",
        str(args.concurrency),
        "--min-turns",
        str(args.turns),
        "--max-turns",
        str(args.turns),
    ]
    t0 = time.monotonic()
    procs = [
        subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        for _ in range(k)
    ]
    outs = [p.communicate()[0] for p in procs]
    seconds = time.monotonic() - t0
    if any(p.returncode for p in procs):
        raise SystemExit(f"a worker failed:\n{outs}")
    return seconds, int(re.search(r"\d+/(\d+) complete", outs[0]).group(1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=4, help="conversations per condition (the study has 12)")
    ap.add_argument("--turns", type=int, default=3, help="user turns per conversation")
    ap.add_argument("--latency", type=float, default=0.2, help="seconds before every fake reply")
    ap.add_argument("--concurrency", type=int, default=4, help="conversations in flight per worker")
    args = ap.parse_args()
    from tests.pg import ThrowawayCluster

    cluster = ThrowawayCluster()
    cluster.start()
    port = _free_port()
    fake = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "workbench.testing.fake_llm_server",
            "--port",
            str(port),
            "--latency",
            str(args.latency),
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    fake.stdout.readline()  # listening
    base = f"http://127.0.0.1:{port}/v1"
    try:
        times = {}
        for k in (1, 2):
            url = cluster.create_database()
            _study(url, f"bench{k}")
            times[k], n_conv = _workers(url, base, f"bench{k}", k, args)
        calls = n_conv * args.turns * 2
        ideal = calls * args.latency / args.concurrency
        print(
            f"{n_conv} conversations x {args.turns} turns ({calls} calls, {args.latency}s each), "
            f"--concurrency {args.concurrency} per worker"
        )
        print(f"one worker:  {times[1]:.1f} s (ideal {ideal:.1f} s)")
        print(f"two workers: {times[2]:.1f} s (ideal {ideal / 2:.1f} s)")
        print(f"ratio two/one: {times[2] / times[1]:.2f} (target about 0.5)")
    finally:
        fake.terminate()
        fake.wait()
        cluster.stop()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


if __name__ == "__main__":
    main()
