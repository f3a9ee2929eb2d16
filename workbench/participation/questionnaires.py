"""Questionnaires of one's own: the items a study asks at consent, before the study, after each task
and after the study, defined in a versioned YAML file and validated like the codebook.

``load_questionnaires()`` reads the bundled ``questionnaires.yaml`` (the reference study's post-task
items and attention check, so collected answers compare with the imported data);
``load_questionnaires(path)`` reads a researcher's file. Every problem in a file is reported at once,
each with the file, the line and the field, e.g.
``q.yaml:12:17: field 'post_task[1].options[0].value': YAML reads this unquoted value as a
boolean; put it in quotes: value: "yes"``.
A study stores the validated definition in its settings (``questionnaires``), so it keeps its
questionnaire when the file changes later.

Example::

    q = load_questionnaires("lab.yaml")
    [item.name for item in q.items("post_task")]    # ['Memorization', 'Detail', ...]
    rows = check_answers(q.items("post_task"), answers, "en")   # or a ParticipantError
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from db.errors import UserInputError
from scenarios import Problem
from workbench.participation.texts import ParticipantError, ui

DEFAULT_PATH = Path(__file__).with_name("questionnaires.yaml")
PHASES = ("consent", "pre_study", "post_task", "post_study")
ITEM_TYPES = ("likert", "single", "multiple", "number", "text", "checkbox", "attention")
# Attention checks of every phase are stored under this questionnaire name (value pass / fail), as
# the reference data and the collected data have always been.
ATTENTION_QUESTIONNAIRE = "attention_check"
_NAME = r"^[A-Za-z][A-Za-z0-9_]{0,99}$"
_VALUE = r"^[A-Za-z0-9_.\-]{1,100}$"


def _yaml_scalar(v: Any, what: str = "text") -> Any:
    """Refuse values YAML read as something else than the text that was meant (``Yes`` -> True)."""
    if isinstance(v, bool):
        raise ValueError(f"YAML reads this unquoted {what} as a boolean; put it in quotes")
    if isinstance(v, (int, float)) and what != "text":
        if isinstance(v, float):
            raise ValueError(f"YAML reads this unquoted {what} as the number {v}; put it in quotes")
        return str(v)
    if isinstance(v, (int, float)):
        raise ValueError(f"YAML reads this unquoted {what} as the number {v}; put it in quotes")
    return v


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Text(_Strict):
    """A text in English and optionally Chinese; ``get(lang)`` falls back to English."""

    en: str = Field(min_length=1)
    zh: str | None = None

    @field_validator("en", "zh", mode="before")
    @classmethod
    def _scalar(cls, v: Any) -> Any:
        return _yaml_scalar(v)

    def get(self, lang: str) -> str:
        return (self.zh if lang == "zh" else None) or self.en


class Option(_Strict):
    value: str = Field(pattern=_VALUE)  # stored as QuestionnaireResponse.value
    text: Text  # shown to the participant (and stored as raw_value)

    @field_validator("value", mode="before")
    @classmethod
    def _scalar(cls, v: Any) -> Any:
        return _yaml_scalar(v, "value")


class Item(_Strict):
    """One question. Which fields apply depends on ``type`` (others are refused)."""

    name: str = Field(pattern=_NAME)  # QuestionnaireResponse.item
    type: Literal["likert", "single", "multiple", "number", "text", "checkbox", "attention"]
    question: Text
    required: bool = True
    once: bool = False  # post_task: ask only in a session's first post-task questionnaire
    options: list[Option] | None = None  # single, multiple, attention
    scale: tuple[int, int] | None = None  # likert: lowest and highest point, e.g. [1, 7]
    anchors: dict[int, Text] | None = None  # likert: texts of some points, e.g. {1: ..., 7: ...}
    min: float | None = None  # number
    max: float | None = None  # number
    integer: bool = True  # number: whole numbers only
    max_chars: int = Field(5000, ge=1, le=20000)  # text
    expected: str | None = None  # attention: the option that passes

    @field_validator("expected", mode="before")
    @classmethod
    def _expected_scalar(cls, v: Any) -> Any:
        return _yaml_scalar(v, "value")

    @model_validator(mode="after")
    def _fits_type(self) -> Item:
        t = self.type
        _only(self, t, "options", ("single", "multiple", "attention"))
        _only(self, t, "scale", ("likert",))
        _only(self, t, "anchors", ("likert",))
        _only(self, t, "expected", ("attention",))
        for name in ("min", "max"):
            _only(self, t, name, ("number",))
        if t in ("single", "multiple", "attention"):
            values = [o.value for o in self.options or []]
            if len(values) < 2:
                raise ValueError(f"options: a {t} item needs at least two options")
            dupes = sorted({v for v in values if values.count(v) > 1})
            if dupes:
                raise ValueError(f"options: duplicate value(s) {', '.join(dupes)}")
        if t == "likert":
            _check_scale(self.scale, self.anchors)
        if t == "number" and self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min:g}) is greater than max ({self.max:g})")
        if t == "attention":
            if self.expected not in [o.value for o in self.options or []]:
                raise ValueError(f"expected: {self.expected!r} is not one of the option values")
            if not self.required:
                raise ValueError("required: an attention check is always required")
        return self

    def options_in(self, lang: str) -> dict[str, str]:
        """The choices as {stored value: text shown in ``lang``} (likert: "1".."7" with anchors)."""
        if self.type == "likert":
            low, high = self.scale
            anchors = self.anchors or {}
            return {
                str(k): (f"{k} – {anchors[k].get(lang)}" if k in anchors else str(k))
                for k in range(low, high + 1)
            }
        return {o.value: o.text.get(lang) for o in self.options or []}


def _only(item: Item, type_: str, field: str, types: tuple[str, ...]) -> None:
    if getattr(item, field) is None and field in ("options", "scale") and type_ in types:
        raise ValueError(f"{field}: a {type_} item needs {field}")
    if getattr(item, field) is not None and type_ not in types:
        raise ValueError(f"{field}: only for {' / '.join(types)} items, not {type_}")


def _check_scale(scale: tuple[int, int] | None, anchors: dict[int, Text] | None) -> None:
    low, high = scale
    if not 2 <= high - low + 1 <= 11:
        raise ValueError(f"scale: [{low}, {high}] must have 2 to 11 points, lowest first")
    outside = sorted(k for k in anchors or {} if not low <= k <= high)
    if outside:
        raise ValueError(f"anchors: point(s) {', '.join(map(str, outside))} outside the scale {low}..{high}")


class Questionnaires(_Strict):
    """A study's questionnaires: the items of each phase, with the file's version and name."""

    version: str = Field(min_length=1, max_length=60)
    source: str | None = None  # the file it was read from (set by the loader)
    consent: list[Item] = Field(default_factory=list)
    pre_study: list[Item] = Field(default_factory=list)
    post_task: list[Item] = Field(default_factory=list)
    post_study: list[Item] = Field(default_factory=list)

    @field_validator(*PHASES, mode="before")
    @classmethod
    def _empty_phase(cls, v: Any) -> Any:
        return [] if v is None else v  # "post_study:" with nothing under it

    @field_validator("version", mode="before")
    @classmethod
    def _version(cls, v: Any) -> Any:
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            raise ValueError(f"YAML reads this unquoted version as the number {v}; put it in quotes")
        return _yaml_scalar(v)

    def items(self, phase: str) -> list[Item]:
        if phase not in PHASES:
            raise UserInputError(f"unknown questionnaire phase {phase!r} (use {', '.join(PHASES)})")
        return list(getattr(self, phase))

    def summary(self) -> str:
        """One line: the version and how many items each phase asks."""
        counts = ", ".join(f"{ph} {len(self.items(ph))}" for ph in PHASES)
        return f"version {self.version}: {counts} item(s)"


# --------------------------------------------------------------------------------------------------
# Reading a file: every problem with the file, the line and the field
# --------------------------------------------------------------------------------------------------


def _node_at(root: yaml.Node | None, loc: Sequence, key: bool = False) -> yaml.Node | None:
    """The YAML node at ``loc`` (the deepest one found; ``key``: the key node of the last step)."""
    node = root
    for i, part in enumerate(loc):
        if isinstance(node, yaml.MappingNode):
            found = [(k, v) for k, v in node.value if str(k.value) == str(part)]
            if not found:
                return node
            node = found[0][0] if key and i == len(loc) - 1 else found[0][1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
        else:
            return node
    return node


def _field(loc: Sequence) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else ("." if out else "") + str(part)
    return out


def _message(err: dict) -> tuple[list, str]:
    loc = [p for p in err["loc"] if isinstance(p, int) or not str(p).startswith(("function-", "union["))]
    msg = err.get("msg", "invalid")
    msg = msg.removeprefix("Value error, ")
    kind = err.get("type")
    if kind == "extra_forbidden":
        msg = "unknown field (check the spelling; see the README for the fields)"
    elif kind == "missing":
        msg = "required field is missing"
    elif kind == "literal_error":
        msg = f"unknown item type {err.get('input')!r} (use {', '.join(ITEM_TYPES)})"
    elif kind == "string_pattern_mismatch" and loc and loc[-1] == "name":
        msg = f"{err.get('input')!r}: a name starts with a letter, then letters, digits and _"
    elif kind == "string_pattern_mismatch":
        msg = f"{err.get('input')!r}: a value is letters, digits and _ . - (the text goes in 'text')"
    # A message that names a field of the item ("options: ...") points there.
    head, sep, rest = msg.partition(": ")
    if sep and head in Item.model_fields and (not loc or loc[-1] != head):
        loc, msg = [*loc, head], rest
    return loc, msg


def _problems(source: str, root: yaml.Node | None, exc: ValidationError) -> list[Problem]:
    problems = []
    for err in exc.errors():
        loc, msg = _message(err)
        node = _node_at(root, loc, key=err.get("type") == "extra_forbidden")
        line = node.start_mark.line + 1 if node is not None else None
        col = node.start_mark.column + 1 if node is not None else None
        if msg.endswith("put it in quotes") and isinstance(node, yaml.ScalarNode):
            msg += f": {_field(loc[-1:])}: {json.dumps(node.value, ensure_ascii=False)}"
        problems.append(Problem(Path(source), msg, line, col, _field(loc) or None))
    return problems


def _cross_item(source: str, root: yaml.Node | None, q: Questionnaires) -> list[Problem]:
    """What a single item cannot see: repeated names in a phase, reserved names, ``once`` outside
    post_task."""
    problems = []
    for phase in PHASES:
        seen: set[str] = set()
        for i, item in enumerate(q.items(phase)):
            found = []
            if item.name in seen:
                found.append(("name", f"duplicate item name {item.name!r} in {phase}; rename one of them"))
            if phase == "consent" and item.name == "consent":
                found.append(("name", "'consent' is the name of the agree / decline answer; choose another"))
            if item.once and phase != "post_task":
                found.append(("once", "only post_task items are asked more than once, so 'once' is for them"))
            for field, why in found:
                node = _node_at(root, [phase, i, field])
                line, col = (node.start_mark.line + 1, node.start_mark.column + 1) if node else (None, None)
                problems.append(Problem(Path(source), why, line, col, _field([phase, i, field])))
            seen.add(item.name)
    return problems


class QuestionnaireFileError(UserInputError):
    """A questionnaire file with problems; the message lists every one (exit status 2)."""

    def __init__(self, source: str, problems: Sequence[Problem]):
        self.problems = list(problems)
        lines = "\n".join(f"  {p}" for p in self.problems)
        super().__init__(f"{len(self.problems)} problem(s) in the questionnaire file {source}:\n{lines}")


def parse_questionnaires(text: str, source: str) -> Questionnaires:
    """Validate the YAML ``text`` (named ``source`` in the errors) into a ``Questionnaires``."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        detail = getattr(exc, "problem", None) or str(exc)
        line, col = (mark.line + 1, mark.column + 1) if mark else (None, None)
        raise QuestionnaireFileError(
            source, [Problem(Path(source), f"invalid YAML: {detail}", line, col)]
        ) from None
    if not isinstance(raw, dict):
        problem = Problem(Path(source), "a questionnaire file is a mapping with 'version' and phases", 1)
        raise QuestionnaireFileError(source, [problem])
    raw.pop("source", None)  # set from the file name, not written by hand
    try:
        q = Questionnaires.model_validate({**raw, "source": Path(source).name})
    except ValidationError as exc:
        raise QuestionnaireFileError(source, _problems(source, root, exc)) from None
    problems = _cross_item(source, root, q)
    if problems:
        raise QuestionnaireFileError(source, problems)
    return q


