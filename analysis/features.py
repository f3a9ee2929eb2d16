"""Computational features of the user's side of a conversation, in English and Chinese.

Tokens come from spaCy (a blank pipeline per language; Chinese segmented by jieba; a trained
pipeline such as ``en_core_web_sm`` is used when installed), run batched with ``nlp.pipe``.
Markers (pronouns, politeness, hedges, farewells) are matched with small per-language regex
lexicons on the text, because jieba glues some of them to neighbours ("谢谢您").

Two registries say what is measured, one entry per measure: ``TURN_MEASURES`` (a column of the
per-user-turn table, stored as ``ConversationFeatures.turns``) and ``FEATURES`` (a column of the
per-conversation table, stored as ``ConversationFeatures.values``, compared human vs agent and
offered by the dashboard). Adding a conversation feature is one ``Feature`` entry; one that needs a
new per-turn count adds a ``TurnMeasure`` too. Entry order is column order, so append (and raise
``FEATURES_VERSION`` when stored values change).

``compute_features_df`` is pure (frames in, frames out); ``features_df`` adds the feature store:
rows of ``ConversationFeatures`` keyed by conversation and ``feature_version``, so each conversation
is processed once per version.

Example::

    conv_features, turn_features = compute_features_df(turns, conversations, pipelines=load_pipelines())
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd

from annotation.nlp import MAX_TEXT_CHARS, clip_texts, lang_key, load_pipeline, load_pipelines  # noqa: F401  (part of this module's API)
from db.frames import read_frame

FEATURES_VERSION = "3"  # 3: Chinese acceptance cues 行 / 可以 only as a reply of their own
MATTR_WINDOW = 50  # Covington & McFall (2010) use 500 for long texts; user turns here are short

_I = re.IGNORECASE
LEXICON = {
    "en": {
        "first_person": re.compile(r"\b(i|me|my|mine|myself|we|us|our|ours|ourselves)\b", _I),
        "second_person": re.compile(r"\b(you|your|yours|yourself|yourselves|u)\b", _I),
        "politeness": re.compile(
            r"\b(please|pls|thanks?|thank you|thx|appreciated?|kindly|grateful|sorry|"
            r"excuse me|would you mind|could you)\b",
            _I,
        ),
        "hedges": re.compile(
            r"\b(maybe|perhaps|possibly|probably|might|somewhat|i guess|i think|i suppose|"
            r"not sure|kind of|sort of|seems?|likely|roughly|approximately)\b",
            _I,
        ),
        "question": re.compile(r"\?"),
        "farewell": re.compile(r"\b(thank(s| you)|bye|goodbye|that'?s all|cheers)\b", _I),
        "accept": re.compile(
            r"\b(sounds (great|good|perfect|wonderful)|that'?s (great|perfect|helpful)|perfect|"
            r"i'?ll (go with|take|try|book|choose)|let'?s go with|great (idea|suggestion)|"
            r"i like (that|this|it)|works for me|ok(ay)?|yes)\b",
            _I,
        ),
        "reject": re.compile(
            r"\b(but|however|not|don'?t|doesn'?t|instead|rather|too (expensive|far|long))\b", _I
        ),
    },
    "zh": {
        "first_person": re.compile(r"我们|咱们|我|咱|俺|本人"),
        "second_person": re.compile(r"你们|您|你"),
        "politeness": re.compile(r"请|谢谢|感谢|麻烦|劳驾|不好意思|辛苦|您"),
        "hedges": re.compile(r"可能|也许|或许|大概|好像|似乎|估计|不确定|不太确定|差不多|大约|左右"),
        "question": re.compile(r"[?？]|[吗呢么]\s*[。.!！]?\s*$|什么|怎么|哪|几|多少|是否|能否|可否"),
        "farewell": re.compile(r"谢谢|感谢|再见|拜拜|好的就这样|没有其他问题"),
        # 行 and 可以 only as a reply of their own ("行吧。", "可以，就这个"): inside words (行程, 旅行)
        # or requests ("你可以推荐…吗", "可以吗") they are not acceptance.
        "accept": re.compile(
            r"好的|不错|就这个|就这样|挺好|很好|太好了|满意|没问题"
            r"|(?:^|[，,。.！!~～\s])(?:那|那就|这个|这样)?(?:行|可以)(?:了|的|啊|呀|吧|哦)?(?=[，,。.！!~～\s]|$)"
        ),
        "reject": re.compile(r"但是|不过|可是|不要|不想|不太|不行|换|太贵|太远|还是"),
    },
}
_EXCLAIM = re.compile(r"[!！]")
_EMOJI = re.compile("[\U0001f300-\U0001faff\U00002600-\U000027bf\U0001f000-\U0001f2ff\U0001f900-\U0001f9ff]")
_WORDLIKE = re.compile(r"\w", re.UNICODE)

# Persona facts and what would contradict them in the user's own turns: (fact, persona pattern,
# contradicting pattern). Deliberately simple and transparent; a hit is a candidate for review,
# not proof (the user may mention meat to exclude it).
PERSONA_RULES = [
    (
        "vegetarian",
        re.compile(r"vegetarian|vegan|素食|吃素", _I),
        re.compile(r"\b(beef|pork|chicken|steak|bacon|lamb|ham|meat)\b|牛肉|猪肉|鸡肉|牛排|羊肉|红烧肉", _I),
    ),
    (
        "budget",
        re.compile(r"frugal|budget|thrifty|economical|saving money|节俭|省钱|经济实惠|性价比", _I),
        re.compile(r"luxury|luxurious|five-star|5-star|first class|splurge|豪华|奢侈|五星|头等舱", _I),
    ),
    (
        "introvert",
        re.compile(r"introvert|quiet|内向|安静", _I),
        re.compile(r"nightlife|nightclub|party|parties|crowded|夜店|蹦迪|派对|热闹", _I),
    ),
    (
        "no_alcohol",
        re.compile(r"don'?t drink|non-drinker|teetotal|no alcohol|不喝酒|不饮酒|滴酒不沾", _I),
        re.compile(r"\b(wine|beer|cocktails?|whisk(e)?y|bar)\b|酒吧|啤酒|红酒|鸡尾酒", _I),
    ),
]


def persona_contradiction(persona: str | None, user_texts: list[str]) -> float:
    """1.0 when the persona states a fact of ``PERSONA_RULES`` and a user turn says its opposite,
    0.0 when not, NaN without a persona."""
    if not persona:
        return float("nan")
    joined = "\n".join(user_texts)
    return float(any(p.search(persona) and c.search(joined) for _, p, c in PERSONA_RULES))


def pipeline_id(pipelines: dict) -> str:
    return ",".join(f"{k}:{nlp.meta.get('name', 'blank')}" for k, nlp in sorted(pipelines.items()))


def mattr(tokens: list[str], window: int = MATTR_WINDOW) -> float:
    """Moving-average type-token ratio (Covington & McFall 2010): mean TTR over every window of
    ``window`` tokens; plain TTR when the text is shorter than one window."""
    n = len(tokens)
    if n == 0:
        return float("nan")
    if n <= window:
        return len(set(tokens)) / n
    counts = Counter(tokens[:window])
    total = len(counts)
    for i in range(window, n):
        out, inc = tokens[i - window], tokens[i]
        counts[out] -= 1
        if counts[out] == 0:
            del counts[out]
        counts[inc] += 1
        total += len(counts)
    return total / (n - window + 1) / window


# --------------------------------------------------------------------------------------------------
# The registries: what is measured per user turn and per conversation
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TurnMeasure:
    """A count or flag per user turn. ``measure(text, lexicon, words)``: the turn's text in the
    analysis language, that language's ``LEXICON`` entry and its word tokens."""

    name: str
    description: str
    measure: Callable[[str, dict, list[str]], int]
    languages: str = ""  # how the measure differs between English and Chinese, when it does


