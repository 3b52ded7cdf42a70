"""The loop on a CUDA GPU: make-toy, the loop benchmark and a DPO step, as one prepared run.

For a machine with a CUDA GPU (nothing here runs without one):

1. ``make-toy`` trains the toy model (on the GPU: the same code, seconds instead of minutes);
2. ``benchmarks/bench_loop.py --device cuda`` plays the whole loop and prints its table;
3. ``finetune`` times a few steps of each method (sft, dpo, kto) on the toy model and, with
   ``--sd PATH`` (a local Stable Diffusion 1.x/2.x diffusers folder, e.g. a copy of
   ``stabilityai/sd-turbo``), on a real checkpoint at 512 px: milliseconds per step and
   peak GPU memory, in bf16 (fp16 where the GPU lacks bf16), SDPA attention, with and
   without gradient checkpointing.

Run: .venv/bin/python -m benchmarks.bench_gpu [--work DIR] [--sd PATH] [--quick]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import machine, print_table


def _finetune_row(
    model: Path, data: Path, method: str, resolution: int, out: Path, *, checkpointing: bool
) -> list[object]:
    import torch

    from dreamrate.retraining.finetune import FinetuneOptions, finetune

    torch.cuda.reset_peak_memory_stats()
    options = FinetuneOptions(
        method=method,  # type: ignore[arg-type]
        steps=20,
        rank=8,
        lr=1e-4,
        resolution=resolution,
        batch_size=4,
        checkpoint_every=1000,
        gradient_checkpointing=checkpointing,
    )
    record = finetune(
        data, str(model), out, options, device="cuda", show_progress=False, force=True
    )
    peak = torch.cuda.max_memory_allocated() / 2**30
    return [
        model.name,
        method,
        f"{resolution} px",
        "on" if checkpointing else "off",
        record["mixed_precision"],
        f"{record['seconds_per_step'] * 1000:.0f} ms",
        f"{peak:.2f} GiB",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path)
    parser.add_argument("--sd", type=Path, help="a local Stable Diffusion diffusers folder")
    parser.add_argument("--quick", action="store_true", help="bench_loop --quick")
    args = parser.parse_args()
    import torch

    if not torch.cuda.is_available():
        sys.exit("error: no CUDA GPU here (this script is for a machine with one)")
    work = args.work or Path(tempfile.mkdtemp(prefix="dreamrate-gpu-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"machine: {machine()}, {torch.cuda.get_device_name(0)}", flush=True)

    from dreamrate.generation.toy_model import train_toy_model

    toy = work / "toy"
    if not (toy / "model_index.json").is_file():
        toy.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        record = train_toy_model(toy, seed=0, config="full", show_progress=False, device="cuda")
        print(f"make-toy on the GPU: {time.perf_counter() - started:.1f} s ({record['seconds']} s)")

    command = [
        sys.executable,
        "-m",
        "benchmarks.bench_loop",
        "--device",
        "cuda",
        "--work",
        str(work),
    ]
    if args.quick:
        command.append("--quick")
    subprocess.run(command, check=True)

    # The loop's community dataset and fetched top set serve as the methods' data.
    rows = []
    data = {"sft": work / "fetched-top", "dpo": work / "community", "kto": work / "community"}
    for method, folder in data.items():
        rows.append(
            _finetune_row(toy, folder, method, 32, work / f"time-{method}", checkpointing=False)
        )
    if args.sd is not None:
        from dreamrate.generation.toy_world import sample_world

        # The loop's data, at 512 px: the timing does not depend on what the images show.
        big = work / "fetched-512"
        if not big.exists():
            from PIL import Image

            shard = big / "00000"
            shard.mkdir(parents=True)
            _, captions, pixels = sample_world(64, 5, 512)
            for i, (caption, array) in enumerate(zip(captions, pixels, strict=True)):
                Image.fromarray(array).save(shard / f"{i:09d}.png")
                (shard / f"{i:09d}.txt").write_text(caption)
                (shard / f"{i:09d}.json").write_text(json.dumps({"url": str(i)}))
        for checkpointing in (False, True):
            rows.append(
                _finetune_row(
                    args.sd, big, "sft", 512, work / "time-sd", checkpointing=checkpointing
                )
            )
            rows.append(
                _finetune_row(
                    args.sd, work / "community", "dpo", 512, work / "time-sd-dpo",
                    checkpointing=checkpointing,
                )
            )  # fmt: skip
    print_table(
        f"finetune on {torch.cuda.get_device_name(0)} (batch 4, rank 8, 20 steps, median step)",
        [
            "model",
            "method",
            "resolution",
            "grad. checkpointing",
            "precision",
            "per step",
            "peak memory",
        ],
        rows,
    )
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
