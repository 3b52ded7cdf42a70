"""``dreamrate arena report``: how the community judged models against each other."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path
from typing import Annotated

import typer

from dreamrate.cli.cli_state import GuildOption, state

__all__ = ["app"]

app = typer.Typer(help="Blind comparisons of models (/arena).", no_args_is_help=True)


@app.command("report")
def report_cmd(
    models: Annotated[
        str | None, typer.Option(help="Two models, A,B: only their rounds (default: every pair).")
    ] = None,
    predictor: Annotated[
        Path | None,
        typer.Option(help="Predictor for the aesthetic difference (default: the active one)."),
    ] = None,
    guild: GuildOption = None,
) -> None:
    """Each pair's win rate with its 95 % interval and judgements, and the difference in
    predicted aesthetic over the same prompts."""
    from rich.console import Console
    from rich.table import Table

    from dreamrate.aesthetic.clip_model import model_spec
    from dreamrate.aesthetic.predictor_registry import active_predictor_path
    from dreamrate.community.arena_results import ArenaError, arena_report
    from dreamrate.database_setup import database

    pair: tuple[str, str] | None = None
    if models is not None:
        parts = [m.strip() for m in models.split(",")]
        if len(parts) != 2 or not all(parts):
            raise ArenaError(f"--models: two models as A,B, got {models!r}")
        pair = (parts[0], parts[1])
        if pair[0] == pair[1]:
            raise ArenaError(f"--models: an arena needs two different models, not {pair[0]} twice")
    settings = state.settings
    emb = settings.embedding

    async def run():  # type: ignore[no-untyped-def]
        async with database(settings) as engine:
            chosen = predictor or await active_predictor_path(engine)
            return await arena_report(
                engine,
                models=pair,
                predictor_dir=chosen,
                embedding_model=model_spec(emb.model, emb.pretrained)[2] if chosen else None,
                guilds=guild,
            )

    result = asyncio.run(run())
    if not result.pairs:
        typer.echo("no arena judgements yet (start rounds with /arena)")
        return
    table = Table(title="arena: the first model's win rate (ties count half)")
    for column in (
        "first",
        "second",
        "judgements",
        "wins / ties / losses",
        "win rate",
        "95 % interval",
        "aesthetic first - second",
    ):
        table.add_column(
            column, justify="right" if column != "first" and column != "second" else "left"
        )
    for p in result.pairs:
        lo, hi = p.interval
        rounds, difference = result.aesthetic.get((p.first, p.second), (0, math.nan))
        table.add_row(
            p.first,
            p.second,
            str(p.judgements),
            f"{p.wins} / {p.ties} / {p.losses}",
            f"{p.win_rate:.1%}",
            f"{lo:.1%} - {hi:.1%}",
            f"{difference:+.3f} over {rounds} round(s)" if rounds else "-",
        )
    Console(width=160).print(table)
