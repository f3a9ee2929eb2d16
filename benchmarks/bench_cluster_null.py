"""False-positive rate of the human-vs-agent tests when humans contribute several conversations.

Simulates data with NO difference between the kinds: each human participant has their own level
(intraclass correlation ``--icc``), contributes ``--per`` conversations, and agents are independent
draws from the same overall distribution. Prints, per number of human participants, how often each
test rejects at 5%: the conversation-level Mann-Whitney U (treats conversations as independent) and
the participant-clustered OLS (``analysis.stats.clustered_test``, t with G-1 degrees of freedom).
A correct test rejects about 5% of the time.

Usage:
    python benchmarks/bench_cluster_null.py [--reps 1000] [--icc 0.2] [--per 8] [--agents 100]
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=1000)
    ap.add_argument("--icc", type=float, default=0.2)
    ap.add_argument("--per", type=int, default=8)
    ap.add_argument("--agents", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    from analysis import stats

    warnings.simplefilter("ignore")
    rng = np.random.default_rng(args.seed)
    sd_person, sd_conv = np.sqrt(args.icc), np.sqrt(1 - args.icc)
    print(
        f"no true difference; ICC {args.icc}, {args.per} conversations per participant, "
        f"{args.agents} agent conversations, {args.reps} replications; share of p < 0.05:"
    )
    print(f"{'participants':>12} {'mann_whitney':>13} {'ols_cluster_robust':>19}")
    for g in (2, 4, 10, 20, 50):
        hits_mw = hits_cl = 0
        for _ in range(args.reps):
            people = np.repeat(np.arange(g), args.per)
            h = rng.normal(0, sd_person, g)[people] + rng.normal(0, sd_conv, len(people))
            a = rng.normal(0, 1, args.agents)
            hits_mw += stats.mann_whitney_test(h, a)["p_value"] < 0.05
            p = stats.clustered_test(h, a, people)["p_value"]
            hits_cl += p is not None and p < 0.05
        print(f"{g:>12} {hits_mw / args.reps:>13.3f} {hits_cl / args.reps:>19.3f}")


if __name__ == "__main__":
    main()
