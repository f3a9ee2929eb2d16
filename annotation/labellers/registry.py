"""The labellers by name, behind one interface: ``LABELLERS["llm"].run(engine, settings) -> LabelRun``.

A labeller is a small class with ``plan`` (a projection of a run: calls, cost; None when there is
nothing to project) and ``run``; both take a ``LabelSettings`` (every option a run can be given;
each labeller reads the ones it uses) and return one ``LabelRun``. Adding a labeller is a class
here and a ``register`` call. The labeller modules are imported when a labeller runs, so looking
one up does not load scikit-learn or spaCy.

Example::

    settings = LabelSettings(study="pilot", codebook=load_codebook(), dimensions=["politeness"])
    run = get_labeller("rule").run(engine, settings)
    print(run.notes[0])
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy.engine import Engine

from annotation.labellers.llm import DEFAULT_PROMPT, CostFunction, LabellingModel
from db.errors import UserInputError


@dataclass
class LabelSettings:
    """What a labelling run is told. Fields a labeller does not use are ignored by it."""

    study: str
    codebook: Any  # annotation.codebook.Codebook
    dimensions: list[str] | None = None  # None: every dimension the labeller can do
    # llm
    model_name: str | None = None  # "provider/model"; a plan needs only the name
    model: LabellingModel | None = None  # a run needs the model, recorded and cached by the caller
    cost_of: CostFunction | None = None  # prices a plan (without it the cost is unknown)
    json_instruction: Callable[[dict], str] | None = None  # what the model adds to a JSON call
    samples: int = 3
    concurrency: int = 4
    temperature: float | None = 0.7
    prompt_version: str = DEFAULT_PROMPT
    limit: int | None = None
    overwrite: bool = False
    seed: int = 0
    budget: float | None = None  # USD cap of an llm run (None: no cap)
    # trained
    train_source: str | None = None
    holdout_source: str | None = None
    label_all: bool = False
    cv_folds: int | None = None  # folds of a cross-validation against train_source; None: none
    # reporting
    progress: Callable[[int, int], None] | None = None  # (conversations done, total)
    say: Callable[[str], None] | None = None  # a line saying what a long step is doing


@dataclass
class LabelRun:
    """What a labeller did (or, with ``planned``, would do). ``notes`` are the lines that describe
    it, the first one a summary; ``detail`` is the labeller's own result for callers that want more."""

    source: str
    planned: bool = False  # a projection: nothing was called or written
    conversations: int = 0  # labelled (planned: to be labelled)
    labels: int = 0
    flagged: int = 0
    failed: int = 0
    skipped_existing: int = 0  # already labelled by this source
    skipped_empty: int = 0  # unfinished or nothing to label
    cost_usd: float | None = None  # None: unknown
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    detail: Any = None


class Labeller(Protocol):
    kind: str
    uses_model: bool  # a run needs ``settings.model`` (a plan ``settings.model_name``)
    counts_progress: bool  # reports (done, total) conversations through ``settings.progress``
    required: tuple[str, ...]  # settings that must be given
    minimums: Mapping[str, int]  # settings with a smallest value

    def plan(self, engine: Engine, settings: LabelSettings) -> LabelRun | None: ...

    def run(self, engine: Engine, settings: LabelSettings) -> LabelRun: ...


LABELLERS: dict[str, Labeller] = {}


def register(labeller: Labeller) -> Labeller:
    LABELLERS[labeller.kind] = labeller
    return labeller


def get_labeller(kind: str) -> Labeller:
    if kind not in LABELLERS:
        raise UserInputError(f"unknown labeller {kind!r}: use one of {', '.join(LABELLERS)}")
    return LABELLERS[kind]


