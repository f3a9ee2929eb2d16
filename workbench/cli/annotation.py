"""Annotation commands: workbench annotate assign|progress|guesses|disagreements|codebook."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from db.engine import session_scope
from db.settings import Settings


def _split(value: str | None) -> list[str] | None:
    if value is None:
        return None
    return [x.strip() for x in value.split(",") if x.strip()]


def assign(
    study: str = typer.Option(..., "--study", help="Study name."),
    annotators: str = typer.Option(..., "--annotators", help="Comma-separated annotator account names."),
    overlap: int = typer.Option(2, "--overlap", help="Annotators per conversation (k)."),
    per_annotator: int | None = typer.Option(
        None, "--per-annotator", help="New conversations per annotator (default: all unassigned)."
    ),
    kinds: str | None = typer.Option(
        None, "--kinds", help="Only these user kinds: human, agent (comma-separated)."
    ),
    seed: int = typer.Option(0, "--seed", help="Random seed of the sample and the queue order."),
    top_up: bool = typer.Option(
        False,
        "--top-up",
        help="Instead of new conversations, give queued conversations with fewer than k annotators to "
        "more of these annotators (e.g. one who joined late); --per-annotator caps each one's new items.",
    ),
) -> None:
    """Fill annotators' queues: each new conversation goes to k annotators, balanced by user kind and scenario."""
    from annotation.queue import assign_items
    from db.engine import ready_engine

    names, user_kinds = _split(annotators) or [], _split(kinds)
    _check_assign_flags(names, overlap, per_annotator, user_kinds, top_up)
    with session_scope(ready_engine(Settings.from_env().db_url)) as session:
        report = assign_items(
            session,
            study,
            names,
            overlap=overlap,
            per_annotator=per_annotator,
            seed=seed,
            user_kinds=user_kinds,
            top_up=top_up,
        )
    if report.n_items == 0:
        typer.echo(f"Nothing to assign in study {study!r}: {report.nothing_reason('--top-up')}.")
        return
    typer.echo(report.summary())


def _check_assign_flags(
    names: list[str], overlap: int, per_annotator: int | None, user_kinds: list[str] | None, top_up: bool
) -> None:
    """The checks assign_items makes on its settings, naming the flags."""
    from annotation.queue import USER_KINDS
    from db.errors import UserInputError
    from workbench.cli._common import at_least

    if not names:
        raise UserInputError("no annotators given: name them with --annotators a,b,c")
    at_least(overlap, 1, "--overlap")
    if overlap > len(set(names)) and not top_up and len(set(names)) == len(names):
        hint = (
            " (one annotator: pass --overlap 1 to give each conversation to them alone; agreement needs a "
            "second annotator or a labeller)"
            if len(names) == 1
            else f"; pass --overlap {len(names)} or name more annotators"
        )
        raise UserInputError(
            f"--overlap {overlap} needs at least {overlap} annotators (got {len(names)}){hint}"
        )
    at_least(per_annotator, 1, "--per-annotator")
    if unknown := sorted(set(user_kinds or []) - set(USER_KINDS)):
        raise UserInputError(
            f"unknown user kind {', '.join(map(repr, unknown))} in --kinds: use {' or '.join(USER_KINDS)}"
        )


def reassign(
    study: str = typer.Option(..., "--study", help="Study name."),
    from_annotator: str = typer.Option(
        ..., "--from", help="Annotator whose pending items move (e.g. a dropout)."
    ),
    to_annotator: str = typer.Option(..., "--to", help="Annotator who takes them."),
) -> None:
    """Move an annotator's pending items to another annotator; labelled and skipped items stay."""
    from annotation.queue import reassign_items
    from db.engine import ready_engine

    with session_scope(ready_engine(Settings.from_env().db_url)) as session:
        moved, dropped = reassign_items(session, study, from_annotator, to_annotator)
    typer.echo(
        f"Moved {moved} pending items from {from_annotator} to {to_annotator} in study {study!r}"
        + (
            f"; {dropped} {to_annotator} already had were removed from {from_annotator}'s queue"
            if dropped
            else ""
        )
        + "."
    )


def progress(study: str = typer.Option(..., "--study", help="Study name.")) -> None:
    """Per annotator: items in the queue, done, skipped, pending, flagged."""
    from annotation.queue import progress_df
    from db.engine import ready_engine

    with session_scope(ready_engine(Settings.from_env().db_url)) as session:
        df = progress_df(session, study)
    if df.empty:
        typer.echo(f"No queues in study {study!r} yet: run `workbench annotate assign --study {study} ...`.")
        return
    typer.echo(df.to_string(index=False))


