"""Trained labeller: learns any label source of the database and labels the rest at no API cost.

Per dimension and per user kind, a linear SVM (``class_weight="balanced"``) over TF-IDF of
character n-grams (they work for English and for unsegmented Chinese alike) plus word uni- and
bigrams (jieba for Chinese) of the user's turns in their original language. One model per user
kind because the kinds differ in language and register (in RecLLMSim agents wrote English, people
Chinese), so a pooled model spends its capacity telling the kinds apart; a pooled model is the
fallback for kinds with too few training items. The design was chosen by 5-fold cross-validation on
the training conversations against their own (GPT-4o) labels, never on the gold set; see the README,
section Annotation. Labels are written as the source ``trained:<train source>:<version>``.

Example::

    report = train_and_label(engine, "recllmsim", "imported:recllmsim-gpt4o",
                             dimensions=["promise", "feedback"],
                             holdout_source="imported:recllmsim-human")
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.svm import LinearSVC
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from annotation.nlp import clip_texts
from annotation.store import LabelRecord, ensure_source, write_labels
from db.errors import UserInputError
from db.models import Conversation, Turn
from db.models.core import UNFINISHED_STATUSES
from db.repo import get_label_source, get_study, labels_df

VERSION = "v2"
# Below this confidence (softmax of the SVM margins) a label is flagged for review.
FLAG_BELOW = 0.5
# A user kind with fewer training items than this for a dimension uses the pooled model.
MIN_PER_KIND = 30
POOLED = "*"

_CJK = re.compile(r"[\u3400-\u9fff]")
_WORD = re.compile(r"\w+|[^\w\s]")


def source_name(train_source: str, version: str = VERSION) -> str:
    return f"trained:{train_source}:{version}"


def user_texts_df(session: Session, study_id: int) -> pd.DataFrame:
    """conversation_id, user_kind, text: the user's turns of each finished conversation of the study, in their
    original language, each prefixed by its position (the first request matters for the strategy)."""
    q = (
        select(Turn.conversation_id, Turn.index, Turn.content, Conversation.user_kind)
        .join(Conversation, Conversation.id == Turn.conversation_id)
        .where(
            Conversation.study_id == study_id,
            Turn.role == "user",
            Conversation.status.not_in(UNFINISHED_STATUSES),
        )  # unfinished: nothing to judge yet
        .order_by(Turn.conversation_id, Turn.index)
    )
    parts: dict[int, list[str]] = {}
    kinds: dict[int, str] = {}
    for conv_id, _idx, content, kind in session.exec(q).all():
        parts.setdefault(conv_id, []).append(content or "")
        kinds[conv_id] = kind
    cut = 0
    rows = []
    for c, ts in parts.items():
        clipped, n = clip_texts(ts)  # the vectorisers would crawl through a turn of millions of characters
        cut += n
        rows.append({"conversation_id": c, "user_kind": kinds[c], "text": document(clipped)})
    df = pd.DataFrame(rows, columns=["conversation_id", "user_kind", "text"])
    df.attrs["texts_cut"] = cut
    return df


def document(user_turns: Sequence[str]) -> str:
    return " ||| ".join(f"[U{i}] {t}" for i, t in enumerate(user_turns))


def words(text: str) -> list[str]:
    """Lower-cased word tokens: jieba where the text has Chinese, a regex otherwise (faster)."""
    text = text.lower()
    if _CJK.search(text):
        import jieba

        jieba.setLogLevel(60)
        return [w for w in jieba.lcut(text) if w.strip()]
    return _WORD.findall(text)


def _confidence(scores: np.ndarray) -> np.ndarray:
    """Softmax of the SVM margins per row (binary: a logistic of the margin): a confidence for
    flagging, not a calibrated probability."""
    if scores.ndim == 1:
        scores = np.column_stack([-scores / 2, scores / 2])
    z = np.exp(scores - scores.max(1, keepdims=True))
    return z / z.sum(1, keepdims=True)


@dataclass
class _Constant:
    """Stands in for a classifier where the training items of a kind have a single value."""

    value: str

    def predict(self, x) -> np.ndarray:
        return np.full(x.shape[0], self.value, dtype=object)

    def confidence(self, x) -> np.ndarray:
        return np.ones(x.shape[0])


@dataclass
class TrainedLabeller:
    """TF-IDF char 1-4 grams + word 1-2 grams, shared by per-dimension, per-user-kind linear SVMs."""

    C: float = 0.5
    ngram_range: tuple[int, int] = (1, 4)
    min_df: int = 2
    per_kind: bool = True
    char_vectorizer: TfidfVectorizer | None = None
    word_vectorizer: TfidfVectorizer | None = None
    models: dict = field(default_factory=dict)  # dimension -> {user kind or POOLED: classifier}

    def _features(self, texts: Sequence[str]):
        return sp.hstack(
            [self.char_vectorizer.transform(texts), self.word_vectorizer.transform(texts)]
        ).tocsr()

    def _classifier(self, x, y: np.ndarray):
        if len(set(y)) < 2:
            return _Constant(str(y[0]))
        return LinearSVC(C=self.C, class_weight="balanced").fit(x, y)

    def fit(self, texts: pd.Series, targets: pd.DataFrame, kinds: pd.Series | None = None) -> TrainedLabeller:
        """``texts`` indexed by conversation_id; ``targets`` indexed likewise with one column per
        dimension (missing values allowed: each dimension trains on the items that have it);
        ``kinds`` (user kind per conversation_id) enables the per-kind models."""
        self.char_vectorizer = TfidfVectorizer(
            analyzer="char_wb", ngram_range=self.ngram_range, min_df=self.min_df, sublinear_tf=True
        ).fit(texts.values)
        self.word_vectorizer = TfidfVectorizer(
            tokenizer=words,
            token_pattern=None,
            lowercase=False,
            ngram_range=(1, 2),
            min_df=self.min_df,
            sublinear_tf=True,
        ).fit(texts.values)
        x = self._features(texts.values)
        pos = {cid: i for i, cid in enumerate(texts.index)}
        kind_of = kinds if (kinds is not None and self.per_kind) else pd.Series(dtype=object)
        for dim in targets.columns:
            y = targets[dim].dropna()
            y = y[y.index.isin(pos.keys())]
            if y.nunique() < 2:
                raise UserInputError(
                    f"cannot train {dim!r}: the training source gives it "
                    f"{'no' if y.empty else 'only one'} value; choose another source or dimension"
                )
            rows = np.array([pos[c] for c in y.index])
            values = np.asarray(y.astype(str).values, dtype=object)
            models = {POOLED: self._classifier(x[rows], values)}
            item_kinds = np.asarray(kind_of.reindex(y.index).values, dtype=object)
            for kind in sorted({k for k in item_kinds if isinstance(k, str)}):
                mask = item_kinds == kind
                if mask.sum() >= MIN_PER_KIND:
                    models[kind] = self._classifier(x[rows[mask]], values[mask])
            self.models[dim] = models
        return self

    def predict_df(self, texts: pd.Series, kinds: pd.Series | None = None) -> pd.DataFrame:
        """conversation_id, dimension, value, probability (the confidence used for flagging)."""
        if self.char_vectorizer is None:
            raise RuntimeError("fit the labeller first")
        x = self._features(texts.values)
        item_kinds = (
            np.asarray(kinds.reindex(texts.index).values, dtype=object)
            if kinds is not None
            else np.full(len(texts), None, dtype=object)
        )
        out = []
        for dim, models in self.models.items():
            value = np.empty(len(texts), dtype=object)
            conf = np.empty(len(texts))
            which = np.array([k if k in models else POOLED for k in item_kinds], dtype=object)
            for key in set(which):
                rows = np.where(which == key)[0]
                model = models[key]
                if isinstance(model, _Constant):
                    value[rows], conf[rows] = model.predict(x[rows]), model.confidence(x[rows])
                    continue
                p = _confidence(model.decision_function(x[rows]))
                value[rows] = model.classes_[p.argmax(1)]
                conf[rows] = p.max(1)
            out.append(
                pd.DataFrame(
                    {"conversation_id": texts.index, "dimension": dim, "value": value, "probability": conf}
                )
            )
        if not out:
            return pd.DataFrame(columns=["conversation_id", "dimension", "value", "probability"])
        return pd.concat(out, ignore_index=True)


def cross_validate(
    texts: pd.Series,
    targets: pd.DataFrame,
    kinds: pd.Series | None = None,
    folds: int = 5,
    C: float = 0.5,
    seed: int = 0,
) -> pd.DataFrame:
    """Cross-validated agreement of the labeller with its own training source: k folds over the
    training conversations, a fresh labeller (vectorisers included) fitted on the other folds, and
    Cohen's kappa (scikit-learn) of the out-of-fold predictions per dimension, pooled ("all") and
    per user kind. This is what a study without gold labels can know of the labeller's quality
    before using it: how well it imitates its teacher, not how right the teacher is."""
    from sklearn.metrics import cohen_kappa_score
    from sklearn.model_selection import KFold

    if folds < 2:
        raise UserInputError(f"cross-validation needs at least 2 folds (got {folds})")
    ids = np.asarray(targets.index)
    if len(ids) < 2 * folds:
        raise UserInputError(
            f"{len(ids)} training conversations are too few for {folds}-fold cross-validation"
        )
    pred = pd.DataFrame(index=targets.index, columns=targets.columns, dtype=object)
    for train_idx, test_idx in KFold(folds, shuffle=True, random_state=seed).split(ids):
        tr, te = ids[train_idx], ids[test_idx]
        sub = targets.loc[tr]
        dims = [d for d in sub.columns if sub[d].dropna().nunique() >= 2]
        if not dims:
            continue
        model = TrainedLabeller(C=C).fit(texts.loc[tr], sub[dims], kinds)
        out = model.predict_df(texts.loc[te], kinds)
        for dim, g in out.groupby("dimension"):
            pred.loc[g["conversation_id"].to_numpy(), dim] = g["value"].to_numpy()
    kind_of = kinds.reindex(targets.index) if kinds is not None else pd.Series("all", index=targets.index)
    rows = []
    for dim in targets.columns:
        both = pd.DataFrame({"y": targets[dim], "p": pred[dim], "kind": kind_of}).dropna(subset=["y", "p"])
        groups = [("all", both)]
        if kinds is not None:
            groups += [(k, both[both["kind"] == k]) for k in sorted(both["kind"].dropna().unique())]
        for kind, g in groups:
            y, p = g["y"].astype(str), g["p"].astype(str)
            kappa = float(cohen_kappa_score(y, p)) if len(set(y) | set(p)) > 1 else float("nan")
            rows.append(
                {
                    "dimension": dim,
                    "user_kind": kind,
                    "n": len(g),
                    "agreement": float((y == p).mean()) if len(g) else float("nan"),
                    "cohen_kappa": kappa,
                }
            )
    return pd.DataFrame(rows, columns=["dimension", "user_kind", "n", "agreement", "cohen_kappa"])


@dataclass
class TrainReport:
    source: str
    train_source: str
    dimensions: list[str]
    n_train: int
    n_labelled: int
    n_labels: int
    holdout_source: str | None = None
    cv: pd.DataFrame | None = None  # cross_validate() against the training source, when asked for
    texts_cut: int = 0  # user turns read only up to annotation.nlp.MAX_TEXT_CHARS characters


@dataclass
class _TrainingData:
    dims: list[str]
    texts: pd.Series  # user turns' text per conversation
    kinds: pd.Series  # user kind per conversation
    targets: pd.DataFrame  # conversation x dimension -> the training source's value
    train_ids: list[int]
    texts_cut: int = 0


def _training_data(
    session: Session,
    study: str,
    train_source: str,
    dimensions: Iterable[str] | None,
    holdout_source: str | None,
) -> _TrainingData:
    """The training source's conversation-level labels and the user texts, without the conversations
    of ``holdout_source``."""
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
    docs = user_texts_df(session, st.id)
    texts_cut = docs.attrs.get("texts_cut", 0)
    docs = docs.set_index("conversation_id")
    texts, kinds = docs["text"], docs["user_kind"]
    targets = train[train["dimension"].isin(dims)].pivot_table(
        index="conversation_id", columns="dimension", values="value", aggfunc="first"
    )
    train_ids = [c for c in targets.index if c not in held and c in texts.index]
    if len(train_ids) < 10:
        raise UserInputError(
            f"only {len(train_ids)} conversations to train on; label more with {train_source!r}"
        )
    return _TrainingData(dims, texts, kinds, targets, train_ids, texts_cut)


def _trained_source(
    session: Session,
    train_source: str,
    holdout_source: str | None,
    version: str,
    C: float,
    n_train: int,
    cv: pd.DataFrame | None,
    cv_folds: int,
):
    """The LabelSource of the trained labeller, its params describing this run."""
    src = ensure_source(
        session,
        source_name(train_source, version),
        "trained",
        model="sklearn:tfidf-char-word-linearsvc-per-kind",
        prompt_version=version,
        params={
            "train_source": train_source,
            "holdout_source": holdout_source,
            "n_train": n_train,
            "C": C,
            "features": "tfidf char_wb 1-4 + words 1-2 of user turns; linear SVM per user kind",
        },
    )
    src.params = {
        **(src.params or {}),
        "train_source": train_source,
        "holdout_source": holdout_source,
        "n_train": n_train,
        "C": C,
    }
    if cv is not None:
        src.params = {
            **src.params,
            "cv_folds": cv_folds,
            "cv_kappa": {
                f"{r.dimension}/{r.user_kind}": None
                if r.cohen_kappa != r.cohen_kappa
                else round(r.cohen_kappa, 4)
                for r in cv.itertuples()
            },
        }
    session.add(src)
    return src


def train_and_label(
    engine: Engine,
    study: str,
    train_source: str,
    dimensions: Iterable[str] | None = None,
    holdout_source: str | None = None,
    label_all: bool = False,
    version: str = VERSION,
    C: float = 0.5,
    progress: Callable[[str], None] | None = None,
    cv_folds: int | None = 0,
) -> TrainReport:
    """Train on ``train_source``'s conversation-level labels in ``study`` and label the conversations
    it did not label (``label_all``: every conversation). Conversations labelled by
    ``holdout_source`` (e.g. the human gold set) are kept out of training and always labelled, so the
    new source can be compared with the holdout honestly. ``cv_folds`` > 1 also reports (and stores in
    the source's params) the cross-validated kappa against ``train_source`` (``cross_validate``)."""
    say = progress or (lambda _m: None)
    with Session(engine, expire_on_commit=False) as session:
        data = _training_data(session, study, train_source, dimensions, holdout_source)
        dims, texts, kinds, ids = data.dims, data.texts, data.kinds, data.train_ids
        cv = None
        if cv_folds:
            say(f"{cv_folds}-fold cross-validation against {train_source}")
            cv = cross_validate(texts.loc[ids], data.targets.loc[ids, dims], kinds, folds=cv_folds, C=C)
        say(f"training on {len(ids)} conversations, {len(dims)} dimension(s)")
        model = TrainedLabeller(C=C).fit(texts.loc[ids], data.targets.loc[ids, dims], kinds)
        todo = texts.index if label_all else [c for c in texts.index if c not in set(ids)]
        pred = model.predict_df(texts.loc[list(todo)], kinds)
        say(f"labelling {len(todo)} conversations")
        src = _trained_source(session, train_source, holdout_source, version, C, len(ids), cv, cv_folds)
        src.params = {**src.params, "texts_cut": data.texts_cut}
        records = [
            LabelRecord(
                conversation_id=int(r.conversation_id),
                dimension=r.dimension,
                value=str(r.value),
                rationale=f"confidence={r.probability:.2f}",
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
            n_train=len(ids),
            n_labelled=len(todo),
            n_labels=n,
            holdout_source=holdout_source,
            cv=cv,
            texts_cut=data.texts_cut,
        )


def predicted_values(
    model: TrainedLabeller, texts: Sequence[str], user_kinds: Sequence[str] | None = None
) -> dict[str, np.ndarray]:
    """Predictions for raw texts (no database), per dimension; handy in notebooks. Without
    ``user_kinds`` the pooled models answer."""
    s = pd.Series(list(texts), index=range(len(texts)))
    kinds = pd.Series(list(user_kinds), index=s.index) if user_kinds is not None else None
    df = model.predict_df(s, kinds)
    return {d: g["value"].to_numpy() for d, g in df.groupby("dimension")}
