"""Scenario library: bundled packs, validation errors (file, line, field), sync idempotence, CLI."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import func
from sqlmodel import Session, select
from typer.testing import CliRunner

import scenarios
from db.models import Profile, Scenario, TaskContext
from db.settings import Settings
from scenarios import LibraryError, load_files, load_library, profile_fields, sync_library
from scenarios.build_packs import TYPE_KEYS, ZH_FOLDERS, expand, fill, parse_pool

GOOD = """\
kind: scenario
key: museum_visit
version: "2"
names: {en: Museum visit, zh: 参观博物馆}
aspects:
  - key: exhibits
    names: {en: Exhibits}
task_contexts:
  - key: en-0
    language: en
    text: You plan a museum visit.
  - key: zh-0
    language: zh
    text: 你计划参观博物馆。
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


# --------------------------------------------------------------------------------------------------
# Bundled packs (no dataset needed)
# --------------------------------------------------------------------------------------------------


def test_bundled_library_loads():
    lib = load_library()
    assert set(scenarios.REFERENCE_SCENARIOS) <= set(lib.scenarios)
    assert sorted(lib.reference_scenarios()) == sorted(scenarios.REFERENCE_SCENARIOS)
    assert lib.scenarios["restaurant_choice"].in_reference is False
    expected_main = {
        "travel_planning": 12,
        "recipe_planning": 8,
        "preparing_gifts": 12,
        "skills_learning_planning": 12,
        "restaurant_choice": 12,
    }
    for key, n in expected_main.items():
        spec = lib.scenarios[key]
        assert len(spec.contexts("en", {"main"})) == n
        assert len(spec.contexts("zh", {"main"})) == n  # every English card has a Chinese twin
        for tc in spec.contexts("en", {"main"}):
            assert (
                tc.translations["zh"]
                == {t.key: t for t in spec.task_contexts}[tc.key.replace("en-", "zh-")].text
            )
        assert "[" not in "".join(tc.text for tc in spec.task_contexts if tc.set == "main")
    assert [a.key for a in lib.scenarios["travel_planning"].aspects] == [
        "destination",
        "accommodation",
        "transport",
    ]
    assert [a.key for a in lib.scenarios["skills_learning_planning"].aspects] == [
        "time_planning",
        "relevant_information",
        "skill_choice",
    ]
    assert len(lib.profiles) == 100
    assert set(lib.profiles) == {f"pool-{i}" for i in range(100)}
    p0 = lib.profiles["pool-0"]
    assert p0.fields["gender"] == "Male" and p0.fields["age"] == 25
    assert set(p0.fields) == {
        "gender",
        "age",
        "personality",
        "occupation",
        "daily_interests",
        "travel_habits",
        "dining_preferences",
        "spending_habits",
        "other_aspects",
    }
    assert p0.translations["zh"]


def test_profile_fields():
    fields = {f.key: f for f in profile_fields()}
    assert {
        "gender",
        "age",
        "personality",
        "occupation",
        "daily_interests",
        "travel_habits",
        "dining_preferences",
        "spending_habits",
        "other_aspects",
    } <= set(fields)
    assert fields["age"].type == "integer"
    for f in fields.values():
        for o in f.options:
            assert o.en and o.zh, (f.key, o)
    pers = {o.zh: o.en for o in fields["personality"].options}
    assert pers["内向"] == "Introverted"


def test_template_expansion_order_and_conditional_slots():
    cond = '[TARGET:{"teacher":"Teachers Day","nephew":"Kids Day"}] is near; visit your [TARGET]'
    slots = [("TARGET", ["teacher", "nephew"]), ("REASON", [cond, "birthday of [TARGET]"])]
    out = list(expand("Recently, [REASON].", slots))
    assert [i for i, _, _ in out] == [0, 1, 2, 3]
    assert out[0][2] == "Recently, Teachers Day is near; visit your teacher."
    assert out[3][2] == "Recently, birthday of nephew."
    with pytest.raises(KeyError):
        fill("[MISSING]", {})


def test_parse_pool():
    text = "1. Gender: Male\n2. Age: 25\n3. Personality: Calm\n\n1. Gender: Female\n2. Age: 30\n"
    pool = parse_pool(text)
    assert [p["fields"] for p in pool] == [
        {"gender": "Male", "age": 25, "personality": "Calm"},
        {"gender": "Female", "age": 30},
    ]


# --------------------------------------------------------------------------------------------------
# Extra directories and validation errors
# --------------------------------------------------------------------------------------------------


