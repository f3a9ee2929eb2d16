"""Fixtures of the real-browser tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.e2e.helpers import CHROMIUM


@pytest.fixture
def chromium_path():
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail("chromium is missing in CI (scripts/setup.sh installs Debian's chromium)")
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    pytest.importorskip("playwright.sync_api")
    return CHROMIUM
