"""Study settings and study creation.

``StudySettings`` is what ``Study.settings`` holds; every part (participant app, simulator, analysis)
reads settings through it so defaults live in one place.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from sqlalchemy import func
from sqlmodel import Session, select

from db.errors import UserInputError, WorkbenchError
from db.models import AssistantConfig, Condition, Profile, Scenario, Study, TaskContext
from db.repo import get_or_create_assistant_config, get_study
from scenarios import load_library, sync_library
from workbench.llm import check_model_name
from workbench.llm.registry import parse_model_name

DEFAULT_TEXTS = {
    "en": {
        "consent_text": (
            "You are invited to take part in a research study on conversations with an AI assistant. "
            "Your messages and answers are stored under a random pseudonym and used for research only. "
            "You may stop at any time."
        ),
        "instructions_text": (
            "You will complete a few planning tasks by chatting with an AI assistant. Read each task card, "
            "then talk to the assistant as you naturally would. Under each reply, say whether it contained "
            "made-up information and how satisfied you are."
        ),
    },
    "zh": {
        "consent_text": (
            "诚邀您参加一项关于与 AI 助手对话的研究。您的消息和回答以随机化名保存，仅用于研究。"
            "您可以随时退出。"
        ),
        "instructions_text": (
            "您将通过与 AI 助手聊天完成几个规划任务。请先阅读每张任务卡，然后像平常一样与助手交谈。"
            "在每条回复下方，请说明其中是否有编造的信息，以及您的满意程度。"
        ),
    },
}


class StudySettings(BaseModel):
    model_config = ConfigDict(extra="allow")

    tasks_per_participant: int = Field(2, ge=1)
    min_turns: int = Field(2, ge=1, description="user turns before the user may finish")
    max_turns: int = Field(10, ge=1, description="user turns after which the task ends")
    # Who provides the persona in human sessions: the participant fills in the profile
    # questionnaire ("participant"), or the study assigns the condition's profile ("assigned").
    profile_mode: Literal["participant", "assigned"] = "participant"
    interface_language: Literal["en", "zh"] = "en"
    # Defaults in the interface language (DEFAULT_TEXTS); see _texts_in_language.
    consent_text: str = ""
    instructions_text: str = ""
    # How participants reach the researchers (an e-mail address, a name): shown when a session has expired.
    contact_text: str | None = None
    completion_code: str = "COMPLETE"
    screenout_code: str = "SCREENOUT"
    prolific_completion_url: str | None = None  # e.g. https://app.prolific.com/submissions/complete?cc=
    # Prolific participants are sent back automatically this many seconds after the last page shows
    # (0: only the button).
    prolific_redirect_seconds: int = Field(5, ge=0, le=600)
    # Prolific's STUDY_ID of this study: a Prolific link is only accepted for the study naming it.
    prolific_study_id: str | None = None
    # New participants a minute through Prolific links at most (more are turned away and logged), so
    # that even a valid link cannot fill the quotas with made-up ids.
    max_new_participants_per_minute: int = Field(30, ge=1, le=10_000)
    idle_timeout_minutes: int = Field(30, ge=1)
    attention_check: bool = True
    quota_per_condition: int | None = None  # human conversations per condition (None = unlimited)
    # The study's questionnaires as validated when the study was made (a dump of
    # workbench.participation.questionnaires.Questionnaires, with its version and file name), so a
    # later change of the file does not change a running study. None: the bundled reference items.
    questionnaires: dict | None = None

    @model_validator(mode="before")
    @classmethod
    def _texts_in_language(cls, data):
        """Consent and instructions default to the interface language's text. A text that is still
        another language's default follows the language (a study switched to zh, or created before
        the Chinese defaults existed, shows the Chinese default); a researcher's own text is kept."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        lang = data.get("interface_language") or "en"
        for field in ("consent_text", "instructions_text"):
            value = data.get(field)
            if value is None or any(value == texts[field] for texts in DEFAULT_TEXTS.values()):
                data[field] = DEFAULT_TEXTS.get(lang, DEFAULT_TEXTS["en"])[field]
        return data

    @field_validator("prolific_study_id")
    @classmethod
    def _prolific_id(cls, v: str | None) -> str | None:
        v = (v or "").strip() or None
        if v is not None and not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", v):
            raise ValueError("is Prolific's STUDY_ID: letters, digits, _ and - only")
        return v

    @field_validator("prolific_completion_url")
    @classmethod
    def _http_url(cls, v: str | None) -> str | None:
        v = (v or "").strip() or None
        if v is not None and (not re.match(r"^https?://[^\s\"'<>]+$", v)):
            raise ValueError(
                "must be an http(s) address without spaces or quotes, "
                "e.g. https://app.prolific.com/submissions/complete?cc="
            )
        return v


