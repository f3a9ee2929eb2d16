"""LLM labeller on turn-level dimensions (the per-assistant-turn hallucination flag), driven by the
codebook entry only, against the fake OpenAI-compatible server through the real openai SDK."""

from __future__ import annotations

import json
import re

import krippendorff
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import cohen_kappa_score
from sqlmodel import Session, select

from annotation.agreement import study_agreement_df
from annotation.codebook import load_codebook
from annotation.labellers.llm import (
    DEFAULT_PROMPT,
    applicable,
    build_messages,
    eligible_turns,
    label_with_llm,
    load_prompt,
    plan_labelling,
    response_schema,
)
from annotation.store import LabelRecord, ensure_source, write_labels
from db.errors import UserInputError
from db.models import Label, Turn
from db.repo import conversations_df, labels_df
from db.settings import Settings
from tests.annotation_data import make_study
from workbench.llm import get_model, recorded
from workbench.testing.fake_llm_server import FakeLLMServer

SOURCE = f"llm:openai/x:{DEFAULT_PROMPT}"
HUMAN_SOURCE = "imported:recllmsim-hallucination-annotators"


def _conv_key(req) -> str:
    first_user = next(m["content"] for m in req.messages if m["role"] == "user")
    m = re.search(r"\[0\] User: (\S+) turn 0", first_user)
    return m.group(1) if m else "?"


def _schema(req) -> dict:
    """The JSON schema the labeller asked for (appended to the system message)."""
    system = next(m["content"] for m in req.messages if m["role"] == "system")
    return json.loads(system.split("It must satisfy this JSON schema:\n", 1)[1])


def _is_retry(req) -> bool:
    return any(m["role"] == "assistant" for m in req.messages)


def schema_responder(req) -> str:
    """A valid reply to whatever the schema asks: each conversation-level dimension gets its first
    label, each per-turn dimension its first label on every turn (read from the schema only)."""
    out = {}
    for name, prop in _schema(req)["properties"].items():
        if name == "rationale":
            continue
        if prop.get("type") == "object":
            out[name] = {k: v["enum"][0] for k, v in prop["properties"].items()}
        else:
            out[name] = prop["enum"][0]
    return json.dumps(out)


def hallucination_responder(req) -> str:
    """Per-turn answers for politeness + hallucination; what varies is keyed by conversation:
    agent-travel-1: samples disagree on turn 3; human-recipe-0: an unknown label first, then valid;
    human-travel-0: turn 3 missing first, then valid; human-travel-2: turn 3 always missing."""
    key = _conv_key(req)
    seed = req.body.get("seed", 0)
    turns = {"1": "no", "3": "no"}
    out = {
        "politeness": "Polite",
        "hallucination": turns,
        "rationale": {"politeness": "says please", "hallucination": {"1": "checked", "3": "made up"}},
    }
    if key == "agent-travel_planning-1":
        turns["3"] = ["yes", "no", "yes"][seed % 3]
    elif key == "human-recipe_planning-0" and not _is_retry(req):
        turns["1"] = "maybe"
    elif key == "human-travel_planning-2" or (key == "human-travel_planning-0" and not _is_retry(req)):
        del turns["3"]
    return json.dumps(out)


