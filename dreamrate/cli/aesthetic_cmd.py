"""``dreamrate embed``, ``dreamrate train`` and ``dreamrate predictor ...``."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from dreamrate.cli.checks import folder_problem, input_file, output_file, output_folder
from dreamrate.cli.cli_state import GuildOption, covered, state
from dreamrate.core.errors import DreamrateError

__all__ = ["embed_cmd", "predictor_app", "train_cmd"]

predictor_app = typer.Typer(
    help="Import, export and inspect aesthetic predictors.", no_args_is_help=True
)


class UsageError(DreamrateError):
    """Options that do not fit together."""


def _embedding_model_id(override: str | None = None) -> str:
    from dreamrate.aesthetic.clip_model import model_spec

    if override:
        return override
    emb = state.settings.embedding
    return model_spec(emb.model, emb.pretrained)[2]


def embed_cmd(
    batch_size: Annotated[
        int | None, typer.Option(min=1, help="Images per batch (default: the setting).")
    ] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="Embed at most this many.")] = None,
    workers: Annotated[
        int | None,
        typer.Option(min=1, help="Threads decoding images ahead of the model (default: cores)."),
    ] = None,
) -> None:
    """Compute CLIP embeddings of rated images that lack them (resumable; stop any time)."""
    from dreamrate.aesthetic.clip_model import load_clip
    from dreamrate.aesthetic.embed import embed_rated_images
    from dreamrate.database_setup import database
    from dreamrate.generation.store import open_image_store

    settings = state.settings
    store = open_image_store(settings)
    store.check()  # before CLIP loads: a store that cannot be read fails in one line
    clip = load_clip(
        settings.embedding.model, settings.embedding.pretrained, device=settings.embedding.device
    )

    async def run():
        async with database(settings) as engine:
            return await embed_rated_images(
                engine,
                clip,
                store,
                batch_size=batch_size or settings.embedding.batch_size,
                limit=limit,
                workers=workers,
            )

    summary = asyncio.run(run())
    typer.echo(
        f"embedded {summary.embedded} image(s) with {clip.id} ({clip.dim}-d); "
        f"{summary.already} already had one"
        + (f"; {summary.unreadable} unreadable file(s) skipped" if summary.unreadable else "")
    )


def _print_metrics(result) -> None:  # type: ignore[no-untyped-def]
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Held-out metrics (grouped by prompt, vs held-out mean ratings)")
    keys = {"spearman": "Spearman", "pearson": "Pearson", "mse": "MSE", "pairwise": "pairwise acc."}
    if any("choice_accuracy" in m for m in result.metrics.values()):
        keys["choice_accuracy"] = "held-out choices"  # beside the human ceiling's row
    table.add_column("model")
    for label in keys.values():
        table.add_column(label, justify="right")
    for name, m in result.metrics.items():
        table.add_row(name, *(f"{m[k]:.3f}" if k in m else "" for k in keys))
    Console().print(table)


def train_cmd(
    out: Annotated[
        Path | None,
        typer.Option(
            help="Predictor folder to write (default: predictors dir / --name).",
            callback=output_folder,
        ),
    ] = None,
    name: Annotated[str | None, typer.Option(help="Predictor name.")] = None,
    model: Annotated[
        str, typer.Option(help="ridge (penalty by CV), mlp, or auto (choose by CV).")
    ] = "ridge",
    ratings: Annotated[
        Path | None,
        typer.Option(
            help="Ratings in the rating schema (image_id, rater_id, rating [, rated_at, group]): "
            "what `ratings export` and `export dataset` write.",
            callback=input_file,
        ),
    ] = None,
    comparisons: Annotated[
        Path | None,
        typer.Option(
            help="Pairwise choices, one row per click (image_a, image_b, rater_id, "
            "winner a|b|tie [, group_a, group_b, timestamp]); alone or with --ratings.",
            callback=input_file,
        ),
    ] = None,
    embeddings: Annotated[
        Path | None,
        typer.Option(
            help="Parquet: image_id, embedding (list of float32), every image named.",
            callback=input_file,
        ),
    ] = None,
    embedding_model: Annotated[
        str | None,
        typer.Option(help="Embedding model of --embeddings (default: the configured one)."),
    ] = None,
    min_ratings: Annotated[
        int | None, typer.Option(min=1, help="Ratings an image needs (default: the setting).")
    ] = None,
    ratings_weight: Annotated[
        float | None,
        typer.Option(
            min=0.0,
            max=1.0,
            help="Weight of the ratings against the choices, in [0, 1] (1: ratings only, "
            "0: choices only; default: chosen by held-out performance on both).",
        ),
    ] = None,
    folds: Annotated[int, typer.Option(min=2, max=20, help="Grouped CV folds.")] = 5,
    seed: Annotated[int, typer.Option(min=0, help="Seed for folds and the MLP.")] = 0,
    activate: Annotated[
        bool, typer.Option(help="Make it the predictor that picks images to rate.")
    ] = True,
    force: Annotated[bool, typer.Option(help="Replace an existing --out folder.")] = False,
    guild: GuildOption = None,
) -> None:
    """Train an aesthetic predictor on the community's ratings (or on Parquet files)."""
    from dreamrate.aesthetic.clip_model import embedding_dim
    from dreamrate.aesthetic.training_run import train_and_save
    from dreamrate.database_setup import database
    from dreamrate.ratings.training_data import (
        check_embeddings,
        load_database_data,
        load_files,
    )

    settings = state.settings
    if model not in ("ridge", "mlp", "auto"):
        raise UsageError(f"--model: must be ridge, mlp or auto, not {model!r}")
    files = ratings is not None or comparisons is not None
    if files != (embeddings is not None):
        raise UsageError(
            "--embeddings goes with --ratings and/or --comparisons (or none: the database)"
        )
    if guild and files:
        raise UsageError("--guild reads the database; it does not go with --ratings files")
    model_id = _embedding_model_id(embedding_model)
    emb = settings.embedding
    dim = embedding_dim(model_id) if embedding_model else embedding_dim(emb.model, emb.pretrained)
    name = name or f"dreamrate-{datetime.now(UTC):%Y%m%d-%H%M%S}"
    out = out or settings.predictors_dir / name
    if out.exists() and not force:
        raise UsageError(f"--out: {out} already exists (choose another folder or --force)")
    # Checked, not created: a refused or failed run leaves no folder behind.
    if problem := folder_problem(out):
        raise UsageError(f"--out: {problem}")
    values = settings.rating.values
    scale = {"scale": settings.rating.scale, "min": min(values), "max": max(values)}

    async def from_database():
        async with database(settings) as engine:
            return await load_database_data(
                engine,
                embedding_model=model_id,
                scale=settings.rating.scale,
                guilds=guild,
            )

    if embeddings is not None:
        data = load_files(ratings, comparisons, embeddings, embedding_model=model_id, dim=dim)
    else:
        data = asyncio.run(from_database())
        if len(data.image_ids):
            check_embeddings(data.embeddings, dim, model_id)
    from dreamrate.generation.store import open_image_store

    result = train_and_save(
        data,
        out,
        overwrite=force,
        # The report's highest and lowest scored images, read from the store (paths in it).
        read=open_image_store(settings).read,
        model=model,
        min_ratings=min_ratings or settings.rating.min_ratings_per_image,
        folds=folds,
        seed=seed,
        name=name,
        scale=scale,
        ratings_weight=ratings_weight,
        progress=lambda msg: typer.echo(f"... {msg}", err=True),
    )
    if not files:

        async def register() -> None:
            from dreamrate.aesthetic.predictor_registry import register_predictor

            async with database(settings) as engine:
                await register_predictor(engine, result.predictor, out, activate=activate)

        asyncio.run(register())
    _print_metrics(result)
    from dreamrate.aesthetic.train_joint import sources_line

    if "choices" in result.summary:
        typer.echo(f"learnt from {sources_line(result.summary)}")
    spam = result.effects.spam
    typer.echo(
        f"trained {result.summary['model']} on {result.summary['images']} images"
        + (f" of {covered(guild)}" if not files else "")
        + " "
        f"({result.summary['ratings']} ratings, {result.summary['raters']} raters"
        + (f", {len(spam)} flagged as spam" if spam else "")
        + (
            f", {result.summary['choices']} choices by {result.summary['choosers']} members"
            + (
                f", {result.summary['spam_choosers']} flagged"
                if result.summary["spam_choosers"]
                else ""
            )
            if "choices" in result.summary
            else ""
        )
        + f"); predictor {result.predictor.id} in {out}; report {out / 'report.html'}"
    )


