"""The README's runnable command blocks work when pasted."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCK = re.compile(r"<!-- runnable -->\s*```bash\n(.*?)```", re.S)


def runnable_blocks() -> list[str]:
    return BLOCK.findall(README.read_text(encoding="utf-8"))


def test_readme_has_runnable_blocks() -> None:
    assert runnable_blocks()


@pytest.mark.parametrize("block", runnable_blocks())
def test_runnable_block(block: str, tmp_path: Path) -> None:
    bin_dir = Path(sys.executable).parent
    script = "set -euo pipefail\n" + block.replace(".venv/bin/", f"{bin_dir}/")
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("DREAMRATE_") or k.startswith("DREAMRATE_TEST_")
    }
    result = subprocess.run(
        ["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, f"README block failed:\n{block}\n{result.stderr[-2000:]}"