def load_questionnaires(path: str | Path | None = None) -> Questionnaires:
    """The questionnaires of ``path`` (None: the bundled reference questionnaires)."""
    path = Path(path) if path is not None else DEFAULT_PATH
    try:
        st = path.stat()
        key = (str(path), st.st_mtime_ns, st.st_size)
    except OSError as exc:
        raise UserInputError(f"cannot read the questionnaire file {path}: {exc.strerror or exc}") from None
    return _load_cached(key)


@lru_cache(maxsize=16)
def _load_cached(key: tuple) -> Questionnaires:
    # Keyed by modification time and size: the participant page reads the bundled file on every
    # rerun, and an edited file is read again.
    path = Path(key[0])
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserInputError(f"cannot read the questionnaire file {path}: {exc}") from None
    return parse_questionnaires(text, str(path))


def study_questionnaires(stored: dict | None) -> Questionnaires:
    """A study's questionnaires from its settings (``StudySettings.questionnaires``); a study made
    before questionnaires could be chosen asks the bundled ones."""
    if not stored:
        return load_questionnaires()
    try:
        return Questionnaires.model_validate(stored)
    except ValidationError as exc:
        raise UserInputError(
            f"the study's stored questionnaires are invalid: {exc.errors()[0]['msg']}"
        ) from None