TURN_MEASURES: tuple[TurnMeasure, ...] = (
    TurnMeasure(
        "chars", "characters, surrounding whitespace stripped", lambda text, lex, words: len(text.strip())
    ),
    TurnMeasure(
        "words",
        "tokens that are not punctuation or space",
        lambda text, lex, words: len(words),
        "zh: jieba segmentation (no HMM new-word discovery)",
    ),
    TurnMeasure(
        "question",
        "1 when the turn asks a question",
        lambda text, lex, words: int(bool(lex["question"].search(text))),
        "zh: also a final 吗/呢/么 and question words (什么, 怎么, 哪...)",
    ),
    TurnMeasure(
        "exclamation",
        "1 when the turn has an exclamation mark",
        lambda text, lex, words: int(bool(_EXCLAIM.search(text))),
    ),
    TurnMeasure("emoji", "emoji characters", lambda text, lex, words: len(_EMOJI.findall(text))),
    TurnMeasure(
        "first_person",
        "first-person pronouns",
        lambda text, lex, words: len(lex["first_person"].findall(text)),
    ),
    TurnMeasure(
        "second_person",
        "second-person pronouns",
        lambda text, lex, words: len(lex["second_person"].findall(text)),
    ),
    TurnMeasure(
        "politeness",
        "politeness markers",
        lambda text, lex, words: len(lex["politeness"].findall(text)),
        "zh: 您 counts as a politeness marker as well as a pronoun",
    ),
    TurnMeasure("hedges", "hedges", lambda text, lex, words: len(lex["hedges"].findall(text))),
    TurnMeasure(
        "accepts",
        "1 when the turn accepts a proposal and has no objection word",
        lambda text, lex, words: int(bool(lex["accept"].search(text)) and not lex["reject"].search(text)),
        "zh: 行 / 可以 only as a reply of their own",
    ),
)
TURN_FEATURES = [m.name for m in TURN_MEASURES]


