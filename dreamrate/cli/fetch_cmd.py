"""``dreamrate fetch``: a manifest's images, downloaded with img2dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dreamrate.cli.checks import output_folder

__all__ = ["fetch_cmd"]


def fetch_cmd(
    manifest: Annotated[Path, typer.Option(help="Manifest folder (dreamrate export manifest).")],
    out: Annotated[
        Path,
        typer.Option(help="Folder for the images, captions and scores.", callback=output_folder),
    ],
    image_size: Annotated[int, typer.Option(help="Side of the square images (centre crop).")] = 512,
    processes: Annotated[int, typer.Option(help="Download processes.")] = 1,
    threads: Annotated[int, typer.Option(help="Download threads per process.")] = 32,
    output_format: Annotated[
        str, typer.Option(help="files (one image, caption and json each) or webdataset (tars).")
    ] = "files",
    timeout: Annotated[int, typer.Option(min=1, help="Seconds to wait for one image.")] = 10,
    retries: Annotated[int, typer.Option(min=0, help="Retries of a failed download.")] = 0,
    resume: Annotated[
        bool, typer.Option(help="Continue an interrupted fetch of this manifest into --out.")
    ] = False,
    force: Annotated[bool, typer.Option(help="Replace an existing --out folder.")] = False,
) -> None:
    """Download the manifest's images (opt-out headers honoured) and report what failed."""
    from rich.console import Console
    from rich.table import Table

    from dreamrate.aesthetic.filtering.fetch import fetch_manifest

    record = fetch_manifest(
        manifest,
        out,
        image_size=image_size,
        processes=processes,
        threads=threads,
        output_format=output_format,
        timeout=timeout,
        retries=retries,
        force=force,
        resume=resume,
    )
    table = Table(title=f"fetched from manifest {record['manifest']['id']}")
    table.add_column("outcome")
    table.add_column("images", justify="right")
    table.add_row("fetched", f"{record['fetched']:,}")
    for reason, count in record["failures"].items():
        table.add_row(f"failed: {reason[:80]}", f"{count:,}")
    Console().print(table)
    typer.echo(
        f"fetched {record['fetched']:,} of {record['rows']:,} images into {out} "
        f"({record['failed_to_download']:,} failed to download, "
        f"{record['failed_to_resize']:,} failed to decode or resize) in {record['seconds']:.0f} s"
    )
