"""Label-free fidelity of simulated users, every metric beside its human ceiling.

Per conversation (the user's turns only):

- the 19-feature behavioural fingerprint of the User-Sim Index in four groups (D1 style, D2
  disclosure, D3 clarification, D4 error reaction), features as the open reference implementation
  defines them (github harshita-chopra/persona-policies, ppol/fingerprinting.py), with Chinese
  lexicons of our own (``fingerprint_lexicon.yaml``); a population's feature is its mean over
  conversations and is compared with the humans' by Dice, 2 min(|m|, |h|) / (|m| + |h|);
- lexical diversity as in MirrorBench (github SAP/mirrorbench): MATTR (window 50), Yule's K and
  HD-D (sample 42) of the user's joined turns, as the mean z-score of the simulator's conversations
  against the human conversations' mean and SD;
- a conversation embedding (TF-IDF + truncated SVD over the user turns by default, a pretrained
  multilingual encoder when one is installed) for coverage (two-sided Chamfer normalised by the mean
  human-human distance, as in ppol/evaluation.py) and the Frechet distance;
- the feature classifier's AUC (``analysis.likeness.classifier_auc``).

The human ceiling: each metric computed people against people, the humans split into two halves
by participant (one person's conversations never on both sides), ``splits`` random splits.

Text: the analysis language of ``StudyData.language`` (the humans' language when the kinds differ;
other turns replaced by their stored translation, as ``analysis.features`` does). Tokens: English
``\\b\\w+\\b`` on the lower-cased text (the reference's tokenizer); Chinese jieba words
(``annotation.nlp.load_pipeline``, no HMM), punctuation left out.

Example::

    prepared = prepare(conversations, user_turns)           # pure: frames in
    records, ranking = fidelity_tables(prepared, splits=20)  # tidy frames out
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from scipy.special import gammaln

from analysis.features import CONTINUOUS_FEATURES, mattr
from analysis.folds import stratified_group_folds
from analysis.likeness import CLASSIFIER_EXCLUDE, classifier_auc
from annotation.nlp import clip_texts, lang_key, load_pipeline

FINGERPRINT_GROUPS = {
    "D1": [
        "words_per_turn",
        "short_utterance_rate",
        "politeness_rate",
        "formality_rate",
        "acknowledgment_rate",
        "verbosity_cv",
        "repetition_rate",
        "identity_confusion_rate",
    ],
    "D2": ["front_loading_ratio", "identifiers_per_turn", "opening_length"],
    "D3": [
        "uncertainty_rate",
        "certainty_rate",
        "pushback_rate",
        "clarification_question_rate",
        "info_seeking_rate",
    ],
    "D4": ["emotional_expression_rate", "accusatory_rate", "strategy_pivot_rate"],
}
FINGERPRINT_FEATURES = [f for feats in FINGERPRINT_GROUPS.values() for f in feats]
# Features that are the share of user turns matching a lexicon entry.
RATE_LEXICONS = {
    "politeness_rate": "politeness",
    "formality_rate": "formality",
    "acknowledgment_rate": "acknowledgment",
    "identity_confusion_rate": "identity_confusion",
    "uncertainty_rate": "uncertainty",
    "certainty_rate": "certainty",
    "pushback_rate": "pushback",
    "clarification_question_rate": "clarification_question",
    "info_seeking_rate": "info_seeking",
    "emotional_expression_rate": "emotional_expression",
    "accusatory_rate": "accusatory",
    "strategy_pivot_rate": "strategy_pivot",
}
LEXICON_PATH = Path(__file__).with_name("fingerprint_lexicon.yaml")
SHORT_TURN_WORDS = 3  # a turn of this many words or fewer is short
REPEATED_TRIGRAM = 3  # a trigram seen more often than this across the user's turns repeats
LEXICAL = ["mattr", "yules_k", "hdd"]
MATTR_WINDOW = 50
HDD_SAMPLE = 42
DEFAULT_SPLITS = 20
DEFAULT_BOOT = 200
MAX_DISTANCE_POINTS = 2000  # coverage compares at most this many conversations per side
# Frechet distance and the classifier's AUC use at most this many conversations per side (a seeded
# random subset): on a million conversations each bootstrap draw would otherwise copy and fit
# hundreds of thousands of rows. The reference data and the tests stay below it.
MAX_SAMPLE_POINTS = 20_000
DISTANCE_BOOT = 50  # bootstrap replicates of coverage and Frechet (each is a nearest-neighbour search)
MIN_CONVERSATIONS = 2
EMBED_DIMS = 64
_EN_TOKEN = re.compile(r"\b\w+\b")
_WORDLIKE = re.compile(r"\w", re.UNICODE)

RECORD_COLUMNS = [
    "simulator",
    "metric",
    "group",
    "value",
    "ci_low",
    "ci_high",
    "human_ceiling",
    "calibrated",
    "human_mean",
    "agent_mean",
    "n_human",
    "n_agent",
    "note",
    "direction",
    "ceiling_sd",
    "ceiling_low",
    "ceiling_high",
    "n_splits",
    "embedding",
]
RANKING_COLUMNS = [
    "rank",
    "simulator",
    "n_agent",
    "fidelity_score",
    "fingerprint",
    "lexical",
    "distribution",
    "discriminator",
    "judge",
    "survey",
    "rank_agreement",
    "labels",
    "n_families",
]


# --------------------------------------------------------------------------------------------------
# The registry: what is measured
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Metric:
    """One row kind of ``fidelity.json``. ``direction`` says what "like people" is: "higher" (a
    similarity, 1 = identical), "lower" (a distance, 0 = identical), "zero" (a z-score) or "half"
    (an AUC, 0.5 = indistinguishable); it decides how the value is calibrated against the ceiling."""

    name: str
    group: str
    direction: str
    family: str
    description: str


def _metrics() -> tuple[Metric, ...]:
    out = [
        Metric(f"feature:{f}", g, "higher", "fingerprint", f"Dice of the populations' mean {f}")
        for g, feats in FINGERPRINT_GROUPS.items()
        for f in feats
    ]
    out += [
        Metric(f"usi_{g.lower()}", g, "higher", "fingerprint", f"mean Dice of the {g} features")
        for g in FINGERPRINT_GROUPS
    ]
    out.append(Metric("usi_d", "D", "higher", "fingerprint", "mean of usi_d1 .. usi_d4"))
    out += [
        Metric(f"{m}_z", "lexical", "zero", "lexical", f"mean z of the simulator's {m} against people")
        for m in LEXICAL
    ]
    out.append(Metric("coverage", "distribution", "higher", "distribution", "two-sided Chamfer coverage"))
    out.append(Metric("frechet", "distribution", "lower", "distribution", "Frechet distance of embeddings"))
    out.append(Metric("classifier_auc", "discriminator", "half", "classifier", "feature classifier AUC"))
    return tuple(out)


METRICS: tuple[Metric, ...] = _metrics()
METRIC_BY_NAME = {m.name: m for m in METRICS}


def serial_blas():
    """BLAS and OpenMP on one thread: these matrices are small, and on a 2-core machine shared with
    other work the threaded versions ran 3-6 times slower (SVD 2.0 s vs 0.7 s, a classifier fit 0.5 s
    vs 0.08 s on the reference data)."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(1)


