"""A throw-away PostgreSQL 15 cluster for the test suite.

Uses ``WORKBENCH_TEST_PG_URL`` when set (a server URL whose user may create databases);
otherwise runs ``initdb`` + ``pg_ctl`` from the installed PostgreSQL into a temporary directory,
listening on a free loopback port and a private socket directory. As root, the cluster runs as the
``postgres`` system user (PostgreSQL refuses to run as root).
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid


class PgUnavailable(RuntimeError):
    pass


def _bindir() -> str:
    for cand in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if os.path.exists(os.path.join(cand, "initdb")):
            return cand
    found = shutil.which("initdb")
    if found:
        return os.path.dirname(found)
    raise PgUnavailable("no PostgreSQL server binaries (initdb) found; install postgresql-15")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ThrowawayCluster:
    def __init__(self) -> None:
        self.url: str | None = None
        self._dir: str | None = None
        self._run_as: list[str] = []
        self._bindir = ""

    def start(self) -> str:
        env_url = os.environ.get("WORKBENCH_TEST_PG_URL")
        if env_url:
            self.url = env_url
            return env_url
        self._bindir = _bindir()
        self._dir = tempfile.mkdtemp(prefix="wb-pg-")
        os.chmod(self._dir, 0o755)
        if os.geteuid() == 0:
            try:
                import pwd

                pw = pwd.getpwnam("postgres")
            except KeyError as exc:
                raise PgUnavailable(
                    "running as root and there is no 'postgres' user to run the cluster"
                ) from exc
            shutil.chown(self._dir, pw.pw_uid, pw.pw_gid)
            self._run_as = ["runuser", "-u", "postgres", "--"]
        data = os.path.join(self._dir, "data")
        port = _free_port()
        self._run(
            [
                os.path.join(self._bindir, "initdb"),
                "-D",
                data,
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
                "-E",
                "UTF8",
                "--locale=C",
            ]
        )
        opts = (
            f"-p {port} -k {self._dir} -c listen_addresses=127.0.0.1 -c fsync=off "
            f"-c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        )
        self._run(
            [
                os.path.join(self._bindir, "pg_ctl"),
                "-D",
                data,
                "-o",
                opts,
                "-w",
                "-t",
                "60",
                "-l",
                os.path.join(self._dir, "log"),
                "start",
            ]
        )
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
        return self.url

    def _run(self, cmd: list[str]) -> None:
        proc = subprocess.run(self._run_as + cmd, capture_output=True, text=True, cwd=self._dir)
        if proc.returncode != 0:
            raise PgUnavailable(f"{' '.join(cmd[:1])} failed: {proc.stderr.strip() or proc.stdout.strip()}")

    def create_database(self) -> str:
        """A new empty database on the cluster; returns its URL."""
        import psycopg

        assert self.url
        name = f"wbtest_{uuid.uuid4().hex[:12]}"
        base = self.url.replace("postgresql+psycopg://", "postgresql://")
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url.rsplit("/", 1)[0] + "/" + name

    def stop(self) -> None:
        if self._dir and os.path.exists(os.path.join(self._dir, "data")):
            subprocess.run(
                self._run_as
                + [
                    os.path.join(self._bindir, "pg_ctl"),
                    "-D",
                    os.path.join(self._dir, "data"),
                    "-m",
                    "immediate",
                    "stop",
                ],
                capture_output=True,
                cwd=self._dir,
            )
            time.sleep(0.2)
        if self._dir:
            shutil.rmtree(self._dir, ignore_errors=True)
