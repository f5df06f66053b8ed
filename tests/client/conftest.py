"""Browser fixtures for the page tests: a headless Chromium driven by Playwright.

``chromium`` launches one browser per test session (Debian's /usr/bin/chromium,
or $GRADWATCH_CHROMIUM). ``browser_page`` gives each test a fresh 1400x900
context and records console errors, uncaught page errors and dialogs (an
``alert`` means injected markup ran) in ``page.gradwatch_problems``.

When Chromium cannot be launched the browser tests skip with the reason,
except under ``CI=true`` where they fail: CI must never pass by skipping.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def _unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"browser tests cannot run under CI=true: {reason}")
    pytest.skip(reason)


def chromium_path() -> str | None:
    explicit = os.environ.get("GRADWATCH_CHROMIUM")
    if explicit:
        return explicit
    for candidate in ("/usr/bin/chromium", "/usr/bin/chromium-browser"):
        if Path(candidate).is_file():
            return candidate
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="session")
def chromium() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as e:  # pragma: no cover - depends on the environment
        _unavailable(f"playwright is not installed: {e}")
    exe = chromium_path()
    if exe is None:
        _unavailable("no Chromium found (install Debian's chromium or set GRADWATCH_CHROMIUM)")
    pw = sync_playwright().start()
    try:
        browser = pw.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS, timeout=60_000)
    except Exception as e:
        pw.stop()
        _unavailable(f"Chromium at {exe} could not be launched: {e}")
    try:
        yield browser
    finally:
        browser.close()
        pw.stop()


@pytest.fixture
def browser_page(chromium: Any) -> Iterator[Any]:
    # bypass_csp: Playwright evaluates the tests' string predicates with eval, which the page's CSP
    # forbids; test_csp.py loads the page with its CSP enforced.
    context = chromium.new_context(viewport={"width": 1400, "height": 900}, bypass_csp=True)
    context.set_default_timeout(15_000)
    page = context.new_page()
    problems: list[str] = []

    def on_console(msg: Any) -> None:
        # Failed requests (e.g. a 4xx the test provokes on purpose) are logged by
        # Chromium as console errors; the tests judge those through the UI instead.
        if msg.type == "error" and "Failed to load resource" not in msg.text:
            problems.append(f"console.error: {msg.text}")

    def on_dialog(dialog: Any) -> None:
        problems.append(f"dialog ({dialog.type}): {dialog.message}")
        dialog.dismiss()

    page.on("console", on_console)
    page.on("pageerror", lambda err: problems.append(f"page error: {err}"))
    page.on("dialog", on_dialog)
    page.gradwatch_problems = problems
    try:
        yield page
    finally:
        context.close()
