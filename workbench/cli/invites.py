"""Participant commands: workbench invites create|prolific-url, workbench participants expire."""

from __future__ import annotations

from pathlib import Path

import typer

from db.engine import session_scope
from db.errors import UserInputError
from db.settings import Settings


def create(
    study: str = typer.Option(..., "--study", help="Study name."),
    n: int = typer.Option(10, "-n", "--count", help="How many links."),
    base_url: str | None = typer.Option(
        None,
        "--base-url",
        help="Public address of the app (default: WORKBENCH_PUBLIC_URL, else http://localhost:8501).",
    ),
    out: Path | None = typer.Option(None, "--out", help="Write the links to this file (else print them)."),
    language: str | None = typer.Option(
        None, "--language", help="Interface language (default: the study's)."
    ),
) -> None:
    """Create N participants with invite links. The links are shown once: keep them."""
    from db.engine import ready_engine
    from workbench.cli._common import output_file, write_text
    from workbench.participation.entry import create_invites, invite_url

    output_file(out, "--out")
    with session_scope(ready_engine(Settings.from_env().db_url)) as session:
        tokens = create_invites(session, study, n, language=language)
    from workbench.config import public_url

    links = [invite_url(base_url or public_url(configured=Settings.from_env().public_url), t) for t in tokens]
    if out:
        write_text(out, "\n".join(links) + "\n")
        typer.echo(f"Wrote {len(links)} invite links to {out}.")
    else:
        typer.echo("\n".join(links))


def prolific(
    study: str = typer.Option(..., "--study", help="Study name."),
    base_url: str | None = typer.Option(
        None,
        "--base-url",
        help="Public address of the app (default: WORKBENCH_PUBLIC_URL, else http://localhost:8501).",
    ),
    prolific_study_id: str | None = typer.Option(
        None,
        "--prolific-study-id",
        help="Prolific's STUDY_ID of this study, stored in its settings: Prolific links are accepted "
        "only for the study naming it (needed once).",
    ),
) -> None:
    """Print the study URL to paste into Prolific."""
    from db.engine import ready_engine
    from workbench.config import public_url
    from workbench.participation.entry import prolific_url
    from workbench.studies import get_settings, update_settings

    with session_scope(ready_engine(Settings.from_env().db_url)) as session:
        if prolific_study_id:
            update_settings(session, study, {"prolific_study_id": prolific_study_id})
        elif not get_settings(session, study).prolific_study_id:
            raise UserInputError(
                f"study {study!r} has no Prolific STUDY_ID, so no Prolific link would be accepted: "
                "pass --prolific-study-id ID (the id Prolific shows for your study) or set it on the "
                "Studies page"
            )

    typer.echo(prolific_url(base_url or public_url(configured=Settings.from_env().public_url), study))


def expire() -> None:
    """Mark sessions idle beyond their study's idle timeout as abandoned and release their assignments."""
    from db.engine import ready_engine
    from workbench.participation.flow import expire_idle

    with session_scope(ready_engine(Settings.from_env().db_url)) as session:
        n = expire_idle(session)
    typer.echo(f"{n} idle sessions marked abandoned.")


def register(app: typer.Typer) -> None:
    invites = typer.Typer(
        help="Invite links for participants (only the tokens' hashes are stored).", no_args_is_help=True
    )
    app.add_typer(invites, name="invites")
    participants = typer.Typer(help="Participant sessions.", no_args_is_help=True)
    app.add_typer(participants, name="participants")
    invites.command("create")(create)
    invites.command("prolific-url")(prolific)
    participants.command("expire")(expire)