@predictor_app.command("import")
def import_cmd(
    path: Annotated[
        Path, typer.Argument(help="A LAION or Simulacra .pth head.", callback=input_file)
    ],
    out: Annotated[Path, typer.Option(help="Predictor folder to write.", callback=output_folder)],
    kind: Annotated[
        str | None,
        typer.Option(help="laion-v2, laion-v2-relu, laion-v1 or simulacra (default: detect)."),
    ] = None,
    embedding_model: Annotated[
        str | None, typer.Option(help="Embedding model it reads (default: from name/width).")
    ] = None,
    force: Annotated[bool, typer.Option(help="Replace an existing --out folder.")] = False,
) -> None:
    """Convert a published head (loaded with weights_only, never unpickled) into a predictor folder."""
    from dreamrate.aesthetic.interop import import_head
    from dreamrate.aesthetic.predictor import save_predictor

    predictor = import_head(path, kind=kind, embedding_model=embedding_model, name=out.name)
    save_predictor(predictor, out, overwrite=force)
    typer.echo(
        f"imported {predictor.source} as a {predictor.kind} head on {predictor.embedding_model} "
        f"({predictor.dim}-d, input scale {predictor.input_scale:g}) into {out}"
    )


@predictor_app.command("export-laion")
def export_laion_cmd(
    predictor: Annotated[Path, typer.Argument(help="Predictor folder.")],
    out: Annotated[Path, typer.Option(help=".pth file to write.", callback=output_file)],
) -> None:
    """Write an nn.Linear(dim, 1) state dict that LAION's tools load (affine heads only)."""
    from dreamrate.aesthetic.interop import export_laion
    from dreamrate.aesthetic.predictor import load_predictor

    loaded = load_predictor(predictor)
    export_laion(loaded, out)
    typer.echo(f"wrote nn.Linear({loaded.dim}, 1) state dict for {loaded.embedding_model} to {out}")


@predictor_app.command("show")
def show_cmd(predictor: Annotated[Path, typer.Argument(help="Predictor folder.")]) -> None:
    """Print a predictor's metadata as JSON."""
    import json

    from dreamrate.aesthetic.predictor import load_predictor

    typer.echo(json.dumps(load_predictor(predictor).metadata(), indent=2, default=str))


@predictor_app.command("activate")
def activate_cmd(predictor: Annotated[Path, typer.Argument(help="Predictor folder.")]) -> None:
    """Use this predictor to choose which images members are asked to rate."""
    from dreamrate.aesthetic.predictor import load_predictor
    from dreamrate.aesthetic.predictor_registry import register_predictor
    from dreamrate.database_setup import database

    loaded = load_predictor(predictor, embedding_model=_embedding_model_id())

    async def run() -> None:
        async with database(state.settings) as engine:
            await register_predictor(engine, loaded, predictor, activate=True)

    asyncio.run(run())
    typer.echo(f"active predictor: {loaded.name} ({loaded.id})")
