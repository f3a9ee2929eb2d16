"""Shared parts of the real-browser tests: `workbench serve` in a subprocess, Debian's chromium."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]
SHOTS = REPO / "test-output" / "e2e"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--no-first-run", "--disable-sync", "--disable-quic"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class AppServer:
    """`workbench serve` on a free port with the given environment; start, stop and restart it."""

    def __init__(self, env: dict, log_path: Path, port: int | None = None):
        self.env = {**os.environ, **env}
        self.log_path = log_path
        self.port = port or free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self._log = open(log_path, "a")  # noqa: SIM115 (closed in close())
        self._procs: list[subprocess.Popen] = []

    def start(self) -> None:
        proc = subprocess.Popen([sys.executable, "-c", "from workbench.cli import main; main()", "serve",
                                 "--port", str(self.port)], cwd=REPO, env=self.env, stdout=self._log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        self._procs.append(proc)
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                if httpx.get(f"{self.base}/_stcore/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if proc.poll() is not None:
                raise RuntimeError(f"workbench serve exited: {self.log_path.read_text()}")
            time.sleep(0.3)
        raise RuntimeError("workbench serve did not become healthy in 60 s")

    def stop(self) -> None:
        # `workbench serve` runs streamlit as a child: stop the whole process group it leads.
        proc = self._procs.pop()
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        deadline = time.time() + 20  # the streamlit child may outlive its parent for a moment
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                time.sleep(0.2)
            except OSError:
                break

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        while self._procs:
            self.stop()
        self._log.close()