def check_settings(cfg: StudySettings) -> None:
    """Rules across fields, for creating a study and for changing its settings alike (reading stored
    settings does not apply them, so an old study never becomes unreadable)."""
    if cfg.min_turns > cfg.max_turns:
        raise UserInputError(f"min turns ({cfg.min_turns}) is greater than max turns ({cfg.max_turns})")
    empty = [
        name
        for name, value in (
            ("consent text", cfg.consent_text),
            ("instructions", cfg.instructions_text),
            ("completion code", cfg.completion_code),
            ("screen-out code", cfg.screenout_code),
        )
        if not (value or "").strip()
    ]
    if empty:
        raise UserInputError(
            f"{' and '.join(empty)} cannot be empty: participants are shown "
            f"{'them' if len(empty) > 1 else 'it'}"
        )


def study_settings(study: Study) -> StudySettings:
    return StudySettings.model_validate(study.settings or {})


# --------------------------------------------------------------------------------------------------
# Creating a study
# --------------------------------------------------------------------------------------------------

LANGUAGES = ("en", "zh")


def check_model_string(model: str) -> str:
    """``provider/model`` (e.g. ``openai/gpt-4o-mini``) or raise UserInputError."""
    model = (model or "").strip()
    parse_model_name(model, "the assistant model")
    return model


def create_study(
    session: Session,
    name: str,
    assistant_model: str,
    scenarios: Sequence[str] | None = None,
    profiles: int | Sequence[str] | None = None,
    language: str = "en",
    system_prompt: str | None = None,
    temperature: float | None = None,
    max_tokens: int | None = None,
    settings: dict | None = None,
    seed: int = 0,
    description: str | None = None,
    context_sets: Sequence[str] | None = None,
    library=None,
    questionnaires=None,
) -> tuple[Study, int]:
    """Create a study and its conditions: every chosen scenario x task context (of ``language``, from
    ``context_sets``, default the reference's "main" templates) x profile. Returns (study, n_conditions).

    ``scenarios=None`` means the reference's four scenarios. ``profiles``: ``None``/0 = no fixed profile
    (conditions without a profile; participants bring their own), an int N = N pool profiles sampled
    with ``seed``, or a list of profile keys. One AssistantConfig is shared by all conditions.
    ``questionnaires``: a validated ``Questionnaires`` (``load_questionnaires(FILE)``), stored in the
    study's settings; None stores the bundled reference questionnaires.
    Nothing is committed here: the caller's transaction decides. Bad input raises UserInputError
    before anything is written."""
    name = _check_new_name(session, name)
    assistant_model = check_model_string(assistant_model)
    check_model_name(assistant_model)  # an unknown provider or local file is refused; a missing key is not
    _check_generation(language, temperature, max_tokens)
    study_cfg = _validated_settings({"interface_language": language, **(settings or {})})
    lib = library if library is not None else load_library()
    sets = set(context_sets or ["main"])
    contexts = _chosen_contexts(lib, scenarios, language, sets)
    profile_keys = _profile_keys(lib, profiles, seed, study_cfg)

    sync_library(session, lib)
    cfg = get_or_create_assistant_config(
        session,
        model=assistant_model,
        system_prompt=system_prompt,
        temperature=temperature,
        max_tokens=max_tokens,
    )
    settings_doc = study_cfg.model_dump()
    settings_doc.update(
        {
            "questionnaires": _questionnaires_doc(questionnaires or study_cfg.questionnaires),
            "scenarios": list(contexts),
            "context_sets": sorted(sets),
            "seed": seed,
            "profiles": [p for p in profile_keys if p is not None],
        }
    )
    study = Study(
        name=name, description=description, language=language, settings=settings_doc, source="created"
    )
    session.add(study)
    session.flush()
    n = _add_conditions(session, study, contexts, profile_keys, cfg.id, study_cfg.quota_per_condition)
    return study, n


