"""Where the browser test is required (``DREAMRATE_REQUIRE_BROWSER=1``, as in CI), a missing
Playwright fails it instead of skipping it, like a missing Chromium."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_a_missing_playwright_fails_the_required_browser_test(tmp_path: Path) -> None:
    # A ``playwright`` first on the path that cannot be imported, as if it were not installed.
    blocked = tmp_path / "blocked" / "playwright"
    blocked.mkdir(parents=True)
    (blocked / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'playwright'\", name='playwright')\n"
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            filter(None, [str(blocked.parent), os.environ.get("PYTHONPATH")])
        ),
        "DREAMRATE_REQUIRE_BROWSER": "1",
    }
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rfEs", "-n", "0",
         "tests/web/test_browser_e2e.py"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    out = run.stdout + run.stderr
    assert run.returncode != 0, out
    assert "1 failed" in out or "1 error" in out, out
    assert "skipped" not in out and "Playwright is missing" in out, out
