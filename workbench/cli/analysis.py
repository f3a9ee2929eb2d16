"""Analysis commands: analyze, report, features."""

from __future__ import annotations

from pathlib import Path

import typer

from db.errors import UserInputError
from db.settings import Settings
from workbench.cli._progress import steps

CORRECTIONS = ("holm", "bh")


def _check(correction: str, n_boot: int) -> None:
    if correction not in CORRECTIONS:
        raise UserInputError(f"unknown --correction {correction!r}: use holm (default) or bh")
    if n_boot < 100:
        raise UserInputError("--n-boot must be at least 100 for a usable interval")


def _analysed(study: str, labels: str | None, correction: str, n_boot: int, step, agreement: bool = True):
    """The study's analysis on the configured database, with the judge's stored judgements (nothing
    is called): (result, engine)."""
    from analysis.report import analyze as run
    from annotation.codebook import load_codebook
    from db.engine import ready_engine
    from workbench.judge import attach_stored_judge

    config = Settings.from_env()
    engine = ready_engine(config.db_url)
    result = run(
        engine,
        study,
        codebook=load_codebook(extensions=config.codebook_extensions),
        labels=labels,
        correction=correction,
        n_boot=n_boot,
        agreement=agreement,
        progress=step,
    )
    attach_stored_judge(engine, result, n_boot=n_boot)
    return result, engine


def analyze(
    study: str = typer.Option(..., "--study", help="Study name."),
    out: Path = typer.Option(..., "--out", help="Output directory (created)."),
    labels: str | None = typer.Option(None, "--labels", help="Label source (default: best available)."),
    correction: str = typer.Option(
        "holm", "--correction", help="Multiple-comparison correction: holm or bh."
    ),
    n_boot: int = typer.Option(1000, "--n-boot", help="Bootstrap replicates for intervals."),
) -> None:
    """Compare human and agent conversations: comparisons.csv/.json/.tex, likeness tables, meta.json."""
    from analysis.report import write_analysis
    from workbench.cli._common import output_dir

    _check(correction, n_boot)
    output_dir(out, "--out")
    with steps("analysing", expected=7) as step:
        result, _ = _analysed(study, labels, correction, n_boot, step, agreement=False)
        step("writing the tables")
        paths = write_analysis(result, out)
    comp = result.comparisons
    typer.echo(f"Label source: {result.data.label_source} ({result.data.label_source_reason})")
    typer.echo(
        f"{len(comp)} comparisons ({(comp['note'].str.startswith('not enough')).sum()} not enough data), "
        f"correction {correction}"
    )
    if note := result.instruments.get("note"):
        typer.echo(note)
    for p in paths:
        typer.echo(f"wrote {p}")


def report(
    study: str = typer.Option(..., "--study", help="Study name."),
    out: Path = typer.Option(Path("report.html"), "--out", help="HTML file to write."),
    labels: str | None = typer.Option(None, "--labels", help="Label source (default: best available)."),
    correction: str = typer.Option("holm", "--correction", help="holm or bh."),
    n_boot: int = typer.Option(1000, "--n-boot", help="Bootstrap replicates for intervals."),
) -> None:
    """Write one self-contained offline HTML report (+ the comparison table as .csv and .tex)."""
    from analysis.report import write_report
    from workbench.cli._common import output_file

    _check(correction, n_boot)
    if out.suffix.lower() not in (".html", ".htm"):
        raise UserInputError(f"--out must be an .html file, got {out}")
    output_file(out, "--out")
    with steps("reporting", expected=7) as step:
        result, engine = _analysed(study, labels, correction, n_boot, step)
        step("writing the report")
        paths = write_report(result, engine, out)
    for p in paths:
        typer.echo(f"wrote {p}")


def features(
    study: str = typer.Option(..., "--study", help="Study name."),
    recompute: bool = typer.Option(False, "--recompute", help="Drop stored features of this version first."),
    language: str = typer.Option(
        "auto",
        "--language",
        help="auto (humans' language when the kinds differ), own, or a code (en, zh).",
    ),
    out: Path | None = typer.Option(None, "--out", help="Also write the features as CSV."),
) -> None:
    """Compute (once) and store the text features of a study's conversations."""
    from sqlmodel import Session

    from analysis.dataset import default_language
    from analysis.features import features_df
    from db.engine import ready_engine
    from db.repo import conversations_df, get_study
    from workbench.cli._common import output_file

    output_file(out, "--out")
    if language not in ("auto", "own") and language.lower().split("-")[0] not in ("en", "zh"):
        # Any other code used to be analysed silently as English.
        raise UserInputError(f"unknown --language {language!r}: use auto, own, en or zh")
    engine = ready_engine(Settings.from_env().db_url)
    with Session(engine) as session:
        st = get_study(session, study)
        convs = conversations_df(session, st.id)
    lang = default_language(convs) if language == "auto" else (None if language == "own" else language)
    feats = features_df(engine, st.id, convs, language=lang, recompute=recompute)
    typer.echo(f"{len(feats)} conversations, feature version {feats.attrs.get('feature_version')}")
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        feats.to_csv(out, index=False)
        typer.echo(f"wrote {out}")


def register(app: typer.Typer) -> None:
    for command in (analyze, report, features):
        app.command()(command)
