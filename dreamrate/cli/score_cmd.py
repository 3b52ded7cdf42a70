"""``dreamrate score`` and ``dreamrate export manifest|dataset``."""

from __future__ import annotations

import asyncio
import contextlib
import math
import sys
from pathlib import Path
from typing import Annotated

import typer

from dreamrate.cli.checks import folder_problem, input_file, output_folder
from dreamrate.cli.cli_state import GuildOption
from dreamrate.core.errors import DreamrateError
from dreamrate.core.paths import ensure_writable_dir

__all__ = ["export_app", "score_cmd"]

export_app = typer.Typer(
    help="Filtered manifests and the shareable ratings dataset.", no_args_is_help=True
)


class ScoreError(DreamrateError):
    """Scoring cannot start (no shards, bad options)."""


def _local_folder(value: str) -> str:
    if "://" in value:
        raise typer.BadParameter("must be a local folder (scores are renamed into place)")
    if problem := folder_problem(Path(value)):
        raise typer.BadParameter(problem)
    return value


def score_cmd(
    predictor: Annotated[Path, typer.Option(help="Predictor folder.")],
    embeddings: Annotated[
        str, typer.Option(help="Embedding folder or URL (clip-retrieval layout or Parquet).")
    ],
    out: Annotated[
        str,
        typer.Option(help="Output folder: scores land in OUT/scores/.", callback=_local_folder),
    ],
    engine: Annotated[
        str,
        typer.Option(
            help="local (this process for one worker, else a process pool), threads (one "
            "shard per thread in this process) or ray."
        ),
    ] = "local",
    workers: Annotated[
        int, typer.Option(min=1, help="Processes (local), threads, or CPUs for a local Ray.")
    ] = 1,
    columns: Annotated[
        str | None,
        typer.Option(
            help="Metadata columns to copy into the score files, comma-separated (default: "
            "none; the scores are sidecars and `export manifest` reads the kept rows' "
            "metadata from the source)."
        ),
    ] = None,
    ray_address: Annotated[
        str | None, typer.Option(help="Ray cluster address (default: start a local Ray).")
    ] = None,
    force: Annotated[bool, typer.Option(help="Rescore shards that already have scores.")] = False,
) -> None:
    """Score every shard; reruns skip shards already scored by this predictor."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from dreamrate.aesthetic.filtering.engines import run_local, run_ray, run_threads
    from dreamrate.aesthetic.filtering.reader import ShardProblem, discover_shards
    from dreamrate.aesthetic.filtering.runner import ShardResult
    from dreamrate.aesthetic.predictor import load_predictor

    if engine not in ("local", "threads", "ray"):
        raise ScoreError(f"--engine: must be local, threads or ray, not {engine!r}")
    loaded = load_predictor(predictor)
    try:
        shards, problems = discover_shards(embeddings)
    except FileNotFoundError as exc:
        raise ScoreError(f"--embeddings: {exc}") from exc
    wrong_width = [s for s in shards if s.dim != loaded.dim]
    for shard in wrong_width:
        problems.append(
            ShardProblem(
                shard.embeddings,
                f"embeddings are {shard.dim}-d but the predictor ({loaded.embedding_model}) reads {loaded.dim}",
            )
        )
    shards = [s for s in shards if s.dim == loaded.dim]
    if not shards:  # nothing to do: say why in one line, and make no folder
        # A width that does not fit is what every readable shard has in common: say it first.
        first = problems[-len(wrong_width)] if wrong_width else problems[0]
        others = len(problems) - 1
        raise ScoreError(
            f"--embeddings: {first.file}: {first.message}"
            + (
                f" (and {others} other shard{'s' * (others > 1)} that cannot be scored)"
                if others
                else ""
            )
        )
    scores_dir = Path(out) / "scores"
    made = [p for p in (Path(out), scores_dir) if not p.exists()]  # removed if nothing lands
    ensure_writable_dir(scores_dir, "--out")
    for stale in scores_dir.glob(".scores_*.tmp"):  # left by a run that was killed
        stale.unlink(missing_ok=True)
    wanted = tuple(c.strip() for c in columns.split(",") if c.strip()) if columns else None

    console = Console(stderr=True)
    total_rows = sum(s.rows for s in shards)
    by_n = {s.n: s for s in shards}
    results: list[ShardResult] = []
    progress = Progress(
        TextColumn("scoring"),
        BarColumn(),
        TextColumn("{task.completed:,.0f}/{task.total:,.0f} rows"),
        TextColumn("{task.fields[rate]} rows/s"),
        TextColumn("{task.fields[shards]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
    )
    with progress:
        task = progress.add_task(
            "score", total=total_rows, rate="-", shards=f"0/{len(shards)} shards"
        )

        scored_rows = 0

        def on_result(result: ShardResult) -> None:
            nonlocal scored_rows
            results.append(result)
            progress.advance(task, by_n[result.n].rows)
            scored_rows += 0 if result.skipped else result.rows
            elapsed = progress.tasks[0].elapsed or 0.0
            done_rows = scored_rows
            progress.update(
                task,
                rate=f"{done_rows / elapsed:,.0f}" if elapsed else "-",
                shards=f"{len(results)}/{len(shards)} shards",
            )

        if engine == "threads":
            run_threads(
                shards,
                loaded,
                str(scores_dir),
                workers=workers,
                columns=wanted,
                force=force,
                on_result=on_result,
            )
        elif engine == "local":
            run_local(
                shards,
                loaded,
                str(scores_dir),
                workers=workers,
                columns=wanted,
                force=force,
                on_result=on_result,
            )
        else:
            run_ray(
                shards,
                loaded,
                str(scores_dir),
                address=ray_address,
                workers=workers,
                columns=wanted,
                force=force,
                on_result=on_result,
            )

    scored = [r for r in results if not r.error and not r.skipped]
    skipped = [r for r in results if r.skipped]
    failed = [(by_n[r.n].embeddings, r.error) for r in results if r.error]
    failed += [(p.file, p.message) for p in problems]
    if not scored and not skipped:  # every shard failed: leave no empty folder behind
        for folder in reversed(made):
            with contextlib.suppress(OSError):
                folder.rmdir()
        for file, message in sorted(failed):
            typer.echo(f"error: {file}: {message}", err=True)
        typer.echo(f"error: all {len(failed)} shard(s) failed; nothing was written", err=True)
        sys.exit(2)
    rows = sum(r.rows for r in scored)
    nulls = sum(r.null_rows for r in scored)
    nodes = {r.node for r in scored if r.node}
    lo = min((r.norm_min for r in scored), default=1.0)
    hi = max((r.norm_max for r in scored), default=1.0)
    if scored and (lo < 0.99 or hi > 1.01):
        typer.echo(
            f"warning: embeddings were not unit length (norms {lo:.3g} to {hi:.3g}); "
            "they were L2-normalised before scoring, as the predictor expects",
            err=True,
        )
    typer.echo(
        f"scored {rows:,} rows in {len(scored)} shard(s) with {loaded.name} ({loaded.id})"
        + (f" on {len(nodes)} Ray node(s)" if nodes else "")
        + (f"; {len(skipped)} shard(s) already scored" if skipped else "")
        + (f"; {nulls:,} NaN/inf row(s) scored as null" if nulls else "")
        + f"; scores in {scores_dir}"
    )
    if failed:
        for file, message in sorted(failed):
            typer.echo(f"error: {file}: {message}", err=True)
        typer.echo(f"error: {len(failed)} shard(s) failed; the others are kept", err=True)
        sys.exit(2)


@export_app.command("manifest")
def manifest_cmd(
    scores: Annotated[Path, typer.Option(help="The scores folder written by `dreamrate score`.")],
    out: Annotated[Path, typer.Option(help="Manifest folder to write.", callback=output_folder)],
    min_score: Annotated[
        float | None, typer.Option(help="Keep rows scoring at least this.")
    ] = None,
    top_fraction: Annotated[
        float | None, typer.Option(help="Keep this best fraction of rows (0-1].")
    ] = None,
    rows_per_file: Annotated[int, typer.Option(min=1, help="Most rows per part file.")] = 5_000_000,
    columns: Annotated[
        str | None,
        typer.Option(
            help="Metadata columns of the kept rows, comma-separated, read from the source "
            "shards (default: url, caption, key, hash when present); score files made with "
            "`score --columns` carry their own."
        ),
    ] = None,
    exclude_urls: Annotated[
        Path | None,
        typer.Option(
            help="Opt-out list: URLs to leave out, one a line (# comments).", callback=input_file
        ),
    ] = None,
    exclude_domains: Annotated[
        Path | None,
        typer.Option(
            help="Opt-out list: domains to leave out, with every host below them.",
            callback=input_file,
        ),
    ] = None,
    force: Annotated[bool, typer.Option(help="Replace an existing --out folder.")] = False,
) -> None:
    """Write part-NNNNN.parquet files of the kept rows and manifest.json, for img2dataset."""
    from dreamrate.aesthetic.filtering.exclusions import load_exclusions
    from dreamrate.aesthetic.filtering.manifest import export_manifest

    if (min_score is None) == (top_fraction is None):
        raise ScoreError("give exactly one of --min-score and --top-fraction")
    if min_score is not None and not math.isfinite(min_score):
        raise ScoreError(f"--min-score: must be a finite number, got {min_score}")
    if top_fraction is not None and not 0 < top_fraction <= 1:
        raise ScoreError(f"--top-fraction: must be in (0, 1], got {top_fraction}")
    summary = export_manifest(
        scores,
        out,
        min_score=min_score,
        top_fraction=top_fraction,
        rows_per_file=rows_per_file,
        columns=tuple(c.strip() for c in columns.split(",") if c.strip()) if columns else None,
        force=force,
        exclusions=load_exclusions(exclude_urls, exclude_domains),
    )
    excluded = sum(summary["excluded"].values())
    typer.echo(
        f"kept {summary['rows_out']:,} of {summary['rows_in']:,} rows "
        f"(aesthetic >= {summary['threshold']:.4g}) in {len(summary['files'])} file(s) in {out}"
        + (f"; {excluded:,} left out by the exclusion lists" if excluded else "")
    )


@export_app.command("dataset")
def dataset_cmd(
    out: Annotated[Path, typer.Option(help="Dataset folder to write.", callback=output_folder)],
    guild: GuildOption = None,
    force: Annotated[bool, typer.Option(help="Replace an existing --out folder.")] = False,
) -> None:
    """Write the community's images, generations and ratings as a shareable dataset."""
    from dreamrate.aesthetic.clip_model import model_spec
    from dreamrate.cli.cli_state import covered, state
    from dreamrate.database_setup import database
    from dreamrate.exports.dataset import export_dataset
    from dreamrate.generation.store import open_image_store

    settings = state.settings
    store = open_image_store(settings)
    store.check()
    model_id = model_spec(settings.embedding.model, settings.embedding.pretrained)[2]

    async def run():  # type: ignore[no-untyped-def]
        async with database(settings) as engine:
            return await export_dataset(
                engine,
                store,
                out,
                embedding_model=model_id,
                guilds=guild,
                force=force,
            )

    counts = asyncio.run(run())
    typer.echo(
        f"wrote {counts['generations']} generations, {counts['images']} images and "
        f"{counts['ratings']} ratings and {counts['comparisons']} choices by "
        f"{counts['raters']} pseudonymous members"
        + (f" and {counts['embeddings']} {model_id} embeddings" if counts["embeddings"] else "")
        + f" of {covered(guild)} to {out}"
    )
