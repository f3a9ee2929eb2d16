"""Benchmark of the analysis: features + statistics + report.

1. the imported reference dataset (3,980 conversations; target < 60 s), cold (features computed and
   stored) and warm (features from the store);
2. generated conversations (default 100,000; target < 10 min and < 4 GB; at 1,000,000 the target
   is < 20 min and < 4 GB), on SQLite (the generated file is cached, see ``_synthetic.py``) or
   PostgreSQL (``--db-url pg``: a throw-away cluster; or any URL).

Each measured phase runs in a fresh subprocess that reports its wall time, CPU time (its own and its
worker processes'), peak memory of it and its workers together (sampled), and the 1-minute load
average before and after (the machine is shared: CPU time is the steadier figure).

Usage:
    python benchmarks/bench_analysis.py                    # both parts
    python benchmarks/bench_analysis.py --part reference
    python benchmarks/bench_analysis.py --part synthetic --conversations 1000000 [--db-url pg]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _synthetic import DEFAULT_CACHE, generate, measured, synthetic_database  # noqa: E402


def _phase_analyze(url: str, study: str, out: str) -> dict:
    """Features + statistics + likeness + report of one study (run in a child process)."""
    from analysis.report import analyze, write_analysis, write_report
    from db.engine import make_engine

    engine = make_engine(url)
    t = time.perf_counter()
    say = lambda msg: print(f"    [{time.perf_counter() - t:7.1f} s] {msg}", file=sys.stderr, flush=True)  # noqa: E731
    result = analyze(engine, study, progress=say)
    write_analysis(result, Path(out))
    write_report(result, engine, Path(out) / "report.html")
    total = time.perf_counter() - t
    return {
        "total_s": round(total, 1),
        **{k: round(v, 1) for k, v in result.timings.items()},
        "report_s": round(total - sum(result.timings.values()), 1),
        "rows": len(result.comparisons),
        "report_mb": round((Path(out) / "report.html").stat().st_size / 1e6, 1),
    }


def _phase_import(url: str, path: str) -> dict:
    from db.engine import make_engine
    from db.migrate import upgrade
    from workbench.dataio.recllmsim import import_recllmsim

    engine = make_engine(url)
    upgrade(engine)
    t = time.perf_counter()
    import_recllmsim(engine, Path(path), study="recllmsim")
    return {"import_s": round(time.perf_counter() - t, 1)}


def _run(phase: str, *args: str) -> dict:
    """Run a phase in a child process; returns its figures plus wall time and peak memory."""
    t = time.perf_counter()
    # stderr (progress, errors) goes straight through; the figures come on stdout
    proc = subprocess.run(
        [sys.executable, __file__, "--phase", phase, *args], stdout=subprocess.PIPE, text=True, cwd=ROOT
    )
    wall = time.perf_counter() - t
    if proc.returncode:
        raise SystemExit(f"phase {phase} failed")
    figures = json.loads(proc.stdout.strip().splitlines()[-1])
    figures.update(wall_s=round(wall, 1), load_avg_1min=round(os.getloadavg()[0], 1))
    return figures


def bench_reference(tmp: Path) -> None:
    dataset = Path(os.environ.get("WORKBENCH_RECLLMSIM", ROOT.parent / "shared" / "datasets" / "recllmsim"))
    if not (dataset / "LLM_agent_user").is_dir():
        print(f"reference dataset not found at {dataset}: skipped")
        return
    url = f"sqlite:///{tmp / 'reference.db'}"
    print("reference: importing (not part of the target) ...", flush=True)
    print("  import:", _run("import", url, str(dataset)), flush=True)
    cold = _run("analyze", url, "recllmsim", str(tmp / "ref_out"))
    print(f"  cold (features computed): {cold}", flush=True)
    warm = _run("analyze", url, "recllmsim", str(tmp / "ref_out2"))
    print(f"  warm (features stored):   {warm}", flush=True)
    print(
        f"  target < 60 s: cold {'OK' if cold['wall_s'] < 60 else 'MISSED'}, "
        f"warm {'OK' if warm['wall_s'] < 60 else 'MISSED'}",
        flush=True,
    )


def bench_synthetic(tmp: Path, n: int, db_url: str | None, cache: Path) -> None:
    print(f"synthetic: {n:,} conversations (generating them is not part of the target) ...", flush=True)
    with synthetic_database(n, db_url, cache, _run) as url:
        res = _run("analyze", url, "bench", str(tmp / "syn_out"))
    print(f"  analyze + report: {res}", flush=True)
    target_s = 600 if n <= 100_000 else 1200
    print(
        f"  target < {target_s} s and < 4096 MB: time {'OK' if res['wall_s'] < target_s else 'MISSED'}, "
        f"memory {'OK' if res['peak_rss_mb'] < 4096 else 'MISSED'}",
        flush=True,
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--part", choices=["reference", "synthetic", "all"], default="all")
    ap.add_argument("--conversations", "--n", dest="n", type=int, default=100_000)
    ap.add_argument("--db-url", help="synthetic part: 'pg' (throw-away PostgreSQL) or a database URL")
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="where generated SQLite files are kept")
    ap.add_argument("--phase")
    ap.add_argument("args", nargs="*")
    a = ap.parse_args()
    if a.phase:
        fn = {
            "analyze": _phase_analyze,
            "import": _phase_import,
            "generate": lambda u, n: generate(u, int(n)),
        }
        figures: dict = {}
        with measured(figures):
            figures.update(fn[a.phase](*a.args))
        print(json.dumps(figures))
        return
    print(f"CPU cores: {os.cpu_count()}; python {sys.version.split()[0]}")
    with tempfile.TemporaryDirectory(prefix="bench_analysis_") as tmp:
        if a.part in ("reference", "all"):
            bench_reference(Path(tmp))
        if a.part in ("synthetic", "all"):
            bench_synthetic(Path(tmp), a.n, a.db_url, a.cache)


if __name__ == "__main__":
    main()
