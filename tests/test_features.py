"""Text features in English and Chinese, and the feature store (computed once)."""

from __future__ import annotations

import pandas as pd
import pytest
from sqlmodel import Session, select

from analysis.features import (
    FEATURES,
    compute_features_df,
    features_df,
    load_pipelines,
    mattr,
    persona_contradiction,
)


@pytest.fixture(scope="module")
def pipelines():
    return load_pipelines(trained=False)


def _frames(turns, language="en", conv_meta=None):
    rows = []
    for cid, conv in turns.items():
        for i, (role, text) in enumerate(conv):
            rows.append(
                {
                    "conversation_id": cid,
                    "index": i,
                    "role": role,
                    "content": text,
                    "translation": None,
                    "translation_language": None,
                }
            )
    convs = pd.DataFrame(
        [
            {
                "conversation_id": cid,
                "language": language,
                "ended_by": None,
                "end_reason": None,
                "status": "completed",
                "profile_id": None,
                **(conv_meta or {}),
            }
            for cid in turns
        ]
    )
    return pd.DataFrame(rows), convs


def test_mattr_by_hand():
    # Covington & McFall (2010): mean TTR over all windows. Window 3 over a b a c: (2/3 + 3/3) / 2.
    assert mattr(list("abac"), window=3) == pytest.approx((2 / 3 + 1) / 2)
    assert mattr(list("abc"), window=5) == 1.0  # shorter than a window: plain TTR
    assert mattr(list("aaaa"), window=2) == pytest.approx(0.5)
    import math

    assert math.isnan(mattr([]))


def test_english_features(pipelines):
    turns, convs = _frames(
        {
            1: [
                ("user", "Hi! Could you please suggest a hotel? I think I need one near the station."),
                ("assistant", "Sure, here are three options."),
                ("user", "That sounds great, I'll go with the first one. Thank you, goodbye."),
                ("assistant", "Enjoy your trip!"),
            ]
        }
    )
    conv, per_turn = compute_features_df(turns, convs, pipelines)
    r = conv.iloc[0]
    assert list(conv.columns) == ["conversation_id"] + list(FEATURES)
    assert r["n_turns"] == 4 and r["n_user_turns"] == 2
    first = per_turn.iloc[0]
    assert first["words"] == 15 and first["question"] == 1 and first["exclamation"] == 1
    assert first["first_person"] == 2 and first["second_person"] == 1
    assert first["politeness"] == 2 and first["hedges"] == 1  # please, could you; I think
    assert r["question_rate"] == 0.5 and r["exclamation_rate"] == 0.5
    assert r["acceptance_rate"] == 1.0  # the second turn accepts
    assert r["farewell_end"] == 1.0 and r["end_kind"] == "farewell" and r["ended_by_role"] == "assistant"
    assert r["ended_by_user"] == 0.0
    words = per_turn["words"].sum()
    assert r["first_person_rate"] == pytest.approx(100 * per_turn["first_person"].sum() / words)


def test_chinese_features_use_jieba(pipelines):
    turns, convs = _frames(
        {
            7: [
                ("user", "我想去北京旅游，你能推荐一下吗？"),
                ("assistant", "好的"),
                ("user", "好的，就这个吧！谢谢😀"),
            ]
        },
        language="zh",
    )
    conv, per_turn = compute_features_df(turns, convs, pipelines)
    first = per_turn.iloc[0]
    # jieba: 我 / 想 / 去 / 北京 / 旅游 / 你 / 能 / 推荐 / 一下 / 吗 (punctuation dropped)
    assert first["words"] == 10 and first["question"] == 1 and first["first_person"] == 1
    assert first["second_person"] == 1
    second = per_turn.iloc[1]
    assert second["emoji"] == 1 and second["exclamation"] == 1 and second["accepts"] == 1
    assert conv.iloc[0]["farewell_end"] == 1.0


