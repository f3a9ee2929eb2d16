"""Import the released RecLLMSim "Human vs. Agent" data (the directory as cloned) into one study.

Layout (see docs/reference-study.md, section 3)::

    LLM_agent_user/<scenario>/<n>.json            agent users ("new travel planning" = a second travel wave)
    real_human_user/User_<k>/<中文 scenario>/<n>.json   human wave 1
    human_exp_V2/User_<k>/<中文 scenario>/<n>.json      human wave 2

Every file is parsed and checked before anything is written, so a malformed file is reported with
its path and reason (skipped by default; with ``strict`` nothing at all is written).
``Conversation.external_id`` is the file's path relative to the dataset root: importing again adds
nothing.

Assumptions, because the released files do not say:
- The assistant of agent conversations and of human wave 1 is taken to be ``openai/gpt-4-turbo``
  (the study's default assistant; recorded with ``params["assumed"] = True``). Wave-2 files name it in
  ``chat_model``.
- The simulator's own model is not recorded; agent conversations point at one SimulatorConfig
  ``recllmsim/reference-simulator`` that documents the stop rule and turn limit.
- No timestamps exist: conversation and turn times are left empty rather than invented.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine

from db.errors import UserInputError
from db.settings import DEFAULT_MAX_IMPORT_MB, DEFAULT_MAX_TURN_CHARS
from workbench.dataio.limits import check_file_size, check_turn_lengths, decode_utf8
from workbench.dataio.report import ImportReport, Progress
from workbench.dataio.writer import (
    AssistantSpec,
    ContextSpec,
    ConversationRecord,
    LabelSourceSpec,
    ParticipantSpec,
    ProfileSpec,
    ScenarioSpec,
    SimulatorSpec,
    write_records,
)

WAVE_DIRS = {"LLM_agent_user": "agent", "real_human_user": "human_v1", "human_exp_V2": "human_v2"}
EXTERNAL_SOURCE = {"human_v1": "recllmsim-v1", "human_v2": "recllmsim-v2"}

# key -> (English name, Chinese name)
SCENARIOS = {
    "travel_planning": ("Travel planning", "旅行规划"),
    "recipe_planning": ("Recipe planning", "菜谱规划"),
    "preparing_gifts": ("Preparing gifts", "礼物准备"),
    "skills_learning_planning": ("Skills-learning planning", "技能学习规划"),
    "restaurant_choice": ("Choosing a restaurant", "餐厅选择"),
}
FOLDER_SCENARIO = {
    "travel planning": "travel_planning",
    "new travel planning": "travel_planning",
    "recipe planning": "recipe_planning",
    "preparing gifts": "preparing_gifts",
    "skills learning planning": "skills_learning_planning",
    "restaurant choice": "restaurant_choice",
    **{zh: key for key, (_en, zh) in SCENARIOS.items()},
}

DEFAULT_ASSISTANT_MODEL = "openai/gpt-4-turbo"
CHAT_MODELS = {
    "gpt-4-turbo-preview": "openai/gpt-4-turbo-preview",
    "gpt-4-turbo": "openai/gpt-4-turbo",
    "claude-3-7-sonnet-20250219": "anthropic/claude-3-7-sonnet-20250219",
    "gemini-2.0-pro-exp-02-05": "google/gemini-2.0-pro-exp-02-05",
    "deepseek-v3": "deepseek/deepseek-v3",
}

SOURCE_GPT4O = LabelSourceSpec(
    name="imported:recllmsim-gpt4o",
    kind="imported",
    model="openai/gpt-4o-2024-08-06",
    params={
        "labeller": "llm",
        "dataset": "recllmsim",
        "temperature": 0,
        "n_samples": 3,
        "aggregation": "majority vote (categories), rounded mean (scales)",
    },
)
SOURCE_HUMAN = LabelSourceSpec(
    name="imported:recllmsim-human",
    kind="imported",
    params={"human": True, "gold": True, "dataset": "recllmsim", "annotators": 1},
)
SOURCE_HALLUCINATION = LabelSourceSpec(
    name="imported:recllmsim-hallucination-annotators",
    kind="imported",
    params={"human": True, "dataset": "recllmsim", "post_hoc": True},
)
SIMULATOR = SimulatorSpec(
    model="recllmsim/reference-simulator",
    prompt_template="recllmsim-reference",
    prompt_version="reference",
    params={
        "max_turns": 10,
        "stop_phrase": "Thank you, goodbye.",
        "note": "the simulator model is not recorded in the released files",
    },
    name="RecLLMSim reference simulator (imported)",
)

DIMENSIONS = {
    "problem_solving",
    "order",
    "question_broadness",
    "context_dependency",
    "explanation",
    "promise",
    "feedback",
    "politeness",
    "formality",
    "utility",
    "operability",
}

HALLUCINATION = {
    "是": "yes",
    "否": "no",
    "无法判断": "cant_tell",
    "yes": "yes",
    "no": "no",
    "cant_tell": "cant_tell",
    "can't tell": "cant_tell",
    True: "yes",
    False: "no",
}
INTENT_EN = {
    "推荐": "Recommendation",
    "规划": "Planning",
    "评估": "Evaluation",
    "其它": "Others",
    "其他": "Others",
    "搜索": "Search",
}
QUESTIONNAIRE_VALUES = {
    "Memorization": {"是": "yes", "否": "no"},
    "Detail": {"详细": "detailed", "一般": "average", "简略": "brief"},
    "Availability": {"很有用": "very_useful", "有一定参考": "somewhat", "不可用": "unusable"},
    "Diversity": {"结果多样": "diverse", "一般": "average", "结果单一": "single"},
}

# The agents' self-report (``satisfaction``: detail / utility / diversity, 0-2, 2 the best) answers
# three of the participants' post-task items: each is also stored as that item's answer, marked as the
# simulator's (as ``workbench simulate`` marks its own: ``raw_value`` {"by": "simulator", ...}).
# Assumed: the points run as the items' options do, 2 the first (best) option. The annotators' ratings
# of the agents (``rating``, agent_rating) are a third party's judgement, not the user's: not mapped.
SELF_REPORT_ITEMS = {
    "detail": ("Detail", {2: "detailed", 1: "average", 0: "brief"}),
    "utility": ("Availability", {2: "very_useful", 1: "somewhat", 0: "unusable"}),
    "diversity": ("Diversity", {2: "diverse", 1: "average", 0: "single"}),
}

_STRATEGY = re.compile(r"^strategy_(human_)?V(\d+)$")


class Malformed(Exception):
    """A file that cannot be imported; the message is the reason shown to the user."""


def find_files(root: Path) -> list[tuple[str, Path]]:
    """(wave, path) of every conversation file under the dataset root, in a stable order."""
    out = []
    for folder, wave in WAVE_DIRS.items():
        base = root / folder
        if base.is_dir():
            out.extend((wave, p) for p in sorted(base.rglob("*.json")))
    return out


def import_recllmsim(
    engine: Engine,
    path: str | Path,
    study: str = "recllmsim",
    strict: bool = False,
    progress: Progress = None,
    scenario_dirs: Iterable[str | Path] = (),
    max_turn_chars: int = DEFAULT_MAX_TURN_CHARS,
    max_file_mb: float = DEFAULT_MAX_IMPORT_MB,
) -> ImportReport:
    """Import the released dataset at ``path`` into study ``study`` (created when absent).

    The scenario library (bundled packs + ``scenario_dirs``) is synced first.

    Malformed files are skipped and listed in the report; with ``strict`` the first malformed file
    aborts the import (UserInputError) before anything is written, and a database error rolls the
    whole import back. A file that is not UTF-8 or over ``max_file_mb`` stops the import before
    anything is written; a turn over ``max_turn_chars`` makes its file malformed.
    """
    t0 = time.perf_counter()
    root = Path(path).expanduser()
    if not root.is_dir():
        raise UserInputError(
            f"{root} is not a directory. Give the root of the RecLLMSim data (the folder "
            f"holding LLM_agent_user/, real_human_user/ and human_exp_V2/)."
        )
    files = find_files(root)
    if not files:
        raise UserInputError(f"{root} holds none of {', '.join(WAVE_DIRS)}: is this the RecLLMSim data root?")
    report = ImportReport(study=study, files=len(files))
    records = []
    for wave, p in files:
        rel = p.relative_to(root).as_posix()
        try:
            check_file_size(p, max_file_mb)
            rec = parse_file(p, rel, wave)
            check_turn_lengths(rec.turns, max_turn_chars, Malformed)
            records.append(rec)
        except Malformed as exc:
            if strict:
                raise UserInputError(
                    f"{rel}: {exc}. Nothing was imported (--strict); fix or remove the file, "
                    f"or import without --strict to skip it."
                ) from None
            report.malformed.append((rel, str(exc)))
    # Sync the bundled scenario library first so imported conversations link to the packs' task
    # contexts and pool profiles (keys en-<task_context_id>, pool-<preference_id>) instead of creating
    # "imported" duplicates that a later sync would sit beside. Idempotent.
    from sqlmodel import Session

    from scenarios import load_library, sync_library

    with Session(engine) as session:
        sync_library(session, load_library(extra_dirs=scenario_dirs))
        session.commit()
    write_records(
        engine,
        records,
        report,
        description="The released RecLLMSim 'Human vs. Agent' data (arXiv:2509.17619), imported.",
        language="en",
        single_transaction=strict,
        progress=progress,
    )
    report.seconds = time.perf_counter() - t0
    return report


# --------------------------------------------------------------------------------------------------
# Parsing (no database)
# --------------------------------------------------------------------------------------------------


def parse_file(path: Path, rel: str, wave: str) -> ConversationRecord:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise Malformed(f"cannot read: {exc}") from None
    try:
        data = json.loads(decode_utf8(raw, path).removeprefix("\ufeff"))
    except json.JSONDecodeError as exc:
        raise Malformed(f"invalid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    if not isinstance(data, dict):
        raise Malformed(f"expected a JSON object, found {type(data).__name__}")
    parts = rel.split("/")
    if wave == "agent":
        if len(parts) != 3:
            raise Malformed("expected LLM_agent_user/<scenario>/<n>.json")
        return _parse_agent(data, rel, parts[1])
    if len(parts) != 4 or not parts[1].startswith("User_"):
        raise Malformed(f"expected {parts[0]}/User_<k>/<scenario>/<n>.json")
    return _parse_human(data, rel, wave, parts[1], parts[2])


def _scenario(folder: str, declared: Any) -> ScenarioSpec:
    key = FOLDER_SCENARIO.get(folder.strip())
    if key is None and isinstance(declared, str):
        key = FOLDER_SCENARIO.get(declared.strip())
    if key is None:
        raise Malformed(f"unknown scenario folder {folder!r} (known: {', '.join(sorted(FOLDER_SCENARIO))})")
    en, zh = SCENARIOS[key]
    return ScenarioSpec(key=key, name=en, names={"en": en, "zh": zh})


def _history(data: dict) -> list[dict]:
    hist = data.get("history")
    if not isinstance(hist, list):
        raise Malformed("missing 'history' list" if hist is None else "'history' is not a list")
    if not hist:
        raise Malformed("'history' is empty")
    for i, t in enumerate(hist):
        if not isinstance(t, dict):
            raise Malformed(f"turn {i} is not an object")
        if t.get("role") not in ("user", "assistant", "system"):
            raise Malformed(f"turn {i} has role {t.get('role')!r} (expected user or assistant)")
        if not isinstance(t.get("content"), str):
            raise Malformed(f"turn {i} has no text 'content'")
    return hist


def _text(data: dict, key: str, required: bool = True) -> str | None:
    v = data.get(key)
    if v is None or (isinstance(v, str) and not v.strip()):
        if required:
            raise Malformed(f"missing {key!r}")
        return None
    if not isinstance(v, str):
        raise Malformed(f"{key!r} is not text")
    return v


def _anomalies(hist: list[dict]) -> list[str]:
    out = []
    if hist[0]["role"] == "assistant":
        out.append("starts_with_assistant")
    if hist[-1]["role"] == "user":
        out.append("ends_on_user_turn")
    if any(a["role"] == b["role"] for a, b in zip(hist, hist[1:])):
        out.append("consecutive_same_role")
    return out


def _hallucination(value: Any, i: int) -> str:
    if isinstance(value, str):
        value = value.strip()
    try:
        return HALLUCINATION[value]
    except (KeyError, TypeError):
        raise Malformed(
            f"turn {i}: unknown hallucination value {value!r} (expected 是/否/无法判断)"
        ) from None


def _labels(data: dict) -> list[dict]:
    labels = []
    for key, block in data.items():
        m = _STRATEGY.match(key)
        if not m:
            continue
        human = bool(m.group(1))
        if not isinstance(block, dict) or not isinstance(block.get("final"), dict):
            raise Malformed(f"{key!r} has no 'final' object")
        samples = [block[k] for k in sorted((k for k in block if k.isdigit()), key=int)]
        for s in samples:
            if not isinstance(s, dict):
                raise Malformed(f"{key!r} has a sample that is not an object")
        for dim, val in block["final"].items():
            if dim not in DIMENSIONS:
                raise Malformed(f"{key!r}: unknown dimension {dim!r}")
            if isinstance(val, (dict, list)):
                raise Malformed(f"{key!r}: {dim} is not a single value")
            value = None if val is None else str(val)
            lab = {
                "dimension": dim,
                "value": value,
                "turn_index": -1,
                "source": SOURCE_HUMAN if human else SOURCE_GPT4O,
                "status": "ok" if value is not None else "skipped",
            }
            if samples and not human:
                sv = [None if s.get(dim) is None else str(s.get(dim)) for s in samples]
                lab["samples"] = sv
                lab["flagged"] = len(set(sv)) > 1
            labels.append(lab)
    return labels


def _parse_agent(data: dict, rel: str, folder: str) -> ConversationRecord:
    scen = _scenario(folder, data.get("task"))
    hist = _history(data)
    wave = "agent_new_travel" if folder.strip() == "new travel planning" else "agent"
    pid, profile = _agent_profile(data)
    ctx_text = _text(data, "task_context")
    ctx_zh = data.get("task_context_zh") if isinstance(data.get("task_context_zh"), str) else None
    ctx_id = data.get("task_context_id")
    context = ContextSpec(
        text=ctx_text,
        language="en",
        translations={"zh": ctx_zh} if ctx_zh else {},
        slots={"recllmsim_task_context_id": ctx_id, "recllmsim_wave": wave},
    )
    turns, labels = _agent_turns(hist)
    labels.extend(_labels(data))
    questionnaire = _agent_questionnaire(data)
    meta = {
        "dataset": "recllmsim",
        "file": rel,
        "preference_id": pid,
        "task_context_id": ctx_id,
        "task": data.get("task"),
        "anomalies": _anomalies(hist),
        "extra_keys": sorted(k for k in data if k not in _AGENT_KEYS and not _STRATEGY.match(k)),
    }
    return ConversationRecord(
        external_id=rel,
        user_kind="agent",
        language="en",
        scenario=scen,
        context=context,
        assistant=_assistant(None),
        profile=profile,
        simulator=SIMULATOR,
        wave=wave,
        meta=meta,
        end_reason=_agent_end_reason(hist),
        ended_by="user" if hist[-1]["role"] == "user" else None,
        turns=turns,
        labels=labels,
        questionnaire=questionnaire,
    )


def _agent_profile(data: dict) -> tuple[int, ProfileSpec]:
    """The pool profile an agent conversation simulated (``pool-<preference_id>``) and its id."""
    pref = _text(data, "preference")
    pid = data.get("preference_id")
    if isinstance(pid, bool) or not isinstance(pid, int) or pid < 0:
        raise Malformed(f"'preference_id' must be a non-negative integer, found {pid!r}")
    mapped = data.get("profile_mapped") if isinstance(data.get("profile_mapped"), dict) else {}
    fields = {_snake(k): _en_value(v) for k, v in mapped.items()}
    if mapped:
        fields["profile_mapped"] = mapped
    pref_zh = data.get("preference_zh") if isinstance(data.get("preference_zh"), str) else None
    return pid, ProfileSpec(
        key=f"pool-{pid}",
        language="en",
        fields=fields,
        text=pref,
        translations={"zh": pref_zh} if pref_zh else {},
        source="pool",
    )


def _agent_turns(hist: list[dict]) -> tuple[list[dict], list[dict]]:
    """The turns of an agent conversation and the hallucination labels its annotators gave."""
    turns, labels = [], []
    for i, t in enumerate(hist):
        meta = {
            k: v
            for k, v in t.items()
            if k not in ("role", "content", "content_zh", "intent", "hallucination")
        }
        row = {"index": i, "role": t["role"], "content": t["content"], "meta": meta}
        if isinstance(t.get("content_zh"), str):
            row["translation"], row["translation_language"] = t["content_zh"], "zh"
        intent = t.get("intent")
        if intent is not None:
            row["intent"] = (
                [intent] if isinstance(intent, str) else list(intent) if isinstance(intent, list) else None
            )
        if "hallucination" in t and t["role"] == "assistant":
            h = t["hallucination"]
            if isinstance(h, dict):
                flag, memo = h.get("hallucination"), h.get("memo")
            else:
                flag, memo = h, None
            labels.append(
                {
                    "dimension": "hallucination",
                    "turn_index": i,
                    "value": _hallucination(flag, i),
                    "rationale": memo if isinstance(memo, str) else None,
                    "source": SOURCE_HALLUCINATION,
                }
            )
        turns.append(row)
    return turns, labels


def _agent_questionnaire(data: dict) -> list[dict]:
    questionnaire = []
    for qname, key in (("agent_rating", "rating"), ("agent_self_report", "satisfaction")):
        block = data.get(key)
        if block is None:
            continue
        if not isinstance(block, dict):
            raise Malformed(f"{key!r} is not an object")
        for item, v in block.items():
            questionnaire.append(
                {
                    "questionnaire": qname,
                    "item": str(item)[:200],
                    "value": None if v is None else str(v),
                    "raw_value": json.dumps(v),
                }
            )
            if qname == "agent_self_report":
                questionnaire += _self_report_as_post_task(str(item), v)
    return questionnaire


def _self_report_as_post_task(item: str, v: Any) -> list[dict]:
    """The post-task answer a self-report item gives (none for other items or values)."""
    target = SELF_REPORT_ITEMS.get(item)
    point = v if isinstance(v, int) and not isinstance(v, bool) else None
    if target is None or point not in target[1]:
        return []
    raw = {"by": "simulator", "source": "agent_self_report", "item": item, "answer": v}
    return [
        {
            "questionnaire": "post_task",
            "item": target[0],
            "value": target[1][point],
            "raw_value": json.dumps(raw),
        }
    ]


_AGENT_KEYS = {
    "history",
    "preference",
    "preference_id",
    "preference_zh",
    "profile_mapped",
    "rating",
    "satisfaction",
    "task",
    "task_context",
    "task_context_id",
    "task_context_zh",
}
_HUMAN_KEYS = {"history", "profile", "questionnaire", "task_context", "task_type", "chat_model"}


def _agent_end_reason(hist: list[dict]) -> str | None:
    users = [t for t in hist if t["role"] == "user"]
    if users and "goodbye" in users[-1]["content"].lower():
        return "user_ended"
    if len(users) >= 10:
        return "max_turns"
    return None


def _parse_human(data: dict, rel: str, wave: str, user: str, folder: str) -> ConversationRecord:
    scen = _scenario(folder, data.get("task_type"))
    hist = _history(data)
    prof = data.get("profile")
    if not isinstance(prof, dict):
        raise Malformed("missing 'profile' object")
    fields = {k: v for k, v in prof.items() if k != "complete_tid"}
    ctx_text = _text(data, "task_context")
    chat_model = data.get("chat_model")
    if chat_model is not None and not isinstance(chat_model, str):
        raise Malformed("'chat_model' is not text")
    turns = [_human_turn(i, t) for i, t in enumerate(hist)]
    questionnaire = _human_questionnaire(data)
    meta = {
        "dataset": "recllmsim",
        "file": rel,
        "task_type": data.get("task_type"),
        "chat_model": chat_model,
        "anomalies": _anomalies(hist),
        "extra_keys": sorted(k for k in data if k not in _HUMAN_KEYS and not _STRATEGY.match(k)),
    }
    if "complete_tid" in prof:
        meta["complete_tid"] = prof["complete_tid"]
    return ConversationRecord(
        external_id=rel,
        user_kind="human",
        language="zh",
        scenario=scen,
        context=ContextSpec(text=ctx_text, language="zh", slots={"recllmsim_wave": wave}),
        assistant=_assistant(chat_model),
        profile=ProfileSpec(key=None, language="zh", fields=fields, source="participant"),
        participant=ParticipantSpec(external_source=EXTERNAL_SOURCE[wave], external_id=user, language="zh"),
        wave=wave,
        meta=meta,
        ended_by="user" if hist[-1]["role"] == "user" else None,
        turns=turns,
        labels=_labels(data),
        questionnaire=questionnaire,
    )


def _human_turn(i: int, t: dict) -> dict:
    """Turn ``i`` of a human conversation with the participant's per-turn judgements."""
    meta = {
        k: v
        for k, v in t.items()
        if k not in ("role", "content", "intent", "hallucination", "satisfaction", "reason")
    }
    row: dict = {"index": i, "role": t["role"], "content": t["content"], "meta": meta}
    if t.get("hallucination") not in (None, ""):
        row["hallucination"] = _hallucination(t["hallucination"], i)
    sat = t.get("satisfaction")
    if sat not in (None, ""):
        try:
            s = int(str(sat).strip())
        except ValueError:
            raise Malformed(f"turn {i}: satisfaction {sat!r} is not a number 1-5") from None
        if not 1 <= s <= 5:
            raise Malformed(f"turn {i}: satisfaction {s} is outside 1-5")
        row["satisfaction"] = s
    if isinstance(t.get("reason"), str) and t["reason"].strip():
        row["satisfaction_reason"] = t["reason"]
    intent = t.get("intent")
    if intent is not None:
        if isinstance(intent, str):
            intent = [intent]
        if not isinstance(intent, list):
            raise Malformed(f"turn {i}: 'intent' is not a list")
        row["intent"] = [INTENT_EN.get(str(x), str(x)) for x in intent]
        meta["intent_zh"] = intent
    return row


