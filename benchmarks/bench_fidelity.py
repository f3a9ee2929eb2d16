"""Benchmark of the label-free fidelity suite (``workbench likeness`` without a judge).

1. the imported reference dataset (3,980 conversations; target < 30 s);
2. generated conversations (default 100,000; target < 10 min and < 3 GB).

Features are computed and stored first (``load_study``, the "features" phase, reported apart: the
analysis computes them once per feature version); the "likeness" phase is what the command does
afterwards: load the study, the label-based distances, every fidelity metric with 20 ceiling splits
and the intervals, and the files. Each phase runs in a fresh subprocess reporting its wall time, CPU
time and peak memory (its worker processes included) and the load average before and after.

Usage:
    python benchmarks/bench_fidelity.py                       # both parts
    python benchmarks/bench_fidelity.py --part reference [--db sqlite:///ref.db]   # reuse an import
    python benchmarks/bench_fidelity.py --part synthetic --conversations 100000 [--db-url pg]
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


def _phase_features(url: str, study: str) -> dict:
    from analysis.dataset import load_study
    from db.engine import make_engine

    t = time.perf_counter()
    load_study(make_engine(url), study)
    return {"features_s": round(time.perf_counter() - t, 1)}


def _phase_likeness(url: str, study: str, out: str) -> dict:
    from analysis.dataset import load_study
    from analysis.fidelity import study_fidelity, write_fidelity
    from analysis.likeness import likeness_tables
    from db.engine import make_engine

    engine = make_engine(url)
    t = time.perf_counter()
    data = load_study(engine, study)
    load = time.perf_counter() - t
    like = likeness_tables(data, n_boot=200) if data.dimensions else None
    labels = time.perf_counter() - t - load
    tables = study_fidelity(engine, data, splits=20, n_boot=200, likeness=like)
    write_fidelity(tables, Path(out))
    total = time.perf_counter() - t
    rec = tables["records"]
    return {
        "total_s": round(total, 1),
        "load_s": round(load, 1),
        "label_distances_s": round(labels, 1),
        "fidelity_s": round(total - load - labels, 1),
        "records": len(rec),
        "usi_d": rec.loc[rec["metric"] == "usi_d", "value"].round(3).tolist(),
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
    t = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, __file__, "--phase", phase, *args], capture_output=True, text=True, cwd=ROOT
    )
    if proc.returncode:
        sys.stderr.write(proc.stderr[-4000:])
        raise SystemExit(f"phase {phase} failed")
    figures = json.loads(proc.stdout.strip().splitlines()[-1])
    figures.update(wall_s=round(time.perf_counter() - t, 1), load_avg_1min=round(os.getloadavg()[0], 1))
    return figures


def bench(url: str, study: str, out: Path, target_s: float, target_mb: float) -> None:
    print("  features:", _run("features", url, study), flush=True)
    res = _run("likeness", url, study, str(out))
    print("  likeness:", res, flush=True)
    ok = lambda c: "OK" if c else "MISSED"  # noqa: E731
    print(
        f"  target < {target_s:.0f} s and < {target_mb:.0f} MB: time {ok(res['total_s'] < target_s)}, "
        f"memory {ok(res['peak_rss_mb'] < target_mb)}",
        flush=True,
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--part", choices=["reference", "synthetic", "all"], default="all")
    ap.add_argument("--conversations", "--n", dest="n", type=int, default=100_000)
    ap.add_argument("--db-url", help="synthetic part: 'pg' (throw-away PostgreSQL) or a database URL")
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="where generated SQLite files are kept")
    ap.add_argument("--db", help="reuse this database URL (reference: already imported as recllmsim)")
    ap.add_argument("--phase")
    ap.add_argument("args", nargs="*")
    a = ap.parse_args()
    if a.phase:
        fn = {
            "features": _phase_features,
            "likeness": _phase_likeness,
            "import": _phase_import,
            "generate": lambda u, n: generate(u, int(n)),
        }
        figures: dict = {}
        with measured(figures):
            figures.update(fn[a.phase](*a.args))
        print(json.dumps(figures))
        return
    print(f"CPU cores: {os.cpu_count()}; python {sys.version.split()[0]}")
    with tempfile.TemporaryDirectory(prefix="bench_fidelity_") as tmp:
        tmp = Path(tmp)
        if a.part in ("reference", "all"):
            dataset = Path(
                os.environ.get("WORKBENCH_RECLLMSIM", ROOT.parent / "shared" / "datasets" / "recllmsim")
            )
            url = a.db or f"sqlite:///{tmp / 'reference.db'}"
            if not a.db:
                print("reference: importing (not part of the target) ...", _run("import", url, str(dataset)))
            bench(url, "recllmsim", tmp / "ref", 30, 3072)
        if a.part in ("synthetic", "all"):
            print(f"synthetic: {a.n:,} conversations (generating them is not part of the target) ...")
            with synthetic_database(a.n, a.db_url, a.cache, _run) as url:
                bench(url, "bench", tmp / "syn", 600, 3072)


if __name__ == "__main__":
    main()
