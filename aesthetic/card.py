"""``PREDICTOR.md``: the card written beside every predictor, for people deciding whether to
trust it: what it was trained on, how it scores against the baseline and the human ceiling,
what it reads, and the hash that identifies its weights."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dreamrate.aesthetic.train import TrainingResult

__all__ = ["card_text", "write_card"]

_COLUMNS = {
    "spearman": "Spearman",
    "pearson": "Pearson",
    "mse": "MSE",
    "pairwise": "pairwise acc.",
    "choice_accuracy": "held-out choices",
}


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def card_text(result: TrainingResult) -> str:
    """The card as Markdown."""
    p, s = result.predictor, result.summary
    used = [k for k in _COLUMNS if any(k in m for m in result.metrics.values())]
    rows = "\n".join(
        f"| {name} | " + " | ".join(_cell(m.get(k)) for k in used) + " |"
        for name, m in result.metrics.items()
    )
    counts = [
        ("images", s.get("images")),
        ("ratings", s.get("ratings")),
        ("raters", s.get("raters")),
        ("raters flagged as spam", s.get("spam_raters")),
        ("choices between two images", s.get("choices")),
        ("choosers", s.get("choosers")),
        ("choosers flagged (one side always, or random)", s.get("spam_choosers")),
        ("prompts (validation groups)", s.get("prompts")),
    ]
    count_rows = "\n".join(f"| {k} | {v} |" for k, v in counts if v is not None)
    meta = p.metadata()
    ceiling = next((m for n, m in result.metrics.items() if "ceiling" in n), None)
    ceiling_line = (
        "The human ceiling is how often one member agrees with the majority of the others on "
        "pairs judged by two or more members: a predictor near it is as good as a member."
        if ceiling
        else "No pair was judged by two or more members, so there is no human ceiling yet."
    )
    return f"""# Predictor card: {p.name}

Written {datetime.now(UTC):%Y-%m-%d} by dreamrate.

## Data
| | count |
|---|---|
{count_rows}

## Held-out metrics
Out-of-fold, with folds grouped by prompt (no prompt is on both sides of a split).
Ratings metrics compare with each image's held-out mean rating; held-out choices are the
share of decisive choices on unseen prompts the predictor orders the member's way.

| model | {" | ".join(_COLUMNS[k] for k in used)} |
|---|{"---|" * len(used)}
{rows}

{ceiling_line}

## What it reads
- embedding model: `{p.embedding_model}` ({p.dim} dimensions)
- input: L2-normalised embedding, times {p.input_scale:g}; then {p.kind}
- model: {s.get("model", p.kind)}

## Identity
- id: `{p.id}`
- weights sha256: `{p.sha256}`
- format: `{meta.get("format", "dreamrate-predictor")}` version {meta.get("version", 1)}

Load it with `dreamrate score --predictor <this folder>` or `dreamrate predictor activate`.
"""


def write_card(result: TrainingResult, folder: Path) -> Path:
    """Write ``folder/PREDICTOR.md``; return its path."""
    path = folder / "PREDICTOR.md"
    path.write_text(card_text(result), encoding="utf-8")
    return path