def check_settings(labeller: Labeller, settings: LabelSettings) -> None:
    """Refuse settings the labeller cannot run with (named as settings; a CLI checks its flags first)."""
    for name in labeller.required:
        if not getattr(settings, name):
            raise UserInputError(f"the {labeller.kind} labeller needs {name}")
    for name, minimum in labeller.minimums.items():
        value = getattr(settings, name)
        if value is not None and value < minimum:
            raise UserInputError(f"{name} must be at least {minimum}, got {value}")


def run_labeller(engine: Engine, kind: str, settings: LabelSettings, dry_run: bool = False) -> LabelRun:
    """Look the labeller up, check the settings, plan (``dry_run``, where it can) or run."""
    labeller = get_labeller(kind)
    check_settings(labeller, settings)
    planned = labeller.plan(engine, settings) if dry_run else None
    return planned if planned is not None else labeller.run(engine, settings)


class LLMLabelling:
    """``llm``: n JSON samples per conversation from a chat model, majority vote (median for scales)."""

    kind = "llm"
    uses_model = True
    counts_progress = True
    required: tuple[str, ...] = ()  # model_name is checked by plan and model by run: a CLI has a default
    minimums = {"samples": 1, "concurrency": 1, "limit": 1}

    def plan(self, engine: Engine, settings: LabelSettings) -> LabelRun:
        from annotation.labellers.llm import plan_labelling

        s = settings
        if not s.model_name:
            raise UserInputError("the llm labeller needs model_name to plan a run")
        plan = plan_labelling(
            engine,
            s.study,
            s.model_name,
            s.codebook,
            s.dimensions,
            samples=s.samples,
            prompt_version=s.prompt_version,
            limit=s.limit,
            overwrite=s.overwrite,
            cost_of=s.cost_of,
            json_instruction=s.json_instruction,
        )
        cost = (
            "unknown (no price for this model; see `workbench models prices`)"
            if plan.cost_usd is None
            else f"${plan.cost_usd:.2f}"
        )
        line = (
            f"Dry run for {plan.source}: {plan.conversations} conversations x {plan.samples} samples = "
            f"{plan.calls} calls; {plan.labels:,} labels ({plan.turn_labels:,} per turn); "
            f"~{plan.prompt_tokens:,} prompt + ~{plan.completion_tokens:,} completion tokens; "
            f"cost {cost}. Dimensions: {', '.join(plan.dimensions)}."
        )
        return LabelRun(
            source=plan.source,
            planned=True,
            conversations=plan.conversations,
            labels=plan.labels,
            skipped_existing=plan.already_labelled,
            cost_usd=plan.cost_usd,
            notes=[line],
            detail=plan,
        )

    def run(self, engine: Engine, settings: LabelSettings) -> LabelRun:
        from annotation.labellers.llm import label_with_llm_sync

        s = settings
        if s.model is None:
            raise UserInputError("the llm labeller needs model (a chat model) to run")
        estimate = None
        if s.budget is not None and s.model_name:  # the plan's cost per conversation guards the first ones
            plan = self.plan(engine, s).detail
            if plan.cost_usd is not None and plan.conversations:
                estimate = plan.cost_usd / plan.conversations
        summary = label_with_llm_sync(
            engine,
            s.study,
            s.model,
            s.codebook,
            s.dimensions,
            samples=s.samples,
            temperature=s.temperature,
            concurrency=s.concurrency,
            prompt_version=s.prompt_version,
            limit=s.limit,
            overwrite=s.overwrite,
            seed=s.seed,
            progress=s.progress,
            budget=s.budget,
            cost_estimate=estimate,
        )
        line = (
            f"{summary.source}: labelled {summary.conversations} conversations ({summary.labels} labels, "
            f"{summary.flagged} flagged for sample disagreement, {summary.failed} failed), "
            f"{summary.skipped_existing} already labelled"
            + (
                f", {summary.skipped_empty} unfinished or without turns (not labelled)"
                if summary.skipped_empty
                else ""
            )
            + f"; cost ${summary.cost_usd:.4f}."
            + (
                f" Budget ${s.budget:.4f} reached: {summary.budget_skipped} conversations not started; "
                "rerun with a larger budget to continue."
                if summary.budget_skipped
                else ""
            )
        )
        return LabelRun(
            source=summary.source,
            conversations=summary.conversations,
            labels=summary.labels,
            flagged=summary.flagged,
            failed=summary.failed,
            skipped_existing=summary.skipped_existing,
            skipped_empty=summary.skipped_empty,
            cost_usd=summary.cost_usd,
            errors=list(summary.errors),
            notes=[line],
            detail=summary,
        )


