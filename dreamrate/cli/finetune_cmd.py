"""``dreamrate finetune``: a LoRA adapter for the generation model, from fetched images
(``sft``), from the community's choices (``dpo``) or from its ratings (``kto``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dreamrate.cli.checks import input_file, output_folder
from dreamrate.cli.cli_state import state

__all__ = ["finetune_cmd"]


def finetune_cmd(
    data: Annotated[
        Path,
        typer.Option(
            help="sft: fetched images (dreamrate fetch --out); dpo, kto: a dataset export "
            "(dreamrate export dataset --out), whose images come with their prompts."
        ),
    ],
    out: Annotated[
        Path,
        typer.Option(help="Folder for the LoRA, train.json and loss.png.", callback=output_folder),
    ],
    method: Annotated[
        str,
        typer.Option(
            help="sft: imitate --data; dpo: Diffusion-DPO on choices; kto: Diffusion-KTO on "
            "ratings (liked and disliked images)."
        ),
    ] = "sft",
    comparisons: Annotated[
        Path | None,
        typer.Option(
            help="dpo: the choices (comparisons schema; default DATA/comparisons.parquet).",
            callback=input_file,
        ),
    ] = None,
    ratings: Annotated[
        Path | None,
        typer.Option(
            help="kto: the ratings (rating schema; default DATA/ratings.parquet).",
            callback=input_file,
        ),
    ] = None,
    base: Annotated[
        str | None,
        typer.Option(help="diffusers model to adapt (default: the generation model setting)."),
    ] = None,
    steps: Annotated[int, typer.Option(help="Optimiser steps.")] = 1000,
    rank: Annotated[int, typer.Option(help="LoRA rank (and alpha).")] = 8,
    lr: Annotated[float, typer.Option(help="AdamW learning rate.")] = 1e-4,
    resolution: Annotated[int, typer.Option(help="Training image side (multiple of 8).")] = 512,
    batch_size: Annotated[
        int, typer.Option(help="Images (sft, kto) or pairs (dpo) per step, over all processes.")
    ] = 4,
    beta: Annotated[
        float | None,
        typer.Option(help="dpo, kto: pull towards the base model (default 2500 dpo, 5000 kto)."),
    ] = None,
    seed: Annotated[int, typer.Option(min=0, help="Seed of batches, noise and timesteps.")] = 0,
    checkpoint_every: Annotated[int, typer.Option(help="Steps between checkpoints.")] = 100,
    aesthetic_weighting: Annotated[
        bool, typer.Option(help="sft: weigh each image by its aesthetic score.")
    ] = False,
    gradient_checkpointing: Annotated[
        bool, typer.Option(help="Less GPU memory for some speed (large models).")
    ] = False,
    resume: Annotated[
        bool, typer.Option(help="Continue an interrupted run in --out from its last checkpoint.")
    ] = False,
    force: Annotated[bool, typer.Option(help="Replace an existing --out folder.")] = False,
) -> None:
    """Fine-tune the UNet with LoRA (peft): on fetched images, or on the community's choices
    or ratings. Runs data-parallel under `accelerate launch` or `torchrun`."""
    from dreamrate.retraining.finetune import LORA_FILE, FinetuneOptions, finetune

    settings = state.settings
    options = FinetuneOptions(
        method=method,  # type: ignore[arg-type]  # checked by FinetuneOptions.check
        steps=steps,
        rank=rank,
        lr=lr,
        resolution=resolution,
        batch_size=batch_size,
        seed=seed,
        checkpoint_every=checkpoint_every,
        aesthetic_weighting=aesthetic_weighting,
        beta=beta,
        gradient_checkpointing=gradient_checkpointing,
    )
    record = finetune(
        data,
        base or settings.generation.model,
        out,
        options,
        comparisons=comparisons,
        ratings=ratings,
        resume=resume,
        force=force,
        device=settings.generation.device,
    )
    if record.get("processes", 1) > 1 and not _main_process():
        return
    losses = record["losses"]
    tail = losses[-max(1, len(losses) // 10) :]
    seen = record["data"]
    what = (
        f"{seen['images']:,} images"
        if method == "sft"
        else f"{seen['pairs']:,} choices"
        if method == "dpo"
        else f"{seen['liked']:,} liked and {seen['disliked']:,} disliked images"
    )
    typer.echo(
        f"trained {record['steps_done']} steps ({method}) on {what} "
        f"({record['device']}, {record['dtype']}, {record['processes']} process(es)) in "
        f"{record['seconds']:.0f} s; loss {losses[0]:.4f} -> {sum(tail) / len(tail):.4f}; "
        f"LoRA in {out / LORA_FILE}, curve in {out / 'loss.png'}"
    )


def _main_process() -> bool:
    import os

    return os.environ.get("RANK", "0") == "0"
