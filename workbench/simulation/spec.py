"""Every setting of a simulation run in one validated, immutable object.

The CLI, the Simulation page and scripts build a ``SimulationSpec`` once and hand it to
``plan_simulation`` / ``run_simulation``; values are checked here, so every caller refuses the same
bad values with the same words (naming the setting, not a CLI flag).

Example::

    spec = SimulationSpec(study="pilot", simulator_model="openai/gpt-4o-mini", n_per_condition=2)
    run_simulation(engine, spec)
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from db.errors import UserInputError
from workbench.llm.registry import parse_model_name


def _at_least(name: str, value: Any, minimum: int) -> Any:
    if value is not None and value < minimum:
        raise ValueError(f"{name} must be at least {minimum}")
    return value


class SimulationSpec(BaseModel):
    """What to simulate and how: the run's identity (study, simulator, assistant override,
    conditions or twins, sampling, turn limits, prompt) and how to run it (concurrency, rate
    limits, budget, cache, retries). ``None`` means the study's setting or no limit."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    study: str | int  # name or id
    simulator_model: str  # provider/model
    assistant_model: str | None = None  # replaces the conditions' assistant model
    conditions: tuple[str, ...] | None = None  # condition keys or ids, or scenario keys; None: all
    twin_of: tuple[str, ...] | None = None  # human conversation ids, or ("all",)
    n_per_condition: int = 1
    min_turns: int | None = None
    max_turns: int | None = None
    temperature: float | None = None
    seed: int = 0
    prompt: str | None = None  # template name, name@version or a .yaml path
    goal_reminder_every: int | None = None
    simulator_max_tokens: int | None = None
    concurrency: int = 4
    rpm: int | None = None  # 0 or None: no limit
    tpm: int | None = None
    budget: float | None = None  # USD
    cache: bool = True
    retry_failed: bool = True
    # Digital twins of abandoned, screened-out or unfinished human sessions are skipped unless asked.
    include_unfinished: bool = False
    # The simulated user also answers the participants' instruments (per-reply rating, post-task
    # questionnaire) in calls of their own (workbench.simulation.rating); False: --no-ratings.
    ratings: bool = True
    # Prices of the models (a YAML file, WORKBENCH_PRICES); None: the bundled table. Not part of the run's identity.
    prices_file: str | None = None

    @field_validator("conditions", "twin_of", mode="before")
    @classmethod
    def _strings(cls, value: Any) -> Any:
        # Ids may come as numbers; the run key has always hashed them as text. Empty means none.
        if value is None or isinstance(value, str):
            return value
        return tuple(str(v) for v in value) or None

    @field_validator("simulator_model")
    @classmethod
    def _provider_model(cls, value: str) -> str:
        try:
            parse_model_name(value, "the simulator model")
        except UserInputError as exc:
            raise ValueError(str(exc)) from None
        return value

    @field_validator("temperature")
    @classmethod
    def _temperature(cls, value: float | None) -> float | None:
        if value is not None and not 0 <= value <= 2:
            raise ValueError(f"temperature {value} is outside 0..2")
        return value

    @field_validator(
        "n_per_condition",
        "min_turns",
        "max_turns",
        "concurrency",
        "goal_reminder_every",
        "simulator_max_tokens",
    )
    @classmethod
    def _positive(cls, value: int | None, info: ValidationInfo) -> int | None:
        return _at_least(info.field_name, value, 1)

    @field_validator("rpm", "tpm", "budget")
    @classmethod
    def _not_negative(cls, value: float | None, info: ValidationInfo) -> float | None:
        return _at_least(info.field_name, value, 0)

    @model_validator(mode="after")
    def _turn_order(self) -> SimulationSpec:
        if self.min_turns is not None and self.max_turns is not None and self.min_turns > self.max_turns:
            raise ValueError(f"min turns ({self.min_turns}) is greater than max turns ({self.max_turns})")
        return self

    def run_key(
        self,
        study_id: int,
        simulator_fingerprint: str,
        assistant_override_id: int | None,
        rating_prompt: str | None = None,
    ) -> str:
        """The run's identity: equal settings give an equal key, so running again resumes.

        The study, the simulator config (its fingerprint covers the model, prompt, sampling and the
        turn limits as resolved against the study's settings), the assistant override and the
        selection of conditions or twins define a run's results, and so do the simulated user's
        ratings (with the rating prompt's ``name@version``, ``rating_prompt``); concurrency, limits,
        budget, cache and retries do not, so changing them resumes the same run. The JSON is the one keys were
        always made from, so runs made before this object existed still resume.
        """
        identity = {
            "study": study_id,
            "simulator_config": simulator_fingerprint,
            "assistant_override": assistant_override_id,
            "conditions": sorted(self.conditions) if self.conditions else None,
            "twin_of": list(self.twin_of) if self.twin_of else None,
        }
        if self.include_unfinished and self.twin_of:  # only when set: older runs keep their keys
            identity["include_unfinished"] = True
        if self.ratings:  # only when on: runs without ratings (and those made before them) keep their keys
            identity["ratings"] = rating_prompt or "user-rating"
        return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()

    def simulator_call_params(self) -> dict:
        """Sampling parameters of every simulator call (each conversation replaces the seed)."""
        params: dict[str, Any] = {"seed": self.seed}
        if self.temperature is not None:
            params["temperature"] = self.temperature
        if self.simulator_max_tokens:
            params["max_tokens"] = self.simulator_max_tokens
        return params

    def run_params(
        self, min_turns: int, max_turns: int, prompt_label: str, rating_prompt: str | None = None
    ) -> dict:
        """The parameters stored on the run's row (and exported with its conversations)."""
        return {
            "simulator_model": self.simulator_model,
            "assistant_model": self.assistant_model,
            "conditions": list(self.conditions) if self.conditions else None,
            "twin_of": list(self.twin_of) if self.twin_of else None,
            "min_turns": min_turns,
            "max_turns": max_turns,
            "prompt": prompt_label,
            "seed": self.seed,
            "temperature": self.temperature,
            "goal_reminder_every": self.goal_reminder_every,
            "ratings": (rating_prompt or "user-rating") if self.ratings else None,
        }


def spec_error(exc: ValidationError) -> str:
    """One line saying what is wrong with the settings (for a UserInputError or a page)."""
    parts = []
    for err in exc.errors():
        if err["type"] == "value_error":  # our own validators: their message names the setting
            parts.append(str(err["ctx"]["error"]))
        else:
            where = ".".join(str(p) for p in err["loc"])
            parts.append(f"{where}: {err['msg']}" if where else err["msg"])
    return "; ".join(parts)
