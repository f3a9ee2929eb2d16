"""Trained labeller: learns any label source of the database and labels the rest at no API cost.

A scikit-learn pipeline per dimension over the text of the user's turns: TF-IDF of character
n-grams (they work for English and for unsegmented Chinese alike) shared by every dimension, then
a logistic regression. Labels are written as the source ``trained:<train source>:<version>``.

Example::

    report = train_and_label(engine, "recllmsim", "imported:recllmsim-gpt4o",
                             dimensions=["promise", "feedback"],
                             holdout_source="imported:recllmsim-human")
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable, Optional, Sequence

import numpy as np
import pandas as pd
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from annotation.store import LabelRecord, ensure_source, write_labels
from db.models import Conversation, Turn
from db.repo import get_label_source, get_study, labels_df
from workbench.errors import UserInputError

VERSION = "v1"
# Below this predicted probability a label is flagged for review.
FLAG_BELOW = 0.5


def source_name(train_source: str, version: str = VERSION) -> str:
    return f"trained:{train_source}:{version}"


def user_texts_df(session: Session, study_id: int) -> pd.DataFrame:
    """conversation_id, user_kind, text: the user's turns of each conversation of the study, in their
    original language, each prefixed by its position (the first request matters for the strategy)."""
    q = (
        select(Turn.conversation_id, Turn.index, Turn.content, Conversation.user_kind)
        .join(Conversation, Conversation.id == Turn.conversation_id)
        .where(Conversation.study_id == study_id, Turn.role == "user")
        .order_by(Turn.conversation_id, Turn.index)
    )
    parts: dict[int, list[str]] = {}
    kinds: dict[int, str] = {}
    for conv_id, _idx, content, kind in session.exec(q).all():
        parts.setdefault(conv_id, []).append(content or "")
        kinds[conv_id] = kind
    rows = [{"conversation_id": c, "user_kind": kinds[c], "text": document(ts)} for c, ts in parts.items()]
    return pd.DataFrame(rows, columns=["conversation_id", "user_kind", "text"])


def document(user_turns: Sequence[str]) -> str:
    return " ||| ".join(f"[U{i}] {t}" for i, t in enumerate(user_turns))


@dataclass
class TrainedLabeller:
    """One TF-IDF (char 1-4 grams) shared by per-dimension logistic regressions."""

    C: float = 10.0
    ngram_range: tuple[int, int] = (1, 4)
    min_df: int = 2
    vectorizer: Optional[TfidfVectorizer] = None
    models: dict = field(default_factory=dict)

    def fit(self, texts: pd.Series, targets: pd.DataFrame) -> "TrainedLabeller":
        """``texts`` indexed by conversation_id; ``targets`` indexed likewise with one column per
        dimension (missing values allowed: each dimension trains on the items that have it)."""
        self.vectorizer = TfidfVectorizer(
            analyzer="char_wb", ngram_range=self.ngram_range, min_df=self.min_df, sublinear_tf=True
        )
        x = self.vectorizer.fit_transform(texts.values)
        pos = {cid: i for i, cid in enumerate(texts.index)}
        for dim in targets.columns:
            y = targets[dim].dropna()
            y = y[y.index.isin(pos.keys())]
            if y.nunique() < 2:
                raise UserInputError(
                    f"cannot train {dim!r}: the training source gives it "
                    f"{'no' if y.empty else 'only one'} value; choose another source or dimension"
                )
            rows = [pos[c] for c in y.index]
            self.models[dim] = LogisticRegression(C=self.C, max_iter=3000).fit(x[rows], y.astype(str).values)
        return self

    def predict_df(self, texts: pd.Series) -> pd.DataFrame:
        """conversation_id, dimension, value, probability."""
        if self.vectorizer is None:
            raise RuntimeError("fit the labeller first")
        x = self.vectorizer.transform(texts.values)
        out = []
        for dim, model in self.models.items():
            proba = model.predict_proba(x)
            best = proba.argmax(1)
            out.append(
                pd.DataFrame(
                    {
                        "conversation_id": texts.index,
                        "dimension": dim,
                        "value": model.classes_[best],
                        "probability": proba.max(1),
                    }
                )
            )
        if not out:
            return pd.DataFrame(columns=["conversation_id", "dimension", "value", "probability"])
        return pd.concat(out, ignore_index=True)


@dataclass
class TrainReport:
    source: str
    train_source: str
    dimensions: list[str]
    n_train: int
    n_labelled: int
    n_labels: int
    holdout_source: Optional[str] = None


def train_and_label(
    engine: Engine,
    study: str,
    train_source: str,
    dimensions: Optional[Iterable[str]] = None,
    holdout_source: Optional[str] = None,
    label_all: bool = False,
    version: str = VERSION,
    C: float = 10.0,
    progress: Optional[Callable[[str], None]] = None,
) -> TrainReport:
    """Train on ``train_source``'s conversation-level labels in ``study`` and label the conversations
    it did not label (``label_all``: every conversation). Conversations labelled by
    ``holdout_source`` (e.g. the human gold set) are kept out of training and always labelled, so the
    new source can be compared with the holdout honestly."""
    say = progress or (lambda _m: None)
    with Session(engine, expire_on_commit=False) as session:
        st = get_study(session, study)
        get_label_source(session, train_source)
        if holdout_source:
            get_label_source(session, holdout_source)
        lab = labels_df(session, st.id, sources=[s for s in (train_source, holdout_source) if s])
        lab = lab[(lab["turn_index"] == -1) & (lab["status"] == "ok") & lab["value"].notna()]
        train = lab[lab["source"] == train_source]
        known = sorted(train["dimension"].unique())
        if dimensions is None:
            dims = known
        else:
            dims = list(dict.fromkeys(dimensions))
            if missing := [d for d in dims if d not in known]:
                raise UserInputError(
                    f"{train_source!r} has no conversation-level labels for {missing} in study "
                    f"{study!r} (it has: {', '.join(known) or 'none'})"
                )
        if not dims:
            raise UserInputError(f"{train_source!r} has no conversation-level labels in study {study!r}")
        held = set(lab.loc[lab["source"] == holdout_source, "conversation_id"]) if holdout_source else set()
        texts = user_texts_df(session, st.id).set_index("conversation_id")["text"]
        targets = train[train["dimension"].isin(dims)].pivot_table(
            index="conversation_id", columns="dimension", values="value", aggfunc="first"
        )
        train_ids = [c for c in targets.index if c not in held and c in texts.index]
        if len(train_ids) < 10:
            raise UserInputError(
                f"only {len(train_ids)} conversations to train on; label more with {train_source!r}"
            )
        say(f"training on {len(train_ids)} conversations, {len(dims)} dimension(s)")
        model = TrainedLabeller(C=C).fit(texts.loc[train_ids], targets.loc[train_ids, dims])
        todo = texts.index if label_all else [c for c in texts.index if c not in set(train_ids)]
        pred = model.predict_df(texts.loc[list(todo)])
        say(f"labelling {len(todo)} conversations")
        src = ensure_source(
            session,
            source_name(train_source, version),
            "trained",
            model="sklearn:tfidf-char-logreg",
            prompt_version=version,
            params={
                "train_source": train_source,
                "holdout_source": holdout_source,
                "n_train": len(train_ids),
                "C": C,
                "features": "tfidf char_wb 1-4 of user turns",
            },
        )
        src.params = {
            **(src.params or {}),
            "train_source": train_source,
            "holdout_source": holdout_source,
            "n_train": len(train_ids),
            "C": C,
        }
        session.add(src)
        records = [
            LabelRecord(
                conversation_id=int(r.conversation_id),
                dimension=r.dimension,
                value=str(r.value),
                rationale=f"p={r.probability:.2f}",
                flagged=bool(r.probability < FLAG_BELOW),
            )
            for r in pred.itertuples()
        ]
        n = write_labels(session, src, records)
        session.commit()
        return TrainReport(
            source=src.name,
            train_source=train_source,
            dimensions=dims,
            n_train=len(train_ids),
            n_labelled=len(todo),
            n_labels=n,
            holdout_source=holdout_source,
        )


def predicted_values(model: TrainedLabeller, texts: Sequence[str]) -> dict[str, np.ndarray]:
    """Predictions for raw texts (no database), per dimension; handy in notebooks."""
    s = pd.Series(list(texts), index=range(len(texts)))
    df = model.predict_df(s)
    return {d: g["value"].to_numpy() for d, g in df.groupby("dimension")}
