"""workbench costs: what a study has spent on model calls, by purpose, model and run."""

from __future__ import annotations

import json

import typer

from db.settings import Settings


def costs(
    study: str = typer.Option(..., "--study", help="Study name."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON records instead of a table."),
) -> None:
    """Spend of a study by purpose (assistant, simulator, labeller, ...), model and simulation run,
    from the recorded calls (failed and cached calls counted; cached ones cost nothing)."""
    from db.engine import ready_engine, session_scope
    from db.repo import get_study
    from workbench.llm.costs import costs_df

    with session_scope(ready_engine(Settings.from_env().db_url)) as session:
        df = costs_df(session, get_study(session, study).id)
    if as_json:
        typer.echo(json.dumps(df.astype(object).where(df.notna(), None).to_dict("records"), indent=1))
        return
    if len(df) == 1:
        typer.echo(f"Study {study!r} has no recorded model calls yet.")
        return
    shown = df.assign(cost_usd=df["cost_usd"].map(lambda v: f"${v:,.4f}"), run_id=df["run_id"].astype(str))
    typer.echo(shown.replace({"<NA>": ""}).to_string(index=False))


def register(app: typer.Typer) -> None:
    app.command("costs")(costs)
