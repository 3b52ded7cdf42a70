"""What the maintainers made on disk: score runs, manifests and dataset exports.

They live wherever a maintainer pointed ``--out``; the page lists those found under the
folders in ``DREAMRATE_WEB_OUTPUTS`` (default: the data folder), three levels deep, and
reads only their small summary files (``manifest.json``, a dataset's ``README.md``).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Outputs", "find_outputs"]

DEPTH = 3


@dataclass(frozen=True)
class Outputs:
    manifests: list[dict[str, Any]] = field(default_factory=list)
    score_runs: list[dict[str, Any]] = field(default_factory=list)
    datasets: list[dict[str, Any]] = field(default_factory=list)


def _walk(root: Path) -> list[Path]:
    found = []
    base = len(root.parts)
    for folder, dirs, _ in os.walk(root):
        here = Path(folder)
        if len(here.parts) - base >= DEPTH:
            dirs.clear()
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d != "images")
        found.append(here)
    return found


def find_outputs(roots: list[Path]) -> Outputs:
    """Everything under ``roots`` that looks like a score run, a manifest or a dataset."""
    outputs = Outputs()
    for root in roots:
        if not root.is_dir():
            continue
        for folder in _walk(root):
            manifest = folder / "manifest.json"
            if manifest.is_file():
                try:
                    data = json.loads(manifest.read_text())
                except (OSError, ValueError):
                    continue
                if data.get("format") == "dreamrate-manifest":
                    outputs.manifests.append(
                        {
                            "path": str(folder),
                            "created_at": data.get("created_at", ""),
                            "rows_in": data.get("rows_in"),
                            "rows_out": data.get("rows_out"),
                            "threshold": (data.get("selection") or {}).get("threshold"),
                            "predictor": (data.get("predictor") or {}).get("id", ""),
                            "excluded": sum((data.get("excluded") or {}).values()),
                        }
                    )
            shards = sorted(folder.glob("scores_*.parquet"))
            if shards:
                outputs.score_runs.append(
                    {
                        "path": str(folder),
                        "shards": len(shards),
                        "bytes": sum(s.stat().st_size for s in shards),
                        "modified": time.strftime(
                            "%Y-%m-%d %H:%M", time.gmtime(max(s.stat().st_mtime for s in shards))
                        ),
                    }
                )
            if (folder / "ratings.parquet").is_file() and (folder / "README.md").is_file():
                outputs.datasets.append(
                    {
                        "path": str(folder),
                        "files": sorted(p.name for p in folder.iterdir() if p.is_file()),
                    }
                )
    return outputs
