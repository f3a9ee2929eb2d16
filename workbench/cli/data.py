"""Database commands: init, serve."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import typer

from db.engine import get_engine
from db.migrate import upgrade
from workbench import config
from workbench.errors import WorkbenchError


def register(app: typer.Typer) -> None:
    @app.command()
    def init() -> None:
        """Create the database schema, or upgrade it to the newest revision (Alembic upgrade head)."""
        from workbench.cli._common import open_error

        engine = get_engine()
        try:
            rev = upgrade(engine)
        except WorkbenchError:
            raise
        except Exception as exc:
            raise open_error(engine, exc) from exc
        typer.echo(f"Database {engine.url.render_as_string()} is at revision {rev}.")

    @app.command()
    def serve(
        port: int = typer.Option(8501, help="Port to listen on."),
        host: str = typer.Option("127.0.0.1", help="Address to bind (0.0.0.0 to accept other machines)."),
        headless: bool = typer.Option(True, help="Do not open a browser."),
    ) -> None:
        """Start the Streamlit app on the configured database."""
        from workbench.cli._common import ready_engine

        ready_engine()
        entry = Path(__file__).resolve().parent.parent / "app" / "main.py"
        env = dict(os.environ)
        env.setdefault(config.ENV_DB_URL, config.db_url())
        cmd = [
            sys.executable, "-m", "streamlit", "run", str(entry),
            "--server.port", str(port), "--server.address", host,
            "--server.headless", "true" if headless else "false",
            "--browser.gatherUsageStats", "false",
            "--server.fileWatcherType", "none",
        ]
        typer.echo(f"Serving on http://{host}:{port} (database {get_engine().url.render_as_string()})")
        raise typer.Exit(subprocess.call(cmd, env=env))