def _questionnaires_doc(questionnaires) -> dict:
    """The definition to store: the given ``Questionnaires`` (or its dump, checked again), else the
    bundled reference questionnaires."""
    # Imported here: the participation package imports this module (StudySettings).
    from workbench.participation.questionnaires import load_questionnaires, study_questionnaires

    if isinstance(questionnaires, dict):
        questionnaires = study_questionnaires(questionnaires)
    return (questionnaires or load_questionnaires()).model_dump(mode="json")


def _check_new_name(session: Session, name: str) -> str:
    name = (name or "").strip()
    if not name:
        raise UserInputError("the study needs a name")
    if len(name) > 200:
        raise UserInputError("the study name is longer than 200 characters")
    if session.exec(select(Study).where(Study.name == name)).first() is not None:
        raise UserInputError(f"a study named {name!r} already exists; choose another name")
    return name


def _check_generation(language: str, temperature: float | None, max_tokens: int | None) -> None:
    if language not in LANGUAGES:
        raise UserInputError(f"language {language!r} is not supported; use one of {', '.join(LANGUAGES)}")
    if temperature is not None and not 0 <= temperature <= 2:
        raise UserInputError(f"temperature {temperature} is outside 0..2")
    if max_tokens is not None and max_tokens < 1:
        raise UserInputError(f"max tokens must be positive (got {max_tokens})")


def _validated_settings(merged: dict) -> StudySettings:
    try:
        study_cfg = StudySettings.model_validate(merged)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise UserInputError(f"invalid study settings: {problems}") from None
    check_settings(study_cfg)
    return study_cfg


def _chosen_contexts(lib, scenarios: Sequence[str] | None, language: str, sets: set[str]) -> dict:
    """Scenario key -> its task contexts of ``language`` in ``sets``, in the order chosen."""
    keys = list(scenarios) if scenarios else lib.reference_scenarios()
    if not keys:
        raise UserInputError("no scenarios chosen and the library has no reference scenarios")
    unknown = [k for k in keys if k not in lib.scenarios]
    if unknown:
        raise UserInputError(
            f"unknown scenario(s) {', '.join(map(repr, unknown))}; known scenarios: {', '.join(sorted(lib.scenarios))}"
        )
    chosen = {}
    for key in dict.fromkeys(keys):  # drop repeats, keep order
        ctxs = lib.scenarios[key].contexts(language=language, sets=sets)
        if not ctxs:
            raise UserInputError(
                f"scenario {key!r} has no task contexts in language {language!r} and set(s) {sorted(sets)}"
            )
        chosen[key] = ctxs
    return chosen


def _profile_keys(
    lib, profiles: int | Sequence[str] | None, seed: int, study_cfg: StudySettings
) -> list[str | None]:
    """The conditions' profile keys; ``[None]`` for conditions without a fixed profile."""
    pool = sorted(lib.profiles, key=_profile_sort_key)
    if profiles is None or profiles == 0:
        if study_cfg.profile_mode == "assigned":
            raise UserInputError(
                "profile mode 'assigned' needs profiles: choose a number of pool profiles (or a list of keys)"
            )
        return [None]
    if isinstance(profiles, int):
        if profiles < 0 or profiles > len(pool):
            raise UserInputError(
                f"profiles must be between 0 and {len(pool)} (the pool size); got {profiles}"
            )
        return sorted(random.Random(seed).sample(pool, profiles), key=_profile_sort_key)
    missing = [p for p in profiles if p not in lib.profiles]
    if missing:
        raise UserInputError(
            f"unknown profile(s) {', '.join(missing)}; pool keys look like {pool[0] if pool else 'pool-0'}"
        )
    return list(dict.fromkeys(profiles))


def _add_conditions(
    session: Session,
    study: Study,
    contexts: dict,
    profile_keys: list[str | None],
    assistant_config_id: int,
    quota: int | None,
) -> int:
    """One condition per scenario x task context x profile; returns how many."""
    keys = list(contexts)
    scen_rows = {s.key: s for s in session.exec(select(Scenario).where(Scenario.key.in_(keys)))}
    prof_rows = {
        p.key: p for p in session.exec(select(Profile).where(Profile.key.in_([k for k in profile_keys if k])))
    }
    n = 0
    for key in keys:
        scen = scen_rows[key]
        tc_rows = {
            t.key: t for t in session.exec(select(TaskContext).where(TaskContext.scenario_id == scen.id))
        }
        for ctx in contexts[key]:
            for pkey in profile_keys:
                session.add(
                    Condition(
                        study_id=study.id,
                        key=f"{key}/{ctx.key}/{pkey or 'own-profile'}",
                        scenario_id=scen.id,
                        task_context_id=tc_rows[ctx.key].id,
                        profile_id=prof_rows[pkey].id if pkey else None,
                        assistant_config_id=assistant_config_id,
                        language=study.language,
                        quota=quota,
                    )
                )
                n += 1
    session.flush()
    return n


