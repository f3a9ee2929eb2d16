"""Computational features of the user's side of a conversation, in English and Chinese.

Tokens come from spaCy (a blank pipeline per language; Chinese segmented by jieba; a trained
pipeline such as ``en_core_web_sm`` is used when installed), run batched with ``nlp.pipe``.
Markers (pronouns, politeness, hedges, farewells) are matched with small per-language regex
lexicons on the text, because jieba glues some of them to neighbours ("谢谢您").

``compute_features_df`` is pure (frames in, frames out); ``features_df`` adds the feature store:
rows of ``ConversationFeatures`` keyed by conversation and ``feature_version``, so each conversation
is processed once per version.

Example::

    conv_features, turn_features = compute_features_df(turns, conversations, pipelines=load_pipelines())
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

import numpy as np
import pandas as pd

from annotation.nlp import lang_key, load_pipeline, load_pipelines  # noqa: F401  (part of this module's API)

FEATURES_VERSION = "3"  # 3: Chinese acceptance cues 行 / 可以 only as a reply of their own
MATTR_WINDOW = 50  # Covington & McFall (2010) use 500 for long texts; user turns here are short

# name -> (description, kind) ; kind "continuous" or "nominal"
FEATURES: dict[str, tuple[str, str]] = {
    "n_turns": ("turns in the conversation (user and assistant)", "continuous"),
    "n_user_turns": ("user turns", "continuous"),
    "user_chars_per_turn": ("mean characters per user turn", "continuous"),
    "user_words_per_turn": ("mean words (tokens without punctuation) per user turn", "continuous"),
    "mattr": (f"moving-average type-token ratio of the user's words (window {MATTR_WINDOW})", "continuous"),
    "question_rate": ("share of user turns that ask a question", "continuous"),
    "first_person_rate": ("first-person pronouns per 100 user words", "continuous"),
    "second_person_rate": ("second-person pronouns per 100 user words", "continuous"),
    "politeness_rate": ("politeness markers (please, thanks, 请, 谢谢...) per user turn", "continuous"),
    "hedging_rate": ("hedges (maybe, I think, 可能, 也许...) per 100 user words", "continuous"),
    "exclamation_rate": ("share of user turns with an exclamation mark", "continuous"),
    "emoji_rate": ("emoji per user turn", "continuous"),
    "acceptance_rate": (
        "share of user turns after the first that accept the assistant's proposal",
        "continuous",
    ),
    "persona_contradiction": (
        "1 when a user turn contradicts a persona fact (rule-based, see PERSONA_RULES)",
        "continuous",
    ),
    "ended_by_user": ("1 when the user sent the last turn or ended the conversation", "continuous"),
    "farewell_end": ("1 when the last user turn is a thanks/goodbye closing", "continuous"),
    "ended_by_role": ("who ended: user | assistant | system", "nominal"),
    "end_kind": ("how it ended: farewell | max_turns | abandoned | other", "nominal"),
}
CONTINUOUS_FEATURES = [k for k, (_, kind) in FEATURES.items() if kind == "continuous"]
NOMINAL_FEATURES = [k for k, (_, kind) in FEATURES.items() if kind == "nominal"]
TURN_FEATURES = [
    "chars",
    "words",
    "question",
    "exclamation",
    "emoji",
    "first_person",
    "second_person",
    "politeness",
    "hedges",
    "accepts",
]

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
    # Tokenise per language, batched.
    tokens: list[list[str]] = [None] * len(user)  # type: ignore[list-item]
    for lang in ("en", "zh"):
        idx = [i for i, t in enumerate(user) if t.lang == lang]
        if not idx:
            continue
        if lang not in pipelines:
            pipelines[lang] = load_pipeline(lang)
        nlp = pipelines[lang]
        for i, doc in zip(idx, nlp.pipe((user[i].text for i in idx), batch_size=batch_size)):
            tokens[i] = [t.lower_ for t in doc if not (t.is_punct or t.is_space) and _WORDLIKE.search(t.text)]

    turn_rows = []
    for t, toks in zip(user, tokens):
        lex = LEXICON[t.lang]
        text = t.text
        turn_rows.append(
            {
                "conversation_id": t.conversation_id,
                "turn_index": t.index,
                "language": t.lang,
                "chars": len(text.strip()),
                "words": len(toks),
                "question": int(bool(lex["question"].search(text))),
                "exclamation": int(bool(_EXCLAIM.search(text))),
                "emoji": len(_EMOJI.findall(text)),
                "first_person": len(lex["first_person"].findall(text)),
                "second_person": len(lex["second_person"].findall(text)),
                "politeness": len(lex["politeness"].findall(text)),
                "hedges": len(lex["hedges"].findall(text)),
                "accepts": int(bool(lex["accept"].search(text)) and not lex["reject"].search(text)),
            }
        )
    turn_df = pd.DataFrame(turn_rows, columns=["conversation_id", "turn_index", "language"] + TURN_FEATURES)

    tokens_by_conv: dict[int, list[str]] = {}
    for t, toks in zip(user, tokens):
        tokens_by_conv.setdefault(t.conversation_id, []).extend(toks)
    last_turn = {}
    last_user_text = {}
    n_turns = Counter()
    for t in texts:
        n_turns[t.conversation_id] += 1
        last_turn[t.conversation_id] = t  # turns are ordered by index
        if t.role == "user":
            last_user_text[t.conversation_id] = t

    agg = (
        turn_df.groupby("conversation_id").agg(
            n_user_turns=("chars", "size"),
            chars=("chars", "mean"),
            words=("words", "mean"),
            words_total=("words", "sum"),
            question=("question", "mean"),
            exclamation=("exclamation", "mean"),
            emoji=("emoji", "mean"),
            first=("first_person", "sum"),
            second=("second_person", "sum"),
            polite=("politeness", "mean"),
            hedges=("hedges", "sum"),
        )
        if len(turn_df)
        else pd.DataFrame()
    )
    later = turn_df[turn_df.groupby("conversation_id").cumcount() > 0] if len(turn_df) else turn_df
    acc = later.groupby("conversation_id")["accepts"].mean() if len(later) else pd.Series(dtype=float)

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
    personas = personas or {}

    rows = []
    meta_cols = [c for c in ("ended_by", "end_reason", "status") if c in conversations.columns]
    meta = conversations.set_index("conversation_id")[meta_cols].to_dict("index")
    agg_rows = agg.to_dict("index") if len(agg) else {}  # plain dicts: .loc per row is slow at 100k
    for cid in conversations["conversation_id"]:
        cid = int(cid)
        a = agg_rows.get(cid)
        words_total = float(a["words_total"]) if a is not None else 0.0
        per100 = (
            (lambda k, a=a, words_total=words_total: 100 * float(a[k]) / words_total)
            if a is not None and words_total > 0
            else (lambda k: np.nan)
        )
        ended_by, end_kind = _ending(meta.get(cid, {}), last_turn.get(cid), last_user_text.get(cid))
        rows.append(
            {
                "conversation_id": cid,
                "n_turns": float(n_turns.get(cid, 0)),
                "n_user_turns": float(a["n_user_turns"]) if a is not None else 0.0,
                "user_chars_per_turn": float(a["chars"]) if a is not None else np.nan,
                "user_words_per_turn": float(a["words"]) if a is not None else np.nan,
                "mattr": mattr(tokens_by_conv.get(cid, [])),
                "question_rate": float(a["question"]) if a is not None else np.nan,
                "first_person_rate": per100("first"),
                "second_person_rate": per100("second"),
                "politeness_rate": float(a["polite"]) if a is not None else np.nan,
                "hedging_rate": per100("hedges"),
                "exclamation_rate": float(a["exclamation"]) if a is not None else np.nan,
                "emoji_rate": float(a["emoji"]) if a is not None else np.nan,
                "acceptance_rate": float(acc.get(cid, np.nan)),
                "persona_contradiction": persona_contradiction(
                    personas.get(persona_of.get(cid)), originals.get(cid, [])
                ),
                "ended_by_user": float(ended_by == "user"),
                "farewell_end": float(end_kind == "farewell"),
                "ended_by_role": ended_by,
                "end_kind": end_kind,
            }
        )
    return pd.DataFrame(rows, columns=["conversation_id"] + list(FEATURES)), turn_df


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
    without stored features for this version are computed (batched) and stored first."""
    from sqlalchemy import delete, insert, select

    from db.models.analysis import ConversationFeatures
    from db.types import utcnow

    pipelines = pipelines if pipelines is not None else load_pipelines()
    version = feature_version(pipelines, language)
    ids = [int(c) for c in conversations["conversation_id"]]
    table = ConversationFeatures.__table__
    with engine.begin() as conn:
        if recompute:
            for i in range(0, len(ids), chunk):
                conn.execute(
                    delete(table).where(
                        table.c.version == version, table.c.conversation_id.in_(ids[i : i + chunk])
                    )
                )
        stored = {}
        for i in range(0, len(ids), chunk):
            q = select(table.c.conversation_id, table.c["values"]).where(
                table.c.version == version, table.c.conversation_id.in_(ids[i : i + chunk])
            )
            stored.update({cid: vals for cid, vals in conn.execute(q)})
    missing = [c for c in ids if c not in stored]
    for i in range(0, len(missing), chunk):
        part = missing[i : i + chunk]
        turns = _turns_frame(engine, part)
        convs = conversations[conversations["conversation_id"].isin(part)]
        conv_feats, turn_feats = compute_features_df(
            turns, convs, pipelines, language, personas=persona_texts(engine, convs)
        )
        by_conv = (
            {
                cid: g.drop(columns=["conversation_id"]).to_dict("records")
                for cid, g in turn_feats.groupby("conversation_id")
            }
            if len(turn_feats)
            else {}
        )
        now = utcnow()
        rows = []
        for rec in conv_feats.to_dict("records"):
            cid = int(rec.pop("conversation_id"))
            vals = {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in rec.items()}
            stored[cid] = vals
            rows.append(
                {
                    "conversation_id": cid,
                    "version": version,
                    "values": vals,
                    "turns": _jsonable(by_conv.get(cid, [])),
                    "computed_at": now,
                }
            )
        if rows:
            with engine.begin() as conn:
                conn.execute(insert(table), rows)
    out = pd.DataFrame(
        [{"conversation_id": cid, **stored[cid]} for cid in ids], columns=["conversation_id"] + list(FEATURES)
    )
    for col in CONTINUOUS_FEATURES:
        out[col] = pd.to_numeric(out[col], errors="coerce").astype(float)
    out.attrs["feature_version"] = version
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
        return pd.DataFrame(conn.execute(q).all(), columns=cols)


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