@dataclass(slots=True)
class ConversationInputs:
    """What a conversation feature is computed from: the conversation's turn count, its user turns'
    measures (mean and sum of each ``TURN_MEASURES`` column; None without user turns), the mean of
    each measure over the user turns after the first, the user's word tokens, how it ended, and the
    persona with the original (untranslated) user turns."""

    n_turns: int
    user: dict | None
    after_first: dict
    words: list[str]
    ended_by: str
    end_kind: str
    persona: str | None
    original_user_texts: list[str]

    @property
    def n_user_turns(self) -> float:
        return float(self.user["n"]) if self.user is not None else 0.0

    def mean(self, measure: str) -> float:
        """Mean of a turn measure over the user turns (NaN without user turns)."""
        return float(self.user[f"{measure}_mean"]) if self.user is not None else np.nan

    def per_100_words(self, measure: str) -> float:
        """A turn measure's total per 100 user words (NaN without user words)."""
        words = float(self.user["words_sum"]) if self.user is not None else 0.0
        return 100 * float(self.user[f"{measure}_sum"]) / words if words > 0 else np.nan

    def mean_after_first(self, measure: str) -> float:
        """Mean of a turn measure over the user turns after the first (replies to a proposal)."""
        return float(self.after_first.get(measure, np.nan))


@dataclass(frozen=True)
class Feature:
    """A column of the per-conversation table. ``kind`` is its scale in the comparisons:
    "continuous" (numbers) or "nominal" (categories)."""

    name: str
    kind: str
    description: str
    compute: Callable[[ConversationInputs], float | str]
    languages: str = ""  # how the feature differs between English and Chinese, when it does
    # False for a feature that tells the data source rather than the user's behaviour: left out of
    # the human-vs-agent classifier (``analysis.likeness.classifier_auc``).
    in_classifier: bool = True


