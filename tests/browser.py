"""Headless Chromium for page tests: Debian's `chromium` package driven by Playwright's own driver.
`playwright install` is never run (no browser download); `make test` installs `chromium` from
Debian when it is missing, and a missing browser fails the test instead of skipping it."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

# Headless and quiet: nothing here may reach the network (no updates, sync, QUIC, first-run pages).
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def chromium_path() -> str:
    found = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        pytest.fail("no chromium binary: `apt-get install -y chromium` (Debian), or set CHROMIUM=/path; "
                    "`make test` installs it when run as root")
    return found


@contextmanager
def chromium() -> Iterator:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def open_page(browser, url: str, width: int = 1400, height: int = 900):
    """(page, problems): every console error, uncaught exception and failed request is collected."""
    page = browser.new_page(viewport={"width": width, "height": height})
    problems: list[str] = []
    page.on("console", lambda msg: problems.append(f"console {msg.type}: {msg.text}") if msg.type == "error" else None)
    page.on("pageerror", lambda error: problems.append(f"uncaught: {error}"))
    page.on("requestfailed", lambda request: problems.append(f"request failed: {request.url} {request.failure}"))
    page.goto(url)
    page.wait_for_load_state("load")
    return page, problems
