"""``workbench label`` (LLM, rule-based, trained labellers), ``workbench labels sources``,
``workbench agreement``."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from db.errors import UserInputError
from db.settings import Settings
from workbench.cli._progress import progress_bar
from workbench.config import DEFAULT_MODEL_HELP

# A setting of annotation.labellers.LabelSettings -> the flag that sets it (for errors naming the flag).
FLAGS = {
    "samples": "--samples",
    "concurrency": "--concurrency",
    "limit": "--limit",
    "train_source": "--train-source",
    "cv_folds": "--cv",
}
# What the smallest value of a setting means, where the flag's error should say it.
MEANINGS = {"cv_folds": " folds (0 = off)"}


def _split(values: list[str] | None) -> list[str] | None:
    if not values:
        return None
    out = [v.strip() for item in values for v in item.split(",") if v.strip()]
    return out or None


# The options of `workbench label` (module constants keep the command's signature short).
_STUDY = typer.Option(..., "--study", help="Study name.")
_LABELLER = typer.Option(..., "--labeller", help="llm | rule | trained.")
_MODEL = typer.Option(
    None,
    "--model",
    help=f"llm: provider/model (default: {DEFAULT_MODEL_HELP}).",
)
_DIMENSIONS = typer.Option(
    None,
    "--dimensions",
    help="Dimensions to label (comma-separated or repeated; default: all the labeller can do).",
)
_SAMPLES = typer.Option(3, "--samples", help="llm: samples per conversation (majority vote / median).")
_CONCURRENCY = typer.Option(4, "--concurrency", help="llm: conversations in flight at once.")
_TEMPERATURE = typer.Option(0.7, "--temperature", help="llm: sampling temperature.")
_PROMPT_VERSION = typer.Option(
    None,
    "--prompt-version",
    help="llm: prompt template version (annotation/prompts/labeller_<v>.yaml; default: v2).",
)
_LIMIT = typer.Option(None, "--limit", help="llm: label at most this many conversations.")
_OVERWRITE = typer.Option(False, "--overwrite", help="llm: relabel conversations already labelled.")
_NO_CACHE = typer.Option(False, "--no-cache", help="llm: do not answer calls from the response cache.")
_DRY_RUN = typer.Option(False, "--dry-run", help="llm: print projected calls, tokens and cost, then stop.")
_SEED = typer.Option(0, "--seed", help="llm: base seed (sample i uses seed+i).")
_BUDGET = typer.Option(
    None,
    "--budget",
    help="llm: spending cap in USD for this run; no conversation starts whose projected cost would pass it "
    "(rerun to continue).",
)
_TRAIN_SOURCE = typer.Option(
    None, "--train-source", help="trained: label source to learn from (see `workbench labels sources`)."
)
_HOLDOUT_SOURCE = typer.Option(
    None,
    "--holdout-source",
    help="trained: keep this source's conversations (e.g. the gold set) out of training; they are labelled.",
)
_LABEL_ALL = typer.Option(
    False, "--all", help="trained: also label the training conversations (in-sample, optimistic)."
)
_CV = typer.Option(
    0,
    "--cv",
    help="trained: also report K-fold cross-validated kappa against the training source (0 = off).",
)


def label(
    study: str = _STUDY,
    labeller: str = _LABELLER,
    model: str | None = _MODEL,
    dimensions: list[str] | None = _DIMENSIONS,
    samples: int = _SAMPLES,
    concurrency: int = _CONCURRENCY,
    temperature: float | None = _TEMPERATURE,
    prompt_version: str | None = _PROMPT_VERSION,
    limit: int | None = _LIMIT,
    overwrite: bool = _OVERWRITE,
    no_cache: bool = _NO_CACHE,
    dry_run: bool = _DRY_RUN,
    seed: int = _SEED,
    budget: float | None = _BUDGET,
    train_source: str | None = _TRAIN_SOURCE,
    holdout_source: str | None = _HOLDOUT_SOURCE,
    label_all: bool = _LABEL_ALL,
    cv: int = _CV,
) -> None:
    """Label a study's conversations with a labeller; every label records its source."""
    from annotation.codebook import load_codebook
    from annotation.labellers import LABELLERS, LabelSettings
    from db.engine import ready_engine

    if labeller not in LABELLERS:
        raise UserInputError(f"unknown --labeller {labeller!r}: use one of {', '.join(LABELLERS)}")
    entry = LABELLERS[labeller]
    settings = LabelSettings(
        study=study,
        codebook=None,
        dimensions=_split(dimensions),
        samples=samples,
        concurrency=concurrency,
        temperature=temperature,
        limit=limit,
        overwrite=overwrite,
        seed=seed,
        budget=budget,
        train_source=train_source,
        holdout_source=holdout_source,
        label_all=label_all,
        cv_folds=cv or None,
        say=typer.echo,
    )
    if prompt_version:
        settings.prompt_version = prompt_version
    _check_flags(entry, settings)  # checked as a real run checks them, dry run or not
    if budget is not None and budget < 0:
        raise UserInputError(f"--budget must be at least 0 (USD), got {budget}")
    config = Settings.from_env()
    engine = ready_engine(config.db_url)
    settings.codebook = load_codebook(extensions=config.codebook_extensions)
    if settings.dimensions:
        settings.codebook.select(settings.dimensions)  # unknown names: a clear error listing the known ones
    missing_key = (
        _attach_model(settings, model, engine, config, dry_run, no_cache) if entry.uses_model else None
    )
    result = entry.plan(engine, settings) if dry_run else None
    if result is None:
        if entry.counts_progress:
            with progress_bar("labelling", unit="conversations") as tick:
                settings.progress = tick
                result = entry.run(engine, settings)
        else:
            result = entry.run(engine, settings)
    _print_run(result)
    if result.planned and missing_key:
        typer.echo(f"note: {missing_key} (a real run needs it).", err=True)