@lru_cache(maxsize=1)
def load_lexicons() -> dict[str, dict[str, re.Pattern]]:
    """language -> lexicon entry -> one compiled alternation of its patterns."""
    raw = yaml.safe_load(LEXICON_PATH.read_text(encoding="utf-8"))
    return {
        lang: {name: re.compile("|".join(f"(?:{p})" for p in pats)) for name, pats in entries.items()}
        for lang, entries in raw.items()
    }


# --------------------------------------------------------------------------------------------------
# Per conversation: tokens, fingerprint, lexical diversity
# --------------------------------------------------------------------------------------------------


def tokenize(texts: list[str], langs: list[str], pipelines: dict | None = None) -> list[list[str]]:
    """Word tokens of each text: English by the reference's ``\\b\\w+\\b`` on lower-cased text,
    Chinese by jieba (``annotation.nlp.load_pipeline``), punctuation and spaces left out."""
    pipelines = pipelines if pipelines is not None else {}
    out: list[list[str]] = [None] * len(texts)  # type: ignore[list-item]
    zh = [i for i, lang in enumerate(langs) if lang_key(lang) == "zh"]
    for i, text in enumerate(texts):
        if lang_key(langs[i]) != "zh":
            out[i] = _EN_TOKEN.findall(text.lower())
    if zh:
        nlp = pipelines.setdefault("zh", load_pipeline("zh"))
        clipped, _ = clip_texts(texts[i] for i in zh)
        for i, doc in zip(zh, nlp.pipe(clipped, batch_size=512)):
            out[i] = [t.lower_ for t in doc if not (t.is_punct or t.is_space) and _WORDLIKE.search(t.text)]
    return out


def repetition_rate(tokens: list[list[str]]) -> float:
    """Share of the user's turns holding a word trigram seen more than ``REPEATED_TRIGRAM`` times
    across all the user's turns (reference definition)."""
    grams = [{tuple(t[i : i + 3]) for i in range(len(t) - 2)} for t in tokens]
    counts = Counter(g for t in tokens for g in (tuple(t[i : i + 3]) for i in range(len(t) - 2)))
    repeated = {g for g, n in counts.items() if n > REPEATED_TRIGRAM}
    if not tokens or not repeated:
        return 0.0
    return sum(bool(g & repeated) for g in grams) / len(tokens)


def fingerprint(texts: list[str], tokens: list[list[str]], language: str = "en") -> dict[str, float]:
    """The 19 features of one conversation from its user turns (texts in order, their tokens).
    A conversation without user text gets zeros, as in the reference.

    Example: ``fingerprint(["hi there", "ok"], [["hi", "there"], ["ok"]])["short_utterance_rate"]`` is 1.0.
    """
    keep = [i for i, t in enumerate(texts) if t]
    texts, tokens = [texts[i] for i in keep], [tokens[i] for i in keep]
    if not texts:
        return dict.fromkeys(FINGERPRINT_FEATURES, 0.0)
    lex = load_lexicons()[lang_key(language)]
    # Counts and sums of whole numbers in plain Python (exact, as NumPy's are; NumPy on lists this
    # short cost more in calls than in arithmetic), the spread through NumPy as before.
    lengths = [len(t) for t in tokens]
    n, total = len(lengths), sum(lengths)
    lowered = [t.lower() for t in texts]
    out = {"words_per_turn": total / n}
    out["short_utterance_rate"] = sum(length <= SHORT_TURN_WORDS for length in lengths) / n
    for feat, entry in RATE_LEXICONS.items():
        subject = [t.strip() for t in lowered] if entry == "acknowledgment" else lowered
        search = lex[entry].search
        out[feat] = sum(search(t) is not None for t in subject) / n
    spread = float(np.std(np.array(lengths, dtype=float)))
    out["verbosity_cv"] = spread / out["words_per_turn"] if n > 1 and total > 0 else 0.0
    out["repetition_rate"] = repetition_rate(tokens)
    out["front_loading_ratio"] = sum(lengths[:2]) / total if total > 0 and n >= 2 else float(total > 0)
    findall = lex["identifier"].findall
    out["identifiers_per_turn"] = sum(len(findall(t)) for t in texts) / n
    out["opening_length"] = float(lengths[0])
    return {f: out[f] for f in FINGERPRINT_FEATURES}


def yules_k(tokens: list[str]) -> float:
    """Yule's K = 10^4 (sum_w f_w^2 - N) / N^2 (NaN without tokens)."""
    n = len(tokens)
    if n == 0:
        return float("nan")
    f = np.fromiter(Counter(tokens).values(), dtype=float)
    return float(1e4 * ((f**2).sum() - n) / n**2)


def hdd(tokens: list[str], sample: int = HDD_SAMPLE) -> float:
    """HD-D (McCarthy & Jarvis 2010): the expected share of types seen in a random draw of
    ``min(sample, N)`` tokens, sum_w (1 - P(w absent)) / s, P from the hypergeometric distribution."""
    n = len(tokens)
    if n == 0:
        return float("nan")
    s = min(sample, n)
    f = np.fromiter(Counter(tokens).values(), dtype=float)
    rest = n - f
    # P(absent) = C(n - f, s) / C(n, s), in logs; zero where fewer than s other tokens remain.
    with np.errstate(invalid="ignore"):
        log_p = gammaln(rest + 1) - gammaln(rest - s + 1) - gammaln(n + 1) + gammaln(n - s + 1)
    absent = np.where(rest >= s, np.exp(log_p), 0.0)
    return float((1 - absent).sum() / s)


def lexical_scores(tokens: list[str]) -> dict[str, float]:
    """MATTR (window 50), Yule's K and HD-D (sample 42) of one conversation's user tokens."""
    return {
        "mattr": mattr(tokens, MATTR_WINDOW),
        "yules_k": yules_k(tokens),
        "hdd": hdd(tokens),
    }


# --------------------------------------------------------------------------------------------------
# Embeddings: a small registry, offline by default
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Embedder:
    """Turns each conversation (its user texts joined, and its tokens) into a vector.
    ``embed(texts, tokens) -> (matrix, description)``; ``available()`` says whether it can run here."""

    name: str
    available: Callable[[], bool]
    embed: Callable[[list[str], list[list[str]]], tuple[np.ndarray, str]]
    # fit(texts, tokens) -> an object with .transform(texts, tokens) -> matrix and .description: used
    # on large studies, fitted on a sample (``EMBED_FIT_SAMPLE``) and applied chunk by chunk.
    fit: Callable[[list[str], list[list[str]]], object] | None = None


