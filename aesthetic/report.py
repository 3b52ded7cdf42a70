"""``report.html``: the figures a maintainer checks before trusting a predictor."""

from __future__ import annotations

import html
import io
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from dreamrate.aesthetic.train import TrainingResult
from dreamrate.core.errors import StorageError

__all__ = ["image_grid", "write_report"]

PLOTS = ("ratings", "raters", "predicted", "calibration", "learning")


def _figure():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(plt, fig, path: Path) -> None:  # type: ignore[no-untyped-def]
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _plot_ratings(result: TrainingResult, path: Path) -> None:
    plt = _figure()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    values = np.concatenate([result.mean.target, result.targets.target])
    bins = np.linspace(np.floor(values.min()), np.ceil(values.max()), 20)
    ax.hist(result.mean.target, bins=bins, alpha=0.6, label="per-image mean")
    ax.hist(result.targets.target, bins=bins, alpha=0.6, label="rater-aware target")
    ax.set_xlabel("rating")
    ax.set_ylabel("images")
    ax.legend()
    _save(plt, fig, path)


def _plot_raters(result: TrainingResult, path: Path) -> None:
    plt = _figure()
    effects = result.effects
    spam = np.array([rid.item() if hasattr(rid, "item") else rid for rid in effects.rater_ids])
    flagged = np.isin(spam, list(effects.spam))
    fig, ax = plt.subplots(figsize=(6, 4))
    if not len(effects.rater_ids):  # trained on choices alone
        ax.text(0.5, 0.5, "no ratings: trained on choices", ha="center", va="center")
        ax.set_axis_off()
        _save(plt, fig, path)
        return
    sizes = 10 + 40 * np.sqrt(effects.n_ratings / max(effects.n_ratings.max(), 1))
    ax.scatter(
        effects.offset[~flagged],
        effects.scale[~flagged],
        s=sizes[~flagged],
        alpha=0.6,
        label="raters",
    )
    if flagged.any():
        ax.scatter(
            effects.offset[flagged],
            effects.scale[flagged],
            s=sizes[flagged],
            c="red",
            marker="x",
            label="flagged as spam",
        )
    ax.axhline(1, color="grey", lw=0.5)
    ax.axvline(0, color="grey", lw=0.5)
    ax.set_xlabel("offset (rating points added)")
    ax.set_ylabel("scale (1 = average range)")
    ax.legend()
    _save(plt, fig, path)


def _plot_predicted(result: TrainingResult, path: Path) -> None:
    plt = _figure()
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.scatter(result.observed, result.oof_baseline, s=6, alpha=0.4, label="baseline")
    ax.scatter(result.observed, result.oof, s=6, alpha=0.5, label="dreamrate")
    lo, hi = float(result.observed.min()), float(result.observed.max())
    ax.plot([lo, hi], [lo, hi], color="grey", lw=0.8)
    ax.set_xlabel("held-out mean rating")
    ax.set_ylabel("out-of-fold prediction")
    ax.legend()
    _save(plt, fig, path)


def _plot_calibration(result: TrainingResult, path: Path) -> None:
    plt = _figure()
    fig, ax = plt.subplots(figsize=(5, 4))
    for label, pred in (("baseline", result.oof_baseline), ("dreamrate", result.oof)):
        edges = np.quantile(pred, np.linspace(0, 1, 11))
        which = np.clip(np.searchsorted(edges, pred, side="right") - 1, 0, 9)
        xs = [pred[which == b].mean() for b in range(10) if (which == b).any()]
        ys = [result.observed[which == b].mean() for b in range(10) if (which == b).any()]
        ax.plot(xs, ys, marker="o", label=label)
    lo, hi = float(result.observed.min()), float(result.observed.max())
    ax.plot([lo, hi], [lo, hi], color="grey", lw=0.8, ls="--")
    ax.set_xlabel("predicted (decile mean)")
    ax.set_ylabel("held-out mean rating")
    ax.legend()
    _save(plt, fig, path)


def _plot_learning(result: TrainingResult, path: Path) -> None:
    plt = _figure()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    if result.learning_curve:
        n, rho = zip(*result.learning_curve, strict=True)
        ax.plot(n, rho, marker="o")
    ax.set_xlabel("training images")
    ax.set_ylabel("held-out Spearman")
    _save(plt, fig, path)


