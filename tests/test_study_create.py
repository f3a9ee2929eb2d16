"""Study creation: conditions = scenario x task context (of the language) x sampled profile."""

from __future__ import annotations

import pytest
from sqlalchemy import func
from sqlmodel import Session, select
from typer.testing import CliRunner

from db.errors import UserInputError
from db.models import AssistantConfig, Condition, Profile, Scenario, Study, TaskContext
from workbench.studies import create_study, study_settings


def count(session, model, *where):
    q = select(func.count()).select_from(model)
    for w in where:
        q = q.where(w)
    return session.exec(q).one()


def test_create_study_counts_and_shared_config(engine):
    with Session(engine, expire_on_commit=False) as s:
        study, n = create_study(
            s,
            "pilot",
            "openai/gpt-4o-mini",
            profiles=3,
            seed=7,
            temperature=0.2,
            max_tokens=500,
            system_prompt="Be helpful.",
        )
        s.commit()
        # main contexts: travel 12 + recipe 8 + gifts 12 + skills 12 = 44, x 3 profiles
        assert n == 44 * 3 == count(s, Condition, Condition.study_id == study.id)
        assert count(s, AssistantConfig) == 1
        cfg = s.exec(select(AssistantConfig)).one()
        assert (cfg.model, cfg.temperature, cfg.max_tokens, cfg.system_prompt) == (
            "openai/gpt-4o-mini",
            0.2,
            500,
            "Be helpful.",
        )
        conds = s.exec(select(Condition).where(Condition.study_id == study.id)).all()
        assert {c.language for c in conds} == {"en"}
        assert len({c.profile_id for c in conds}) == 3
        langs = set(
            s.exec(
                select(TaskContext.language)
                .join(Condition, Condition.task_context_id == TaskContext.id)
                .where(Condition.study_id == study.id)
            ).all()
        )
        assert langs == {"en"}
        scen_keys = set(
            s.exec(
                select(Scenario.key)
                .join(Condition, Condition.scenario_id == Scenario.id)
                .where(Condition.study_id == study.id)
            ).all()
        )
        assert scen_keys == {
            "travel_planning",
            "recipe_planning",
            "preparing_gifts",
            "skills_learning_planning",
        }
        st = study_settings(study)
        assert (
            st.interface_language == "en"
            and study.settings["seed"] == 7
            and len(study.settings["profiles"]) == 3
        )
        first_profiles = study.settings["profiles"]

        # a second study with the same model shares the config; same seed -> same profiles
        study2, n2 = create_study(
            s,
            "pilot-2",
            "openai/gpt-4o-mini",
            profiles=3,
            seed=7,
            temperature=0.2,
            max_tokens=500,
            system_prompt="Be helpful.",
            scenarios=["recipe_planning"],
        )
        s.commit()
        assert n2 == 8 * 3
        assert count(s, AssistantConfig) == 1
        assert study2.settings["profiles"] == first_profiles
        # the library rows were synced once, not duplicated
        assert count(s, Profile) == 100


def test_create_study_chinese_without_profiles(engine):
    with Session(engine, expire_on_commit=False) as s:
        study, n = create_study(
            s,
            "zh-study",
            "anthropic/claude-3-5-haiku-latest",
            language="zh",
            scenarios=["travel_planning", "restaurant_choice"],
        )
        s.commit()
        assert n == 24
        conds = s.exec(select(Condition).where(Condition.study_id == study.id)).all()
        assert all(c.profile_id is None and c.language == "zh" for c in conds)
        tcs = s.exec(select(TaskContext).where(TaskContext.id.in_([c.task_context_id for c in conds]))).all()
        assert {t.language for t in tcs} == {"zh"}
        assert study.language == "zh" and study_settings(study).interface_language == "zh"


def test_chinese_study_gets_chinese_consent_and_instructions(sqlite_engine):
    from workbench.studies import DEFAULT_TEXTS, StudySettings

    with Session(sqlite_engine) as s:
        zh, _ = create_study(s, "zh", "openai/gpt-4o", language="zh", scenarios=["recipe_planning"])
        en, _ = create_study(s, "en", "openai/gpt-4o", scenarios=["recipe_planning"])
        own, _ = create_study(
            s,
            "own",
            "openai/gpt-4o",
            language="zh",
            scenarios=["recipe_planning"],
            settings={"consent_text": "我的同意书"},
        )
        assert study_settings(zh).consent_text == DEFAULT_TEXTS["zh"]["consent_text"]
        assert study_settings(zh).instructions_text == DEFAULT_TEXTS["zh"]["instructions_text"]
        assert study_settings(en).consent_text == DEFAULT_TEXTS["en"]["consent_text"]
        assert study_settings(own).consent_text == "我的同意书"
    # a study stored with the English default (e.g. switched to zh later) shows the Chinese default;
    # a researcher's own text never changes
    switched = StudySettings.model_validate({**DEFAULT_TEXTS["en"], "interface_language": "zh"})
    assert switched.consent_text == DEFAULT_TEXTS["zh"]["consent_text"]
    assert (
        StudySettings.model_validate({"consent_text": "Mine.", "interface_language": "zh"}).consent_text
        == "Mine."
    )


