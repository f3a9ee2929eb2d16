"""Shared parts of the real-browser tests: `workbench serve` in a subprocess, Debian's chromium."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]
SHOTS = REPO / "test-output" / "e2e"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--disable-quic",
]


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
        proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "from workbench.cli import main; main()",
                "serve",
                "--port",
                str(self.port),
            ],
            cwd=REPO,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
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
        # `workbench serve` becomes streamlit (exec); stopping its process group also ends any helpers.
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


def shot(page, path: Path, max_height: int = 8000) -> None:
    """A screenshot of the whole page: Streamlit scrolls inside its main container, so grow the viewport."""
    size = page.viewport_size
    height = page.evaluate(
        "() => Math.max(...[...document.querySelectorAll('[data-testid=stMain], [data-testid=stSidebarContent]')]"
        ".map(e => e.scrollHeight), document.body.scrollHeight)"
    )
    page.set_viewport_size({"width": size["width"], "height": min(max(height, size["height"]), max_height)})
    page.wait_for_timeout(400)  # let charts and grids re-lay out
    path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path))
    page.set_viewport_size(size)


# Everything the app puts in the page: text (hidden included) and the attributes a browser exposes.
PAGE_TEXT_JS = """() => {
  const root = document.querySelector('#root');
  const parts = [root.textContent];
  for (const el of root.querySelectorAll('*')) {
    for (const a of ['aria-label', 'title', 'alt', 'placeholder', 'value', 'href', 'src', 'download']) {
      const v = el.getAttribute(a);
      if (v) parts.push(v);
    }
  }
  return parts.join('\\n');
}"""


def page_text(page) -> str:
    return page.evaluate(PAGE_TEXT_JS)


def view_shot(page, locator, path: Path) -> None:
    """A screenshot of the viewport with ``locator`` scrolled to its top (for pages too long to read whole)."""
    locator.first.evaluate("e => e.scrollIntoView({block: 'start'})")
    page.wait_for_timeout(300)
    path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path))


def settle(page, timeout_ms: int = 30_000) -> None:
    """Wait until the Streamlit script has finished its run (no "Running..." icon): a click made while
    a rerun is still drawing can land on an element the rerun then replaces."""
    from playwright.sync_api import expect

    expect(page.locator('[data-testid="stStatusWidgetRunningIcon"]')).to_have_count(0, timeout=timeout_ms)


def click_until(page, locator, expected, attempts: int = 3, timeout_ms: int = 10_000) -> None:
    """Click ``locator`` once the app is idle, until ``expected`` is visible (a loaded machine can drop a
    click that races a rerun; the app's behaviour is what ``expected`` checks)."""
    from playwright.sync_api import expect

    for attempt in range(attempts):
        settle(page)
        locator.click()
        try:
            expect(expected).to_be_visible(timeout=timeout_ms)
            return
        except AssertionError:
            if attempt == attempts - 1:
                raise


def click_inside(page, opener, button, expected, attempts: int = 3, timeout_ms: int = 10_000) -> None:
    """Click ``button``, which lies inside something ``opener`` opens (an expander), until ``expected``
    is visible. Each attempt first opens it again if it is closed: a rerun that redraws the sidebar
    can close an expander the browser alone had opened."""
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import expect

    for attempt in range(attempts):
        try:
            settle(page)
            if not button.is_visible():
                opener.click(timeout=timeout_ms)
                expect(button).to_be_visible(timeout=timeout_ms)
            settle(page)
            button.click(timeout=timeout_ms)
            expect(expected).to_be_visible(timeout=timeout_ms)
            return
        except (AssertionError, PlaywrightError):
            if attempt == attempts - 1:
                raise


@contextmanager
def served_page(db_url: str, tmp_path: Path, **page_options):
    """`workbench serve` on ``db_url`` and one headless chromium page (30 s timeouts): yields
    (server, page); the browser and the server are stopped afterwards, whatever happened."""
    from playwright.sync_api import sync_playwright

    server = AppServer(
        {"WORKBENCH_DB_URL": db_url, "WORKBENCH_DATA_DIR": str(tmp_path / "data")}, tmp_path / "serve.log"
    )
    try:
        server.start()
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
            try:
                page = browser.new_page(**page_options)
                page.set_default_timeout(30_000)
                yield server, page
            finally:
                browser.close()
    finally:
        server.close()