def image_grid(
    paths: Sequence[str],
    scores: Sequence[float],
    out: Path,
    *,
    thumb: int = 160,
    read: Callable[[str], bytes] | None = None,
) -> bool:
    """A row-major grid of thumbnails with their scores; False when no image can be read.
    With ``read`` (an image store's), ``paths`` are paths in the store."""
    from PIL import Image, ImageDraw, UnidentifiedImageError

    tiles = []
    for path, score in zip(paths, scores, strict=True):
        try:
            with Image.open(path if read is None else io.BytesIO(read(path))) as im:
                tile = im.convert("RGB")
                tile.thumbnail((thumb, thumb))
        except (OSError, UnidentifiedImageError, StorageError):
            continue  # the report is written without it: training is not failed for a picture
        canvas = Image.new("RGB", (thumb, thumb + 18), "white")
        canvas.paste(tile, ((thumb - tile.width) // 2, (thumb - tile.height) // 2))
        ImageDraw.Draw(canvas).text((4, thumb + 3), f"{score:.2f}", fill="black")
        tiles.append(canvas)
    if not tiles:
        return False
    cols = min(6, len(tiles))
    rows = (len(tiles) + cols - 1) // cols
    grid = Image.new("RGB", (cols * thumb, rows * (thumb + 18)), "white")
    for k, tile in enumerate(tiles):
        grid.paste(tile, ((k % cols) * thumb, (k // cols) * (thumb + 18)))
    grid.save(out)
    return True


def _metrics_table(metrics: dict[str, dict[str, float]]) -> str:
    columns = {
        "spearman": "Spearman",
        "pearson": "Pearson",
        "mse": "MSE",
        "pairwise": "pairwise accuracy",
    }
    if any("choice_accuracy" in m for m in metrics.values()):
        # Held-out choices among images of unseen prompts; the human ceiling's row is how
        # often one member agrees with the others on a pair.
        columns["choice_accuracy"] = "held-out choices"
    head = "<tr><th>model</th>" + "".join(f"<th>{c}</th>" for c in columns.values()) + "</tr>"
    rows = "".join(
        f"<tr><td>{html.escape(name)}</td>"
        + "".join(f"<td>{_figure_cell(m, k)}</td>" if k in m else "<td></td>" for k in columns)
        + "</tr>"
        for name, m in metrics.items()
    )
    return f"<table>{head}{rows}</table>"


def _figure_cell(m: dict[str, float], key: str) -> str:
    """``0.812 <small>[0.790, 0.831]</small>`` when the figure has a 95 % interval."""
    cell = f"{m[key]:.3f}"
    low, high = m.get(f"{key}_low"), m.get(f"{key}_high")
    if low is not None and high is not None and np.isfinite(low) and np.isfinite(high):
        cell += f" <small>[{low:.3f}, {high:.3f}]</small>"
    return cell


def _sources_html(summary: dict) -> str:  # type: ignore[type-arg]
    from dreamrate.aesthetic.card import sources_table

    rows, notes = sources_table(summary)
    if not rows:
        return ""
    body = "".join(
        f"<tr><td>{html.escape(a)}</td><td>{html.escape(b)}</td><td>{html.escape(c)}</td></tr>"
        for a, b, c in rows
    )
    items = "".join(f"<li>{html.escape(n)}</li>" for n in notes)
    return (
        "<h2>Sources it learnt from</h2><table><tr><th>source</th><th>clicks</th>"
        f"<th>weight</th></tr>{body}</table><ul>{items}</ul>"
    )


def write_report(
    result: TrainingResult,
    folder: Path,
    *,
    image_paths: dict[int, str] | None = None,
    grid_size: int = 12,
    read: Callable[[str], bytes] | None = None,
) -> Path:
    """Write ``folder/report.html`` and its PNGs; return the HTML path. ``read`` reads
    ``image_paths`` from an image store (default: they are files)."""
    folder.mkdir(parents=True, exist_ok=True)
    plotters = {
        "ratings": _plot_ratings,
        "raters": _plot_raters,
        "predicted": _plot_predicted,
        "calibration": _plot_calibration,
        "learning": _plot_learning,
    }
    for name, plot in plotters.items():
        plot(result, folder / f"{name}.png")
    paths = image_paths or {}
    grids = []
    if paths:
        order = np.argsort(-result.predicted_all)
        for label, pick in (("highest", order[:grid_size]), ("lowest", order[::-1][:grid_size])):
            ids = result.image_ids[pick]
            ok = image_grid(
                [paths[int(i)] for i in ids if int(i) in paths],
                [
                    float(result.predicted_all[k])
                    for k, i in zip(pick, ids, strict=True)
                    if int(i) in paths
                ],
                folder / f"{label}.png",
                read=read,
            )
            if ok:
                grids.append(
                    f'<h2>{label.title()} scored images</h2><img src="{label}.png" alt="{label} scored images">'
                )
    if not grids:
        grids.append(
            "<p>No image files were available for the image grids (trained from files).</p>"
        )
    spam = result.effects.spam
    spam_rows = (
        "".join(
            f"<li>{html.escape(str(rid))}: {', '.join(reasons)}</li>"
            for rid, reasons in sorted(spam.items(), key=str)
        )
        or "<li>none</li>"
    )
    summary_rows = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>"
        for k, v in result.summary.items()
    )
    captions = {
        "ratings": "Targets: per-image means and rater-aware estimates",
        "raters": "Each rater's offset and scale (size: number of ratings)",
        "predicted": "Out-of-fold predictions against held-out mean ratings",
        "calibration": "Calibration: mean held-out rating per predicted decile",
        "learning": "Learning curve on one held-out fold",
    }
    figures = "".join(
        f'<figure><img src="{name}.png" alt="{captions[name]}"><figcaption>{captions[name]}</figcaption></figure>'
        for name in PLOTS
    )
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>dreamrate predictor {html.escape(result.predictor.name)}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left}}figure{{display:inline-block;margin:8px}}</style></head>
<body><h1>Predictor {html.escape(result.predictor.name)} <small>({result.predictor.id})</small></h1>
<p>Embedding model {html.escape(result.predictor.embedding_model)}, {result.predictor.kind} head.
Every figure below is out-of-fold: images are split by prompt, so no prompt is on both sides.</p>
<h2>Held-out metrics (against held-out mean ratings)</h2>
<p>95 % intervals in brackets (a bootstrap over prompts). Held-out choices: the share of
decisive choices on unseen prompts ordered the member's way; the human ceiling row is how
often one member agrees with the majority of the others on the same pair.</p>
{_metrics_table(result.metrics)}
{_sources_html(result.summary)}
<h2>Training data</h2><table>{summary_rows}</table>
<h2>Raters flagged as likely spam (down-weighted)</h2><ul>{spam_rows}</ul>
<h2>Plots</h2>{figures}
{"".join(grids)}
</body></html>
"""
    out = folder / "report.html"
    out.write_text(page, encoding="utf-8")
    return out