def _grams(tokens: list[str]) -> list[str]:
    return tokens + [f"{a} {b}" for a, b in zip(tokens, tokens[1:])]


def _tfidf_svd(texts: list[str], tokens: list[list[str]]) -> tuple[np.ndarray, str]:
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.preprocessing import normalize

    docs = [t if t else ["<empty>"] for t in tokens]
    min_df = 2 if len(docs) >= 20 else 1
    tfidf = TfidfVectorizer(analyzer=_grams, min_df=min_df, sublinear_tf=True, max_features=20000)
    X = tfidf.fit_transform(docs)
    dims = max(1, min(EMBED_DIMS, X.shape[1] - 1, X.shape[0] - 1))
    Z = TruncatedSVD(n_components=dims, random_state=0).fit_transform(X) if X.shape[1] > 1 else X.toarray()
    desc = (
        f"tfidf_svd: TF-IDF of word 1-2 grams (sublinear tf, min_df {min_df}) over the user turns of "
        f"this study, truncated SVD to {Z.shape[1]} dimensions, rows L2-normalised"
    )
    return normalize(Z), desc


@dataclass
class FittedTfidfSvd:
    """TF-IDF + truncated SVD fitted on some conversations, applied to any (picklable: it goes to the
    worker processes)."""

    tfidf: object
    svd: object | None
    description: str

    def transform(self, texts: list[str], tokens: list[list[str]]) -> np.ndarray:
        from sklearn.preprocessing import normalize

        X = self.tfidf.transform([t if t else ["<empty>"] for t in tokens])
        return normalize(self.svd.transform(X) if self.svd is not None else X.toarray())


def _tfidf_svd_fit(texts: list[str], tokens: list[list[str]]) -> FittedTfidfSvd:
    """``_tfidf_svd``'s model (same settings) fitted on these conversations."""
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import TfidfVectorizer

    docs = [t if t else ["<empty>"] for t in tokens]
    min_df = 2 if len(docs) >= 20 else 1
    tfidf = TfidfVectorizer(analyzer=_grams, min_df=min_df, sublinear_tf=True, max_features=20000)
    X = tfidf.fit_transform(docs)
    dims = max(1, min(EMBED_DIMS, X.shape[1] - 1, X.shape[0] - 1))
    svd = TruncatedSVD(n_components=dims, random_state=0).fit(X) if X.shape[1] > 1 else None
    desc = (
        f"tfidf_svd: TF-IDF of word 1-2 grams (sublinear tf, min_df {min_df}) over the user turns of "
        f"{len(docs):,} conversations of this study drawn at random (seed 0), truncated SVD to "
        f"{dims if svd is not None else X.shape[1]} dimensions, applied to every conversation, rows L2-normalised"
    )
    return FittedTfidfSvd(tfidf, svd, desc)


ENCODER_MODEL = "paraphrase-multilingual-MiniLM-L12-v2"


class _EncoderModel:
    """The pretrained encoder needs no fit: ``transform`` encodes."""

    description = f"sentence_transformers: {ENCODER_MODEL}, normalised"

    def transform(self, texts: list[str], tokens: list[list[str]]) -> np.ndarray:
        return _encode(texts, tokens)[0]


def _encoder_available() -> bool:
    import importlib.util

    if importlib.util.find_spec("sentence_transformers") is None:
        return False
    try:
        _encoder()
    except Exception:  # noqa: BLE001 - not downloaded, no network: fall back to TF-IDF
        return False
    return True


@lru_cache(maxsize=1)
def _encoder():
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(ENCODER_MODEL, local_files_only=True)


def _encode(texts: list[str], tokens: list[list[str]]) -> tuple[np.ndarray, str]:
    Z = _encoder().encode(texts, batch_size=64, normalize_embeddings=True, show_progress_bar=False)
    return np.asarray(Z, dtype=float), f"sentence_transformers: {ENCODER_MODEL}, normalised"


# Preference order: the first available one is used unless one is named.
EMBEDDERS: dict[str, Embedder] = {
    "sentence_transformers": Embedder(
        "sentence_transformers", _encoder_available, _encode, lambda texts, tokens: _EncoderModel()
    ),
    "tfidf_svd": Embedder("tfidf_svd", lambda: True, _tfidf_svd, _tfidf_svd_fit),
}


def choose_embedder(name: str | None = None) -> Embedder:
    """The named embedder, or the first available in ``EMBEDDERS`` order."""
    from db.errors import UserInputError

    if name is not None:
        if name not in EMBEDDERS:
            raise UserInputError(f"unknown embedding {name!r}: use one of {', '.join(EMBEDDERS)}")
        return EMBEDDERS[name]
    return next(e for e in EMBEDDERS.values() if e.available())


# --------------------------------------------------------------------------------------------------
# Preparing a study: one row per conversation, every per-conversation measure
# --------------------------------------------------------------------------------------------------


@dataclass
class Prepared:
    """Per conversation (rows aligned): ``conversations`` (conversation_id, population — "human" or
    the simulator's name — and cluster, the participant or the conversation itself), the fingerprint,
    the lexical scores, the embedding and the classifier's features."""

    conversations: pd.DataFrame
    fingerprint: np.ndarray
    lexical: np.ndarray
    embedding: np.ndarray
    embedding_name: str
    classifier: pd.DataFrame
    language: str | None = None
    notes: list[str] = field(default_factory=list)


def _populations(conversations: pd.DataFrame) -> pd.DataFrame:
    convs = conversations.reset_index(drop=True)
    sim = convs["simulator"] if "simulator" in convs.columns else pd.Series(None, index=convs.index)
    pop = sim.fillna("(unrecorded simulator)").astype(str).where(convs["user_kind"] == "agent", "human")
    people = convs["participant"] if "participant" in convs.columns else pd.Series(None, index=convs.index)
    known = people.notna() & (people.astype(str) != "") & (convs["user_kind"] == "human")
    cluster = ("p:" + people.astype(str)).where(known, "c:" + convs["conversation_id"].astype(str))
    return pd.DataFrame(
        {"conversation_id": convs["conversation_id"].astype(int), "population": pop, "cluster": cluster}
    )


