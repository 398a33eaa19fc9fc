"""Fixtures of the report tests: a real headless Chromium driven over the DevTools protocol."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from _cdp import Browser, Page, find_chromium


@pytest.fixture(scope="session")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    binary = find_chromium()
    if binary is None:
        pytest.skip(
            "chromium is not installed (.ci/run installs it: apt-get install -y chromium)"
        )
    pytest.importorskip("websocket", reason="websocket-client is in the dev extra")
    b = Browser.start(binary, tmp_path_factory.mktemp("chromium-profile"))
    try:
        yield b
    finally:
        b.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    p = browser.page()
    try:
        yield p
    finally:
        p.close()


def keep_screenshot(path: Path) -> None:
    """Copy a test's screenshot to $SIGTUNE_SCREENSHOT_DIR (how docs/img is produced)."""
    target = os.environ.get("SIGTUNE_SCREENSHOT_DIR")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(target) / path.name)
