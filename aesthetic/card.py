"""``PREDICTOR.md``: the card written beside every predictor, for people deciding whether to
trust it: what it was trained on, how it scores against the baseline and the human ceiling,
what it reads, and the hash that identifies its weights."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dreamrate.aesthetic.train import TrainingResult

__all__ = ["card_text", "sources_table", "write_card"]

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


def _with_interval(m: dict[str, Any], key: str) -> str:
    """``0.812 [0.790, 0.831]`` when the figure has an interval."""
    low, high = m.get(f"{key}_low"), m.get(f"{key}_high")
    cell = _cell(m.get(key))
    if isinstance(low, float) and isinstance(high, float) and not math.isnan(low + high):
        cell += f" [{low:.3f}, {high:.3f}]"
    return cell


def sources_table(summary: dict[str, Any]) -> tuple[list[tuple[str, str, str]], list[str]]:
    """Rows ``(source, clicks, weight)`` of what a predictor learnt from, and notes on how
    the weights were chosen (shared by the card and the report)."""
    sources = summary.get("sources") or {}
    counts = {
        "ratings": f"{summary.get('ratings', 0)} ratings by {summary.get('raters', 0)} raters",
        "choices": f"{summary.get('choices', 0)} choices by {summary.get('choosers', 0)} members",
    }
    rows = [(name, counts.get(name, ""), f"{float(w):.2f}") for name, w in sources.items()]
    notes = (
        [
            "A weight is the source's share of the evidence the head was fitted on (1: that "
            "source alone; 0: not used)."
        ]
        if rows
        else []
    )
    if summary.get("weights_by"):
        notes.append(f"Weights: {summary['weights_by']}.")
    folds = summary.get("fold_ratings_weights")
    if folds:
        notes.append(
            "Ratings weight chosen in each outer fold (on its training folds only): "
            + ", ".join(f"{w:.2f}" for w in folds)
            + "."
        )
    return rows, notes


def card_text(result: TrainingResult) -> str:
    """The card as Markdown."""
    p, s = result.predictor, result.summary
    used = [k for k in _COLUMNS if any(k in m for m in result.metrics.values())]
    rows = "\n".join(
        f"| {name} | " + " | ".join(_with_interval(m, k) for k in used) + " |"
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
    known = ceiling is not None and not math.isnan(float(ceiling.get("choice_accuracy", "nan")))
    ceiling_line = (
        f"The community's own human ceiling on choices is "
        f"{_with_interval(ceiling, 'choice_accuracy')} over {s.get('ceiling_choices')} "
        "choices: how often one member agrees with the majority of the others on pairs judged "
        "by two or more members. A predictor near it is as good as a member."
        if ceiling is not None and known
        else "No pair was judged by two or more members, so there is no human ceiling on "
        "choices yet."
    )
    source_rows, source_notes = sources_table(s)
    sources = "\n".join(f"| {a} | {b} | {c} |" for a, b, c in source_rows)
    notes = "\n".join(f"- {n}" for n in source_notes)
    return f"""# Predictor card: {p.name}

Written {datetime.now(UTC):%Y-%m-%d} by dreamrate.

## Data
| | count |
|---|---|
{count_rows}

## Held-out metrics
Out-of-fold, with folds grouped by prompt (no prompt is on both sides of a split), with 95 %
intervals in brackets (a bootstrap over prompts). Ratings metrics compare with each image's
held-out mean rating; held-out choices are the share of decisive choices on unseen prompts
the predictor orders the member's way (its pairwise accuracy on choices).

| model | {" | ".join(_COLUMNS[k] for k in used)} |
|---|{"---|" * len(used)}
{rows}

{ceiling_line}

## Sources
| source | clicks | weight |
|---|---|---|
{sources}

{notes}

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
