"""``dreamrate demo``: the whole loop offline, with a local Discord-compatible server."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Annotated

import typer

from dreamrate.cli.checks import output_folder

__all__ = ["demo_cmd"]


def demo_cmd(
    folder: Annotated[
        Path,
        typer.Option(
            "--dir", help="Folder for everything the demo writes.", callback=output_folder
        ),
    ] = Path("demo"),
    members: Annotated[int, typer.Option(min=3, max=50, help="Community members.")] = 8,
    prompts: Annotated[int, typer.Option(min=10, max=100, help="/dream requests.")] = 32,
    images: Annotated[int, typer.Option(min=2, max=4, help="Images per request.")] = 2,
    pace: Annotated[
        float, typer.Option(min=0.0, help="Seconds between one member's reactions.")
    ] = 1.1,
    web: Annotated[
        bool,
        typer.Option(
            "--web", help="Afterwards, serve the web home on 127.0.0.1 with a one-click login."
        ),
    ] = False,
    web_port: Annotated[
        int, typer.Option("--web-port", min=1, max=65535, help="Port for --web (else a free one).")
    ] = 8000,
) -> None:
    """Play a small community end to end: /dream, emoji ratings, embed, train, score, fetch,
    fine-tune, arena, export."""
    import logging
    import os

    from rich.console import Console
    from rich.table import Table

    from dreamrate.demo import prepare_folder, run_demo

    console = Console()
    folder = prepare_folder(folder)
    # The demo narrates; the bot's, the server's and the libraries' logs stay quiet.
    for name in (
        "aiohttp",
        "discord",
        "bot",
        "generation",
        "aesthetic",
        "ratings",
        "db",
        "dreamrate",
    ):
        logging.getLogger(name).setLevel(logging.WARNING)
    # Real models are used when configured; otherwise the toy model is trained and a tiny
    # CLIP written.
    generation = os.environ.get("DREAMRATE_GENERATION_MODEL")
    embedding = os.environ.get("DREAMRATE_EMBEDDING_MODEL")
    summary = asyncio.run(
        run_demo(
            folder,
            members=members,
            prompts=prompts,
            images_per_prompt=images,
            generation_model=generation,
            embedding_model=embedding,
            pace=pace,
            say=lambda text: console.print(f"[bold]demo[/bold] {text}"),
        )
    )
    table = Table(title=f"dreamrate demo ({summary.seconds:.0f} s)", show_header=False)
    table.add_column(justify="left")
    table.add_column(justify="left")
    ours, base = summary.metrics["dreamrate"], summary.metrics["baseline"]
    rows = [
        ("jobs / images", f"{summary.jobs} / {summary.images}"),
        (
            "ratings recorded",
            f"{summary.ratings} of {summary.reactions} reactions "
            f"({summary.opted_out_reactions} from the opted-out member, not recorded)",
        ),
        ("raters flagged as spam", str(summary.spam_raters)),
        (
            "held-out Spearman vs mean ratings",
            f"{ours['spearman']:.3f} (baseline {base['spearman']:.3f})",
        ),
        ("held-out Spearman vs the hidden taste", f"{summary.spearman_vs_taste:.3f}"),
        (
            "pool rows scored / kept (top 25 %)",
            f"{summary.rows_scored:,} / {summary.rows_kept:,}",
        ),
        ("images fetched (img2dataset)", f"{summary.fetched:,}"),
        ("LoRA fine-tune steps", str(summary.finetune_steps)),
        (
            "predicted aesthetic, same prompts and seeds",
            f"{summary.aesthetic_before:.3f} before -> {summary.aesthetic_after:.3f} after",
        ),
        (
            "hidden taste, same prompts and seeds",
            f"{summary.taste_before:.3f} before -> {summary.taste_after:.3f} after "
            f"(gain 95 % CI {summary.taste_gain_ci[0]:+.3f} to {summary.taste_gain_ci[1]:+.3f})",
        ),
        (
            "arena: community-v1 against the base",
            f"won {summary.arena_win_rate:.0%} of {summary.arena_judgements} blind judgement(s) "
            f"(95 % CI {summary.arena_win_rate_ci[0]:.0%} to {summary.arena_win_rate_ci[1]:.0%})",
        ),
    ]
    for name, value in rows:
        table.add_row(name, value)
    console.print(table)
    for name, path in summary.paths.items():  # whole paths, never cut to the terminal width
        typer.echo(f"{name}: {path}")
    if web:
        from dreamrate.demo_web import serve_demo_web

        def ready(url: str) -> None:
            typer.echo(
                f"web home: {url}  (one click on the local Discord's page logs you in as a "
                "member, or as 'moderator', who also sees the maintainers' page; Ctrl-C stops)"
            )

        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(serve_demo_web(folder, members=members, port=web_port, ready=ready))
