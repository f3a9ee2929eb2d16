"""``workbench label`` (LLM, rule-based, trained labellers), ``workbench labels sources``,
``workbench agreement``."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from db.errors import UserInputError
from db.settings import Settings
from workbench.config import DEFAULT_MODEL_HELP

LABELLERS = ("llm", "rule", "trained")


def _split(values: list[str] | None) -> list[str] | None:
    if not values:
        return None
    out = [v.strip() for item in values for v in item.split(",") if v.strip()]
    return out or None


def label(
    study: str = typer.Option(..., "--study", help="Study name."),
    labeller: str = typer.Option(..., "--labeller", help="llm | rule | trained."),
    model: str | None = typer.Option(
        None,
        "--model",
        help=f"llm: provider/model (default: {DEFAULT_MODEL_HELP}).",
    ),
    dimensions: list[str] | None = typer.Option(
        None,
        "--dimensions",
        help="Dimensions to label (comma-separated or repeated; default: all the labeller can do).",
    ),
    samples: int = typer.Option(
        3, "--samples", help="llm: samples per conversation (majority vote / median)."
    ),
    concurrency: int = typer.Option(4, "--concurrency", help="llm: conversations in flight at once."),
    temperature: float | None = typer.Option(0.7, "--temperature", help="llm: sampling temperature."),
    prompt_version: str | None = typer.Option(
        None,
        "--prompt-version",
        help="llm: prompt template version (annotation/prompts/labeller_<v>.yaml; default: v2).",
    ),
    limit: int | None = typer.Option(None, "--limit", help="llm: label at most this many conversations."),
    overwrite: bool = typer.Option(False, "--overwrite", help="llm: relabel conversations already labelled."),
    no_cache: bool = typer.Option(
        False, "--no-cache", help="llm: do not answer calls from the response cache."
    ),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="llm: print projected calls, tokens and cost, then stop."
    ),
    seed: int = typer.Option(0, "--seed", help="llm: base seed (sample i uses seed+i)."),
    train_source: str | None = typer.Option(
        None, "--train-source", help="trained: label source to learn from (see `workbench labels sources`)."
    ),
    holdout_source: str | None = typer.Option(
        None,
        "--holdout-source",
        help="trained: keep this source's conversations (e.g. the gold "
        "set) out of training; they are labelled.",
    ),
    label_all: bool = typer.Option(
        False, "--all", help="trained: also label the training conversations (in-sample, optimistic)."
    ),
    cv: int = typer.Option(
        0,
        "--cv",
        help="trained: also report K-fold cross-validated kappa against the training source (0 = off).",
    ),
) -> None:
    """Label a study's conversations with a labeller; every label records its source."""
    from annotation.codebook import load_codebook
    from db.engine import ready_engine
    from workbench.cli._common import at_least
    from workbench.llm import check_model_name

    if labeller not in LABELLERS:
        raise UserInputError(f"unknown --labeller {labeller!r}: use one of {', '.join(LABELLERS)}")
    if labeller == "llm":
        # Checked as a real run checks them, dry run or not.
        at_least(samples, 1, "--samples")
        at_least(concurrency, 1, "--concurrency")
        at_least(limit, 1, "--limit")
    dims = _split(dimensions)
    config = Settings.from_env()
    engine = ready_engine(config.db_url)
    codebook = load_codebook(extensions=config.codebook_extensions)
    if dims:
        codebook.select(dims)  # unknown names: a clear error listing the known ones
    if labeller == "llm":
        from annotation.labellers.llm import DEFAULT_PROMPT, label_with_llm_sync, plan_labelling

        prompt_version = prompt_version or DEFAULT_PROMPT

        name = model or config.default_model
        missing_key = check_model_name(
            name
        )  # an unknown provider exits 2; a missing key only fails a real run
        if dry_run:
            plan = plan_labelling(
                engine,
                study,
                name,
                codebook,
                dims,
                samples=samples,
                prompt_version=prompt_version,
                limit=limit,
                overwrite=overwrite,
                prices_file=config.prices_file,
            )
            cost = (
                "unknown (no price for this model; see `workbench models prices`)"
                if plan.cost_usd is None
                else f"${plan.cost_usd:.2f}"
            )
            typer.echo(
                f"Dry run for {plan.source}: {plan.conversations} conversations x {plan.samples} samples = "
                f"{plan.calls} calls; {plan.labels:,} labels ({plan.turn_labels:,} per turn); "
                f"~{plan.prompt_tokens:,} prompt + ~{plan.completion_tokens:,} completion tokens; "
                f"cost {cost}. Dimensions: {', '.join(plan.dimensions)}."
                + (
                    f" {plan.already_labelled} already labelled (not called again; --overwrite relabels them)."
                    if plan.already_labelled
                    else ""
                )
            )
            if missing_key:
                typer.echo(f"note: {missing_key} (a real run needs it).", err=True)
            return
        from workbench.llm import get_model

        chat = get_model(name, prices_file=config.prices_file)
        with _progress("labelling") as tick:
            summary = label_with_llm_sync(
                engine,
                study,
                chat,
                codebook,
                dims,
                samples=samples,
                temperature=temperature,
                concurrency=concurrency,
                prompt_version=prompt_version,
                limit=limit,
                overwrite=overwrite,
                cache=config.llm_cache and not no_cache,
                seed=seed,
                progress=tick,
            )
        typer.echo(
            f"{summary.source}: labelled {summary.conversations} conversations ({summary.labels} labels, "
            f"{summary.flagged} flagged for sample disagreement, {summary.failed} failed), "
            f"{summary.skipped_existing} already labelled"
            + (
                f", {summary.skipped_empty} unfinished or without turns (not labelled)"
                if summary.skipped_empty
                else ""
            )
            + f"; cost ${summary.cost_usd:.4f}."
        )
        if summary.failed:
            typer.echo(
                f"Failed labels are stored with status 'failed' (first error: {summary.errors[0]}). "
                "Re-run with --no-cache to try them again.",
                err=True,
            )
    elif labeller == "rule":
        from annotation.labellers.rules import label_study

        with _progress("labelling") as tick:
            name, n_conv, n = label_study(
                engine, study, dims, codebook_version=codebook.version, progress=tick
            )
        typer.echo(f"{name}: labelled {n_conv} conversations ({n} labels).")
    else:
        from annotation.labellers.trained import train_and_label

        if not train_source:
            raise UserInputError(
                "--labeller trained needs --train-source SOURCE (see `workbench labels sources "
                f"--study {study}`)"
            )
        report = train_and_label(
            engine,
            study,
            train_source,
            dims,
            holdout_source=holdout_source,
            label_all=label_all,
            progress=typer.echo,
            cv_folds=cv,
        )
        typer.echo(
            f"{report.source}: trained on {report.n_train} conversations, labelled {report.n_labelled} "
            f"({report.n_labels} labels). Compare it with a gold source: `workbench agreement --study "
            f"{study} --a {report.source} --b <gold source>`."
        )
        if report.cv is not None:
            typer.echo(
                f"Cross-validated Cohen's kappa against {train_source} ({cv} folds; how well it imitates "
                "its teacher):"
            )
            wide = report.cv.pivot(index="dimension", columns="user_kind", values="cohen_kappa")
            typer.echo(wide.map(lambda v: "" if v is None or v != v else f"{v:.3f}").to_string())
        if holdout_source:
            from annotation.agreement import study_agreement_df
            from db.engine import session_scope

            with session_scope(engine) as session:
                df = study_agreement_df(
                    session,
                    study,
                    report.source,
                    holdout_source,
                    dimensions=report.dimensions,
                    n_boot=1000,
                    codebook=codebook,
                )
            typer.echo(f"Cohen's kappa against {holdout_source} (held out of training):")
            wide = df.pivot(index="dimension", columns="user_kind", values="cohen_kappa")
            typer.echo(wide.map(lambda v: "" if v is None or v != v else f"{v:.3f}").to_string())