FEATURE_KINDS = ("continuous", "nominal")


def _registry(*features: Feature) -> dict[str, Feature]:
    for f in features:
        if f.kind not in FEATURE_KINDS:
            raise ValueError(f"feature {f.name}: kind {f.kind!r} is not one of {FEATURE_KINDS}")
    return {f.name: f for f in features}


FEATURES: dict[str, Feature] = _registry(
    Feature(
        "n_turns", "continuous", "turns in the conversation (user and assistant)", lambda c: float(c.n_turns)
    ),
    Feature("n_user_turns", "continuous", "user turns", lambda c: c.n_user_turns),
    Feature("user_chars_per_turn", "continuous", "mean characters per user turn", lambda c: c.mean("chars")),
    Feature(
        "user_words_per_turn",
        "continuous",
        "mean words (tokens without punctuation) per user turn",
        lambda c: c.mean("words"),
        "zh: words as segmented by jieba",
    ),
    Feature(
        "mattr",
        "continuous",
        f"moving-average type-token ratio of the user's words (window {MATTR_WINDOW})",
        lambda c: mattr(c.words),
    ),
    Feature(
        "question_rate", "continuous", "share of user turns that ask a question", lambda c: c.mean("question")
    ),
    Feature(
        "first_person_rate",
        "continuous",
        "first-person pronouns per 100 user words",
        lambda c: c.per_100_words("first_person"),
    ),
    Feature(
        "second_person_rate",
        "continuous",
        "second-person pronouns per 100 user words",
        lambda c: c.per_100_words("second_person"),
    ),
    Feature(
        "politeness_rate",
        "continuous",
        "politeness markers (please, thanks, 请, 谢谢...) per user turn",
        lambda c: c.mean("politeness"),
    ),
    Feature(
        "hedging_rate",
        "continuous",
        "hedges (maybe, I think, 可能, 也许...) per 100 user words",
        lambda c: c.per_100_words("hedges"),
    ),
    Feature(
        "exclamation_rate",
        "continuous",
        "share of user turns with an exclamation mark",
        lambda c: c.mean("exclamation"),
    ),
    Feature("emoji_rate", "continuous", "emoji per user turn", lambda c: c.mean("emoji")),
    Feature(
        "acceptance_rate",
        "continuous",
        "share of user turns after the first that accept the assistant's proposal",
        lambda c: c.mean_after_first("accepts"),
        "zh: 行 / 可以 only as a reply of their own",
    ),
    Feature(
        "persona_contradiction",
        "continuous",
        "1 when a user turn contradicts a persona fact (rule-based, see PERSONA_RULES)",
        lambda c: persona_contradiction(c.persona, c.original_user_texts),
        "read on the original user turns, whatever the analysis language",
        in_classifier=False,
    ),
    Feature(
        "ended_by_user",
        "continuous",
        "1 when the user sent the last turn or ended the conversation",
        lambda c: float(c.ended_by == "user"),
    ),
    Feature(
        "farewell_end",
        "continuous",
        "1 when the last user turn is a thanks/goodbye closing",
        lambda c: float(c.end_kind == "farewell"),
    ),
    Feature("ended_by_role", "nominal", "who ended: user | assistant | system", lambda c: c.ended_by),
    Feature(
        "end_kind", "nominal", "how it ended: farewell | max_turns | abandoned | other", lambda c: c.end_kind
    ),
)
CONTINUOUS_FEATURES = [f.name for f in FEATURES.values() if f.kind == "continuous"]
NOMINAL_FEATURES = [f.name for f in FEATURES.values() if f.kind == "nominal"]


@dataclass
class _Text:
    conversation_id: int
    index: int
    role: str
    text: str
    lang: str