def test_create_study_context_sets(engine):
    with Session(engine) as s:
        _, n = create_study(
            s,
            "human-cards",
            "openai/gpt-4o",
            language="zh",
            scenarios=["recipe_planning"],
            context_sets=["human_v2"],
        )
        assert n == 4


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(assistant_model="gpt-4o"), "provider/model"),
        (dict(assistant_model="nosuch/model"), "unknown model provider 'nosuch'"),
        (dict(assistant_model="local/missing.gguf"), "existing .gguf file"),
        (dict(settings={"completion_code": " "}), "completion code cannot be empty"),
        (dict(scenarios=["cooking"]), "unknown scenario.*known scenarios: preparing_gifts"),
        (dict(language="fr"), "language 'fr'"),
        (dict(profiles=101), "^profiles must be between 0 and 100"),
        (dict(profiles=["pool-999"]), "unknown profile"),
        (dict(settings={"profile_mode": "assigned"}), "needs profiles"),
        (dict(settings={"min_turns": 5, "max_turns": 2}), "min turns"),
        (dict(settings={"max_turns": 0}), "invalid study settings"),
        (dict(temperature=3.0), "temperature"),
        (dict(name=" "), "needs a name"),
    ],
)
def test_create_study_rejects_bad_input_and_writes_nothing(sqlite_engine, kwargs, match):
    args = dict(name="bad", assistant_model="openai/gpt-4o-mini")
    args.update(kwargs)
    with Session(sqlite_engine) as s:
        with pytest.raises(UserInputError, match=match):
            create_study(s, **args)
        s.rollback()
        assert count(s, Study) == 0 and count(s, Condition) == 0 and count(s, AssistantConfig) == 0


def test_available_scenarios_names_a_bad_pack(tmp_path):
    """An invalid pack raises the loader's LibraryError (a UserInputError) naming the file."""
    from scenarios import LibraryError
    from workbench.studies import available_scenarios

    assert "travel_planning" in available_scenarios()
    (tmp_path / "broken.yaml").write_text("kind: scenario\nkey: [unclosed\n", encoding="utf-8")
    with pytest.raises(LibraryError, match=r"broken\.yaml:\d+:\d+: invalid YAML"):
        available_scenarios(extra_dirs=[tmp_path])


def test_duplicate_study_name(sqlite_engine):
    with Session(sqlite_engine) as s:
        create_study(s, "dup", "openai/gpt-4o-mini", scenarios=["recipe_planning"])
        s.commit()
        with pytest.raises(UserInputError, match="already exists"):
            create_study(s, "dup", "openai/gpt-4o-mini")


# --------------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------------


def _run(args):
    from workbench.cli import app

    return CliRunner().invoke(app, args)


def test_cli_study_create(use_db, tmp_path):
    prompt = tmp_path / "system.txt"
    prompt.write_text("You are a careful planner.", encoding="utf-8")
    r = _run(
        [
            "study",
            "create",
            "cli-study",
            "--assistant-model",
            "openai/gpt-4o-mini",
            "--scenarios",
            "travel_planning,preparing_gifts",
            "--profiles",
            "2",
            "--seed",
            "3",
            "--system-prompt",
            str(prompt),
            "--temperature",
            "0.5",
            "--max-tokens",
            "256",
            "--tasks-per-participant",
            "3",
            "--min-turns",
            "1",
            "--max-turns",
            "8",
            "--profile-mode",
            "assigned",
        ]
    )
    assert r.exit_code == 0, r.output
    assert "48 conditions" in r.output
    # no key in the test environment: created, with a warning that says what participants would get
    assert "warning: openai/gpt-4o-mini needs an API key" in r.output and "no reply" in r.output
    from db.engine import make_engine

    eng = make_engine(use_db)
    with Session(eng) as s:
        study = s.exec(select(Study).where(Study.name == "cli-study")).one()
        st = study_settings(study)
        assert (st.tasks_per_participant, st.min_turns, st.max_turns, st.profile_mode) == (
            3,
            1,
            8,
            "assigned",
        )
        cfg = s.exec(select(AssistantConfig)).one()
        assert cfg.system_prompt == "You are a careful planner." and cfg.temperature == 0.5
    eng.dispose()


def test_cli_study_create_errors(use_db, capsys, tmp_path):
    from workbench.cli import main

    assert (
        _run(
            [
                "study",
                "create",
                "a",
                "--assistant-model",
                "openai/gpt-4o-mini",
                "--scenarios",
                "recipe_planning",
            ]
        ).exit_code
        == 0
    )
    for args, words in [
        (["study", "create", "a", "--assistant-model", "openai/gpt-4o-mini"], "already exists"),
        (
            ["study", "create", "b", "--assistant-model", "scripted/y", "--scenarios", "nope"],
            "known scenarios",
        ),
        (["study", "create", "b", "--assistant-model", "x/y"], "unknown model provider 'x'"),
        (["study", "create", "b", "--assistant-model", "gpt4"], "provider/model"),
        (
            [
                "study",
                "create",
                "b",
                "--assistant-model",
                "x/y",
                "--system-prompt",
                str(tmp_path / "none.txt"),
            ],
            "cannot read the system prompt",
        ),
    ]:
        with pytest.raises(SystemExit) as ex:
            main(args)
        assert ex.value.code == 2, args
        err = capsys.readouterr().err
        assert words in err and "Traceback" not in err
