"""Under CI=true a missing Chromium fails the browser tests instead of skipping them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_browser_tests_fail_rather_than_skip_under_ci_without_chromium(tmp_path: Path) -> None:
    env = {**os.environ, "CI": "true", "TALLYGATE_CHROMIUM": str(tmp_path / "no-chromium"),
           "PATH": str(Path(sys.executable).parent)}
    test = "tests/dashboard/test_dashboard_browser.py::test_a_completions_only_key_is_refused_with_a_clear_message"
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", test], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 1, out.stdout
    assert "chromium is not installed" in out.stdout and "skipped" not in out.stdout.splitlines()[-1]
