"""``dreamrate finetune``: a LoRA adapter for the generation model, from fetched images."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dreamrate.cli.context import state

__all__ = ["finetune_cmd"]


def finetune_cmd(
    data: Annotated[Path, typer.Option(help="Fetched images (dreamrate fetch --out).")],
    out: Annotated[Path, typer.Option(help="Folder for the LoRA, train.json and loss.png.")],
    base: Annotated[
        str | None,
        typer.Option(help="diffusers model to adapt (default: the generation model setting)."),
    ] = None,
    steps: Annotated[int, typer.Option(help="Optimiser steps.")] = 1000,
    rank: Annotated[int, typer.Option(help="LoRA rank (and alpha).")] = 8,
    lr: Annotated[float, typer.Option(help="AdamW learning rate.")] = 1e-4,
    resolution: Annotated[int, typer.Option(help="Training image side (multiple of 8).")] = 512,
    batch_size: Annotated[int, typer.Option(help="Images per step.")] = 4,
    seed: Annotated[int, typer.Option(help="Seed of batches, noise and timesteps.")] = 0,
    checkpoint_every: Annotated[int, typer.Option(help="Steps between checkpoints.")] = 100,
    aesthetic_weighting: Annotated[
        bool, typer.Option(help="Weigh each image by its aesthetic score.")
    ] = False,
    resume: Annotated[
        bool, typer.Option(help="Continue an interrupted run in --out from its last checkpoint.")
    ] = False,
    force: Annotated[bool, typer.Option(help="Replace an existing --out folder.")] = False,
) -> None:
    """Fine-tune the UNet with LoRA (peft) on fetched images and their captions."""
    from dreamrate.retraining.finetune import LORA_FILE, FinetuneOptions, finetune

    settings = state.settings
    options = FinetuneOptions(
        steps=steps,
        rank=rank,
        lr=lr,
        resolution=resolution,
        batch_size=batch_size,
        seed=seed,
        checkpoint_every=checkpoint_every,
        aesthetic_weighting=aesthetic_weighting,
    )
    record = finetune(
        data,
        base or settings.generation.model,
        out,
        options,
        resume=resume,
        force=force,
        device=settings.generation.device,
    )
    losses = record["losses"]
    tail = losses[-max(1, len(losses) // 10) :]
    typer.echo(
        f"trained {record['steps_done']} steps on {record['data']['images']:,} images "
        f"({record['device']}, {record['dtype']}) in {record['seconds']:.0f} s; "
        f"loss {losses[0]:.4f} -> {sum(tail) / len(tail):.4f}; "
        f"LoRA in {out / LORA_FILE}, curve in {out / 'loss.png'}"
    )