def guesses(
    study: str = typer.Option(..., "--study", help="Study name."),
    csv: Path | None = typer.Option(None, "--csv", help="Write the guesses to this CSV file."),
) -> None:
    """How well annotators told people from simulators ("person or AI?" guesses), per simulator."""
    from annotation.labelling import guesses_df
    from db.engine import ready_engine
    from db.repo import conversations_df, get_study
    from workbench.cli._common import output_file

    output_file(csv, "--csv")
    with session_scope(ready_engine(Settings.from_env().db_url)) as session:
        st = get_study(session, study)
        g = guesses_df(session, st.id)
        convs = conversations_df(session, st.id, conversation_ids=g["conversation_id"].unique().tolist())
    if g.empty:
        typer.echo("No guesses yet.")
        return
    if csv:
        csv.parent.mkdir(parents=True, exist_ok=True)
        g.to_csv(csv, index=False)
        typer.echo(f"Wrote {len(g)} guesses to {csv}")
    from annotation.agreement import indistinguishability_df

    typer.echo(indistinguishability_df(g, convs).to_string(index=False))


def disagreements(
    study: str = typer.Option(..., "--study", help="Study name."),
    sources: str | None = typer.Option(
        None, "--sources", help="Comma-separated label sources (default: all human:*)."
    ),
    open_only: bool = typer.Option(False, "--open", help="Only items not yet adjudicated (status open)."),
    as_json: Path | None = typer.Option(None, "--json", help="Write the items as JSON to this file."),
) -> None:
    """Items two or more annotators labelled differently, and items already adjudicated (adjudicate
    them in the app); `status` tells open, decided and decided-but-no-longer-disputed apart."""
    from annotation.adjudication import OPEN, disagreements_df
    from db.engine import ready_engine
    from workbench.cli._common import output_file, write_text

    output_file(as_json, "--json")
    with session_scope(ready_engine(Settings.from_env().db_url)) as session:
        df = disagreements_df(session, study, sources=_split(sources))
    if open_only and not df.empty:
        df = df[df["status"] == OPEN]
    if as_json:
        # Open items have no adjudicated value: null, since NaN is not JSON.
        records = df.astype(object).where(df.notna(), None).to_dict("records")
        write_text(as_json, json.dumps(records, ensure_ascii=False, indent=1, allow_nan=False))
        typer.echo(f"Wrote {len(df)} items to {as_json}")
    if df.empty:
        typer.echo("No disagreements.")
        return
    counts = df["status"].value_counts()
    what = f"{len(df)} item{'s' if len(df) != 1 else ''}"
    typer.echo(f"{what} ({', '.join(f'{n} {status}' for status, n in counts.items())}):")
    typer.echo(df.groupby("dimension").size().rename("items").to_string())


def codebook(
    path: Path | None = typer.Argument(None, help="A codebook file to check (default: the active codebook)."),
    lang: str = typer.Option("en", "--lang", help="en or zh."),
) -> None:
    """Validate and print the codebook (the bundled one plus WORKBENCH_CODEBOOK extensions)."""
    from annotation.codebook import load_codebook
    from db.errors import UserInputError

    if lang not in ("en", "zh"):
        raise UserInputError(f"unknown --lang {lang!r}: use en or zh")
    cb = load_codebook(path, extensions=Settings.from_env().codebook_extensions)
    typer.echo(f"Codebook version {cb.version} ({len(cb)} dimensions) from {', '.join(cb.sources)}")
    for d in cb:
        level = "per turn" if d.level == "turn" else "per conversation"
        typer.echo(f"- {d.name} [{d.group}, {d.scale}, {level}]: {' | '.join(d.labels)}")
        typer.echo(f"    {d.definition.get(lang)}")


def register(app: typer.Typer) -> None:
    annotate = typer.Typer(
        help="Human annotation: codebook, annotators' queues, guesses, disagreements.", no_args_is_help=True
    )
    app.add_typer(annotate, name="annotate")
    annotate.command("assign")(assign)
    annotate.command("reassign")(reassign)
    annotate.command("progress")(progress)
    annotate.command("guesses")(guesses)
    annotate.command("disagreements")(disagreements)
    annotate.command("codebook")(codebook)
