"""Fixtures of the report tests: a real headless Chromium driven over the DevTools protocol."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from _cdp import Browser, Page, find_chromium


@pytest.fixture(scope="session")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    binary = find_chromium()
    if binary is None:
        pytest.skip("chromium is not installed (.ci/run installs it: apt-get install -y chromium)")
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
