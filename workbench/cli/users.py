"""Account commands: workbench users add|list."""

from __future__ import annotations

import os
import sys

import typer

from db.engine import session_scope
from db.errors import UserInputError
from db.settings import Settings

PASSWORD_ENV = "WORKBENCH_PASSWORD"


def register(app: typer.Typer) -> None:
    users = typer.Typer(
        help="Accounts of annotators and researchers (passwords stored as bcrypt hashes).",
        no_args_is_help=True,
    )
    app.add_typer(users, name="users")

    @users.command("add")
    def add(
        name: str = typer.Argument(..., help="Login name."),
        role: str = typer.Option(..., "--role", help="researcher or annotator."),
        password_stdin: bool = typer.Option(
            False, "--password-stdin", help="Read the password from standard input."
        ),
        update: bool = typer.Option(
            False,
            "--update",
            help="Reset the role and password of an existing user (ends their logins, lifts a login lock).",
        ),
    ) -> None:
        """Create an account. The password comes from --password-stdin, $WORKBENCH_PASSWORD or a prompt."""
        from db.engine import ready_engine
        from workbench.accounts import add_user

        if password_stdin:
            password = sys.stdin.readline().rstrip("\r\n")
        elif os.environ.get(PASSWORD_ENV):
            password = os.environ[PASSWORD_ENV]
        elif sys.stdin.isatty():
            password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
        else:
            raise UserInputError(
                f"no password given: use --password-stdin, set {PASSWORD_ENV}, or run in a terminal"
            )
        engine = ready_engine(Settings.from_env().db_url)
        with session_scope(engine) as session:
            user = add_user(session, name, role, password, update=update)
            if update:  # add_user ended the old logins and lifted a lock after failed logins
                typer.echo(f"Updated {user.role} {user.name!r}: old logins ended, any login lock lifted.")
            else:
                typer.echo(f"Created {user.role} {user.name!r}.")

    @users.command("list")
    def list_() -> None:
        """List the accounts (never the password hashes)."""
        from db.engine import ready_engine
        from workbench.accounts import users_df

        with session_scope(ready_engine(Settings.from_env().db_url)) as session:
            df = users_df(session)
        if df.empty:
            typer.echo("No users yet: add one with `workbench users add NAME --role researcher`.")
            return
        for row in df.itertuples():
            typer.echo(f"{row.name}\t{row.role}\t{'active' if row.active else 'inactive'}")
