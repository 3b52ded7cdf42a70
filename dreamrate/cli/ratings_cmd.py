"""``dreamrate ratings``: export the community's current ratings."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer

from dreamrate.cli.checks import output_file
from dreamrate.cli.cli_state import GuildOption, covered, state

__all__ = ["app"]

app = typer.Typer(help="Ratings recorded from reactions.", no_args_is_help=True)


@app.command("export")
def export_cmd(
    out: Annotated[
        Path,
        typer.Option("--out", help="File to write: .parquet or .jsonl.", callback=output_file),
    ],
    guild: GuildOption = None,
) -> None:
    """Write one row per counted rating: image_id, rater_id, rating, scale, rated_at, group, job_id, message_id, source."""
    from dreamrate.database_setup import database
    from dreamrate.exports.rating_export import export_ratings

    async def run() -> int:
        async with database(state.settings) as engine:
            return await export_ratings(engine, out, guilds=guild)

    typer.echo(f"wrote {asyncio.run(run())} ratings of {covered(guild)} to {out}")


comparisons_app = typer.Typer(
    help="Choices between two images recorded from reactions.", no_args_is_help=True
)


@comparisons_app.command("export")
def comparisons_export_cmd(
    out: Annotated[
        Path,
        typer.Option("--out", help="File to write: .parquet or .jsonl.", callback=output_file),
    ],
    guild: GuildOption = None,
) -> None:
    """Write one row per counted choice: image_a, image_b, rater_id, winner, group_a, group_b, timestamp, message_id."""
    from dreamrate.database_setup import database
    from dreamrate.exports.choice_export import export_choices

    async def run() -> int:
        async with database(state.settings) as engine:
            return await export_choices(engine, out, guilds=guild)

    typer.echo(f"wrote {asyncio.run(run())} choices of {covered(guild)} to {out}")
