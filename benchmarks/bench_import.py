"""Time the import of the whole released RecLLMSim dataset into a fresh SQLite file.

Usage: python benchmarks/bench_import.py [DATASET_ROOT] [--db-url URL] [--reimport]
Target (issue 2): under 60 s on a 2-core machine. Prints the time and the counts.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from db.engine import make_engine
from db.migrate import upgrade
from workbench.dataio.recllmsim import import_recllmsim

DEFAULT = Path(
    os.environ.get(
        "WORKBENCH_RECLLMSIM", Path(__file__).resolve().parents[2] / "shared" / "datasets" / "recllmsim"
    )
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("path", nargs="?", default=str(DEFAULT), help="dataset root")
    ap.add_argument(
        "--db-url", default=None, help="database URL (default: a fresh SQLite file in a temp dir)"
    )
    ap.add_argument("--reimport", action="store_true", help="also time a second (no-op) import")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = args.db_url or f"sqlite:///{Path(tmp) / 'bench.db'}"
        engine = make_engine(url)
        upgrade(engine)
        t0 = time.perf_counter()
        rep = import_recllmsim(engine, args.path, study="recllmsim")
        dt = time.perf_counter() - t0
        print(rep.summary())
        print(
            f"import: {dt:.1f} s for {rep.files} files on {engine.url.get_backend_name()} "
            f"({os.cpu_count()} CPUs) -- target < 60 s: {'OK' if dt < 60 else 'TOO SLOW'}"
        )
        if args.reimport:
            t0 = time.perf_counter()
            again = import_recllmsim(engine, args.path, study="recllmsim")
            print(
                f"re-import: {time.perf_counter() - t0:.1f} s, {again.imported} new, {again.existing} already present"
            )
        engine.dispose()


if __name__ == "__main__":
    main()