class _progress:
    """A tqdm bar on stderr driven by (done, total) callbacks."""

    def __init__(self, what: str):
        self.what, self.bar = what, None

    def __enter__(self):
        from tqdm import tqdm

        # Made here, not at the first tick: tqdm's clock starts when the bar is made, and the first
        # tick comes after the first conversation is done (a bar made then showed a rate of
        # thousands per second and no elapsed time).
        self.bar = tqdm(total=None, desc=self.what, unit="conv", leave=False)

        def tick(done: int, total: int) -> None:
            if self.bar.total != total:
                self.bar.total = total
            self.bar.update(done - self.bar.n)  # update(), not n=: keeps the rate's moving averages

        return tick

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.close()
        return False


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
    from annotation.codebook import load_codebook

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
    if df.empty:
        typer.echo("No items labelled by both sources.")
    else:
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
    if json_file:
        write_text(json_file, json.dumps(agreement_records(df), ensure_ascii=False, indent=1))
        typer.echo(f"Wrote {len(df)} records to {json_file}")


def register(app: typer.Typer) -> None:
    app.command("label")(label)
    labels_app = typer.Typer(help="Label sources and their labels.", no_args_is_help=True)
    labels_app.command("sources")(sources)
    app.add_typer(labels_app, name="labels")
    app.command("agreement")(agreement)