class RuleLabelling:
    """``rule``: lexicon and pattern rules on the user's turns (English and Chinese), no model."""

    kind = "rule"
    uses_model = False
    counts_progress = True
    required: tuple[str, ...] = ()
    minimums: Mapping[str, int] = {}

    def plan(self, engine: Engine, settings: LabelSettings) -> None:
        return None  # no calls and no cost to project

    def run(self, engine: Engine, settings: LabelSettings) -> LabelRun:
        from annotation.labellers.rules import label_study

        name, n_conv, n = label_study(
            engine,
            settings.study,
            settings.dimensions,
            codebook_version=settings.codebook.version,
            progress=settings.progress,
        )
        line = f"{name}: labelled {n_conv} conversations ({n} labels)."
        return LabelRun(source=name, conversations=n_conv, labels=n, cost_usd=0.0, notes=[line])


def _kappa_table(df, *, index: str = "dimension") -> str:
    """Cohen's kappa per dimension (rows) and user kind (columns), three decimals."""
    wide = df.pivot(index=index, columns="user_kind", values="cohen_kappa")
    return wide.map(lambda v: "" if v is None or v != v else f"{v:.3f}").to_string()


class TrainedLabelling:
    """``trained``: a classifier learnt from another label source, at no API cost."""

    kind = "trained"
    uses_model = False
    counts_progress = False
    required = ("train_source",)
    minimums = {"cv_folds": 2}

    def plan(self, engine: Engine, settings: LabelSettings) -> None:
        return None  # no calls and no cost to project

    def run(self, engine: Engine, settings: LabelSettings) -> LabelRun:
        from annotation.labellers.trained import train_and_label

        s = settings
        report = train_and_label(
            engine,
            s.study,
            s.train_source,
            s.dimensions,
            holdout_source=s.holdout_source,
            label_all=s.label_all,
            progress=s.say,
            cv_folds=s.cv_folds,
        )
        notes = [
            f"{report.source}: trained on {report.n_train} conversations, labelled {report.n_labelled} "
            f"({report.n_labels} labels). Compare it with a gold source: `workbench agreement --study "
            f"{s.study} --a {report.source} --b <gold source>`."
        ]
        if report.cv is not None:
            notes.append(
                f"Cross-validated Cohen's kappa against {s.train_source} ({s.cv_folds} folds; how well it "
                "imitates its teacher):"
            )
            notes.append(_kappa_table(report.cv))
        if s.holdout_source:
            notes += _holdout_notes(engine, s, report)
        return LabelRun(
            source=report.source,
            conversations=report.n_labelled,
            labels=report.n_labels,
            cost_usd=0.0,
            notes=notes,
            detail=report,
        )


def _holdout_notes(engine: Engine, settings: LabelSettings, report) -> list[str]:
    """Agreement of the trained source with the held-out source (e.g. the gold set)."""
    from annotation.agreement import study_agreement_df
    from db.engine import session_scope

    with session_scope(engine) as session:
        df = study_agreement_df(
            session,
            settings.study,
            report.source,
            settings.holdout_source,
            dimensions=report.dimensions,
            n_boot=1000,
            codebook=settings.codebook,
        )
    return [f"Cohen's kappa against {settings.holdout_source} (held out of training):", _kappa_table(df)]


register(LLMLabelling())
register(RuleLabelling())
register(TrainedLabelling())
