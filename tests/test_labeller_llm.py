"""LLM labeller against the fake OpenAI-compatible server through the real openai SDK."""

from __future__ import annotations

import json
import re

import pandas as pd
import pytest
from sqlmodel import Session, select

from annotation.codebook import load_codebook
from annotation.labellers.llm import aggregate, label_with_llm, plan_labelling, source_name
from db.models import LabelSource, LLMCall
from db.repo import labels_df
from tests.annotation_data import humour_codebook, make_study
from workbench.llm import get_model, recorded
from workbench.testing.fake_llm_server import FakeLLMServer

DIMS = ["problem_solving", "question_broadness", "politeness"]


def _conv_key(req) -> str:
    first_user = next(m["content"] for m in req.messages if m["role"] == "user")
    m = re.search(r"\[0\] User: (\S+) turn 0", first_user)
    return m.group(1) if m else "?"


def responder(req) -> str:
    """Valid JSON for most conversations; samples disagree on *-1; garbage for travel human-2."""
    key = _conv_key(req)
    seed = req.body.get("seed", 0)
    if key == "human-travel_planning-2":
        return "I think the user is polite."  # never valid JSON
    if key == "human-recipe_planning-0" and not any(m["role"] == "assistant" for m in req.messages):
        return '{"problem_solving": "Sideways", "question_broadness": "3", "politeness": "Polite"}'
    out = {
        "problem_solving": "StepByStep",
        "question_broadness": "3",
        "politeness": "Polite",
        "rationale": {"politeness": "says please"},
    }
    if key.endswith("-1"):
        out["question_broadness"] = ["2", "5", "4"][seed % 3]
        out["problem_solving"] = ["AllInOne", "StepByStep", "AllInOne"][seed % 3]
    return json.dumps(out)