def prepare(
    conversations: pd.DataFrame,
    user_turns: pd.DataFrame,
    features: pd.DataFrame | None = None,
    pipelines: dict | None = None,
    embedder: Embedder | None = None,
    language: str | None = None,
) -> Prepared:
    """Every per-conversation measure of a study. ``conversations``: conversation_id, user_kind
    (human | agent), simulator, participant; ``user_turns``: conversation_id, turn_index, text, lang
    (the user's turns in the analysis language); ``features``: the feature table of
    ``analysis.features`` for the classifier (optional)."""
    convs = _populations(conversations[conversations["user_kind"].isin(["human", "agent"])])
    fp, lexical, joined, flat = conversation_scores(convs["conversation_id"], user_turns, pipelines)
    emb = embedder or choose_embedder()
    with serial_blas():
        matrix, desc = emb.embed(joined, flat)
    clf = _classifier_frame(convs, features)
    return Prepared(
        convs,
        fp,
        lexical,
        np.asarray(matrix, float),
        desc,
        clf,
        language,
    )


def conversation_scores(
    conversation_ids, user_turns: pd.DataFrame, pipelines: dict | None = None
) -> tuple[np.ndarray, np.ndarray, list[str], list[list[str]]]:
    """Per conversation of ``conversation_ids`` (in that order): the fingerprint (n x 19), the lexical
    scores (n x 3), the user texts joined and the user's word tokens (for the embedding)."""
    turns = user_turns.sort_values(["conversation_id", "turn_index"], kind="stable")
    texts = turns["text"].fillna("").astype(str).tolist()
    langs = turns["lang"].fillna("en").astype(str).tolist()
    toks = tokenize(texts, langs, pipelines)
    by_conv: dict[int, tuple[list[str], list[list[str]], str]] = {}
    for cid, text, lang, tok in zip(turns["conversation_id"].astype(int), texts, langs, toks):
        entry = by_conv.setdefault(cid, ([], [], lang))
        entry[0].append(text)
        entry[1].append(tok)
    fp, lexical, joined, flat = [], [], [], []
    for cid in conversation_ids:
        t, k, lang = by_conv.get(int(cid), ([], [], "en"))
        words = [w for ws in k for w in ws]
        feats, lex = fingerprint(t, k, lang), lexical_scores(words)
        fp.append([feats[f] for f in FINGERPRINT_FEATURES])
        lexical.append([lex[m] for m in LEXICAL])
        joined.append("\n".join(t))
        flat.append(words)
    return (
        np.asarray(fp, float).reshape(-1, len(FINGERPRINT_FEATURES)),
        np.asarray(lexical, float).reshape(-1, 3),
        joined,
        flat,
    )


def _classifier_frame(convs: pd.DataFrame, features: pd.DataFrame | None) -> pd.DataFrame:
    """The classifier's features per conversation, aligned with ``convs`` (empty without features)."""
    if features is None or not len(features):
        return pd.DataFrame(index=convs.index)
    feats = [f for f in CONTINUOUS_FEATURES if f in features.columns and f not in CLASSIFIER_EXCLUDE]
    merged = convs[["conversation_id"]].merge(
        features[["conversation_id", *feats]], on="conversation_id", how="left"
    )
    return merged[feats].astype(float).reset_index(drop=True)


# --------------------------------------------------------------------------------------------------
# Metric families: each computes its metrics for a reference (people) and another population
# --------------------------------------------------------------------------------------------------


@dataclass
class Estimate:
    value: float | None
    human_mean: float | None = None
    agent_mean: float | None = None
    note: str = ""
    ci_low: float | None = None  # set by a family that gives its own interval
    ci_high: float | None = None


def dice(m: float, h: float) -> float:
    """2 min(|m|, |h|) / (|m| + |h|); 1 when both are 0 (reference definition)."""
    m, h = abs(m), abs(h)
    return 1.0 if m + h < 1e-12 else 2 * min(m, h) / (m + h)


def _fingerprint_family(P: Prepared, ref: np.ndarray, oth: np.ndarray, ceiling: bool = False) -> dict:
    return _fingerprint_values(P.fingerprint[ref].mean(axis=0), P.fingerprint[oth].mean(axis=0))


def _fingerprint_values(h: np.ndarray, a: np.ndarray) -> dict:
    """The fingerprint's estimates from the mean fingerprint of the humans (h) and the agents (a)."""
    out = {
        f"feature:{f}": Estimate(dice(a[i], h[i]), float(h[i]), float(a[i]))
        for i, f in enumerate(FINGERPRINT_FEATURES)
    }
    for g, feats in FINGERPRINT_GROUPS.items():
        out[f"usi_{g.lower()}"] = Estimate(float(np.mean([out[f"feature:{f}"].value for f in feats])))
    out["usi_d"] = Estimate(float(np.mean([out[f"usi_{g.lower()}"].value for g in FINGERPRINT_GROUPS])))
    return out


def _lexical_family(P: Prepared, ref: np.ndarray, oth: np.ndarray, ceiling: bool = False) -> dict:
    out = {}
    for j, m in enumerate(LEXICAL):
        h, a = P.lexical[ref, j], P.lexical[oth, j]
        h, a = h[~np.isnan(h)], a[~np.isnan(a)]
        if len(h) < MIN_CONVERSATIONS or len(a) < 1:
            out[f"{m}_z"] = Estimate(None, note="not enough conversations with user words")
            continue
        out[f"{m}_z"] = _lexical_value(float(h.mean()), float(h.std(ddof=1)), float(a.mean()))
    return out


def _lexical_value(hm: float, sd: float, am: float) -> Estimate:
    """The mean over the simulator's conversations of (x - mean_h) / sd_h."""
    if not sd > 0:
        return Estimate(None, hm, am, "the human scores do not vary (SD 0)")
    return Estimate((am - hm) / sd, hm, am)


def chamfer_coverage(H: np.ndarray, S: np.ndarray, d_ref: float) -> float:
    """max(0, 1 - min(1, err / (2 d_ref))), err = mean over H of the distance to the nearest point of S
    + mean over S of the distance to the nearest point of H (Euclidean)."""
    from sklearn.metrics.pairwise import euclidean_distances

    if d_ref <= 0 or not len(H) or not len(S):
        return float("nan")
    D = euclidean_distances(H, S)
    err = float(D.min(axis=1).mean() + D.min(axis=0).mean())
    return max(0.0, 1.0 - min(1.0, err / (2.0 * d_ref)))


def frechet_distance(A: np.ndarray, B: np.ndarray) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)) of two samples' means and covariances."""
    from scipy.linalg import sqrtm

    mu = A.mean(axis=0) - B.mean(axis=0)
    Sa, Sb = np.atleast_2d(np.cov(A, rowvar=False)), np.atleast_2d(np.cov(B, rowvar=False))
    root = sqrtm(Sa @ Sb)
    if not np.isfinite(root).all():  # a singular product: nudge both, as pytorch-fid does
        eps = 1e-6 * np.eye(len(Sa))
        root = sqrtm((Sa + eps) @ (Sb + eps))
    return float(max(0.0, mu @ mu + np.trace(Sa) + np.trace(Sb) - 2 * np.trace(root.real)))


