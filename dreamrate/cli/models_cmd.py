"""``dreamrate models``: tiny offline models, and a check that the configured models load."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from dreamrate.cli.checks import output_folder
from dreamrate.cli.cli_state import state
from dreamrate.tiny_models import make_tiny_models, make_toy_model

__all__ = ["app"]

app = typer.Typer(help="Generation and embedding models.", no_args_is_help=True)


@app.command("make-tiny")
def make_tiny_cmd(
    directory: Annotated[
        Path,
        typer.Argument(
            help="Folder to write tiny-sd/ and tiny-clip/ into.", callback=output_folder
        ),
    ],
) -> None:
    """Write tiny random-weight Stable Diffusion and open_clip models for offline trials."""
    sd, clip = make_tiny_models(directory)
    typer.echo("# tiny models written; select them with:")
    typer.echo(f"export DREAMRATE_GENERATION_MODEL={sd}")
    typer.echo(f"export DREAMRATE_EMBEDDING_MODEL=local-dir:{clip}")


@app.command("make-toy")
def make_toy_cmd(
    directory: Annotated[
        Path,
        typer.Argument(
            help="Folder to write the toy model (a diffusers folder) into.", callback=output_folder
        ),
    ],
    seed: Annotated[int, typer.Option(min=0, help="Seed of the world and the weights.")] = 0,
    preset: Annotated[
        str,
        typer.Option(
            help="full (follows colours better; about 8 min on 2 busy cores) or small (the demo's and the suite's; about half)."
        ),
    ] = "full",
    force: Annotated[bool, typer.Option(help="Replace a folder that holds anything.")] = False,
) -> None:
    """Train, on the CPU and deterministically, a small text-to-image model of the toy world
    (shapes, colours, backgrounds, positions and sizes, with captions) that follows its
    captions: its own VAE, a tiny text encoder trained with it and a UNet, as a diffusers folder."""
    record = make_toy_model(directory, seed=seed, preset=preset, force=force)
    typer.echo(f"# toy model trained in {record['seconds']:.0f} s; select it with:")
    typer.echo(f"export DREAMRATE_GENERATION_MODEL={directory.resolve()}")


@app.command("check")
def check_cmd(
    prompt: str = typer.Option("a lighthouse at dusk", help="Prompt of the test image."),
    steps: int = typer.Option(2, min=1, max=50, help="Denoising steps of the test image."),
) -> None:
    """Load the configured generation and embedding models, render one image and embed it."""
    import torch

    from dreamrate.aesthetic.clip_model import load_clip
    from dreamrate.generation.pipeline import load_text2image

    settings = state.settings
    started = time.perf_counter()
    pipeline = load_text2image(settings.generation.model, device=settings.generation.device)
    loaded = time.perf_counter()
    generator = torch.Generator(device="cpu").manual_seed(0)
    image = pipeline(prompt, num_inference_steps=steps, generator=generator).images[0]
    rendered = time.perf_counter()
    clip = load_clip(
        settings.embedding.model, settings.embedding.pretrained, device=settings.embedding.device
    )
    vector = clip.embed_images([image])[0]
    done = time.perf_counter()
    typer.echo(
        f"generation {settings.generation.model}: loaded in {loaded - started:.1f}s, "
        f"{image.width}x{image.height} image in {rendered - loaded:.1f}s"
    )
    typer.echo(
        f"embedding {clip.id}: {clip.dim}-d, norm {float((vector**2).sum() ** 0.5):.3f}, {done - rendered:.1f}s"
    )


@app.command("add")
def add_cmd(
    name: Annotated[str, typer.Argument(help="The name members pick in /dream.")],
    path: Annotated[Path | None, typer.Option(help="A whole diffusers model folder.")] = None,
    lora: Annotated[
        Path | None, typer.Option(help="A LoRA folder (dreamrate finetune --out).")
    ] = None,
    base: Annotated[str | None, typer.Option(help="The model the LoRA was trained on.")] = None,
    replace: Annotated[bool, typer.Option(help="Change a registered name.")] = False,
) -> None:
    """Register a model the bot can serve by name: a diffusers folder, or a LoRA on a base."""
    import asyncio

    from dreamrate.database_setup import database
    from dreamrate.generation.served_models import add_model, spec_for

    spec = spec_for(name, path=path, lora=lora, base=base)

    async def run() -> None:
        async with database(state.settings) as engine:
            await add_model(engine, spec, replace=replace)

    asyncio.run(run())
    what = f"LoRA {spec.path} on {spec.base}" if spec.kind == "lora" else spec.path
    typer.echo(f"registered {name}: {what}")


@app.command("list")
def list_cmd() -> None:
    """The registered models, with what each loads."""
    import asyncio

    from dreamrate.database_setup import database
    from dreamrate.generation.served_models import list_models

    async def run():  # type: ignore[no-untyped-def]
        async with database(state.settings) as engine:
            return await list_models(engine)

    specs = asyncio.run(run())
    if not specs:
        typer.echo("no registered models (add one with `dreamrate models add`)")
    for spec in specs:
        what = f"lora  {spec.path}  on {spec.base}" if spec.kind == "lora" else f"path  {spec.path}"
        typer.echo(f"{spec.name}  {what}")


@app.command("remove")
def remove_cmd(name: Annotated[str, typer.Argument(help="A registered name.")]) -> None:
    """Stop serving a registered model (its files stay where they are)."""
    import asyncio

    from dreamrate.database_setup import database
    from dreamrate.generation.served_models import remove_model

    async def run() -> None:
        async with database(state.settings) as engine:
            await remove_model(engine, name)

    asyncio.run(run())
    typer.echo(f"removed {name}; queued jobs for it will fail with a clear reason")