# --------------------------------------------------------------------------------------------------
# Checking a participant's answers
# --------------------------------------------------------------------------------------------------


@dataclass
class Answer:
    """One answer ready to store as a QuestionnaireResponse row."""

    questionnaire: str
    item: str
    value: str
    raw_value: str
    question: str


def _blank(v: Any) -> bool:
    return v is None or (isinstance(v, str) and not v.strip()) or (isinstance(v, (list, tuple)) and not v)


def _unanswered(item: Item, v: Any) -> bool:
    if item.type == "checkbox":
        return v is not True
    if item.type in ("single", "attention", "likert"):
        return _blank(v) or str(v) not in item.options_in("en")
    return _blank(v)


def check_answers(items: Sequence[Item], answers: dict[str, Any], language: str, phase: str) -> list[Answer]:
    """The rows to store for ``answers`` (item name -> widget value) to ``items`` of ``phase``, or a
    ``ParticipantError`` in ``language``: every required question still open at once, quoted as the
    participant reads it, then the first value out of range."""
    missing = [
        it.question.get(language) for it in items if it.required and _unanswered(it, answers.get(it.name))
    ]
    if missing:
        raise ParticipantError("missing_answers", language, items=" ".join(f"“{q}”" for q in missing))
    rows = []
    for it in items:
        v = answers.get(it.name)
        if it.type != "checkbox" and _blank(v):
            continue
        value, raw = _normalise(it, v, language)
        questionnaire = ATTENTION_QUESTIONNAIRE if it.type == "attention" else phase
        if it.type == "attention":
            value = "pass" if value == it.expected else "fail"
        rows.append(Answer(questionnaire, it.name, value, raw, it.question.get(language)))
    return rows


