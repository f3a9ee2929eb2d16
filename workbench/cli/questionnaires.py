"""Questionnaire commands: ``workbench questionnaires validate FILE`` and ``show``."""

from __future__ import annotations

from pathlib import Path

import typer

questionnaires_app = typer.Typer(
    help="Study questionnaires (consent, pre-study, post-task, post-study items) in YAML files.",
    no_args_is_help=True,
)


@questionnaires_app.command("validate")
def validate(path: Path = typer.Argument(..., help="A questionnaire file (YAML).")) -> None:
    """Check a questionnaire file; every problem is listed with the file, line and field (exit status 2)."""
    from workbench.participation.questionnaires import load_questionnaires

    q = load_questionnaires(path)
    typer.echo(f"OK: {path}: {q.summary()}")


@questionnaires_app.command("show")
def show(
    path: Path | None = typer.Argument(None, help="A questionnaire file; default: the bundled one."),
    lang: str = typer.Option("en", "--lang", help="en or zh: the language of the texts."),
) -> None:
    """Print each phase's items (name, type, required, question, choices) as participants see them."""
    from workbench.participation.questionnaires import PHASES, load_questionnaires

    q = load_questionnaires(path)
    typer.echo(f"{q.source}: {q.summary()}")
    for phase in PHASES:
        for item in q.items(phase):
            flags = ", ".join(f for f, on in (("required", item.required), ("once", item.once)) if on)
            typer.echo(
                f"{phase}  {item.name}  [{item.type}{', ' + flags if flags else ''}]  {item.question.get(lang)}"
            )
            choices = (
                item.options_in(lang) if item.type in ("single", "multiple", "likert", "attention") else {}
            )
            if choices:
                typer.echo("    " + "; ".join(f"{v} = {t}" for v, t in choices.items()))


def register(app: typer.Typer) -> None:
    app.add_typer(questionnaires_app, name="questionnaires")