def _check_flags(entry, settings) -> None:
    """The labeller's minimums and required settings, named by their flags."""
    from workbench.cli._common import at_least

    for name, minimum in entry.minimums.items():
        at_least(getattr(settings, name), minimum, FLAGS[name], MEANINGS.get(name, ""))
    for name in entry.required:
        if not getattr(settings, name):
            where = f" SOURCE (see `workbench labels sources --study {settings.study}`)"
            raise UserInputError(
                f"--labeller {entry.kind} needs {FLAGS[name]}{where if 'source' in name else ''}"
            )


def _attach_model(settings, model: str | None, engine, config, dry_run: bool, no_cache: bool) -> str | None:
    """Name the model (default: WORKBENCH_DEFAULT_MODEL), give the price table and, for a real run,
    the model recorded as the labeller's. Returns the missing-key warning, if any: an unknown
    provider exits 2, a missing key only fails a real run."""
    from workbench.llm import check_model_name, get_model, recorded
    from workbench.llm.base import json_instruction
    from workbench.llm.prices import cost_of

    settings.model_name = model or config.default_model
    missing_key = check_model_name(settings.model_name)
    settings.cost_of = lambda m, p, c: cost_of(m, p, c, config.prices_file)
    settings.json_instruction = json_instruction
    if not dry_run:
        chat = get_model(settings.model_name, prices_file=config.prices_file)
        settings.model = recorded(chat, engine, purpose="labeller", cache=config.llm_cache and not no_cache)
    return missing_key


def _print_run(run) -> None:
    head, *rest = run.notes
    if run.planned and run.skipped_existing:
        head += f" {run.skipped_existing} already labelled (not called again; --overwrite relabels them)."
    typer.echo(head)
    for line in rest:
        typer.echo(line)
    if run.failed:
        typer.echo(
            f"Failed labels are stored with status 'failed' (first error: {run.errors[0]}). "
            "Re-run with --no-cache to try them again.",
            err=True,
        )


