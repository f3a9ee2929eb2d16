"""Benchmark of the label-free fidelity suite (``workbench likeness`` without a judge).

1. the imported reference dataset (3,980 conversations; target < 30 s);
2. generated conversations (default 100,000; target < 10 min and < 3 GB).

Features are computed and stored first (``load_study``, the "features" phase, reported apart: the
analysis computes them once per feature version); the "likeness" phase is what the command does
afterwards: load the study, the label-based distances, every fidelity metric with 20 ceiling splits
and the intervals, and the files. Each phase runs in a fresh subprocess reporting its peak memory.

Usage:
    python benchmarks/bench_fidelity.py                       # both parts
    python benchmarks/bench_fidelity.py --part reference [--db sqlite:///ref.db]   # reuse an import
    python benchmarks/bench_fidelity.py --part synthetic --n 100000
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


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


def _phase_generate(url: str, n: int) -> dict:
    from analysis.synthetic import make_study
    from db.engine import make_engine
    from db.migrate import upgrade

    engine = make_engine(url)
    upgrade(engine)
    t = time.perf_counter()
    make_study(
        engine, "bench", n_human=n // 2, n_agent=n - n // 2, n_participants=max(2, n // 50), simulators=3
    )
    return {"generate_s": round(time.perf_counter() - t, 1)}


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
        f"memory {ok(res['max_rss_mb'] < target_mb)}",
        flush=True,
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--part", choices=["reference", "synthetic", "all"], default="all")
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--db", help="reuse this database URL (reference: already imported as recllmsim)")
    ap.add_argument("--phase")
    ap.add_argument("args", nargs="*")
    a = ap.parse_args()
    if a.phase:
        fn = {
            "features": _phase_features,
            "likeness": _phase_likeness,
            "import": _phase_import,
            "generate": lambda u, n: _phase_generate(u, int(n)),
        }
        figures = fn[a.phase](*a.args)
        ru = resource.getrusage(resource.RUSAGE_SELF)
        figures.update(max_rss_mb=round(ru.ru_maxrss / 1024), cpu_s=round(ru.ru_utime + ru.ru_stime, 1))
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
            url = f"sqlite:///{tmp / 'synthetic.db'}"
            print(
                f"synthetic: generating {a.n} conversations ...", _run("generate", url, str(a.n)), flush=True
            )
            bench(url, "bench", tmp / "syn", 600, 3072)


if __name__ == "__main__":
    main()
