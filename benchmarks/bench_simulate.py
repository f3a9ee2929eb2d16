"""Benchmark of the batch runner against a local OpenAI-compatible server answering after 200 ms.

Runs N conversations x 5 user turns at concurrency 16 (simulator and assistant both on the fake
server, which runs in its own process so its CPU is not counted), and prints wall time against the
ideal (calls x latency / concurrency), the workbench's CPU per call, and peak RSS at 32 and 128
conversations. Targets (issue 3): ratio <= 1.2, CPU < 5 ms per call, RSS not growing with N.

    python benchmarks/bench_simulate.py [--n 128] [--latency 0.2] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TURNS = 5


def child(n: int, concurrency: int, latency: float) -> dict:
    from sqlmodel import Session, select

    from db.engine import make_engine
    from db.migrate import upgrade
    from db.models import Condition
    from workbench.simulation.runner import run_simulation
    from workbench.studies import create_study

    tmp = tempfile.mkdtemp()
    engine = make_engine(f"sqlite:///{tmp}/bench.db")
    upgrade(engine)
    with Session(engine) as s:
        create_study(s, "bench", "openai/bench-assistant", profiles=1, language="en",
                     system_prompt="You are a helpful assistant.")
        s.commit()
        keys = s.exec(select(Condition.key).order_by(Condition.id)).all()
    reps = 4
    assert len(keys) * reps >= n, f"only {len(keys)} conditions"
    chosen = keys[: n // reps]
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    cpu0, t0 = time.process_time(), time.perf_counter()
    # The fake server's default reply is plain text, so the simulated user never ends: every
    # conversation runs exactly TURNS user turns (2 calls each).
    summary = run_simulation(engine, "bench", "openai/bench-simulator", conditions=chosen, n_per_condition=reps,
                             concurrency=concurrency, max_turns=TURNS, min_turns=1)
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert summary.completed == n, summary.lines()
    calls = summary.calls
    ideal = calls * latency / concurrency
    return {"n": n, "calls": calls, "wall_s": wall, "ideal_s": ideal, "ratio": wall / ideal,
            "cpu_ms_per_call": cpu * 1000 / calls, "peak_rss_mb": rss / 1024, "rss_before_run_mb": rss0 / 1024}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=128)
    ap.add_argument("--latency", type=float, default=0.2)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.n, args.concurrency, args.latency)))
        return
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "workbench.testing.fake_llm_server", "--port", str(port),
                               "--latency", str(args.latency)], cwd=REPO, stdout=subprocess.PIPE)
    server.stdout.readline()  # wait until it listens
    env = {**os.environ, "OPENAI_BASE_URL": f"http://127.0.0.1:{port}/v1", "OPENAI_API_KEY": "bench",
           "WORKBENCH_PRICES": ""}
    results = []
    try:
        for n in sorted({32, args.n}):
            out = subprocess.run([sys.executable, __file__, "--child", "--n", str(n), "--latency", str(args.latency),
                                  "--concurrency", str(args.concurrency)], cwd=REPO, env=env,
                                 capture_output=True, text=True)
            if out.returncode:
                sys.exit(out.stderr)
            results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    finally:
        server.terminate()
        server.wait()
    print(f"fake server latency {args.latency}s, concurrency {args.concurrency}, {TURNS} user turns per conversation")
    for r in results:
        print(f"{r['n']:>4} conversations: {r['calls']} calls, wall {r['wall_s']:.2f}s vs ideal {r['ideal_s']:.2f}s "
              f"-> ratio {r['ratio']:.3f} (target <= 1.2); CPU {r['cpu_ms_per_call']:.2f} ms/call (target < 5); "
              f"peak RSS {r['peak_rss_mb']:.0f} MB (before run {r['rss_before_run_mb']:.0f} MB)")
    if len(results) == 2:
        print(f"peak RSS growth 32 -> {results[1]['n']} conversations: "
              f"{results[1]['peak_rss_mb'] - results[0]['peak_rss_mb']:+.1f} MB")


if __name__ == "__main__":
    main()