def _cap(idx: np.ndarray, limit: int, seed: int) -> np.ndarray:
    if len(idx) <= limit:
        return idx
    return np.random.default_rng(seed).choice(idx, size=limit, replace=False)


def _distribution_family(P: Prepared, ref: np.ndarray, oth: np.ndarray, ceiling: bool = False) -> dict:
    from sklearn.metrics.pairwise import euclidean_distances

    if len(ref) < MIN_CONVERSATIONS or len(oth) < MIN_CONVERSATIONS:
        note = "fewer than 2 conversations on a side"
        return {"coverage": Estimate(None, note=note), "frechet": Estimate(None, note=note)}
    H = P.embedding[_cap(ref, MAX_DISTANCE_POINTS, 1)]
    S = P.embedding[_cap(oth, MAX_DISTANCE_POINTS, 2)]
    # mean distance between pairs of people (each pair once, no self-pairs): the distance matrix is
    # symmetric with a zero diagonal, so the upper triangle's mean is the off-diagonal sum / n(n-1)
    D = euclidean_distances(H)
    d_ref = float((D.sum() - np.trace(D)) / (len(H) * (len(H) - 1)))
    cov = chamfer_coverage(H, S, d_ref)
    out = {
        "coverage": Estimate(
            None if np.isnan(cov) else cov, note="" if d_ref > 0 else "people's texts coincide"
        )
    }
    out["frechet"] = Estimate(
        frechet_distance(
            P.embedding[_cap(ref, MAX_SAMPLE_POINTS, 3)], P.embedding[_cap(oth, MAX_SAMPLE_POINTS, 4)]
        )
    )
    return out


def grouped_auc(
    X: pd.DataFrame, y: np.ndarray, groups: np.ndarray, folds: int = 5, seed: int = 0
) -> float | None:
    """Out-of-fold AUC of ``analysis.likeness.classifier_auc``'s model with every group (participant)
    kept in one fold on both sides; the ceiling's counterpart of that function."""
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    k = min(folds, len(set(groups[y == 0])), len(set(groups[y == 1])))
    if k < 2 or X.shape[1] == 0:
        return None
    model = make_pipeline(
        SimpleImputer(strategy="median", keep_empty_features=True),
        StandardScaler(),
        LogisticRegression(max_iter=1000),
    )
    cv = stratified_group_folds(y, groups, k, seed)  # StratifiedGroupKFold's folds, faster
    scores = cross_val_predict(model, X.to_numpy(float), y, cv=cv, method="predict_proba")[:, 1]
    return float(roc_auc_score(y, scores))


def _classifier_family(P: Prepared, ref: np.ndarray, oth: np.ndarray, ceiling: bool = False) -> dict:
    if P.classifier.shape[1] == 0:
        return {"classifier_auc": Estimate(None, note="no conversation features")}
    ref, oth = _cap(ref, MAX_SAMPLE_POINTS, 5), _cap(oth, MAX_SAMPLE_POINTS, 6)
    if ceiling:
        X = pd.concat([P.classifier.iloc[ref], P.classifier.iloc[oth]])
        groups = P.conversations["cluster"].to_numpy()[np.r_[ref, oth]]
        y = np.r_[np.zeros(len(ref)), np.ones(len(oth))]
        return {"classifier_auc": Estimate(grouped_auc(X, y, groups))}
    people = (
        P.conversations["cluster"].iloc[ref].str.removeprefix("p:").where(lambda s: ~s.str.startswith("c:"))
    )
    human = P.classifier.iloc[ref].assign(participant=people.to_numpy())
    res = classifier_auc(human, P.classifier.iloc[oth], features=list(P.classifier.columns))
    est = Estimate(res["auc"], note=res["note"], ci_low=res["ci_low"], ci_high=res["ci_high"])
    return {"classifier_auc": est}


# family name -> (compute, bootstrap replicates: None = the family gives its own interval)
FAMILIES: dict[str, tuple[Callable[..., dict], int | None]] = {
    "fingerprint": (_fingerprint_family, DEFAULT_BOOT),
    "lexical": (_lexical_family, DEFAULT_BOOT),
    "distribution": (_distribution_family, DISTANCE_BOOT),
    "classifier": (_classifier_family, None),
}


# --------------------------------------------------------------------------------------------------
# Resampling: participant halves for the ceiling, cluster bootstrap for intervals
# --------------------------------------------------------------------------------------------------


def _cluster_index(idx: np.ndarray, clusters: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``idx`` ordered by cluster, each cluster's start in that order and its size."""
    _, inv = np.unique(clusters, return_inverse=True)
    order = idx[np.argsort(inv, kind="stable")]
    sizes = np.bincount(inv)
    return order, np.cumsum(sizes) - sizes, sizes


def cluster_resample(
    idx: np.ndarray, clusters: np.ndarray, rng: np.random.Generator, index: tuple | None = None
) -> np.ndarray:
    """A bootstrap draw of ``idx``: whole clusters (participants) drawn with replacement. ``index``:
    ``_cluster_index(idx, clusters)`` when already computed (it sorts, the costly part at scale)."""
    order, starts, sizes = index if index is not None else _cluster_index(idx, clusters)
    if (sizes == 1).all():
        return idx[rng.integers(len(idx), size=len(idx))]
    pick = rng.integers(len(sizes), size=len(sizes))
    n = sizes[pick]
    offsets = np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n)
    return order[np.repeat(starts[pick], n) + offsets]


def _unit_sums(values: np.ndarray, idx: np.ndarray, index: tuple) -> tuple[np.ndarray, np.ndarray]:
    """Column sums of ``values``' rows per unit that ``cluster_resample`` draws (a cluster; each of
    ``idx`` where every cluster has one row), in its order, and the units' sizes."""
    order, starts, sizes = index
    if (sizes == 1).all():
        return values[idx], sizes
    return np.add.reduceat(values[order], starts, axis=0), sizes


def _draw_counts(units: int, rng: np.random.Generator) -> np.ndarray:
    """How often each unit is drawn in one ``cluster_resample`` draw (the same random numbers)."""
    return np.bincount(rng.integers(units, size=units), minlength=units).astype(float)


def _fingerprint_boot(P: Prepared, ref: tuple, oth: tuple, rng: np.random.Generator, reps: int) -> list:
    """``reps`` bootstrap replicates of the fingerprint family from per-cluster sums: a draw's mean
    is (counts @ sums) / (counts @ sizes), the mean of the drawn rows without gathering them."""
    (sr, nr), (so, no) = _unit_sums(P.fingerprint, *ref), _unit_sums(P.fingerprint, *oth)
    out = []
    for _ in range(reps):
        wr, wo = _draw_counts(len(nr), rng), _draw_counts(len(no), rng)
        out.append(_fingerprint_values(wr @ sr / (wr @ nr), wo @ so / (wo @ no)))
    return out


