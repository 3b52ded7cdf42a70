"""``dreamrate synthetic``: data with a known hidden taste, to try the trainer offline."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dreamrate.cli.checks import output_folder

__all__ = ["app"]

app = typer.Typer(help="Synthetic data with a known hidden taste.", no_args_is_help=True)


@app.command("panel")
def panel_cmd(
    out: Annotated[
        Path,
        typer.Option(
            help="Folder for ratings.parquet and embeddings.parquet.", callback=output_folder
        ),
    ],
    images: Annotated[int, typer.Option(min=20, help="Rated images.")] = 2000,
    ratings_per_image: Annotated[
        float, typer.Option(min=0.5, help="Average ratings per image.")
    ] = 3.0,
    raters: Annotated[int, typer.Option(min=2, help="Raters (5% of them spammers).")] = 200,
    dim: Annotated[int, typer.Option(min=2, help="Embedding width (768 for ViT-L-14).")] = 768,
    choices: Annotated[
        int,
        typer.Option(min=0, help="Also write comparisons.parquet with this many clicks (0: none)."),
    ] = 0,
    seed: Annotated[int, typer.Option(min=0, help="Seed.")] = 0,
) -> None:
    """Write a rated synthetic community in the files ``dreamrate train`` reads, plus the
    hidden truth (``truth.parquet``) to check a predictor against; with ``--choices``, also
    the community's pairwise choices from the same hidden taste."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from dreamrate.aesthetic.synthetic import make_world
    from dreamrate.core.atomic import atomic_file
    from dreamrate.core.errors import StorageError
    from dreamrate.core.paths import ensure_writable_dir
    from dreamrate.ratings.schema import write_ratings

    ensure_writable_dir(out, "--out")
    world = make_world(images, dim=dim, n_raters=raters, seed=seed)
    rng = np.random.default_rng(seed)
    img, rat, val = world.random_ratings(round(images * ratings_per_image), rng)
    rows = [
        {"image_id": int(i), "rater_id": f"rater-{r}", "rating": float(v), "group": f"prompt-{g}"}
        for i, r, v, g in zip(img, rat, val, world.groups[img], strict=True)
    ]
    write_ratings(rows, out / "ratings.parquet", StorageError)
    column = pa.FixedSizeListArray.from_arrays(pa.array(world.embeddings.reshape(-1)), dim)
    ids = np.arange(images, dtype=np.int64)
    for name, table in (
        ("embeddings", pa.table({"image_id": ids, "embedding": column})),
        ("truth", pa.table({"image_id": ids, "truth": world.truth})),
    ):
        with atomic_file(out / f"{name}.parquet", StorageError) as tmp:
            pq.write_table(table, tmp)
    said = f"wrote {len(img)} ratings of {images} images by {raters} raters"
    if choices:
        a, b, who, winner = world.random_choices(choices, rng)
        table = pa.table(
            {
                "image_a": pa.array(a, pa.int64()),
                "image_b": pa.array(b, pa.int64()),
                "rater_id": [f"rater-{r}" for r in who],
                "winner": [str(w) for w in winner],
                "group_a": [f"prompt-{g}" for g in world.groups[a]],
                "group_b": [f"prompt-{g}" for g in world.groups[b]],
            }
        )
        with atomic_file(out / "comparisons.parquet", StorageError) as tmp:
            pq.write_table(table, tmp)
        said += f" and {choices} choices"
    typer.echo(f"{said} to {out}")


@app.command("shards")
def shards_cmd(
    out: Annotated[
        Path, typer.Option(help="Folder for img_emb/ and metadata/.", callback=output_folder)
    ],
    shards: Annotated[int, typer.Option(min=1, help="Number of shards.")] = 2,
    rows: Annotated[int, typer.Option(min=1, help="Rows per shard.")] = 10_000,
    dim: Annotated[int, typer.Option(min=2, help="Embedding width (768 for ViT-L-14).")] = 768,
    dtype: Annotated[str, typer.Option(help="float16 or float32.")] = "float16",
    seed: Annotated[int, typer.Option(min=0, help="Seed.")] = 0,
) -> None:
    """Write a clip-retrieval embedding folder (img_emb_N.npy + metadata_N.parquet) of unit
    vectors with url, caption and key columns, to try scoring offline."""
    from dreamrate.aesthetic.synthetic import write_clip_retrieval
    from dreamrate.core.errors import DreamrateError
    from dreamrate.core.paths import ensure_writable_dir

    if dtype not in ("float16", "float32"):
        raise DreamrateError(f"--dtype: must be float16 or float32, not {dtype!r}")
    ensure_writable_dir(out, "--out")
    write_clip_retrieval(out, shards=shards, rows=rows, dim=dim, dtype=dtype, seed=seed)
    typer.echo(f"wrote {shards} shard(s) of {rows:,} {dim}-d {dtype} embeddings to {out}")
