"""Fidelity command: likeness (label-free fidelity metrics, each beside its human ceiling)."""

from __future__ import annotations

from pathlib import Path

import typer

from db.errors import UserInputError
from db.settings import Settings
from workbench.cli._progress import steps


def likeness(
    study: str = typer.Option(..., "--study", help="Study name."),
    out: Path = typer.Option(..., "--out", help="Output directory (created)."),
    splits: int = typer.Option(20, "--splits", help="Random participant splits for the human ceiling."),
    n_boot: int = typer.Option(200, "--n-boot", help="Bootstrap replicates for the intervals."),
    embedding: str | None = typer.Option(
        None, "--embedding", help="tfidf_svd or sentence_transformers (default: the first available)."
    ),
    json_file: Path | None = typer.Option(None, "--json", help="Also write the records to this file."),
) -> None:
    """Fidelity of each simulator against people: fidelity.json / .csv and fidelity_ranking.csv."""
    from analysis.dataset import load_study
    from analysis.fidelity import (
        choose_embedder,
        fidelity_records,
        label_index_of,
        study_fidelity,
        write_fidelity,
    )
    from analysis.instruments import merge_fidelity, study_instruments
    from analysis.likeness import likeness_tables
    from db.engine import ready_engine
    from workbench.cli._common import output_dir, output_file

    if splits < 20:
        raise UserInputError("--splits must be at least 20 for a usable human ceiling")
    if n_boot < 0:
        raise UserInputError("--n-boot must be 0 (no intervals) or more")
    choose_embedder(embedding)  # an unknown name fails before any work
    output_dir(out, "--out")
    output_file(json_file, "--json")
    engine = ready_engine(Settings.from_env().db_url)
    with steps("measuring fidelity", expected=4) as step:
        step("loading conversations, labels and features")
        data = load_study(engine, study)
        step("label-based distances")
        like = likeness_tables(data, n_boot=n_boot) if data.dimensions else None
        step("fidelity metrics and their human ceilings")
        tables = study_fidelity(
            engine, data, splits=splits, n_boot=n_boot, likeness=like, embedding=embedding
        )
        step("the participants' instruments: survey error, rank agreement, twins")
        inst = study_instruments(engine, data, splits=splits, fidelity_boot=n_boot, comparisons=False)
        tables = merge_fidelity(tables, inst["records"], label_index_of(like))
    _summary(tables, data)
    if inst["note"]:
        typer.echo(inst["note"])
    for p in write_fidelity(tables, out):
        typer.echo(f"wrote {p}")
    if json_file is not None:
        import json

        json_file.write_text(
            json.dumps(fidelity_records(tables["records"]), ensure_ascii=False, indent=1), encoding="utf-8"
        )
        typer.echo(f"wrote {json_file}")


def _summary(tables, data) -> None:
    """One line per missing user kind, then the ranking."""
    kinds = set(data.conversations["user_kind"])
    if "agent" not in kinds:
        typer.echo("No simulated conversations in this study: only the human ceiling is reported.")
    if "human" not in kinds:
        typer.echo("No human conversations in this study: no fidelity metric can be computed.")
    rec = tables["records"]
    emb = rec.loc[rec["metric"] == "coverage", "embedding"]
    if len(emb):
        typer.echo(f"Embedding: {emb.iloc[0]}")
    for r in tables["ranking"].itertuples():
        score = (
            "n/a"
            if r.fidelity_score is None or r.fidelity_score != r.fidelity_score
            else f"{r.fidelity_score:.3f}"
        )
        typer.echo(
            f"{r.rank}. {r.simulator}: fidelity score {score} ({r.n_families} families, {r.n_agent} conversations)"
        )


def register(app: typer.Typer) -> None:
    app.command()(likeness)