def _lexical_sums(P: Prepared, idx: np.ndarray, index: tuple) -> tuple[np.ndarray, np.ndarray]:
    """Per unit and lexical score: count of scored conversations, sum, and sum of squares around the
    side's mean (centred, so a draw's variance keeps its precision); the centre."""
    x = P.lexical[idx]
    centre = np.nansum(x, axis=0) / np.maximum((~np.isnan(x)).sum(axis=0), 1)
    ok = ~np.isnan(P.lexical)  # rows outside ``idx`` are never read by ``_unit_sums``
    parts = [ok.astype(float), np.where(ok, P.lexical, 0.0), np.where(ok, (P.lexical - centre) ** 2, 0.0)]
    sums = [_unit_sums(v, idx, index)[0] for v in parts]
    return np.stack(sums), centre


def _lexical_boot(P: Prepared, ref: tuple, oth: tuple, rng: np.random.Generator, reps: int) -> list:
    """``reps`` bootstrap replicates of the lexical family from per-cluster sums (as
    ``_fingerprint_boot``); a draw's SD is sqrt((sum w q - N (mean - centre)^2) / (N - 1))."""
    (hr, centre), (ho, _) = _lexical_sums(P, *ref), _lexical_sums(P, *oth)
    out = []
    for _ in range(reps):
        wr, wo = _draw_counts(hr.shape[1], rng), _draw_counts(ho.shape[1], rng)
        (n, s, q), (na, sa, _) = wr @ hr, wo @ ho
        rep = {}
        for j, m in enumerate(LEXICAL):
            if n[j] >= MIN_CONVERSATIONS and na[j] >= 1:
                hm = s[j] / n[j]
                var = (q[j] - n[j] * (hm - centre[j]) ** 2) / (n[j] - 1)
                rep[f"{m}_z"] = _lexical_value(hm, float(np.sqrt(max(var, 0.0))), sa[j] / na[j])
        out.append(rep)
    return out


# family name -> its bootstrap from per-cluster sums (same draws as resampling rows, no gathering)
BOOT_BY_SUMS: dict[str, Callable[..., list]] = {"fingerprint": _fingerprint_boot, "lexical": _lexical_boot}


