"""`dreamrate demo` plays the whole loop offline and leaves everything it promises."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.test_cli import run_cli

pytestmark = pytest.mark.slow


def test_demo_runs_the_loop_and_summarises(tmp_path: Path, toy_model: Path) -> None:
    folder = tmp_path / "demo"
    # The suite's toy model stands in for the one the demo would train (make-toy's own
    # tests cover the training); a configured database must not be touched.
    theirs = tmp_path / "theirs.db"
    env = {
        "DREAMRATE_GENERATION_MODEL": str(toy_model),
        "DREAMRATE_DATABASE_URL": f"sqlite+aiosqlite:///{theirs}",
    }
    result = run_cli(
        "demo", "--dir", str(folder), "--members", "7", "--prompts", "12", "--pace", "0.3",
        timeout=600, env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert not theirs.exists(), "the demo wrote into the configured database"
    # Rich wraps long lines (paths too) at the terminal's width.
    assert f"the demo keeps its own database in {folder / 'data'}".replace(" ", "") in "".join(
        out.split()
    )
    assert re.search(r"jobs / images\s+│ 12 / 24", out), out
    recorded = re.search(r"ratings recorded\s+│ (\d+) of (\d+) reactions \((\d+) from the", out)
    assert recorded, out
    ratings, reactions, private = map(int, recorded.groups())
    assert reactions == 24 * 3 and private > 0 and ratings == reactions - private
    assert "held-out Spearman vs the hidden taste" in out
    assert re.search(r"pool rows scored / kept \(top 25 %\)\s+│ 400 / \d+", out), out
    summary = json.loads((folder / "summary.json").read_text())
    keys = {"jobs", "images", "ratings", "heldout_spearman_truth", "rows_scored", "rows_kept"}
    keys |= {"fetched", "finetune_steps", "aesthetic_before", "aesthetic_after"}
    keys |= {"arena_judgements", "arena_win_rate", "seconds"}
    keys |= {"taste_before", "taste_after", "taste_gain_ci", "arena_win_rate_ci"}
    assert keys <= set(summary) and summary["jobs"] == 12 and summary["rows_scored"] == 400
    # The loop closes: the kept images were fetched over HTTP, a LoRA trained and judged.
    assert 0 < summary["fetched"] == summary["rows_kept"] and summary["finetune_steps"] == 80
    assert (folder / "lora" / "pytorch_lora_weights.safetensors").is_file()
    low, high = summary["taste_gain_ci"]
    gain = summary["taste_after"] - summary["taste_before"]
    assert low < gain < high  # the interval is around the paired gain it reports
    # Six members judge five rounds blind; the win rate sits inside its Wilson interval.
    assert summary["arena_judgements"] == 30
    low, high = summary["arena_win_rate_ci"]
    assert 0 <= low <= summary["arena_win_rate"] <= high <= 1 and high - low < 0.4
    assert f"training report: {folder / 'predictor' / 'report.html'}" in out
    assert (folder / "predictor" / "report.html").is_file()
    manifest = json.loads((folder / "manifest" / "manifest.json").read_text())
    assert manifest["rows_in"] == 400 and manifest["rows_out"] >= 100  # ties are kept
    assert (folder / "dataset" / "README.md").is_file()
    assert "demo.local.token" not in out + result.stderr
    # A second run replaces the demo folder; a folder that is not a demo's is refused.
    other = tmp_path / "mine"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    refused = run_cli("demo", "--dir", str(other))
    assert refused.returncode == 2 and "not a dreamrate demo folder" in refused.stderr
    assert (other / "keep.txt").read_text() == "mine"
