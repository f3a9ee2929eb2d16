"""Trained and rule-based labellers on the released RecLLMSim data: time and agreement with the gold.

Imports the dataset into a temporary SQLite database (or uses --db), trains the trained labeller on
the imported GPT-4o labels of the conversations OUTSIDE the human gold set, labels the 200 gold
conversations, runs the rule labeller on everything, and prints Cohen's kappa / Krippendorff's alpha
against the human gold labels per dimension, pooled and per user kind (GPT-4o's own agreement with
the gold is printed alongside as the ceiling the trained labeller imitates).

Usage:
    python benchmarks/bench_trained_labeller.py [--dataset PATH] [--db sqlite:///ref.db] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TARGET = ["problem_solving", "promise", "feedback", "politeness", "formality"]
GOLD, GPT = "imported:recllmsim-human", "imported:recllmsim-gpt4o"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default=str(ROOT.parent / "shared" / "datasets" / "recllmsim"))
    ap.add_argument(
        "--db", default=None, help="an existing database with the dataset imported as 'recllmsim'"
    )
    ap.add_argument("--json", default=None, help="write the agreement records here")
    ap.add_argument("--skip-rules", action="store_true")
    args = ap.parse_args()

    from sqlmodel import Session

    from annotation.agreement import agreement_records, study_agreement_df
    from annotation.labellers.rules import label_study
    from annotation.labellers.trained import train_and_label
    from db.engine import make_engine
    from db.migrate import upgrade

    if args.db:
        engine = make_engine(args.db)
    else:
        tmp = Path(tempfile.mkdtemp()) / "reference.db"
        engine = make_engine(f"sqlite:///{tmp}")
        upgrade(engine)
        from workbench.dataio.recllmsim import import_recllmsim

        t = time.perf_counter()
        import_recllmsim(engine, Path(args.dataset), study="recllmsim")
        print(f"import: {time.perf_counter() - t:.1f} s")

    t = time.perf_counter()
    report = train_and_label(engine, "recllmsim", GPT, dimensions=TARGET, holdout_source=GOLD)
    print(
        f"trained labeller: trained on {report.n_train}, labelled {report.n_labelled} conversations "
        f"in {time.perf_counter() - t:.1f} s (no API calls)"
    )
    sources = [report.source, GPT]
    if not args.skip_rules:
        t = time.perf_counter()
        name, n_conv, _n = label_study(engine, "recllmsim")
        print(f"rule labeller: {n_conv} conversations in {time.perf_counter() - t:.1f} s")
        sources.append(name)

    records = []
    with Session(engine) as s:
        for src in sources:
            df = study_agreement_df(
                s, "recllmsim", src, GOLD, dimensions=TARGET + ["explanation"], n_boot=1000
            )
            records += agreement_records(df)
            print(f"\n{src} vs {GOLD} (Cohen's kappa; alpha with 95% bootstrap CI)")
            wide = df.pivot(index="dimension", columns="user_kind", values="cohen_kappa")
            alpha = df[df.user_kind == "all"].set_index("dimension")
            for dim in wide.index:
                r = alpha.loc[dim]
                print(
                    f"  {dim:16s} all {wide.loc[dim, 'all']:6.3f}  human {wide.loc[dim, 'human']:6.3f}  "
                    f"agent {wide.loc[dim, 'agent']:6.3f}   alpha {r.krippendorff_alpha:.3f} "
                    f"[{r.ci_low:.3f}, {r.ci_high:.3f}]  n={r.n}"
                )
    if args.json:
        Path(args.json).write_text(json.dumps(records, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
