"""Benchmark of the batch runner against a local OpenAI-compatible server answering after 200 ms.

Runs N conversations x 5 user turns at concurrency 16 (simulator and assistant both on the fake
server, which runs in its own process so its CPU is not counted), and prints wall time against the
ideal (calls x latency / concurrency), the workbench's CPU per call, and peak RSS at 32 and 128
conversations. Targets (issue 3): ratio <= 1.2, CPU < 5 ms per call, RSS not growing with N.

    python benchmarks/bench_simulate.py [--n 128] [--latency 0.2] [--concurrency 16] [--repeat 1]

What is measured, so the figures are honest:
- Each N runs in a fresh child process; timing starts after imports and database setup (the issue
  excludes interpreter start-up) and covers the whole ``run_simulation`` call: run setup, model
  clients, every call, LLMCall row and turn write, and closing the run.
- CPU is ``time.process_time()`` of the child: all its threads, user + system, and nothing of the
  fake server (another process) or of this parent.
- The fake server numbers every reply, so no two calls are identical and none is answered from the
  response cache (the cache lookup still runs for every call). The child checks afterwards that
  every call reached the server and is an LLMCall row with usage and latency, and every turn is stored.
"""

from __future__ import annotations

import argparse
import itertools
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


def serve(port: int, latency: float) -> None:
    """The fake server with a numbered reply per request (so the response cache never hits)."""
    from workbench.testing.fake_llm_server import FakeLLMServer

    counter = itertools.count(1)

    def responder(req) -> str:
        return f"Reply #{next(counter)} to: {req.last_user_text[:60]}"

    srv = FakeLLMServer(responder=responder, latency=latency, port=port).start()
    print(f"listening on {srv.url}", flush=True)
    try:
        while True:
            time.sleep(3600)
            srv.requests.clear()
    except KeyboardInterrupt:
        srv.stop()