def _texts(turns: pd.DataFrame, conversations: pd.DataFrame, language: str | None) -> list[_Text]:
    """The text of each turn in the analysis language: a turn in another language is replaced by its
    stored translation into ``language`` when there is one (so human Chinese and agent English
    turns with Chinese translations are compared on the same footing)."""
    conv_lang = dict(zip(conversations["conversation_id"], conversations["language"].fillna("en")))
    target = lang_key(language) if language else None
    out = []
    cols = ["conversation_id", "index", "role", "content", "translation", "translation_language"]
    for cid, idx, role, content, tr, tr_lang in turns[cols].itertuples(index=False, name=None):
        lang = lang_key(conv_lang.get(cid, "en"))
        text = content or ""
        if target and lang != target and isinstance(tr, str) and tr and lang_key(tr_lang) == target:
            text, lang = tr, target
        out.append(_Text(int(cid), int(idx), str(role), text, lang))
    return out


def compute_features_df(
    turns: pd.DataFrame,
    conversations: pd.DataFrame,
    pipelines: dict | None = None,
    language: str | None = None,
    batch_size: int = 512,
    personas: dict | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Features per conversation (one row each, ``FEATURES`` columns) and per user turn.

    ``language``: analyse every conversation in this language, using stored translations where a
    conversation is in another language (None: each conversation in its own language).
    ``personas``: profile_id -> persona text, for the persona-contradiction check (on the original
    user turns, whatever ``language``).
    """
    pipelines = pipelines if pipelines is not None else {}
    texts = _texts(turns, conversations, language)
    user = [t for t in texts if t.role == "user"]
    words, cut = _user_words(user, pipelines, batch_size)
    turn_df = _turn_measures_df(user, words)
    inputs = _conversation_inputs(turns, conversations, texts, user, words, turn_df, personas or {})
    rows = [
        {"conversation_id": cid, **{f.name: f.compute(c) for f in FEATURES.values()}} for cid, c in inputs
    ]
    out = pd.DataFrame(rows, columns=["conversation_id"] + list(FEATURES))
    out.attrs["texts_cut"] = turn_df.attrs["texts_cut"] = cut
    return out, turn_df


def _user_words(user: list[_Text], pipelines: dict, batch_size: int) -> tuple[list[list[str]], int]:
    """The lower-cased word tokens of each user turn, tokenised per language in batches (loads a
    missing language's pipeline into ``pipelines``), and how many turns were tokenised only up to
    ``annotation.nlp.MAX_TEXT_CHARS`` characters (spaCy refuses texts over 1,000,000)."""
    words: list[list[str]] = [None] * len(user)  # type: ignore[list-item]
    cut = 0
    for lang in ("en", "zh"):
        idx = [i for i, t in enumerate(user) if t.lang == lang]
        if not idx:
            continue
        if lang not in pipelines:
            pipelines[lang] = load_pipeline(lang)
        nlp = pipelines[lang]
        texts, n_cut = clip_texts(user[i].text for i in idx)
        cut += n_cut
        for i, doc in zip(idx, nlp.pipe(texts, batch_size=batch_size)):
            words[i] = [t.lower_ for t in doc if not (t.is_punct or t.is_space) and _WORDLIKE.search(t.text)]
    return words, cut


def _turn_measures_df(user: list[_Text], words: list[list[str]]) -> pd.DataFrame:
    """One row per user turn: its ids and language, then every ``TURN_MEASURES`` column."""
    rows = []
    for t, toks in zip(user, words):
        lex = LEXICON[t.lang]
        row = {"conversation_id": t.conversation_id, "turn_index": t.index, "language": t.lang}
        row.update((m.name, m.measure(t.text, lex, toks)) for m in TURN_MEASURES)
        rows.append(row)
    return pd.DataFrame(rows, columns=["conversation_id", "turn_index", "language"] + TURN_FEATURES)


def _user_aggregates(turn_df: pd.DataFrame) -> tuple[dict, dict]:
    """Per conversation: the user-turn count with the mean and sum of every turn measure, and the
    mean of every measure over the user turns after the first. Plain dicts, because ``.loc`` per
    conversation is slow at 100k conversations."""
    if not len(turn_df):
        return {}, {}
    by_conv = turn_df.groupby("conversation_id")
    spec = {"n": ("chars", "size")}
    for m in TURN_FEATURES:
        spec[f"{m}_mean"] = (m, "mean")
        spec[f"{m}_sum"] = (m, "sum")
    per_conv = by_conv.agg(**spec).to_dict("index")
    later = turn_df[by_conv.cumcount() > 0]
    after_first = (
        later.groupby("conversation_id")[TURN_FEATURES].mean().to_dict("index") if len(later) else {}
    )
    return per_conv, after_first


def _conversation_inputs(
    turns: pd.DataFrame,
    conversations: pd.DataFrame,
    texts: list[_Text],
    user: list[_Text],
    words: list[list[str]],
    turn_df: pd.DataFrame,
    personas: dict,
) -> Iterator[tuple[int, ConversationInputs]]:
    """(conversation_id, ``ConversationInputs``) for every conversation, in the given order."""
    per_conv, after_first = _user_aggregates(turn_df)
    words_by_conv: dict[int, list[str]] = {}
    for t, toks in zip(user, words):
        words_by_conv.setdefault(t.conversation_id, []).extend(toks)
    n_turns, last_turn, last_user = Counter(), {}, {}
    for t in texts:  # turns are ordered by index
        n_turns[t.conversation_id] += 1
        last_turn[t.conversation_id] = t
        if t.role == "user":
            last_user[t.conversation_id] = t
    originals: dict[int, list[str]] = {}
    for cid, role, content in turns[["conversation_id", "role", "content"]].itertuples(
        index=False, name=None
    ):
        if role == "user":
            originals.setdefault(int(cid), []).append(content or "")
    persona_of = (
        dict(zip(conversations["conversation_id"], conversations["profile_id"]))
        if "profile_id" in conversations.columns
        else {}
    )
    meta_cols = [c for c in ("ended_by", "end_reason", "status") if c in conversations.columns]
    meta = conversations.set_index("conversation_id")[meta_cols].to_dict("index")
    for cid in conversations["conversation_id"]:
        cid = int(cid)
        ended_by, end_kind = _ending(meta.get(cid, {}), last_turn.get(cid), last_user.get(cid))
        yield (
            cid,
            ConversationInputs(
                n_turns=n_turns.get(cid, 0),
                user=per_conv.get(cid),
                after_first=after_first.get(cid, {}),
                words=words_by_conv.get(cid, []),
                ended_by=ended_by,
                end_kind=end_kind,
                persona=personas.get(persona_of.get(cid)),
                original_user_texts=originals.get(cid, []),
            ),
        )


def _ending(conv: dict, last: _Text | None, last_user: _Text | None) -> tuple[str, str]:
    """Who ended the conversation and how: the recorded ``ended_by`` / ``end_reason`` when present,
    otherwise read from the transcript (the role of the last turn; a closing thanks/goodbye)."""
    ended_by = conv.get("ended_by") if isinstance(conv.get("ended_by"), str) else None
    if ended_by is None:
        ended_by = last.role if last is not None else "none"
    reason = conv.get("end_reason") if isinstance(conv.get("end_reason"), str) else ""
    status = conv.get("status") if isinstance(conv.get("status"), str) else ""
    if (
        last_user is not None
        and LEXICON[last_user.lang]["farewell"].search(last_user.text)
        and len(last_user.text) < 200
    ):
        kind = "farewell"
    elif "max_turn" in reason:
        kind = "max_turns"
    elif status == "abandoned" or "abandon" in reason or "timeout" in reason:
        kind = "abandoned"
    else:
        kind = "other"
    return ended_by, kind


# --------------------------------------------------------------------------------------------------
# Feature store
# --------------------------------------------------------------------------------------------------


def feature_version(pipelines: dict, language: str | None) -> str:
    return f"v{FEATURES_VERSION}|lang={lang_key(language) if language else 'own'}|{pipeline_id(pipelines)}"


def features_df(
    engine,
    study_id: int,
    conversations: pd.DataFrame,
    pipelines: dict | None = None,
    language: str | None = None,
    recompute: bool = False,
    chunk: int = 5000,
) -> pd.DataFrame:
    """Per-conversation features of the given conversations, from the feature store; conversations
    without stored features for this version are computed in chunks and stored first (chunk by
    chunk, so an interrupted run resumes where it stopped). Large jobs run in worker processes
    (``analysis.parallel``) when the pipelines are the installed ones (``load_pipelines``)."""
    from sqlalchemy import delete, insert

    from analysis.parallel import engine_url, map_chunks, use_workers
    from db.models.analysis import ConversationFeatures
    from db.types import utcnow

    own = pipelines is None
    pipelines = pipelines if pipelines is not None else load_pipelines()
    version = feature_version(pipelines, language)
    ids = [int(c) for c in conversations["conversation_id"]]
    table = ConversationFeatures.__table__
    if recompute:
        with engine.begin() as conn:
            for i in range(0, len(ids), chunk):
                conn.execute(
                    delete(table).where(
                        table.c.version == version, table.c.conversation_id.in_(ids[i : i + chunk])
                    )
                )
    frames, done = _stored_values(engine, table, version, ids, chunk)
    missing = [c for c in ids if c not in done]
    del done
    cols = ["conversation_id", "language", "profile_id", "ended_by", "end_reason", "status"]
    meta = conversations[[c for c in cols if c in conversations.columns]]
    parts = [missing[i : i + chunk] for i in range(0, len(missing), chunk)]
    workers = use_workers(engine, len(missing)) if own else 1
    if workers > 1:
        url = engine_url(engine)
        jobs = ((url, None, meta[meta["conversation_id"].isin(p)], language, version) for p in parts)
    else:
        jobs = (
            (None, engine, meta[meta["conversation_id"].isin(p)], language, version, pipelines) for p in parts
        )
    texts_cut = 0
    for rows, cut in map_chunks(_feature_chunk, jobs, workers):
        texts_cut += cut
        if rows:
            now = utcnow()
            with engine.begin() as conn:
                conn.execute(insert(table), [{**r, "computed_at": now} for r in rows])
            frames.append(_values_frame([r["conversation_id"] for r in rows], [r["values"] for r in rows]))
    out = _in_order(frames, ids)
    for col in CONTINUOUS_FEATURES:
        out[col] = pd.to_numeric(out[col], errors="coerce").astype(float)
    out.attrs["feature_version"] = version
    return _note_cut(out, texts_cut)


def _stored_values(engine, table, version: str, ids: list[int], chunk: int) -> tuple[list, set]:
    """The stored feature values of ``ids`` (this version) as frames, one per chunk, and their ids."""
    from sqlalchemy import select

    frames, done = [], set()
    with engine.connect() as conn:
        for i in range(0, len(ids), chunk):
            q = select(table.c.conversation_id, table.c["values"]).where(
                table.c.version == version, table.c.conversation_id.in_(ids[i : i + chunk])
            )
            got = conn.execute(q).all()
            if got:
                frames.append(_values_frame([int(c) for c, _ in got], [v for _, v in got]))
                done.update(int(c) for c, _ in got)
    return frames, done


def _values_frame(cids: list[int], values: list[dict]) -> pd.DataFrame:
    out = pd.DataFrame.from_records(values, columns=list(FEATURES))
    out.insert(0, "conversation_id", cids)
    return out


def _in_order(frames: list[pd.DataFrame], ids: list[int]) -> pd.DataFrame:
    """The frames' rows (one per conversation) in the order of ``ids``."""
    if not frames:
        return pd.DataFrame(columns=["conversation_id"] + list(FEATURES))
    allf = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    pos = pd.Series(range(len(allf)), index=allf["conversation_id"].to_numpy())
    return allf.iloc[pos.loc[ids].to_numpy()].reset_index(drop=True)


def _feature_chunk(url, engine, convs: pd.DataFrame, language, version: str, pipelines=None):
    """Compute one chunk of conversations: (rows for the feature store without ``computed_at``,
    user turns cut). In a worker process (``url`` set) the engine and pipelines are its own."""
    if url is not None:
        from analysis.parallel import worker_engine

        engine = worker_engine(url)
        pipelines = _worker_pipelines()
        if feature_version(pipelines, language) != version:
            raise RuntimeError("a worker process loaded different NLP pipelines than its parent")
    part = [int(c) for c in convs["conversation_id"]]
    turns = _turns_frame(engine, part)
    conv_feats, turn_feats = compute_features_df(
        turns, convs, pipelines, language, personas=persona_texts(engine, convs)
    )
    # the turns' records grouped in one pass (a groupby with to_dict per conversation took 80% here)
    by_conv: dict[int, list[dict]] = {}
    for turn in turn_feats.to_dict("records") if len(turn_feats) else []:
        by_conv.setdefault(int(turn.pop("conversation_id")), []).append(turn)
    rows = []
    for rec in conv_feats.to_dict("records"):
        cid = int(rec.pop("conversation_id"))
        vals = {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in rec.items()}
        rows.append(
            {
                "conversation_id": cid,
                "version": version,
                "values": vals,
                "turns": _jsonable(by_conv.get(cid, [])),
            }
        )
    return rows, conv_feats.attrs["texts_cut"]


_PIPELINES: dict = {}


def _worker_pipelines() -> dict:
    if not _PIPELINES:
        _PIPELINES.update(load_pipelines())
    return _PIPELINES


def _note_cut(out: pd.DataFrame, texts_cut: int) -> pd.DataFrame:
    """Say in the table's attrs how many user turns (of those computed now) were tokenised only up to
    ``MAX_TEXT_CHARS`` characters."""
    out.attrs["texts_cut"] = texts_cut
    if texts_cut:
        out.attrs["note"] = (
            f"{texts_cut} user turn(s) over {MAX_TEXT_CHARS:,} characters were tokenised up to that length"
        )
    return out


def _turns_frame(engine, conversation_ids: list[int]) -> pd.DataFrame:
    """The turn columns features need, read with one Core query (no ORM objects: 100k conversations
    have ~1M turns)."""
    from sqlalchemy import select

    from db.models import Turn

    t = Turn.__table__
    cols = ["conversation_id", "index", "role", "content", "translation", "translation_language"]
    q = (
        select(*[t.c[c] for c in cols])
        .where(t.c.conversation_id.in_(conversation_ids))
        .order_by(t.c.conversation_id, t.c["index"])
    )
    with engine.connect() as conn:
        return read_frame(conn, q, cols, shared=["role", "translation_language"])


def persona_texts(engine, conversations: pd.DataFrame) -> dict:
    """profile_id -> persona text (free text, its translations and structured fields, joined)."""
    import json

    from sqlmodel import Session, select

    from db.models import Profile

    ids = [int(p) for p in conversations.get("profile_id", pd.Series(dtype=float)).dropna().unique()]
    out = {}
    with Session(engine) as session:
        for i in range(0, len(ids), 5000):
            for prof in session.exec(select(Profile).where(Profile.id.in_(ids[i : i + 5000]))).all():
                parts = [
                    prof.text or "",
                    json.dumps(prof.fields or {}, ensure_ascii=False),
                    " ".join(str(v) for v in (prof.translations or {}).values()),
                ]
                out[prof.id] = "\n".join(parts)
    return out


def _jsonable(records: list[dict]) -> list[dict]:
    return [{k: (v.item() if hasattr(v, "item") else v) for k, v in r.items()} for r in records]
