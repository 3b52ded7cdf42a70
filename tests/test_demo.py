"""`dreamrate demo` plays the whole loop offline and leaves everything it promises."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.test_cli import run_cli

pytestmark = pytest.mark.slow


def test_demo_runs_the_loop_and_summarises(tmp_path: Path) -> None:
    folder = tmp_path / "demo"
    result = run_cli(
        "demo",
        "--dir",
        str(folder),
        "--members",
        "6",
        "--prompts",
        "12",
        "--pace",
        "0.3",
        timeout=480,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert re.search(r"jobs / images\s+│ 12 / 24", out), out
    recorded = re.search(r"ratings recorded\s+│ (\d+) of (\d+) reactions \((\d+) from the", out)
    assert recorded, out
    ratings, reactions, private = map(int, recorded.groups())
    assert reactions == 24 * 3 and private > 0 and ratings == reactions - private
    assert "100,000 / " in out and "held-out Spearman vs the hidden taste" in out
    assert f"training report: {folder / 'predictor' / 'report.html'}" in out
    assert (folder / "predictor" / "report.html").is_file()
    manifest = json.loads((folder / "manifest" / "manifest.json").read_text())
    assert manifest["rows_in"] == 100_000 and manifest["rows_out"] >= 10_000  # ties are kept
    assert (folder / "dataset" / "README.md").is_file()
    assert "demo.local.token" not in out + result.stderr
    # A second run replaces the demo folder; a folder that is not a demo's is refused.
    other = tmp_path / "mine"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    refused = run_cli("demo", "--dir", str(other))
    assert refused.returncode == 2 and "not a dreamrate demo folder" in refused.stderr
    assert (other / "keep.txt").read_text() == "mine"