@pytest.fixture
def server(monkeypatch):
    with FakeLLMServer(responder=responder) as srv:
        monkeypatch.setenv("OPENAI_BASE_URL", srv.openai_base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-stored")
        yield srv


def test_aggregate_majority_and_median():
    cb = load_codebook()
    assert aggregate(["Polite", "Neutral", "Polite"], cb.get("politeness")) == ("Polite", True)
    assert aggregate(["2", "5", "4"], cb.get("question_broadness")) == ("4", True)
    assert aggregate(["2", "5"], cb.get("question_broadness")) == ("2", True)  # lower middle
    assert aggregate(["3", "3", "3"], cb.get("question_broadness")) == ("3", False)
    # A tie goes to the label listed first in the codebook, and is flagged.
    assert aggregate(["StepByStep", "AllInOne"], cb.get("problem_solving")) == ("AllInOne", True)
    assert aggregate([], cb.get("problem_solving")) == (None, True)


async def test_llm_labeller_valid_retry_disagreement_and_failure(engine, server):
    with Session(engine) as s:
        make_study(s, n_per_cell=3)
        s.commit()
    cb = load_codebook()
    # The caller records and caches the model's calls (annotation does not know the providers).
    model = recorded(get_model("openai/x", max_retries=0, timeout=10), engine, purpose="labeller")
    summary = await label_with_llm(engine, "pilot", model, cb, dimensions=DIMS, samples=3, concurrency=4)
    name = source_name("openai/x", "v2")  # the default prompt version
    assert summary.source == name == "llm:openai/x:v2"
    assert summary.conversations == 12 and summary.labels == 12 * 3
    assert summary.failed == 3  # travel human-2: every dimension, recorded as failed

    with Session(engine) as s:
        src = s.exec(select(LabelSource).where(LabelSource.name == name)).one()
        assert (src.kind, src.model, src.prompt_version, src.codebook_version) == (
            "llm",
            "openai/x",
            "v2",
            cb.version,
        )
        df = labels_df(s, 1, sources=[name])
        calls = s.exec(select(LLMCall)).all()
    assert len(df) == 36  # nothing dropped
    assert all(c.purpose == "labeller" for c in calls)
    assert not any("sk-test-not-stored" in json.dumps(c.params) for c in calls)

    by = {(r.conversation_id, r.dimension): r for r in df.itertuples()}
    from db.repo import conversations_df

    with Session(engine) as s:
        convs = conversations_df(s, 1)
    keys = {}
    for r in convs.itertuples():
        keys[f"{r.user_kind}-{r.scenario}-{r.replicate}"] = r.conversation_id

    ok = by[(keys["agent-travel_planning-0"], "question_broadness")]
    assert (ok.value, ok.flagged, ok.status, list(ok.samples)) == ("3", False, "ok", ["3", "3", "3"])
    assert by[(keys["agent-travel_planning-0"], "politeness")].rationale == "says please"

    # Disagreement between samples: median for the scale, majority for the category, both flagged.
    dis = by[(keys["agent-travel_planning-1"], "question_broadness")]
    assert sorted(dis.samples) == ["2", "4", "5"] and dis.value == "4" and dis.flagged
    ps = by[(keys["agent-travel_planning-1"], "problem_solving")]
    assert ps.value == "AllInOne" and ps.flagged

    # Invalid (out-of-label-set) output was retried with the error and then accepted.
    retried = by[(keys["human-recipe_planning-0"], "problem_solving")]
    assert retried.status == "ok" and retried.value == "StepByStep"
    retry_reqs = [
        r
        for r in server.requests
        if "human-recipe_planning-0 turn 0" in json.dumps(r.body)
        and any(m["role"] == "assistant" for m in r.messages)
    ]
    assert retry_reqs and "Sideways" in json.dumps(retry_reqs[0].body)

    # Never-valid output: retried, then recorded as failed, flagged, with the reason.
    failed = by[(keys["human-travel_planning-2"], "politeness")]
    assert failed.status == "failed" and pd.isna(failed.value) and failed.flagged
    assert "failed" in failed.rationale

    # Re-running resumes: what is labelled ok is skipped; the failed one is tried again, answered
    # from the response cache (no new request) unless the cache is off.
    n_requests = len(server.requests)
    again = await label_with_llm(engine, "pilot", model, cb, dimensions=DIMS, samples=3)
    assert again.skipped_existing == 11 and again.conversations == 1 and again.failed == 3
    assert len(server.requests) == n_requests
    fresh = recorded(model, engine, purpose="labeller", cache=False)
    await label_with_llm(engine, "pilot", fresh, cb, dimensions=DIMS, samples=3)
    assert len(server.requests) == n_requests + 6  # 3 samples x (first try + one JSON retry)


def test_dry_run_plan_needs_no_key(sqlite_engine):
    with Session(sqlite_engine) as s:
        make_study(s, n_per_cell=2)
        s.commit()
    cb = load_codebook()
    plan = plan_labelling(sqlite_engine, "pilot", "openai/gpt-4o", cb, samples=3)
    assert plan.conversations == 8 and plan.calls == 24
    assert plan.prompt_tokens > 0 and plan.completion_tokens > 0
    assert plan.cost_usd is None  # no price function given: the cost is unknown, not zero
    priced = plan_labelling(
        sqlite_engine, "pilot", "openai/gpt-4o", cb, samples=3, cost_of=lambda _m, p, c: p + c
    )
    assert priced.cost_usd == priced.prompt_tokens + priced.completion_tokens
    # Every dimension of the codebook, the per-turn hallucination flag too (see test_labeller_llm_turns).
    assert plan.dimensions == cb.names and plan.turn_labels == 8 * 2


async def test_new_codebook_dimension_reaches_prompt_and_labels(sqlite_engine, tmp_path):
    """A researcher adds a dimension in a codebook file: the LLM labeller asks for it, no code change."""
    ext = tmp_path / "lab.yaml"
    ext.write_text(
        """
version: "lab-1"
extends: default
dimensions:
  - name: humour
    group: interaction_style
    level: conversation
    scale: ordinal
    title: {en: Humour, zh: 幽默}
    definition: {en: "How playful the user's messages are.", zh: "用户消息的幽默程度。"}
    labels: ["1", "2", "3"]
    label_definitions: {"1": {en: "Never playful"}, "3": {en: "Often playful"}}
""",
        encoding="utf-8",
    )
    cb = load_codebook(ext)
    from workbench.llm import ScriptedModel

    seen = []

    def reply(messages):
        seen.append(messages[0]["content"])
        return json.dumps({"humour": "2"})

    with Session(sqlite_engine) as s:
        make_study(s, n_per_cell=1)
        s.commit()
    summary = await label_with_llm(
        sqlite_engine,
        "pilot",
        recorded(ScriptedModel(reply, name="scripted/judge"), sqlite_engine, purpose="labeller"),
        cb,
        dimensions=["humour"],
        samples=1,
    )
    assert summary.labels == 4 and summary.failed == 0
    assert "## humour: Humour" in seen[0] and "How playful" in seen[0] and "- 3: Often playful" in seen[0]
    with Session(sqlite_engine) as s:
        df = labels_df(s, 1, sources=["llm:scripted/judge:v2"])
    assert set(df["dimension"]) == {"humour"} and set(df["value"]) == {"2"}


async def test_one_labelling_process_per_study_and_source(engine, server):
    """A second process labelling the same study with the same source is refused in one line
    (it would make the first one's paid calls again); a killed holder is taken over at once, and
    the lease is gone when the run ends."""
    import socket
    import subprocess
    import sys

    from db.errors import UserInputError
    from db.leases import acquire
    from db.models.leases import Lease

    with Session(engine) as s:
        make_study(s, n_per_cell=1)
        s.commit()
    cb = load_codebook()
    model = recorded(get_model("openai/x", max_retries=0, timeout=10), engine, purpose="labeller")
    job = f"label:1:{source_name('openai/x', 'v2')}"
    here = socket.gethostname()
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        acquire(engine, job, f"{here}:{alive.pid}:abc", "x")
        with pytest.raises(
            UserInputError,
            match=f"labelling of study 'pilot' by llm:openai/x:v2 is already "
            f"running in another process \\(pid {alive.pid} on {here}\\)",
        ):
            await label_with_llm(engine, "pilot", model, cb, dimensions=DIMS, samples=1)
        assert not server.requests  # refused before any call
        # Another study, or another source on this study, is a different job.
        other = recorded(get_model("openai/y", max_retries=0, timeout=10), engine, purpose="labeller")
        assert (
            await label_with_llm(engine, "pilot", other, cb, dimensions=DIMS, samples=1)
        ).conversations == 4
    finally:
        alive.kill()
        alive.wait()
    # The holder was killed: taken over at once, and released at the end.
    summary = await label_with_llm(engine, "pilot", model, cb, dimensions=DIMS, samples=1)
    assert summary.conversations == 4
    with Session(engine) as s:
        assert s.exec(select(Lease)).all() == []
    # Nothing left to label: no lease is needed, even while another process holds one.
    acquire(engine, job, f"{here}:1:abc", "x")  # pid 1 (init) is alive
    assert (
        await label_with_llm(engine, "pilot", model, cb, dimensions=DIMS, samples=1)
    ).skipped_existing == 4


async def test_rerun_with_new_settings_records_them_on_the_source(sqlite_engine, tmp_path):
    """A second run of the same source (a codebook extension, more samples, another temperature)
    must not leave the source describing the first run: the settings are updated and each run's
    settings are kept in params["history"] with the time they took over."""
    from workbench.llm import ScriptedModel

    cb_ext = humour_codebook(tmp_path)
    with Session(sqlite_engine) as s:
        make_study(s, n_per_cell=1)
        s.commit()

    def model():
        scripted = ScriptedModel(
            lambda _m: json.dumps({"politeness": "Polite", "humour": "2"}), name="scripted/j"
        )
        return recorded(scripted, sqlite_engine, purpose="labeller")

    await label_with_llm(
        sqlite_engine,
        "pilot",
        model(),
        load_codebook(),
        dimensions=["politeness"],
        samples=1,
        temperature=0.0,
    )
    await label_with_llm(
        sqlite_engine, "pilot", model(), cb_ext, dimensions=["humour"], samples=5, temperature=0.9
    )
    with Session(sqlite_engine) as s:
        src = s.exec(select(LabelSource).where(LabelSource.name == "llm:scripted/j:v2")).one()
        assert src.codebook_version == "1.1+lab-1"
        assert src.params["samples"] == 5 and src.params["temperature"] == 0.9
        history = src.params["history"]
        assert [h["codebook_version"] for h in history] == ["1.1", "1.1+lab-1"]
        assert [h["params"]["samples"] for h in history] == [1, 5]
        assert history[0]["from"] <= history[1]["from"]
    # The same settings again add nothing.
    await label_with_llm(
        sqlite_engine, "pilot", model(), cb_ext, dimensions=["humour"], samples=5, temperature=0.9
    )
    with Session(sqlite_engine) as s:
        src = s.exec(select(LabelSource).where(LabelSource.name == "llm:scripted/j:v2")).one()
        assert len(src.params["history"]) == 2