def test_extra_dir_adds_a_scenario(tmp_path, monkeypatch):
    d = tmp_path / "packs"
    d.mkdir()
    write(d, "museum.yaml", GOOD)
    monkeypatch.setenv(
        "WORKBENCH_SCENARIO_DIRS", os.pathsep.join([str(d), str(tmp_path / "absent-is-error")])
    )
    from db.errors import UserInputError

    with pytest.raises(UserInputError, match="no such file or directory"):
        load_library(extra_dirs=Settings.from_env().scenario_dirs)
    monkeypatch.setenv("WORKBENCH_SCENARIO_DIRS", str(d))
    assert "museum_visit" not in load_library().scenarios  # the core reads no environment
    lib = load_library(extra_dirs=Settings.from_env().scenario_dirs)
    assert lib.scenarios["museum_visit"].version == "2"
    assert lib.sources["scenario:museum_visit"] == d / "museum.yaml"
    assert "travel_planning" in lib.scenarios


@pytest.mark.parametrize(
    "case,text,line,field,words",
    [
        ("bad_yaml", GOOD.replace("key: en-0", "key: [en-0"), None, None, "invalid YAML"),
        (
            "missing",
            GOOD.replace("    text: You plan a museum visit.\n", ""),
            9,
            "task_contexts[0].text",
            "missing",
        ),
        (
            "unknown",
            GOOD.replace("    text: 你计划", "    txt: oops\n    text: 你计划"),
            14,
            "task_contexts[1].txt",
            "unknown field",
        ),
        (
            "bad_value",
            GOOD.replace("language: zh", "language: Chinese"),
            13,
            "task_contexts[1].language",
            "pattern",
        ),
        ("dup_ctx", GOOD.replace("key: zh-0", "key: en-0"), 1, None, "appears twice"),
    ],
)
def test_validation_errors_name_file_line_field(tmp_path, case, text, line, field, words):
    p = write(tmp_path, f"{case}.yaml", text)
    with pytest.raises(LibraryError) as info:
        load_files([p])
    err = info.value
    assert err.exit_code == 2
    msg = str(err)
    assert str(p) in msg and words in msg
    prob = err.problems[0]
    if line is not None:
        assert prob.line == line, msg
    if case == "bad_yaml":
        assert prob.line is not None
    if field:
        assert prob.field == field and f"field '{field}'" in msg


def test_duplicate_scenario_across_files(tmp_path):
    write(tmp_path, "a.yaml", GOOD)
    write(tmp_path, "b.yaml", GOOD)
    with pytest.raises(LibraryError, match="already defined"):
        load_files([tmp_path])


def test_unknown_kind(tmp_path):
    p = write(tmp_path, "x.yaml", "kind: recipe\nkey: x\n")
    with pytest.raises(LibraryError, match="unknown kind 'recipe'"):
        load_files([p])


# --------------------------------------------------------------------------------------------------
# Sync (both engines)
# --------------------------------------------------------------------------------------------------


def _counts(session):
    return tuple(
        session.exec(select(func.count()).select_from(m)).one() for m in (Scenario, TaskContext, Profile)
    )


def test_sync_is_idempotent(engine, tmp_path):
    lib = load_library()
    with Session(engine) as s:
        rep = sync_library(s, lib)
        s.commit()
        first = _counts(s)
    n_ctx = sum(len(x.task_contexts) for x in lib.scenarios.values())
    assert first == (len(lib.scenarios), n_ctx, 100)
    assert rep.created == {"scenario": len(lib.scenarios), "task_context": n_ctx, "profile": 100}
    with Session(engine) as s:
        rep2 = sync_library(s, lib)
        s.commit()
        assert _counts(s) == first
    assert sum(rep2.created.values()) == 0 and sum(rep2.updated.values()) == 0
    # a changed pack updates in place
    d = tmp_path / "p"
    d.mkdir()
    write(d, "m.yaml", GOOD)
    lib2 = load_library([d])
    with Session(engine) as s:
        sync_library(s, lib2)
        s.commit()
    write(d, "m.yaml", GOOD.replace("You plan a museum visit.", "You plan a long museum visit."))
    with Session(engine) as s:
        rep3 = sync_library(s, load_library([d]))
        s.commit()
        assert rep3.updated["task_context"] == 1 and sum(rep3.created.values()) == 0
        scen = s.exec(select(Scenario).where(Scenario.key == "museum_visit")).one()
        tc = s.exec(
            select(TaskContext).where(TaskContext.scenario_id == scen.id, TaskContext.key == "en-0")
        ).one()
        assert tc.text == "You plan a long museum visit."
        gifts = s.exec(select(Scenario).where(Scenario.key == "preparing_gifts")).one()
        assert (
            gifts.names == {"en": "Preparing gifts", "zh": "礼物准备"}
            and gifts.pack == "preparing_gifts.yaml"
        )
        assert [a["key"] for a in gifts.aspects] == ["option", "price", "platform"]