@pytest.fixture
def server(monkeypatch):
    with FakeLLMServer(responder=hallucination_responder) as srv:
        monkeypatch.setenv("OPENAI_BASE_URL", srv.openai_base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-stored")
        yield srv


def _keys(session) -> dict[str, int]:
    return {
        f"{r.user_kind}-{r.scenario}-{r.replicate}": r.conversation_id
        for r in conversations_df(session, 1).itertuples()
    }


def _turns(n=4):
    return [{"index": i, "role": "user" if i % 2 == 0 else "assistant", "content": f"t{i}"} for i in range(n)]


def test_schema_and_prompt_come_from_the_codebook_entry():
    cb = load_codebook()
    hal = cb.get("hallucination")
    assert hal.level == "turn" and hal.turn_role == "assistant"
    turns = _turns()
    assert eligible_turns(hal, turns) == [1, 3]
    schema = response_schema([cb.get("politeness"), hal], turns)
    per_turn = schema["properties"]["hallucination"]
    assert per_turn["required"] == ["1", "3"] and per_turn["additionalProperties"] is False
    assert per_turn["properties"]["1"]["enum"] == list(hal.labels)
    with pytest.raises(ValueError, match="turn-level"):
        response_schema([hal])

    system, user = (m["content"] for m in build_messages(load_prompt(), cb.version, [hal], turns, None))
    assert f"## hallucination: {hal.display_title()} (per turn: one value for each assistant turn)" in system
    assert hal.definition["en"] in system
    assert all(f"- {v}: {hal.label_definition(v)}" in system for v in hal.labels)
    assert "[1] Assistant: t1" in user and "[3] Assistant: t3" in user  # the turns are numbered
    assert 'hallucination: every assistant turn, i.e. an object with exactly the keys "1", "3"' in user

    # A conversation without a turn of the dimension's role has nothing to label on it.
    assert applicable([cb.get("politeness"), hal], _turns(1)) == [cb.get("politeness")]

    # v1 stays loadable, asks the same for conversation-level dimensions, and cannot do turns.
    v1, v2 = load_prompt("v1"), load_prompt("v2")
    pol = [cb.get("politeness")]
    assert (
        build_messages(v1, cb.version, pol, turns, None)[1]
        == build_messages(v2, cb.version, pol, turns, None)[1]
    )
    with pytest.raises(UserInputError, match="cannot ask for turn-level"):
        build_messages(v1, cb.version, [hal], turns, None)


async def test_turn_level_labels_retry_disagreement_and_failure(engine, server):
    with Session(engine) as s:
        make_study(s, n_per_cell=3)
        s.commit()
    cb = load_codebook()
    model = recorded(get_model("openai/x", max_retries=0, timeout=10), engine, purpose="labeller")
    summary = await label_with_llm(
        engine, "pilot", model, cb, dimensions=["politeness", "hallucination"], samples=3, concurrency=4
    )
    assert summary.source == SOURCE
    # 12 conversations x (1 conversation-level + 2 assistant turns): nothing dropped.
    assert summary.conversations == 12 and summary.labels == 36
    assert summary.failed == 3  # human-travel-2: no sample ever valid, every label recorded failed

    with Session(engine) as s:
        keys = _keys(s)
        df = labels_df(s, 1, sources=[SOURCE])
        stored = s.exec(select(Label)).all()
        turn_ids = {(t.conversation_id, t.index): t.id for t in s.exec(select(Turn)).all()}
    assert len(df) == 36
    hal = df[df["dimension"] == "hallucination"]
    assert sorted(set(hal["turn_index"])) == [1, 3] and len(hal) == 24
    assert set(df[df["dimension"] == "politeness"]["turn_index"]) == {-1}
    # turn_id points at the labelled turn.
    for lab in stored:
        if lab.dimension == "hallucination":
            assert lab.turn_id == turn_ids[(lab.conversation_id, lab.turn_index)]
        else:
            assert lab.turn_id is None

    by = {(r.conversation_id, r.dimension, r.turn_index): r for r in df.itertuples()}
    ok = by[(keys["agent-travel_planning-0"], "hallucination", 1)]
    assert (ok.value, ok.flagged, ok.status, list(ok.samples)) == ("no", False, "ok", ["no", "no", "no"])
    assert ok.rationale == "checked" and by[
        (keys["agent-travel_planning-0"], "hallucination", 3)
    ].rationale == ("made up")

    # Samples disagree on one turn: majority vote, that turn flagged with the spread; the other not.
    dis = by[(keys["agent-travel_planning-1"], "hallucination", 3)]
    assert sorted(dis.samples) == ["no", "yes", "yes"] and dis.value == "yes" and dis.flagged
    assert not by[(keys["agent-travel_planning-1"], "hallucination", 1)].flagged

    # An unknown label and a missing turn were sent back with the error and then answered validly.
    for key, problem in (
        ("human-recipe_planning-0", "maybe"),
        ("human-travel_planning-0", "'3' is a required"),
    ):
        for idx in (1, 3):
            lab = by[(keys[key], "hallucination", idx)]
            assert lab.status == "ok" and lab.value == "no" and not lab.flagged
        retry = [r for r in server.requests if _is_retry(r) and f"{key} turn 0" in json.dumps(r.body)]
        assert retry and problem in json.dumps(retry[0].body)

    # Never valid: retried, then every label of the conversation recorded as failed, per turn too.
    for idx in (1, 3):
        failed = by[(keys["human-travel_planning-2"], "hallucination", idx)]
        assert failed.status == "failed" and pd.isna(failed.value) and failed.flagged
        assert "all 3 samples failed" in failed.rationale and "'3' is a required property" in failed.rationale
    assert by[(keys["human-travel_planning-2"], "politeness", -1)].status == "failed"

    # Re-running resumes on the per-turn keys too: only the failed conversation is tried again.
    n_requests = len(server.requests)
    again = await label_with_llm(engine, "pilot", model, cb, dimensions=["politeness", "hallucination"])
    assert again.skipped_existing == 11 and again.conversations == 1 and again.failed == 3
    assert len(server.requests) == n_requests  # answered from the response cache


async def test_default_dimensions_include_turn_level_and_v1_refuses_them(sqlite_engine, monkeypatch):
    with Session(sqlite_engine) as s:
        make_study(s, n_per_cell=1)
        s.commit()
    cb = load_codebook()
    with FakeLLMServer(responder=schema_responder) as srv:
        monkeypatch.setenv("OPENAI_BASE_URL", srv.openai_base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
        model = recorded(get_model("openai/x", max_retries=0, timeout=10), sqlite_engine, purpose="labeller")
        summary = await label_with_llm(sqlite_engine, "pilot", model, cb, samples=1)
        n_conv = len(cb.conversation_dimensions())
        assert summary.failed == 0 and summary.labels == 4 * (n_conv + 2)
        with pytest.raises(UserInputError, match="prompt v1 cannot ask for turn-level dimensions"):
            await label_with_llm(
                sqlite_engine, "pilot", model, cb, dimensions=["hallucination"], prompt_version="v1"
            )
        # v1 without --dimensions: the conversation-level dimensions, as before.
        v1 = await label_with_llm(sqlite_engine, "pilot", model, cb, samples=1, prompt_version="v1")
        assert v1.source == "llm:openai/x:v1" and v1.labels == 4 * n_conv
    with Session(sqlite_engine) as s:
        df = labels_df(s, 1, sources=[SOURCE])
    assert set(df["dimension"]) == set(cb.names)


def test_dry_run_projects_the_per_turn_output(sqlite_engine):
    with Session(sqlite_engine) as s:
        make_study(s, n_per_cell=2)
        s.commit()
    cb = load_codebook()
    conv_only = plan_labelling(sqlite_engine, "pilot", "openai/gpt-4o", cb, dimensions=["politeness"])
    both = plan_labelling(
        sqlite_engine, "pilot", "openai/gpt-4o", cb, dimensions=["politeness", "hallucination"]
    )
    assert conv_only.calls == both.calls == 24
    assert (conv_only.labels, conv_only.turn_labels) == (8, 0)
    assert (both.labels, both.turn_labels) == (8 + 16, 16)  # 2 assistant turns per conversation
    assert both.completion_tokens > conv_only.completion_tokens
    assert both.prompt_tokens > conv_only.prompt_tokens
    assert "hallucination" in plan_labelling(sqlite_engine, "pilot", "openai/gpt-4o", cb).dimensions
    assert (
        "hallucination"
        not in plan_labelling(sqlite_engine, "pilot", "openai/gpt-4o", cb, prompt_version="v1").dimensions
    )


async def test_new_turn_level_dimension_in_a_codebook_file(sqlite_engine, tmp_path, monkeypatch):
    """A researcher adds a per-user-turn ordinal dimension in a file: labelled with no code change."""
    ext = tmp_path / "lab.yaml"
    ext.write_text(
        """
version: "lab-1"
extends: default
dimensions:
  - name: frustration
    group: interaction_style
    level: turn
    turn_role: user
    scale: ordinal
    title: {en: Frustration}
    definition: {en: "How frustrated the user sounds in this message."}
    labels: ["1", "2", "3"]
    label_definitions: {"1": {en: "Calm"}, "3": {en: "Clearly annoyed"}}
""",
        encoding="utf-8",
    )
    monkeypatch.setenv("WORKBENCH_CODEBOOK", str(ext))
    cb = load_codebook(extensions=Settings.from_env().codebook_extensions)
    assert cb.get("frustration").level == "turn"

    def responder(req):
        if (
            "## frustration: Frustration (per turn: one value for each user turn)"
            not in req.messages[0]["content"]
        ):
            return "{}"
        keys = _schema(req)["properties"]["frustration"]["required"]
        seed = req.body.get("seed", 0)
        return json.dumps({"frustration": {k: ["1", "3", "2"][seed % 3] if k == "2" else "1" for k in keys}})

    with Session(sqlite_engine) as s:
        make_study(s, n_per_cell=1)
        s.commit()
    with FakeLLMServer(responder=responder) as srv:
        monkeypatch.setenv("OPENAI_BASE_URL", srv.openai_base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
        summary = await label_with_llm(
            sqlite_engine,
            "pilot",
            recorded(get_model("openai/x", max_retries=0), sqlite_engine, purpose="labeller"),
            cb,
            dimensions=["frustration"],
        )
    assert summary.labels == 8 and summary.failed == 0  # 4 conversations x 2 user turns
    with Session(sqlite_engine) as s:
        df = labels_df(s, 1, sources=[SOURCE])
    assert set(df["turn_index"]) == {0, 2}
    first = df[df["turn_index"] == 0]
    assert set(first["value"]) == {"1"} and not first["flagged"].any()
    second = df[df["turn_index"] == 2]  # samples 1, 3, 2: the median of the scale, flagged
    assert set(second["value"]) == {"2"} and second["flagged"].all()
    assert all(sorted(s) == ["1", "2", "3"] for s in second["samples"])


async def test_agreement_on_turn_level_labels_matches_references(
    sqlite_engine, sqlite_url, tmp_path, monkeypatch, capsys
):
    """The LLM's per-turn labels against imported per-turn labels: unit = (conversation, turn)."""
    with Session(sqlite_engine) as s:
        make_study(s, n_per_cell=3)
        s.commit()
    cb = load_codebook()
    labels = list(cb.get("hallucination").labels)

    def llm_value(conv_id: int, idx: int) -> str:
        return labels[(conv_id * 7 + idx) % 3]

    def responder(req):
        key = _conv_key(req)
        return json.dumps({"hallucination": {k: llm_value(conv_ids[key], int(k)) for k in ("1", "3")}})

    with Session(sqlite_engine) as s:
        conv_ids = _keys(s)
        # The imported annotators agree on most turns, differ on every third conversation's turn 3,
        # and did not label one turn (it is not a unit of the pair).
        src = ensure_source(s, HUMAN_SOURCE, "imported")
        recs = []
        for i, cid in enumerate(sorted(conv_ids.values())):
            for idx in (1, 3):
                if (i, idx) == (0, 1):
                    continue
                v = llm_value(cid, idx)
                if idx == 3 and i % 3 == 0:
                    v = labels[(labels.index(v) + 1) % 3]
                recs.append(LabelRecord(cid, "hallucination", v, turn_index=idx))
        write_labels(s, src, recs)
        s.commit()
    with FakeLLMServer(responder=responder) as srv:
        monkeypatch.setenv("OPENAI_BASE_URL", srv.openai_base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
        await label_with_llm(
            sqlite_engine,
            "pilot",
            recorded(get_model("openai/x", max_retries=0), sqlite_engine, purpose="labeller"),
            cb,
            dimensions=["hallucination"],
        )

    with Session(sqlite_engine) as s:
        agree = study_agreement_df(s, "pilot", a=SOURCE, b=HUMAN_SOURCE, codebook=cb, n_boot=50)
        lab = labels_df(s, 1, sources=[SOURCE, HUMAN_SOURCE])
    row = agree[(agree["dimension"] == "hallucination") & (agree["user_kind"] == "all")].iloc[0]
    wide = lab.pivot_table(
        index=["conversation_id", "turn_index"], columns="source", values="value", aggfunc="first"
    )
    both = wide.dropna()
    assert row["n"] == len(both) == 23  # 12 conversations x 2 turns, one turn unlabelled by the annotators
    a, b = list(both[SOURCE]), list(both[HUMAN_SOURCE])
    assert row["cohen_kappa"] == pytest.approx(cohen_kappa_score(a, b, labels=labels))
    assert row["agreement"] == pytest.approx(np.mean([x == y for x, y in zip(a, b)]))
    codes = wide.apply(lambda col: col.map(lambda v: np.nan if pd.isna(v) else labels.index(v)))
    ref = krippendorff.alpha(
        reliability_data=codes[[SOURCE, HUMAN_SOURCE]].T.to_numpy(dtype=float), level_of_measurement="nominal"
    )
    assert row["krippendorff_alpha"] == pytest.approx(ref)
    assert 0 < row["cohen_kappa"] < 1

    # The same through `workbench agreement`.
    from workbench.cli import main

    monkeypatch.setenv("WORKBENCH_DB_URL", sqlite_url)
    path = tmp_path / "agree.json"
    try:
        main(
            [
                "agreement",
                "--study",
                "pilot",
                "--a",
                SOURCE,
                "--b",
                HUMAN_SOURCE,
                "--json",
                str(path),
                "--n-boot",
                "100",
            ]
        )
    except SystemExit as exc:
        assert not exc.code, capsys.readouterr()
    rec = next(r for r in json.loads(path.read_text()) if r["user_kind"] == "all")
    assert rec["dimension"] == "hallucination" and rec["n"] == 23
    assert rec["cohen_kappa"] == pytest.approx(cohen_kappa_score(a, b, labels=labels))


def test_cli_label_hallucination(sqlite_engine, sqlite_url, monkeypatch, capsys):
    from workbench.cli import main

    with Session(sqlite_engine) as s:
        make_study(s, n_per_cell=3)
        s.commit()
    monkeypatch.setenv("WORKBENCH_DB_URL", sqlite_url)
    args = [
        "label",
        "--study",
        "pilot",
        "--labeller",
        "llm",
        "--model",
        "openai/x",
        "--dimensions",
        "hallucination",
    ]

    def run(extra):
        try:
            main(args + extra)
        except SystemExit as exc:
            assert not exc.code, capsys.readouterr()
        return capsys.readouterr().out

    out = run(["--dry-run"])
    assert "12 conversations x 3 samples = 36 calls; 24 labels (24 per turn)" in out
    with FakeLLMServer(responder=schema_responder) as srv:
        monkeypatch.setenv("OPENAI_BASE_URL", srv.openai_base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
        out = run(["--samples", "2"])
    assert f"{SOURCE}: labelled 12 conversations (24 labels, 0 flagged" in out
    with Session(sqlite_engine) as s:
        df = labels_df(s, 1, sources=[SOURCE])
    assert set(df["dimension"]) == {"hallucination"} and set(df["turn_index"]) == {1, 3}
    assert set(df["value"]) == {"yes"} and all(list(v) == ["yes", "yes"] for v in df["samples"])