def _profile_sort_key(key: str):
    # pool-2 before pool-10
    head, _, tail = key.rpartition("-")
    return (head, int(tail)) if tail.isdigit() else (key, -1)


# --------------------------------------------------------------------------------------------------
# The researcher's Studies page: create from the packs, change settings
# --------------------------------------------------------------------------------------------------


def available_scenarios(extra_dirs=()) -> list[str]:
    """The scenario keys of the library (bundled packs and ``extra_dirs``, the shells pass
    ``WORKBENCH_SCENARIO_DIRS``); an invalid pack raises ``scenarios.LibraryError`` with every
    problem in its message."""
    return sorted(load_library(extra_dirs=extra_dirs).scenarios)


def create_study_from_packs(
    session: Session,
    name: str,
    assistant_model: str,
    scenarios: list[str],
    profiles: int | None,
    language: str,
    system_prompt: str | None,
    settings: dict,
    extra_dirs=(),
    questionnaires_file: tuple[str, bytes] | None = None,
) -> tuple[Study, int]:
    """Sync the scenario packs (bundled + ``extra_dirs``) and create the study (``create_study``)
    from a form's values. ``questionnaires_file``: an uploaded questionnaire file (name, content);
    None asks the bundled reference questionnaires."""
    if not name.strip():
        raise UserInputError("give the study a name")
    check_model_string(assistant_model)
    validated = StudySettings.model_validate(settings).model_dump(exclude_none=True)
    questionnaires = _uploaded_questionnaires(questionnaires_file)
    library = load_library(extra_dirs=extra_dirs)
    sync_library(session, library)
    return create_study(
        session,
        name.strip(),
        assistant_model.strip(),
        scenarios=scenarios or None,
        profiles=profiles or None,
        language=language,
        system_prompt=system_prompt or None,
        settings=validated,
        library=library,
        questionnaires=questionnaires,
    )


def _uploaded_questionnaires(upload: tuple[str, bytes] | None):
    if upload is None:
        return None
    from workbench.participation.questionnaires import parse_questionnaires  # see _questionnaires_doc

    name, content = upload
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError:
        raise UserInputError(f"{name}: a questionnaire file is UTF-8 text (YAML)") from None
    return parse_questionnaires(text, name)


def update_settings(session: Session, study_name: str, changes: dict) -> StudySettings:
    """Validate and store new settings for a study (unknown keys are kept, bad values refused)."""
    study = get_study(session, study_name)
    try:
        new = StudySettings.model_validate({**(study.settings or {}), **changes})
    except Exception as exc:
        raise UserInputError(f"invalid settings: {exc}") from exc
    check_settings(new)
    if new.profile_mode == "assigned":
        without = session.exec(
            select(func.count(Condition.id)).where(
                Condition.study_id == study.id, Condition.profile_id.is_(None)
            )
        ).one()
        if without:
            raise UserInputError(
                f"profile mode 'assigned' needs a profile in every condition; {without} condition(s) "
                "of this study have none (create the study with profiles, or keep 'participant')"
            )
    study.settings = new.model_dump(mode="json")
    session.add(study)
    session.flush()
    return new


def get_settings(session: Session, study_name: str) -> StudySettings:
    return study_settings(get_study(session, study_name))


def assistant_model_problems(session: Session, study_id: int) -> list[str]:
    """Why the study's assistant model(s) cannot answer participants from this server (a missing
    API key, a missing package or file), one sentence each; empty when they can. Such a failure
    happens before any call is made, so it is not in the failed-calls table."""
    study = session.get(Study, study_id)
    if study is None or study.source == "imported":  # nobody takes part in imported data
        return []
    models = session.exec(
        select(AssistantConfig.model)
        .join(Condition, Condition.assistant_config_id == AssistantConfig.id)
        .where(Condition.study_id == study_id)
        .distinct()
    ).all()
    problems = []
    for model in sorted(models):
        try:
            missing = check_model_name(model)
        except WorkbenchError as exc:
            missing = str(exc)
        if missing:
            problems.append(missing)
    return problems
