"""Pydantic schema of the scenario library files (YAML).

Three kinds of file, told apart by their ``kind`` key:

- ``scenario``: one scenario with its names, aspects (for the order dimension) and task contexts;
- ``profile_pool``: persona profiles given to simulated users;
- ``profile_fields``: the profile questionnaire (fields with EN/ZH option lists).

Every model forbids unknown keys, so a typo in a pack is an error rather than a silently ignored field.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

KEY_PATTERN = r"^[a-z0-9][a-z0-9_.\-]*$"
LANG_PATTERN = r"^[a-z]{2,3}(-[A-Za-z]{2,4})?$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)


class LocalizedText(_Strict):
    """A short text in English and (optionally) Chinese."""

    en: str = Field(min_length=1)
    zh: str | None = None

    def get(self, language: str) -> str:
        return (self.zh if language == "zh" and self.zh else None) or self.en


class Aspect(_Strict):
    """One aspect a user optimises in the scenario (order dimension: depth/breadth over aspects)."""

    key: str = Field(pattern=KEY_PATTERN)
    names: LocalizedText


class TaskContextSpec(_Strict):
    """A task card given to the user. ``key`` is stable within the scenario (e.g. ``en-7``)."""

    key: str = Field(pattern=KEY_PATTERN)
    language: str = Field(pattern=LANG_PATTERN)
    text: str = Field(min_length=1)
    translations: dict[str, str] = Field(default_factory=dict)
    slots: dict[str, str] = Field(default_factory=dict)
    # Which family of contexts this belongs to: "main" (the reference's agent templates) is the
    # default a study draws from; others ("new", "human_v1", "human_v2", "human_exp") are opt-in.
    set: str = Field(default="main", pattern=KEY_PATTERN)
    reference_id: int | None = None  # the reference's task_context_id, where it has one
    template: str | None = None  # file/template the text was generated from

    @field_validator("translations")
    @classmethod
    def _langs(cls, v: dict[str, str]) -> dict[str, str]:
        import re

        for lang, text in v.items():
            if not re.match(LANG_PATTERN, lang):
                raise ValueError(f"translation language {lang!r} is not a language code such as 'en' or 'zh'")
            if not text:
                raise ValueError(f"translation {lang!r} is empty")
        return v


class ScenarioSpec(_Strict):
    kind: Literal["scenario"] = "scenario"
    key: str = Field(pattern=KEY_PATTERN)
    version: str = "1"
    in_reference: bool = False  # run by the reference study (RecLLMSim)
    names: LocalizedText
    description: LocalizedText | None = None
    aspects: list[Aspect] = Field(min_length=1)
    task_contexts: list[TaskContextSpec] = Field(min_length=1)
    source: str | None = None  # where the texts came from (provenance note)

    @model_validator(mode="after")
    def _unique_keys(self) -> ScenarioSpec:
        seen: set[str] = set()
        for tc in self.task_contexts:
            if tc.key in seen:
                raise ValueError(f"task context key {tc.key!r} appears twice in scenario {self.key!r}")
            seen.add(tc.key)
        return self

    def contexts(self, language: str | None = None, sets: set[str] | None = None) -> list[TaskContextSpec]:
        return [
            tc
            for tc in self.task_contexts
            if (language is None or tc.language == language) and (sets is None or tc.set in sets)
        ]


class ProfileSpec(_Strict):
    """A persona: structured fields, the free text a simulator is given, translations."""

    key: str = Field(pattern=KEY_PATTERN)
    language: str = Field(default="en", pattern=LANG_PATTERN)
    fields: dict[str, Any] = Field(default_factory=dict)
    # The profile mapped onto the questionnaire's options: field -> [{en, zh}, ...]
    mapped: dict[str, list[LocalizedText]] = Field(default_factory=dict)
    text: str = Field(min_length=1)
    translations: dict[str, str] = Field(default_factory=dict)
    reference_id: int | None = None  # the reference's preference_id


class ProfilePool(_Strict):
    kind: Literal["profile_pool"]
    key: str = Field(pattern=KEY_PATTERN)
    version: str = "1"
    source: str | None = None
    profiles: list[ProfileSpec] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_keys(self) -> ProfilePool:
        seen: set[str] = set()
        for p in self.profiles:
            if p.key in seen:
                raise ValueError(f"profile key {p.key!r} appears twice in pool {self.key!r}")
            seen.add(p.key)
        return self


class FieldOption(_Strict):
    value: str = Field(min_length=1)  # stable value stored in answers (the English label)
    en: str = Field(min_length=1)
    zh: str | None = None


class ProfileField(_Strict):
    """One profile questionnaire item."""

    key: str = Field(pattern=KEY_PATTERN)
    names: LocalizedText
    type: Literal["choice", "multi_choice", "integer", "text"] = "choice"
    options: list[FieldOption] = Field(default_factory=list)
    min: int | None = None
    max: int | None = None
    required: bool = True

    @model_validator(mode="after")
    def _options(self) -> ProfileField:
        if self.type in ("choice", "multi_choice") and not self.options:
            raise ValueError(f"field {self.key!r} of type {self.type} needs options")
        return self


class ProfileFields(_Strict):
    kind: Literal["profile_fields"]
    version: str = "1"
    source: str | None = None
    fields: list[ProfileField] = Field(min_length=1)


PackFile = ScenarioSpec | ProfilePool | ProfileFields
KINDS = {"scenario": ScenarioSpec, "profile_pool": ProfilePool, "profile_fields": ProfileFields}