# --------------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------------


def _run(args):
    from workbench.cli import app

    return CliRunner().invoke(app, args)


def test_cli_list_and_validate_ok(tmp_path):
    r = _run(["scenarios", "list"])
    assert r.exit_code == 0, r.output
    assert "travel_planning" in r.output and "旅行规划" in r.output
    r = _run(["scenarios", "validate", str(scenarios.PACKS_DIR)])
    assert r.exit_code == 0, r.output
    assert "5 scenario(s)" in r.output and "100 profile(s)" in r.output


def test_cli_validate_bad_file_exits_2_and_writes_nothing(tmp_path, use_db):
    p = write(tmp_path, "bad.yaml", GOOD.replace("    text: 你计划", "    txt: oops\n    text: 你计划"))
    before = sorted(x.name for x in tmp_path.rglob("*"))
    from workbench.cli import main

    with pytest.raises(SystemExit) as ex:
        main(["scenarios", "validate", str(p)])
    assert ex.value.code == 2
    assert sorted(x.name for x in tmp_path.rglob("*")) == before
    # nothing in the database either (the command never opens it)
    from db.engine import make_engine

    eng = make_engine(use_db)
    with eng.connect() as c:
        from sqlalchemy import inspect

        assert (
            "scenario" not in inspect(c).get_table_names()
            or c.exec_driver_sql("select count(*) from scenario").scalar() == 0
        )
    eng.dispose()


def test_cli_validate_message(tmp_path, capsys):
    p = write(tmp_path, "bad.yaml", GOOD.replace("    text: 你计划", "    txt: oops\n    text: 你计划"))
    from workbench.cli import main

    with pytest.raises(SystemExit):
        main(["scenarios", "validate", str(p)])
    err = capsys.readouterr().err
    assert f"{p}:14" in err and "task_contexts[1].txt" in err and "Traceback" not in err


# --------------------------------------------------------------------------------------------------
# Against the released dataset (skips where absent)
# --------------------------------------------------------------------------------------------------


def test_every_agent_task_context_is_in_the_pack(recllmsim):
    """Each agent conversation's task_context equals the pack text under key en-<task_context_id>
    (new-en-<id> for "new travel planning"); every human task card is in the pack verbatim."""
    lib = load_library()
    missing = Counter()
    n = 0
    for f in (recllmsim / "LLM_agent_user").glob("*/*.json"):
        d = json.loads(f.read_text(encoding="utf-8"))
        spec = lib.scenarios[TYPE_KEYS[d["task"]]]
        key = ("new-" if d["task"].startswith("new") else "") + f"en-{d['task_context_id']}"
        tc = {t.key: t for t in spec.task_contexts}.get(key)
        n += 1
        if tc is None or tc.text != d["task_context"]:
            missing[(d["task"], d["task_context_id"])] += 1
    assert n == 1856
    assert not missing, missing
    human_missing = 0
    texts = {k: {t.text for t in s.task_contexts} for k, s in lib.scenarios.items()}
    for f in list((recllmsim / "human_exp_V2").glob("*/*/*.json")) + list(
        (recllmsim / "real_human_user").glob("*/*/*.json")
    ):
        d = json.loads(f.read_text(encoding="utf-8"))
        human_missing += d["task_context"] not in texts[ZH_FOLDERS[f.parent.name]]
    assert human_missing == 0


def test_pool_matches_agent_preferences(recllmsim):
    lib = load_library()
    for f in (recllmsim / "LLM_agent_user").glob("*/*.json"):
        d = json.loads(f.read_text(encoding="utf-8"))
        assert lib.profiles[f"pool-{d['preference_id']}"].text == d["preference"].strip(), f


def test_packs_are_what_the_generator_writes(recllmsim, tmp_path):
    """The committed packs are exactly the generator's output (nobody hand-edited them)."""
    from scenarios.build_packs import main

    main(["--dataset", str(recllmsim), "--out", str(tmp_path)])
    for p in sorted(scenarios.PACKS_DIR.glob("*.yaml")):
        assert (tmp_path / p.name).read_text(encoding="utf-8") == p.read_text(encoding="utf-8"), p.name
