"""``dreamrate models``: tiny offline models, and a check that the configured models load."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from dreamrate.cli.context import state
from dreamrate.tiny_models import make_tiny_models

__all__ = ["app"]

app = typer.Typer(help="Generation and embedding models.", no_args_is_help=True)


@app.command("make-tiny")
def make_tiny_cmd(
    directory: Annotated[
        Path, typer.Argument(help="Folder to write tiny-sd/ and tiny-clip/ into.")
    ],
) -> None:
    """Write tiny random-weight Stable Diffusion and open_clip models for offline trials."""
    sd, clip = make_tiny_models(directory)
    typer.echo("# tiny models written; select them with:")
    typer.echo(f"export DREAMRATE_GENERATION_MODEL={sd}")
    typer.echo(f"export DREAMRATE_EMBEDDING_MODEL=local-dir:{clip}")


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
