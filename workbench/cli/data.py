"""Database commands: init, serve."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import typer

from db.engine import get_engine
from db.errors import UserInputError, WorkbenchError
from db.migrate import upgrade
from db.settings import ENV_DB_URL, Settings


def register(app: typer.Typer) -> None:
    @app.command()
    def init() -> None:
        """Create the database schema, or upgrade it to the newest revision (Alembic upgrade head)."""
        from db.engine import open_error

        engine = get_engine(Settings.from_env().db_url)
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
        servers: int = typer.Option(
            1, help="Start this many servers, on ports PORT..PORT+N-1 (behind a reverse proxy; see README)."
        ),
    ) -> None:
        """Start the Streamlit app on the configured database."""
        from db.engine import ready_engine

        if servers < 1:
            raise UserInputError(f"--servers must be at least 1, got {servers}")
        if not 1 <= port <= 65535 or port + servers - 1 > 65535:
            raise UserInputError(f"--port must be between 1 and 65535, got {port}")
        config = Settings.from_env()  # a malformed setting stops here, before the server starts
        engine = ready_engine(config.db_url)
        entry = Path(__file__).resolve().parent.parent / "app" / "main.py"
        env = dict(os.environ)
        env.setdefault(ENV_DB_URL, config.db_url)
        cmd = [
            sys.executable,
            "-m",
            "streamlit",
            "run",
            str(entry),
            "--server.port",
            str(port),
            "--server.address",
            host,
            "--server.headless",
            "true" if headless else "false",
            "--browser.gatherUsageStats",
            "false",
            "--server.fileWatcherType",
            "none",
            # also set in the page, but only a server option hides the developer menu on the first load
            "--client.toolbarMode",
            "minimal",
        ]
        engine.dispose()  # no connection of ours is handed on to the app
        if servers > 1:
            raise typer.Exit(_serve_many(cmd, env, host, port, servers, engine.url.render_as_string()))
        typer.echo(f"Serving on http://{host}:{port} (database {engine.url.render_as_string()})")
        if os.name == "posix":
            # The app replaces this process: SIGTERM or SIGINT sent to `workbench serve` reach
            # Streamlit itself (a child started with subprocess.call was left running).
            sys.stdout.flush()
            sys.stderr.flush()
            os.execve(sys.executable, cmd, env)
        raise typer.Exit(_run_forwarding_signals(cmd, env))


def _serve_many(cmd: list[str], env: dict, host: str, port: int, n: int, db: str) -> int:
    """``n`` servers on ports ``port``..``port+n-1``: each is ``cmd`` with its own port, all
    sharing one Streamlit cookie secret (so a browser moved to another server by the proxy keeps a
    valid XSRF cookie). SIGTERM/SIGINT reach all; returns when all have exited."""
    import secrets
    import signal

    env = {**env}
    env.setdefault("STREAMLIT_SERVER_COOKIE_SECRET", secrets.token_hex(32))
    at = cmd.index("--server.port") + 1
    children = []
    for p in range(port, port + n):
        typer.echo(f"Serving on http://{host}:{p} (database {db})")
        children.append(subprocess.Popen([*cmd[:at], str(p), *cmd[at + 1 :]], env=env))

    def forward(signum, _frame) -> None:
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, forward)
    codes = [child.wait() for child in children]
    return max(codes, key=abs)


def _run_forwarding_signals(cmd: list[str], env: dict) -> int:
    """Run ``cmd`` and pass SIGTERM/SIGINT on to it (where exec is not available)."""
    import signal

    child = subprocess.Popen(cmd, env=env)

    def forward(signum, _frame) -> None:
        child.send_signal(signum)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, forward)
    return child.wait()