def child(n: int, concurrency: int, latency: float, profile: str | None, transport: str) -> dict:
    import openai  # noqa: F401 - imported before timing: import time is start-up, not per-call work
    from sqlalchemy import func
    from sqlmodel import Session, select

    import workbench.llm.openai_provider  # noqa: F401

    try:
        import aiohttp  # noqa: F401
        import openai._vendor.httpx_aiohttp  # noqa: F401
    except ImportError:
        pass
    from db.engine import make_engine
    from db.migrate import upgrade
    from db.models import Condition, LLMCall, Turn
    from workbench.simulation import SimulationSpec, run_simulation
    from workbench.studies import create_study

    tmp = tempfile.mkdtemp()
    engine = make_engine(f"sqlite:///{tmp}/bench.db")
    upgrade(engine)
    with Session(engine) as s:
        create_study(
            s,
            "bench",
            "openai/bench-assistant",
            profiles=1,
            language="en",
            system_prompt="You are a helpful assistant.",
        )
        s.commit()
        keys = s.exec(select(Condition.key).order_by(Condition.id)).all()
    reps = 4
    assert len(keys) * reps >= n, f"only {len(keys)} conditions"
    chosen = keys[: n // reps]
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    prof = None
    if profile:
        import cProfile

        prof = cProfile.Profile()
        prof.enable()
    cpu0, main0, t0 = time.process_time(), time.thread_time(), time.perf_counter()
    # Plain-text replies never carry the end signal: every conversation runs exactly TURNS user
    # turns (2 calls each). The simulated user's ratings are off: the figures measure the runner's
    # own cost per call, comparable with the earlier ones.
    opts = {"http_transport": transport}
    summary = run_simulation(
        engine,
        SimulationSpec(
            study="bench",
            simulator_model="openai/bench-simulator",
            conditions=chosen,
            n_per_condition=reps,
            concurrency=concurrency,
            max_turns=TURNS,
            min_turns=1,
            ratings=False,
        ),
        model_options={"openai/bench-simulator": opts, "openai/bench-assistant": opts},
    )
    wall, cpu, main = time.perf_counter() - t0, time.process_time() - cpu0, time.thread_time() - main0
    if prof:
        prof.disable()
        prof.dump_stats(profile)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert summary.completed == n, summary.lines()
    calls = summary.calls
    assert calls == n * TURNS * 2, (calls, n)
    with Session(engine) as s:
        rows = tuple(
            s.exec(
                select(
                    func.count(),
                    func.count().filter(LLMCall.cache_hit.is_(True)),
                    func.count(LLMCall.prompt_tokens),
                    func.count(LLMCall.latency_ms),
                ).select_from(LLMCall)
            ).one()
        )
        n_turns = s.exec(select(func.count()).select_from(Turn)).one()
        call_ms = s.exec(select(func.avg(LLMCall.latency_ms))).one()
    assert rows == (calls, 0, calls, calls), f"LLMCall rows/cache hits/usage/latency: {rows}, calls {calls}"
    assert n_turns == calls, (n_turns, calls)
    ideal = calls * latency / concurrency
    from workbench.llm import get_model

    used = "aiohttp" if get_model("openai/bench-simulator", **opts)._use_aiohttp() else "httpx"
    return {
        "n": n,
        "transport": used,
        "calls": calls,
        "wall_s": wall,
        "ideal_s": ideal,
        "ratio": wall / ideal,
        "cpu_ms_per_call": cpu * 1000 / calls,
        "main_thread_ms_per_call": main * 1000 / calls,
        "peak_rss_mb": rss / 1024,
        "call_ms": call_ms,
        "rss_before_run_mb": rss0 / 1024,
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=128)
    ap.add_argument("--latency", type=float, default=0.2)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--repeat", type=int, default=1, help="runs per N (each in a fresh process)")
    ap.add_argument(
        "--transport",
        choices=["auto", "httpx", "aiohttp"],
        default="auto",
        help="async HTTP transport of the openai SDK (auto: aiohttp when installed)",
    )
    ap.add_argument("--profile", help="write a cProfile of the largest run (main thread) to this path")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        serve(args.serve, args.latency)
        return
    if args.child:
        print(json.dumps(child(args.n, args.concurrency, args.latency, args.profile, args.transport)))
        return
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(port), "--latency", str(args.latency)],
        cwd=REPO,
        stdout=subprocess.PIPE,
    )
    server.stdout.readline()  # wait until it listens
    env = {
        **os.environ,
        "OPENAI_BASE_URL": f"http://127.0.0.1:{port}/v1",
        "OPENAI_API_KEY": "bench",
        "WORKBENCH_PRICES": "",
        "WORKBENCH_LLM_CACHE": "1",
    }
    results = []
    sizes = sorted({32, args.n})
    try:
        for _ in range(args.repeat):
            for n in sizes:
                cmd = [
                    sys.executable,
                    __file__,
                    "--child",
                    "--n",
                    str(n),
                    "--latency",
                    str(args.latency),
                    "--concurrency",
                    str(args.concurrency),
                    "--transport",
                    args.transport,
                ]
                if args.profile and n == sizes[-1]:
                    cmd += ["--profile", args.profile]
                out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
                if out.returncode:
                    sys.exit(out.stderr)
                results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    finally:
        server.terminate()
        server.wait()
    print(
        f"fake server latency {args.latency}s, concurrency {args.concurrency}, {TURNS} user turns per "
        f"conversation; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    )
    for r in results:
        print(
            f"{r['n']:>4} conversations ({r['transport']}): {r['calls']} calls, wall {r['wall_s']:.2f}s "
            f"vs ideal {r['ideal_s']:.2f}s -> ratio {r['ratio']:.3f} (target <= 1.2); "
            f"CPU {r['cpu_ms_per_call']:.2f} ms/call (target < 5; "
            f"{r['main_thread_ms_per_call']:.2f} in the event loop thread); "
            f"peak RSS {r['peak_rss_mb']:.0f} MB (before run {r['rss_before_run_mb']:.0f} MB); "
            f"mean HTTP call {r['call_ms']:.0f} ms"
        )
    for i in range(0, len(results) - 1, len(sizes)):
        a, b = results[i], results[i + len(sizes) - 1]
        if a is not b:
            print(
                f"peak RSS growth {a['n']} -> {b['n']} conversations: "
                f"{b['peak_rss_mb'] - a['peak_rss_mb']:+.1f} MB"
            )


if __name__ == "__main__":
    main()
