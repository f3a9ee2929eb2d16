"""The simulated user's logic with scripted models: end signal, min/max turns, reminders, templates."""

from __future__ import annotations

import asyncio
import json

import pytest

from db.errors import UserInputError
from workbench.llm import ScriptedModel
from workbench.simulation.conversation import simulate
from workbench.simulation.templates import available_templates, load_template
from workbench.simulation.user import SimulatedUser, UserContext, parse_user_reply


def _user(**kw) -> SimulatedUser:
    ctx = UserContext(task="Plan a two-day trip.", profile="A 30-year-old teacher.", **kw)
    return SimulatedUser(load_template("user"), ctx)


@pytest.mark.parametrize(
    "text,message,end,how",
    [
        ('{"message": "Hi there", "end": false}', "Hi there", False, "json"),
        ('Sure:\n```json\n{"message": "Bye", "end": true}\n```', "Bye", True, "json"),
        ('{"message": "ok", "end": "true"}', "ok", True, "json"),
        ('{"message": "cut off here', "cut off here", False, "partial_json"),
        ('{"message": "done \\"really\\"", "end": true', 'done "really"', True, "partial_json"),
        ("Thanks, that's all. [END]", "Thanks, that's all.", True, "marker"),
        ("Just plain text", "Just plain text", False, "text"),
    ],
)
def test_parse_user_reply(text, message, end, how):
    r = parse_user_reply(text)
    assert (r.message, r.end, r.parse) == (message, end, how)


def _sim(n_end: int):
    """Simulator that asks to end once it has seen ``n_end`` assistant replies."""

    def reply(msgs):
        seen = sum(1 for m in msgs[2:] if m["role"] == "user")
        return json.dumps({"message": f"msg {seen}", "end": seen >= n_end})

    return ScriptedModel(reply, name="scripted/sim")


def test_user_ends_with_structured_signal():
    res = simulate(
        _user(min_turns=1, max_turns=10),
        _sim(3),
        ScriptedModel(None, name="scripted/asst"),
        assistant_system="You help.",
    )
    roles = [t.role for t in res.turns]
    assert res.end_reason == "user_ended" and res.ended_by == "user"
    assert roles == ["user", "assistant"] * 3 + ["user"] and res.turns[-1].meta["end"] is True
    assert res.n_user_turns == 3 and res.n_calls == 7


def test_max_turns_and_min_turns():
    res = simulate(_user(min_turns=1, max_turns=2), _sim(99), ScriptedModel(None))
    assert res.end_reason == "max_turns" and res.n_user_turns == 2 and len(res.turns) == 4
    # Wants to end at once, but must send 3 messages: asked again with a note, then kept going.
    sim = _sim(0)
    res = simulate(_user(min_turns=3, max_turns=10), sim, ScriptedModel(None))
    assert res.n_user_turns == 3 and res.turns[0].meta.get("end_ignored")
    notes = [m for msgs, _ in sim.calls for m in msgs if "Too early" in m["content"]]
    assert notes, "the simulator was told it is too early"


def test_views_and_reminders():
    u = _user(min_turns=2, max_turns=5, goal_reminder_every=2)
    turns = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "A1"},
        {"role": "user", "content": "more"},
        {"role": "assistant", "content": "A2"},
    ]
    msgs = u.messages(turns)
    assert msgs[0]["role"] == "system" and "A 30-year-old teacher." in msgs[0]["content"]
    assert "Plan a two-day trip." in msgs[0]["content"] and '{"message":' in msgs[0]["content"]
    assert [m["role"] for m in msgs[1:]] == ["user", "assistant", "user", "assistant", "user"]
    assert json.loads(msgs[2]["content"]) == {"message": "hi", "end": False}
    assert msgs[3]["content"] == "A1"  # no reminder after every turn
    assert msgs[5]["content"].startswith("A2") and "Reminder of your task" in msgs[5]["content"]
    # The reference's per-turn "you may end now" reminder is gone.
    assert not any("goodbye" in m["content"].lower() for m in msgs)


def test_chinese_template_and_no_profile():
    u = SimulatedUser(load_template("user@1"), UserContext(task="计划一次旅行", profile=None, language="zh"))
    msgs = u.messages([])
    assert "你的任务" in msgs[0]["content"] and "计划一次旅行" in msgs[0]["content"]
    assert "普通的成年人" in msgs[0]["content"] and "助手已准备好" in msgs[1]["content"]


def test_templates(tmp_path):
    assert any(t.label == "user@1" for t in available_templates())
    with pytest.raises(UserInputError, match="no prompt template 'nope'"):
        load_template("nope")
    bad = tmp_path / "t.yaml"
    bad.write_text("name: x\nversion: '2'\nen: {system: hi}\n")
    with pytest.raises(UserInputError, match="lacks opening"):
        load_template(str(bad))


@pytest.mark.parametrize("kind", ["user", "rating"])
def test_both_prompt_kinds_load_and_fail_alike(tmp_path, kind):
    """The user prompt and the rating prompt share one loader: the same checks, each in its own words."""
    from workbench.simulation.rating import load_rating_template

    load, what, label = {
        "user": (load_template, "prompt template", "user@1"),
        "rating": (load_rating_template, "rating prompt", "user-rating@1"),
    }[kind]
    assert load().label == label and load(label).label == label
    with pytest.raises(UserInputError, match=f"no {what} 'nope'"):
        load("nope")
    with pytest.raises(UserInputError, match=f"{what} file .*missing.yaml does not exist"):
        load(str(tmp_path / "missing.yaml"))
    cases = {
        "name: [x\n": f"in the {what}",
        "just text\n": f"a {what} needs 'name', 'version'",
        "name: x\nversion: '1'\n": "no language sections",
        "name: x\nversion: '1'\nen: {system: hi}\n": "language 'en' lacks",
    }
    for i, (text, message) in enumerate(cases.items()):
        bad = tmp_path / f"bad{i}.yaml"
        bad.write_text(text)
        with pytest.raises(UserInputError, match=message):
            load(str(bad))
    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes("name: caf\xe9\n".encode("latin-1"))
    with pytest.raises(UserInputError, match=f"cannot read the {what}"):
        load(str(latin1))


def test_async_failure_propagates():
    from workbench.llm import LLMError
    from workbench.simulation.conversation import run_conversation

    sim = ScriptedModel(['{"message": "hi", "end": false}'])
    asst = ScriptedModel([LLMError("assistant down")])
    with pytest.raises(LLMError, match="assistant down"):
        asyncio.run(run_conversation(_user(), sim, asst))