def _normalise(item: Item, v: Any, lang: str) -> tuple[str, str]:
    """(stored value, raw value) of one answer; a ParticipantError when it is not a valid one."""
    label = item.question.get(lang)
    if item.type == "checkbox":
        return ("yes", "yes") if v is True else ("no", "no")
    if item.type == "text":
        text = str(v).strip()[: item.max_chars]
        return text, text
    if item.type == "number":
        return _number(item, v, lang)
    options = item.options_in(lang)
    if item.type == "multiple":
        chosen = [str(x) for x in (v if isinstance(v, (list, tuple)) else [v])]
        if not set(chosen) <= set(options):
            raise ParticipantError("choose_options", lang, label=label)
        ordered = [o for o in options if o in chosen]
        return ",".join(ordered), ", ".join(options[o] for o in ordered)
    if str(v) not in options:
        raise ParticipantError("choose_option", lang, label=label)
    value = str(v)
    # attention: the option chosen (pass / fail is worked out by the caller); likert: the point
    return value, (value if item.type in ("attention", "likert") else options[value])


def _number(item: Item, v: Any, lang: str) -> tuple[str, str]:
    label = item.question.get(lang)
    try:
        x = float(v)
        if math.isnan(x) or math.isinf(x):
            raise ValueError
        if item.integer and x != int(x):
            raise ValueError
    except (TypeError, ValueError):
        raise ParticipantError("whole_number" if item.integer else "a_number", lang, label=label) from None
    lo, hi = item.min, item.max
    if (lo is not None and x < lo) or (hi is not None and x > hi):
        key = (
            "number_range"
            if lo is not None and hi is not None
            else "number_min"
            if lo is not None
            else "number_max"
        )
        raise ParticipantError(key, lang, label=label, min=_fmt(lo), max=_fmt(hi))
    text = _fmt(int(x) if item.integer else x)
    return text, str(v)


def _fmt(x: float | None) -> str:
    return "" if x is None else f"{x:g}"


def phase_header(phase: str, language: str) -> str:
    """The page heading of a questionnaire phase in ``language``."""
    return ui(language)[
        {"pre_study": "pre_study_header", "post_study": "post_study_header"}.get(phase, "post_header")
    ]