def _human_questionnaire(data: dict) -> list[dict]:
    questionnaire = []
    qs = data.get("questionnaire")
    if qs is None:
        return questionnaire
    if not isinstance(qs, list):
        raise Malformed("'questionnaire' is not a list")
    for q in qs:
        if not isinstance(q, dict) or not isinstance(q.get("summary"), str):
            raise Malformed("a questionnaire answer has no 'summary'")
        item, option = q["summary"], q.get("option")
        raw = None if option is None else str(option)
        value = QUESTIONNAIRE_VALUES.get(item, {}).get(raw.strip() if raw else raw, raw)
        questionnaire.append(
            {
                "questionnaire": "post_task",
                "item": item[:200],
                "value": value,
                "raw_value": raw,
                "question": q.get("query"),
            }
        )
    return questionnaire


def _assistant(chat_model: str | None) -> AssistantSpec:
    if not chat_model:
        return AssistantSpec(
            model=DEFAULT_ASSISTANT_MODEL,
            params={"dataset": "recllmsim", "assumed": True},
            name=f"{DEFAULT_ASSISTANT_MODEL} (assumed; RecLLMSim)",
        )
    name = chat_model.strip()
    model = CHAT_MODELS.get(name) or (name if "/" in name else f"unknown/{name}")
    return AssistantSpec(
        model=model, params={"dataset": "recllmsim", "chat_model": name}, name=f"{model} (RecLLMSim)"
    )


def _snake(key: str) -> str:
    key = key.replace("Daily Interests and Hobbies", "daily_interests")
    return re.sub(r"[^a-z0-9]+", "_", key.lower()).strip("_")


def _en_value(v: Any) -> Any:
    """profile_mapped values are {"en", "zh"} pairs or lists of them: keep the English."""
    if isinstance(v, dict) and "en" in v:
        return v["en"]
    if isinstance(v, list):
        return [_en_value(x) for x in v]
    return v
