"""Debian's Chromium under Playwright for Python (Playwright's own browser download is not used)."""

from __future__ import annotations

import os
import shutil

CHROMIUM = os.environ.get("TALLYGATE_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def chromium_path() -> str | None:
    return CHROMIUM if os.path.exists(CHROMIUM) else shutil.which("chromium")


def launch(playwright):  # type: ignore[no-untyped-def]
    """A headless Chromium browser from the system package."""
    return playwright.chromium.launch(executable_path=chromium_path(), args=ARGS, headless=True)