def sources(
    study: str = typer.Option(..., "--study", help="Study name."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Label sources of the study with their kind, model, prompt and codebook version, label counts and
    the times of their first and last label."""
    import pandas as pd

    from db.engine import ready_engine, session_scope
    from db.repo import get_study, label_sources_df

    with session_scope(ready_engine(Settings.from_env().db_url)) as session:
        st = get_study(session, study)
        df = label_sources_df(session, st.id)
    df = df[df["n_labels"] > 0].copy()
    for col in ("first_label_at", "last_label_at"):  # ISO 8601 in JSON, to the minute in the table
        df[col] = df[col].map(
            lambda t: None if pd.isna(t) else t.isoformat() if as_json else t.strftime("%Y-%m-%d %H:%M UTC")
        )
    if as_json:
        # Missing values (a human or imported source has no model) are null: NaN is not JSON.
        records = df.astype(object).where(df.notna(), None).to_dict("records")
        typer.echo(json.dumps(records, ensure_ascii=False, indent=1, default=str, allow_nan=False))
    elif df.empty:
        typer.echo(f"No labels in study {study!r} yet: run `workbench label --study {study} --labeller ...`.")
    else:
        typer.echo(df.fillna("").to_string(index=False))


def agreement(
    study: str = typer.Option(..., "--study", help="Study name."),
    a: str | None = typer.Option(
        None, "--a", help="First label source (as `workbench labels sources` lists it)."
    ),
    b: str | None = typer.Option(None, "--b", help="Second label source."),
    source_set: list[str] | None = typer.Option(
        None,
        "--sources",
        help="Instead of --a/--b: a set of sources (e.g. annotators), "
        "comma-separated or repeated; gives Fleiss' kappa.",
    ),
    dimensions: list[str] | None = typer.Option(None, "--dimensions", help="Only these dimensions."),
    json_file: Path | None = typer.Option(
        None, "--json", help="Also write the records as JSON to this file."
    ),
    n_boot: int = typer.Option(
        1000, "--n-boot", help="Bootstrap resamples for the CI of Krippendorff's alpha."
    ),
    seed: int = typer.Option(0, "--seed", help="Bootstrap seed."),
    split: bool = typer.Option(True, "--split/--no-split", help="Also report per user kind (human, agent)."),
) -> None:
    """Agreement per dimension: raw agreement, Cohen's kappa (quadratic-weighted for ordinal scales),
    Fleiss' kappa, Krippendorff's alpha with a bootstrap CI; pooled ("all") and per user kind."""
    from annotation.agreement import agreement_records, study_agreement_df
    from annotation.codebook import load_codebook
    from db.engine import ready_engine, session_scope
    from workbench.cli._common import output_file, write_text

    output_file(json_file, "--json")
    if n_boot < 100:  # as analyze and report
        raise UserInputError("--n-boot must be at least 100 for a usable interval")
    names = _split(source_set)
    if names and (a or b):
        raise UserInputError("give either --a and --b, or --sources, not both")
    if not names and not (a and b):
        raise UserInputError(
            "name two sources with --a and --b (or a set with --sources); list them with "
            f"`workbench labels sources --study {study}`"
        )
    if a and b and a == b:
        raise UserInputError("compare two different sources (--a and --b are the same)")
    config = Settings.from_env()
    with session_scope(ready_engine(config.db_url)) as session:
        df = study_agreement_df(
            session,
            study,
            a=a,
            b=b,
            sources=names,
            dimensions=_split(dimensions),
            n_boot=n_boot,
            seed=seed,
            split_by_user_kind=split,
            codebook=load_codebook(extensions=config.codebook_extensions),
        )
    _print_agreement(df, n_boot, seed)
    if json_file:
        write_text(json_file, json.dumps(agreement_records(df), ensure_ascii=False, indent=1))
        typer.echo(f"Wrote {len(df)} records to {json_file}")


def _print_agreement(df, n_boot: int, seed: int) -> None:
    if df.empty:
        typer.echo("No items labelled by both sources.")
        return
    cols = [
        "dimension",
        "user_kind",
        "n",
        "agreement",
        "cohen_kappa",
        "weighted_kappa",
        "fleiss_kappa",
        "krippendorff_alpha",
        "ci_low",
        "ci_high",
    ]
    show = df[cols].copy()
    for c in cols[3:]:
        show[c] = show[c].map(lambda v: "" if v is None or v != v else f"{v:.3f}")
    typer.echo(show.to_string(index=False))
    typer.echo(
        f"ci_low/ci_high: {int(df['ci_level'].iloc[0] * 100)}% percentile bootstrap interval of "
        f"Krippendorff's alpha ({n_boot} resamples of items, seed {seed})."
    )


def register(app: typer.Typer) -> None:
    app.command("label")(label)
    labels_app = typer.Typer(help="Label sources and their labels.", no_args_is_help=True)
    labels_app.command("sources")(sources)
    app.add_typer(labels_app, name="labels")
    app.command("agreement")(agreement)
