"""The ``workbench`` command.

Each area registers its commands from its own module (``workbench/cli/<area>.py`` with a
``register(app)`` function), so adding a command touches one file. The CLI is a thin layer:
commands translate flags into calls of the core and print the result.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys

import typer

from db.errors import WorkbenchError
from workbench import __version__

app = typer.Typer(
    name="workbench",
    help="Research workbench: compare LLM-simulated users with real people in task-oriented conversations.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"workbench {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Show the version."
    ),
) -> None:
    """Research workbench: compare LLM-simulated users with real people."""


for _mod in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
    if not _mod.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_mod.name}").register(app)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the console script: user errors are printed without a traceback."""
    try:
        app(args=argv, prog_name="workbench")
    except WorkbenchError as exc:
        typer.echo(f"Error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except OSError as exc:  # a file or folder the command could not read or write: one line, no traceback
        where = f" {exc.filename}" if getattr(exc, "filename", None) else ""
        typer.echo(f"Error: cannot use{where}: {exc.strerror or exc}; choose another path", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo("Interrupted.", err=True)
        sys.exit(130)
