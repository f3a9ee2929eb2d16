"""The simulated user answers the participants' instruments, in role, in calls of their own.

After each assistant reply the simulated user gives the per-reply answers a participant gives (made-up
information yes / no / can't tell, satisfaction 1-5, an optional reason); after the task, the study's
post-task questionnaire. The prompt is versioned (``prompts/rating/user-rating.v1.yaml``, stored as
``user-rating@1``); nothing asked or answered here enters the conversation the simulated user goes
on with. Answers are parsed robustly: a malformed or refused answer gives an ``error`` and no
values, never an exception.

Example::

    rater = Rater(load_rating_template(), user.ctx, rated_items(questionnaires))
    c = await simulator.acomplete(rater.reply_messages(turns))
    rating = parse_reply_rating(c.text)      # .hallucination, .satisfaction, .reason, .error
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from workbench.llm.base import extract_json
from workbench.participation.questionnaires import Answer, Item, check_answers
from workbench.participation.texts import HALLUCINATION_VALUES, ParticipantError
from workbench.simulation.templates import BUNDLED_DIR, PromptTemplate, TemplateKind, find_template
from workbench.simulation.user import UserContext

RATING_DIR = BUNDLED_DIR / "rating"
DEFAULT_RATING_PROMPT = "user-rating"
PARTS = (
    "system",
    "you",
    "assistant",
    "reply",
    "post_task",
    "optional",
    "choose_one",
    "choose_any",
    "number",
    "text",
    "checkbox",
    "no_profile",
)
_PLACEHOLDER = re.compile(r"\{(profile|task|transcript|items|example)\}")
# What turn.meta["rated_by"] and a QuestionnaireResponse's raw_value["by"] say of the simulator's answers.
RATED_BY = "simulator"
# The LLMCall purpose of the rating calls.
PURPOSE = "simulator_rating"
# Answers a model may give for "made-up information" besides the stored values.
_HALLUCINATION_WORDS = {
    "yes": "yes",
    "y": "yes",
    "true": "yes",
    "是": "yes",
    "no": "no",
    "n": "no",
    "false": "no",
    "否": "no",
    "cant_tell": "cant_tell",
    "can't tell": "cant_tell",
    "cant tell": "cant_tell",
    "can_not_tell": "cant_tell",
    "cannot tell": "cant_tell",
    "unsure": "cant_tell",
    "not sure": "cant_tell",
    "unknown": "cant_tell",
    "无法判断": "cant_tell",
}


RATING = TemplateKind("rating prompt", RATING_DIR, PARTS, _PLACEHOLDER, DEFAULT_RATING_PROMPT)
# A rating prompt is a prompt template of its own kind (its parts and placeholders).
RatingTemplate = PromptTemplate


def load_rating_template(spec: str | None = None) -> RatingTemplate:
    """``spec``: a YAML path, ``name`` (newest version) or ``name@version``; default ``user-rating``."""
    return find_template(RATING, spec)


def rated_items(items: list[Item]) -> list[Item]:
    """The post-task items the simulated user answers: all but attention checks (a check of a
    person's attention, not an answer about the task)."""
    return [it for it in items if it.type != "attention"]


# --------------------------------------------------------------------------------------------------
# Parsing
# --------------------------------------------------------------------------------------------------


@dataclass
class ReplyRating:
    hallucination: str | None = None  # yes | no | cant_tell
    satisfaction: int | None = None  # 1-5
    reason: str | None = None
    error: str | None = None  # why the answer could not be used (then nothing else is set)


def _hallucination(v: Any) -> str | None:
    if isinstance(v, bool):
        return "yes" if v else "no"
    if not isinstance(v, str):
        return None
    return _HALLUCINATION_WORDS.get(v.strip().lower().replace("’", "'"))


def _satisfaction(v: Any) -> int | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, str):
        v = v.strip().split("/")[0].strip()
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    return int(x) if x == int(x) and 1 <= x <= 5 else None


def _json_object(text: str) -> dict | str:
    """The reply's JSON object, or why there is none."""
    try:
        data = extract_json(text or "")
    except ValueError:
        return f"no JSON object in the answer: {(text or '').strip()[:120]!r}"
    if not isinstance(data, dict):
        return f"the answer is not a JSON object: {(text or '').strip()[:120]!r}"
    return data


def parse_reply_rating(text: str) -> ReplyRating:
    """Read ``{"hallucination": ..., "satisfaction": 1-5, "reason": ...}``. Both answers are
    required, as they are of a participant: a missing or invalid one gives an error and no values."""
    data = _json_object(text)
    if isinstance(data, str):
        return ReplyRating(error=data)
    h = _hallucination(data.get("hallucination"))
    s = _satisfaction(data.get("satisfaction"))
    problems = []
    if h is None:
        problems.append(
            f"hallucination {data.get('hallucination')!r} is not one of {', '.join(HALLUCINATION_VALUES)}"
        )
    if s is None:
        problems.append(f"satisfaction {data.get('satisfaction')!r} is not a whole number 1-5")
    if problems:
        return ReplyRating(error="; ".join(problems))
    reason = data.get("reason")
    reason = reason.strip()[:2000] if isinstance(reason, str) else None
    return ReplyRating(h, s, reason or None)