def participant_halves(
    idx: np.ndarray, clusters: np.ndarray, rng: np.random.Generator, index: tuple | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Two halves of ``idx`` by cluster: clusters in random order, the first ones (up to half the
    conversations) on one side, the rest on the other; no cluster on both sides. ``index``: as for
    ``cluster_resample``."""
    order, starts, sizes = index if index is not None else _cluster_index(idx, clusters)
    perm = rng.permutation(len(sizes))
    before = np.cumsum(sizes[perm]) - sizes[perm]
    first = perm[before < len(idx) / 2]
    if len(first) == len(sizes):  # one huge cluster first: keep one cluster on the other side
        first = first[:-1]
    mask = np.zeros(len(sizes), dtype=bool)
    mask[first] = True
    side = np.repeat(mask, sizes)
    return order[side], order[~side]


# --------------------------------------------------------------------------------------------------
# Assembly: values, intervals, ceilings, calibration, records
# --------------------------------------------------------------------------------------------------


def calibrate(direction: str, value: float | None, ceiling: float | None) -> float | None:
    """The value as a share of the human ceiling, in [0, 1] (1 = as like people as people are to
    each other). higher: value / ceiling; lower: ceiling / value; zero (z-scores, the ceiling the
    mean |z| between halves): 1 - the excess |z| over the ceiling; half (AUC, the ceiling folded
    to >= 0.5): 1 - the excess distance from 0.5 over the ceiling's, as a share of the room left
    (0 = fully separable)."""
    if value is None or ceiling is None or np.isnan(value) or np.isnan(ceiling):
        return None
    if direction == "higher":
        share = value / ceiling if ceiling > 0 else float(value >= ceiling)
    elif direction == "lower":
        share = ceiling / value if value > 0 else 1.0
    elif direction == "zero":
        share = 1.0 - max(0.0, abs(value) - ceiling)
    else:
        gap, ceiling_gap = abs(value - 0.5), abs(ceiling - 0.5)
        room = 0.5 - ceiling_gap
        share = 1.0 - max(0.0, gap - ceiling_gap) / room if room > 0 else 0.0
    return float(min(1.0, max(0.0, share)))


def _ceiling_value(direction: str, value: float | None) -> float | None:
    """What one split contributes to the ceiling: |z| for z-scores, 0.5 + |AUC - 0.5| for the AUC
    (which half is called "people" is arbitrary, so only the distance from 0.5 counts)."""
    if value is None:
        return None
    return abs(value) if direction == "zero" else 0.5 + abs(value - 0.5) if direction == "half" else value


def human_ceiling(P: Prepared, splits: int = DEFAULT_SPLITS, seed: int = 0) -> tuple[dict, str]:
    """metric -> the per-split values of people against people (``participant_halves``), and a note
    ('' when computed)."""
    hum = np.flatnonzero(P.conversations["population"].to_numpy() == "human")
    clusters = P.conversations["cluster"].to_numpy()[hum]
    if len(np.unique(clusters)) < 2 or len(hum) < 2 * MIN_CONVERSATIONS:
        return {}, "no human ceiling: fewer than two participants (or 4 conversations) among the humans"
    rng = np.random.default_rng(seed)
    out: dict[str, list[float]] = {m.name: [] for m in METRICS}
    index = _cluster_index(hum, clusters)  # sorted once, not per split
    for _ in range(splits):
        a, b = participant_halves(hum, clusters, rng, index)
        for fam, _boot in FAMILIES.values():
            for name, est in fam(P, a, b, ceiling=True).items():
                v = _ceiling_value(METRIC_BY_NAME[name].direction, est.value)
                if v is not None and np.isfinite(v):
                    out[name].append(v)
    return out, ""


def _estimates(P: Prepared, ref: np.ndarray, oth: np.ndarray, n_boot: int, seed: int) -> dict:
    """metric -> (Estimate, bootstrap values) of one simulator against the humans."""
    rng = np.random.default_rng(seed)
    clusters = P.conversations["cluster"].to_numpy()
    ref_index, oth_index = _cluster_index(ref, clusters[ref]), _cluster_index(oth, clusters[oth])
    out = {}
    for name, (fam, boot) in FAMILIES.items():
        point = fam(P, ref, oth)
        reps = min(n_boot, boot) if boot is not None and n_boot > 0 else 0
        if name in BOOT_BY_SUMS:
            replicates = BOOT_BY_SUMS[name](P, (ref, ref_index), (oth, oth_index), rng, reps)
        else:
            replicates = (
                fam(
                    P,
                    cluster_resample(ref, None, rng, ref_index),
                    cluster_resample(oth, None, rng, oth_index),
                )
                for _ in range(reps)
            )
        draws: dict[str, list[float]] = {k: [] for k in point}
        for rep in replicates:
            for k, est in rep.items():
                if est.value is not None and np.isfinite(est.value):
                    draws[k].append(est.value)
        out.update({k: (est, draws[k]) for k, est in point.items()})
    return out


def _record(sim, metric: Metric, est: Estimate, draws, ceil: list, n_h: int, n_a: int, P: Prepared) -> dict:
    lo, hi = est.ci_low, est.ci_high
    if lo is None and len(draws) >= 10:
        lo, hi = (float(x) for x in np.percentile(draws, [2.5, 97.5]))
        if metric.family == "distribution" and est.value is not None:
            # Drawing with replacement repeats conversations, which moves nearest-neighbour
            # distances by itself; the interval keeps the draws' spread around the estimate.
            shift = est.value - float(np.mean(draws))
            lo, hi = lo + shift, hi + shift
    c = float(np.mean(ceil)) if ceil else None
    note = est.note
    if est.value is not None and c is None:
        note = "; ".join(x for x in (note, "no human ceiling") if x)
    return {
        "simulator": sim,
        "metric": metric.name,
        "group": metric.group,
        "value": est.value,
        "ci_low": lo,
        "ci_high": hi,
        "human_ceiling": c,
        "calibrated": calibrate(metric.direction, est.value, c),
        "human_mean": est.human_mean,
        "agent_mean": est.agent_mean,
        "n_human": n_h,
        "n_agent": n_a,
        "note": note,
        "direction": metric.direction,
        "ceiling_sd": float(np.std(ceil, ddof=1)) if len(ceil) > 1 else None,
        "ceiling_low": float(np.percentile(ceil, 2.5)) if ceil else None,
        "ceiling_high": float(np.percentile(ceil, 97.5)) if ceil else None,
        "n_splits": len(ceil),
        "embedding": P.embedding_name if metric.family == "distribution" else "",
    }


def fidelity_df(
    P: Prepared, splits: int = DEFAULT_SPLITS, n_boot: int = DEFAULT_BOOT, seed: int = 0
) -> pd.DataFrame:
    """One record per simulator and metric (``RECORD_COLUMNS``). Without simulated conversations the
    records carry the human ceiling with simulator None; without people every value is empty and the
    note says why."""
    pops = P.conversations["population"].to_numpy()
    hum = np.flatnonzero(pops == "human")
    ceil, ceil_note = human_ceiling(P, splits, seed)
    sims = sorted(set(pops) - {"human"})
    rows = []
    if not sims:
        note = "; ".join(x for x in ("no simulated conversations in this study", ceil_note) if x)
        for m in METRICS:
            rows.append(_record(None, m, Estimate(None, note=note), [], ceil.get(m.name, []), len(hum), 0, P))
        return pd.DataFrame(rows, columns=RECORD_COLUMNS)
    for i, sim in enumerate(sims):
        oth = np.flatnonzero(pops == sim)
        if len(hum) < MIN_CONVERSATIONS or len(oth) < MIN_CONVERSATIONS:
            why = "no human conversations" if not len(hum) else "fewer than 2 conversations on a side"
            est = dict.fromkeys((m.name for m in METRICS), (Estimate(None, note=why), []))
        else:
            est = _estimates(P, hum, oth, n_boot, seed + 1 + i)
        for m in METRICS:
            e, draws = est[m.name]
            rec = _record(sim, m, e, draws, ceil.get(m.name, []), len(hum), len(oth), P)
            if ceil_note and not e.note:
                rec["note"] = ceil_note
            rows.append(rec)
    return pd.DataFrame(rows, columns=RECORD_COLUMNS)


# The ranking: families of measures, each the mean of its calibrated scores.
RANKING_FAMILIES = {
    "fingerprint": ["usi_d"],
    "lexical": ["mattr_z", "yules_k_z", "hdd_z"],
    "distribution": ["coverage", "frechet"],
    "discriminator": ["classifier_auc"],
    "judge": [
        "judge_pi"
    ],  # share of the HH anchor, as the AUC; only with `likeness --judge` or stored judgements
    # analysis.instruments / analysis.rank_agreement, where the study has the participants' answers
    "survey": ["survey_mae"],
    "rank_agreement": ["rank_spearman"],
}
# A metric with several records per simulator counts only these groups (group prefixes): the
# survey's overall error (not its items), the assistant-level rank correlations (each outcome).
RANKING_GROUPS = {"survey_mae": ("survey",), "rank_spearman": ("assistant:",)}


def _ranked_calibrated(g: pd.DataFrame) -> pd.Series:
    """metric -> its calibrated score for the ranking (the mean over the records it counts)."""
    keep = [
        m not in RANKING_GROUPS or str(grp).startswith(RANKING_GROUPS[m])
        for m, grp in zip(g["metric"], g["group"])
    ]
    g = g[keep]
    return g.groupby("metric")["calibrated"].agg(lambda v: v.dropna().mean() if v.notna().any() else None)


def ranking_df(records: pd.DataFrame, label_index: dict | None = None) -> pd.DataFrame:
    """Simulators ranked by ``fidelity_score``: the mean over the families of measures (fingerprint,
    lexical, distribution, discriminator, survey and rank agreement where the study has the
    participants' answers (``RANKING_GROUPS`` says which records count) and, when labels exist, ``labels`` = the label-based
    human-likeness index of ``analysis.likeness``) of each family's mean calibrated score; highest
    first, ties by name."""
    rows = []
    recs = records[records["simulator"].notna()]
    for sim, g in recs.groupby("simulator", sort=True):
        cal = _ranked_calibrated(g)
        n_agent = pd.to_numeric(g["n_agent"], errors="coerce").dropna()
        row = {"simulator": sim, "n_agent": int(n_agent.iloc[0]) if len(n_agent) else 0}
        for fam, names in RANKING_FAMILIES.items():
            vals = [float(cal[n]) for n in names if n in cal.index and pd.notna(cal[n])]
            row[fam] = float(np.mean(vals)) if vals else None
        lab = (label_index or {}).get(sim)
        row["labels"] = float(lab) if lab is not None and pd.notna(lab) else None
        fams = [row[f] for f in [*RANKING_FAMILIES, "labels"] if row[f] is not None]
        row["fidelity_score"] = float(np.mean(fams)) if fams else None
        row["n_families"] = len(fams)
        rows.append(row)
    out = pd.DataFrame(rows, columns=RANKING_COLUMNS[1:])
    out = out.sort_values(["fidelity_score", "simulator"], ascending=[False, True], na_position="last")
    out.insert(0, "rank", range(1, len(out) + 1))
    return out.reset_index(drop=True)


def fidelity_tables(
    P: Prepared,
    splits: int = DEFAULT_SPLITS,
    n_boot: int = DEFAULT_BOOT,
    seed: int = 0,
    label_index: dict | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(records, ranking) of a prepared study."""
    with serial_blas():
        records = fidelity_df(P, splits, n_boot, seed)
    return records, ranking_df(records, label_index)


# --------------------------------------------------------------------------------------------------
# A stored study
# --------------------------------------------------------------------------------------------------


def user_turns_df(
    engine, conversations: pd.DataFrame, language: str | None, chunk: int = 5000
) -> pd.DataFrame:
    """The user turns of ``conversations`` in the analysis language (a turn in another language is
    replaced by its stored translation into ``language``, as the features do): conversation_id,
    turn_index, text, lang."""
    from analysis.features import _texts, _turns_frame

    ids = [int(c) for c in conversations["conversation_id"]]
    rows = []
    for i in range(0, len(ids), chunk):
        part = ids[i : i + chunk]
        convs = conversations[conversations["conversation_id"].isin(part)]
        for t in _texts(_turns_frame(engine, part), convs, language):
            if t.role == "user" and t.text:
                rows.append((t.conversation_id, t.index, t.text, t.lang))
    return pd.DataFrame(rows, columns=["conversation_id", "turn_index", "text", "lang"])


EMBED_FIT_SAMPLE = 20_000  # above this many conversations the embedding is fitted on a sample


def prepare_study(
    engine, data, pipelines: dict | None = None, embedder: Embedder | None = None, chunk: int = 5000
) -> Prepared:
    """``prepare`` of a stored study (``analysis.dataset.StudyData``). Up to ``EMBED_FIT_SAMPLE``
    conversations all user turns are read at once and the embedding is fitted on all of them;
    above, the embedding is fitted on a seeded random sample of that many conversations and the
    per-conversation scores and embeddings are computed chunk by chunk (in worker processes,
    ``analysis.parallel``), so no more than one chunk's turns per process are held in memory."""
    emb = embedder or choose_embedder()
    kinds = data.conversations[data.conversations["user_kind"].isin(["human", "agent"])]
    if len(kinds) <= EMBED_FIT_SAMPLE or emb.fit is None:
        turns = user_turns_df(engine, data.conversations, data.language)
        return prepare(
            data.conversations,
            turns,
            data.features,
            pipelines=pipelines,
            embedder=emb,
            language=data.language,
        )
    from analysis.parallel import engine_url, map_chunks, use_workers

    convs = _populations(kinds)
    ids = convs["conversation_id"].to_numpy()
    meta = kinds[["conversation_id", "language"]]
    sample = np.sort(np.random.default_rng(0).choice(ids, EMBED_FIT_SAMPLE, replace=False))
    turns = user_turns_df(engine, meta[meta["conversation_id"].isin(sample)], data.language)
    _, _, joined, flat = conversation_scores(sample, turns, pipelines)
    with serial_blas():
        model = emb.fit(joined, flat)
    del turns, joined, flat
    workers = use_workers(engine, len(ids))
    url = engine_url(engine) if workers > 1 else None
    parts = [ids[i : i + chunk] for i in range(0, len(ids), chunk)]
    jobs = (
        (
            url,
            None if url else engine,
            meta[meta["conversation_id"].isin(p)],
            data.language,
            model,
            None if url else pipelines,
        )
        for p in parts
    )
    pos = pd.Series(np.arange(len(ids)), index=ids)
    fp, lex, matrix = np.empty((len(ids), len(FINGERPRINT_FEATURES))), np.empty((len(ids), 3)), None
    for cids, f, lx, z in map_chunks(_score_chunk, jobs, workers):
        rows = pos.loc[cids].to_numpy()
        if matrix is None:
            matrix = np.empty((len(ids), z.shape[1]))
        fp[rows], lex[rows], matrix[rows] = f, lx, z
    clf = _classifier_frame(convs, data.features)
    return Prepared(convs, fp, lex, matrix, model.description, clf, data.language)


_WORKER_PIPELINES: dict = {}


def _score_chunk(url, engine, meta: pd.DataFrame, language, model, pipelines):
    """One chunk of ``prepare_study``: (conversation ids, fingerprint, lexical scores, embedding)."""
    if url is not None:
        from analysis.parallel import worker_engine

        engine, pipelines = worker_engine(url), _WORKER_PIPELINES
    turns = user_turns_df(engine, meta, language)
    cids = meta["conversation_id"].to_numpy()
    fp, lex, joined, flat = conversation_scores(cids, turns, pipelines)
    with serial_blas():
        return cids, fp, lex, np.asarray(model.transform(joined, flat), float)


def label_index_of(likeness: dict | None) -> dict:
    """simulator -> the label-based human-likeness index of ``analysis.likeness.likeness_tables``."""
    ranking = (likeness or {}).get("ranking")
    if ranking is None or not len(ranking):
        return {}
    return dict(zip(ranking["simulator"], ranking["human_likeness_index"]))


def study_fidelity(
    engine,
    data,
    splits: int = DEFAULT_SPLITS,
    n_boot: int = DEFAULT_BOOT,
    pipelines: dict | None = None,
    likeness: dict | None = None,
    embedding: str | None = None,
) -> dict[str, pd.DataFrame]:
    """``{"records", "ranking"}`` of a loaded study (``analysis.dataset.StudyData``); ``likeness``:
    the label-based tables, whose index joins the ranking when labels exist."""
    P = prepare_study(engine, data, pipelines=pipelines, embedder=choose_embedder(embedding))
    records, ranking = fidelity_tables(P, splits, n_boot, label_index=label_index_of(likeness))
    return {"records": records, "ranking": ranking}


def fidelity_records(records: pd.DataFrame) -> list[dict]:
    """The records as JSON-ready dicts (NaN as null)."""
    clean = records.astype(object).where(records.notna(), None)
    return [
        {k: (v.item() if hasattr(v, "item") else v) for k, v in r.items()} for r in clean.to_dict("records")
    ]


def write_fidelity(tables: dict[str, pd.DataFrame] | None, out_dir: Path) -> list[Path]:
    """fidelity.json (a list of records), fidelity.csv and fidelity_ranking.csv in ``out_dir``, and
    indistinguishability.csv (+ _agreement.csv) when ``tables`` holds them."""
    if not tables:
        return []
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / "fidelity.json", out_dir / "fidelity.csv", out_dir / "fidelity_ranking.csv"]
    paths[0].write_text(
        json.dumps(fidelity_records(tables["records"]), ensure_ascii=False, indent=1), encoding="utf-8"
    )
    tables["records"].to_csv(paths[1], index=False)
    tables["ranking"].to_csv(paths[2], index=False)
    for key in ("indistinguishability", "indistinguishability_agreement"):  # analysis.indistinguishability
        if tables.get(key) is not None and len(tables[key]):
            paths.append(out_dir / f"{key}.csv")
            tables[key].to_csv(paths[-1], index=False)
    return paths