def test_translation_used_for_analysis_language(pipelines):
    turns = pd.DataFrame(
        [
            {
                "conversation_id": 1,
                "index": 0,
                "role": "user",
                "content": "Can you help me?",
                "translation": "你能帮我吗？",
                "translation_language": "zh",
            }
        ]
    )
    convs = pd.DataFrame(
        [
            {
                "conversation_id": 1,
                "language": "en",
                "ended_by": None,
                "end_reason": None,
                "status": "completed",
            }
        ]
    )
    _, own = compute_features_df(turns, convs, pipelines)
    _, zh = compute_features_df(turns, convs, pipelines, language="zh")
    assert own.iloc[0]["language"] == "en" and zh.iloc[0]["language"] == "zh"


def test_persona_contradiction_rules():
    assert persona_contradiction("A vegetarian student", ["Can I get a steak house?"]) == 1.0
    assert persona_contradiction("A vegetarian student", ["Any salad places?"]) == 0.0
    assert persona_contradiction("节俭的工程师，喜欢省钱", ["帮我订五星级酒店"]) == 1.0
    import math

    assert math.isnan(persona_contradiction(None, ["anything"]))


def test_feature_store_computes_once(sqlite_engine, pipelines, monkeypatch):
    from analysis import features as feat_mod
    from analysis.synthetic import make_study
    from db.models.analysis import ConversationFeatures
    from db.repo import conversations_df

    sid = make_study(sqlite_engine, "fs", n_human=15, n_agent=15, seed=1)
    with Session(sqlite_engine) as s:
        convs = conversations_df(s, sid)
    first = features_df(sqlite_engine, sid, convs, pipelines=pipelines)
    assert len(first) == 30 and first["n_turns"].gt(0).all()
    calls = []
    real = feat_mod.compute_features_df
    monkeypatch.setattr(feat_mod, "compute_features_df", lambda *a, **k: calls.append(1) or real(*a, **k))
    again = features_df(sqlite_engine, sid, convs, pipelines=pipelines)
    assert calls == []  # nothing recomputed
    pd.testing.assert_frame_equal(first, again)
    with Session(sqlite_engine) as s:
        rows = s.exec(select(ConversationFeatures)).all()
    assert len(rows) == 30 and rows[0].turns and "words" in rows[0].turns[0]
    features_df(sqlite_engine, sid, convs, pipelines=pipelines, recompute=True)
    assert calls == [1]
    with Session(sqlite_engine) as s:
        assert len(s.exec(select(ConversationFeatures)).all()) == 30


def test_chinese_acceptance_cues_are_replies_not_word_parts():
    """行 inside 行程 / 旅行 and 可以 in a request are not acceptance (they inflated the acceptance rate)."""
    from analysis.features import LEXICON

    accept = LEXICON["zh"]["accept"]
    for text in ("行吧。", "可以，就这个", "那就可以了", "这个可以。", "行", "好的，谢谢", "挺好的"):
        assert accept.search(text), text
    for text in (
        "帮我安排行程",
        "我想去旅行",
        "你可以推荐一下吗",
        "可以吗？",
        "不行，太贵",
        "可以便宜一点吗",
    ):
        assert not accept.search(text), text


def test_registries_define_the_columns(pipelines):
    """One entry per feature: the tables' columns and the comparison's scales come from the registries."""
    from analysis.features import (
        CONTINUOUS_FEATURES,
        NOMINAL_FEATURES,
        TURN_FEATURES,
        TURN_MEASURES,
    )

    assert CONTINUOUS_FEATURES + NOMINAL_FEATURES == list(FEATURES)  # nominal ones come last
    assert all(f.description and f.kind in ("continuous", "nominal") for f in FEATURES.values())
    assert TURN_FEATURES == [m.name for m in TURN_MEASURES]
    turns, convs = _frames({1: [("user", "Hello?"), ("assistant", "Hi.")]})
    _, per_turn = compute_features_df(turns, convs, pipelines)
    assert list(per_turn.columns) == ["conversation_id", "turn_index", "language"] + TURN_FEATURES