@dataclass
class PostTaskAnswers:
    answers: list[Answer] = field(default_factory=list)
    error: str | None = None  # items missing or invalid (the valid ones are kept)


def parse_post_task(text: str, items: list[Item], language: str) -> PostTaskAnswers:
    """The answers to ``items`` in ``{"<item name>": <value>, ...}``, each checked as a participant's
    would be; invalid or missing required ones are named in ``error`` and left out."""
    data = _json_object(text)
    if isinstance(data, str):
        return PostTaskAnswers(error=data)
    data = data.get("answers", data) if isinstance(data.get("answers"), dict) else data
    rows, problems = [], []
    for it in items:
        v = _item_value(it, data.get(it.name))
        if v is None and not it.required:
            continue
        try:
            rows += check_answers([it], {it.name: v}, language, "post_task")
        except ParticipantError:
            problems.append(f"{it.name}: {data.get(it.name)!r}" if it.name in data else f"{it.name}: missing")
    error = ("invalid or missing answers: " + "; ".join(problems)) if problems else None
    return PostTaskAnswers(rows, error)


def _item_value(item: Item, v: Any) -> Any:
    """A model's answer as the participant's widget would give it (the option's value, not its text)."""
    if v is None or (isinstance(v, str) and not v.strip()):
        return None
    if item.type == "checkbox":
        return v is True or (isinstance(v, str) and v.strip().lower() in ("true", "yes"))
    if item.type in ("single", "likert"):
        return _option(item, v)
    if item.type == "multiple":
        values = v if isinstance(v, list) else [x for x in str(v).split(",")]
        return [_option(item, x) for x in values]
    return v


def _option(item: Item, v: Any) -> str:
    """The option value for ``v``: the value itself, or an option's text in either language."""
    s = str(int(v) if isinstance(v, float) and v == int(v) else v).strip()
    options = {o.lower(): o for o in item.options_in("en")}
    if s.lower() in options:
        return options[s.lower()]
    for lang in ("en", "zh"):
        for value, text in item.options_in(lang).items():
            if s.lower() == text.lower():
                return value
    return s


def simulator_raw_value(answer: Answer, call_id: int | None, label: str) -> str:
    """What a simulator's post-task answer stores as ``raw_value``: who answered, with which prompt
    and call, and the answer as given (a participant's raw_value is the option's text)."""
    return json.dumps(
        {"by": RATED_BY, "prompt": label, "llm_call_id": call_id, "answer": answer.raw_value},
        ensure_ascii=False,
    )


# --------------------------------------------------------------------------------------------------
# Prompts
# --------------------------------------------------------------------------------------------------


class Rater:
    """The rating prompts of one simulated user: its persona and task, the conversation so far."""

    def __init__(self, template: RatingTemplate, ctx: UserContext, items: list[Item]):
        self.template, self.ctx, self.items = template, ctx, rated_items(items)
        lang = ctx.language
        self.system = template.part(
            lang, "system", profile=ctx.profile or template.part(lang, "no_profile"), task=ctx.task
        )

    @property
    def label(self) -> str:
        return self.template.label

    def _transcript(self, turns: list[dict]) -> str:
        lang = self.ctx.language
        who = {"user": self.template.part(lang, "you"), "assistant": self.template.part(lang, "assistant")}
        return "\n\n".join(f"{who.get(t['role'], t['role'])}: {t['content']}" for t in turns)

    def reply_messages(self, turns: list[dict]) -> list[dict]:
        """The per-reply questions about the last turn of ``turns`` (an assistant reply)."""
        body = self.template.part(self.ctx.language, "reply", transcript=self._transcript(turns))
        return [{"role": "system", "content": self.system}, {"role": "user", "content": body}]

    def post_task_messages(self, turns: list[dict]) -> list[dict] | None:
        """The post-task questionnaire about the whole conversation (None: the study asks none)."""
        if not self.items:
            return None
        lang = self.ctx.language
        body = self.template.part(
            lang,
            "post_task",
            transcript=self._transcript(turns),
            items="\n".join(self._item_line(it) for it in self.items),
            example=json.dumps({it.name: self._example(it) for it in self.items}, ensure_ascii=False),
        )
        return [{"role": "system", "content": self.system}, {"role": "user", "content": body}]

    def _item_line(self, it: Item) -> str:
        lang, t = self.ctx.language, self.template
        q = it.question.get(lang)
        opt = "" if it.required else " " + t.part(lang, "optional")
        if it.type in ("single", "likert", "multiple"):
            how = t.part(lang, "choose_any" if it.type == "multiple" else "choose_one")
            options = "; ".join(f'"{v}" ({text})' for v, text in it.options_in(lang).items())
            return f"- {it.name}: {q}{opt} ({how}: {options})"
        if it.type == "number":
            bounds = (
                f" [{'' if it.min is None else f'{it.min:g}'}..{'' if it.max is None else f'{it.max:g}'}]"
            )
            return f"- {it.name}: {q}{opt} ({t.part(lang, 'number')}{bounds})"
        return f"- {it.name}: {q}{opt} ({t.part(lang, it.type if it.type == 'checkbox' else 'text')})"

    @staticmethod
    def _example(it: Item) -> Any:
        # A placeholder, not an option: an example answer would anchor the simulated user on it.
        return ["..."] if it.type == "multiple" else "..."
