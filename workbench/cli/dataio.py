"""Import and export commands: ``workbench import recllmsim|jsonl`` and ``workbench export``."""

from __future__ import annotations

from pathlib import Path

import typer

from db.errors import UserInputError
from db.settings import Settings
from workbench.cli._progress import progress_bar

import_app = typer.Typer(
    help="Import conversations into a study (the released RecLLMSim data, or a JSONL export).",
    no_args_is_help=True,
)


@import_app.command("recllmsim")
def import_recllmsim_cmd(
    path: Path = typer.Argument(
        ...,
        help="Root of the released RecLLMSim data (holds LLM_agent_user/, real_human_user/, human_exp_V2/).",
    ),
    study: str = typer.Option("recllmsim", "--study", help="Study to import into (created when absent)."),
    strict: bool = typer.Option(
        False, "--strict", help="Abort on the first malformed file; the database is left exactly as before."
    ),
) -> None:
    """Import the released RecLLMSim 'Human vs. Agent' conversations into one study (re-running adds nothing)."""
    from db.engine import ready_engine
    from workbench.dataio.recllmsim import import_recllmsim

    config = Settings.from_env()
    engine = ready_engine(config.db_url)
    with progress_bar("importing", unit="files") as progress:
        report = import_recllmsim(
            engine,
            path,
            study=study,
            strict=strict,
            progress=progress,
            scenario_dirs=config.scenario_dirs,
            max_turn_chars=config.max_turn_chars,
            max_file_mb=config.max_import_mb,
        )
    typer.echo(report.summary())
    _fail_when_nothing_valid(report, path)


@import_app.command("jsonl")
@import_app.command("export")
def import_jsonl_cmd(
    path: Path = typer.Argument(
        ...,
        help="A folder written by `workbench export` in any format (jsonl, csv, parquet), or its "
        "conversations.jsonl; the labels/label_sources/questionnaires/participants tables beside it "
        "are read too.",
    ),
    study: str | None = typer.Option(
        None, "--study", help="Study to import into (default: the study named in the file)."
    ),
    strict: bool = typer.Option(
        False, "--strict", help="Abort on the first malformed line; nothing is written."
    ),
) -> None:
    """Import an export (any format) into a study (re-running adds nothing)."""
    from db.engine import ready_engine
    from workbench.dataio.jsonl import import_jsonl

    config = Settings.from_env()
    engine = ready_engine(config.db_url)
    with progress_bar("importing") as progress:
        report = import_jsonl(
            engine,
            path,
            study=study,
            strict=strict,
            progress=progress,
            max_turn_chars=config.max_turn_chars,
            max_file_mb=config.max_import_mb,
        )
    typer.echo(report.summary())
    _fail_when_nothing_valid(report, path)


def _fail_when_nothing_valid(report, path: Path) -> None:
    """Exit 2 when nothing at all could be imported (every line or file malformed, or none there):
    a script must not take that for an import. A re-import (everything already present) is fine."""
    if report.imported or report.existing:
        return
    if report.malformed:
        raise UserInputError(
            f"nothing in {path} could be imported ({len(report.malformed)} malformed, listed "
            "above); check that it is the right file"
        )
    raise UserInputError(
        f"nothing in {path} could be imported: it holds no conversation; check that it is the right file"
    )


def register(app: typer.Typer) -> None:
    app.add_typer(import_app, name="import")

    @app.command("export")
    def export_cmd(
        study: str = typer.Option(..., "--study", help="Name of the study to export."),
        fmt: str = typer.Option(
            "jsonl",
            "--format",
            help="jsonl (conversations.jsonl + tables as CSV), csv or parquet (tables only).",
        ),
        out: Path = typer.Option(..., "--out", help="Directory to write into (created when absent)."),
        force: bool = typer.Option(
            False, "--force", help="Overwrite export files already in the directory (refused otherwise)."
        ),
    ) -> None:
        """Export a study: conversations.jsonl (OpenAI chat messages + metadata) and tidy tables."""
        from db.engine import ready_engine
        from workbench.cli._common import output_dir
        from workbench.dataio.export import export_study

        output_dir(out, "--out")
        _refuse_overwrite(out, fmt, force)
        paths = export_study(ready_engine(Settings.from_env().db_url), study, fmt, out)
        for p in paths:
            typer.echo(str(p))
        typer.echo(f"Exported study {study!r}: {len(paths)} files in {out}.")


def _refuse_overwrite(out: Path, fmt: str, force: bool) -> None:
    """Refuse to replace earlier export files in ``out`` unless --force (they may be the only copy of
    an earlier state of the study)."""
    from workbench.dataio.export import FORMATS, RECORDS, TABLES

    if force or fmt not in FORMATS or not out.is_dir():
        return
    table_fmt = "csv" if fmt == "jsonl" else fmt
    tables = TABLES if fmt == "jsonl" else (*TABLES, RECORDS)
    names = (["conversations.jsonl"] if fmt == "jsonl" else []) + [f"{t}.{table_fmt}" for t in tables]
    present = [n for n in names if (out / n).exists()]
    if present:
        raise UserInputError(
            f"--out {out} already holds {', '.join(present[:3])}{' ...' if len(present) > 3 else ''}: "
            "choose another directory, or pass --force to overwrite"
        )
