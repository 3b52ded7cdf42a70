"""Embedding benchmark: ``dreamrate embed``'s pipeline against the bare forward pass.

The model is open_clip ViT-B-32 with random weights (the real architecture and
preprocessing; no hub at run time), the images the 20 real SAC images in
``../shared/reference`` (PNG, 512 px), read from disk for each batch. Side by side in one
run, medians: (a) the bare forward pass on batches already preprocessed and in memory, (b)
the pipeline (decode + preprocess on threads a batch ahead, the forward pass, unit vectors
out), and (c) the same pipeline with no read-ahead (one thread, in turn) for reference.

Run: .venv/bin/python -m benchmarks.bench_embed [--images 256] [--batch 32] [--repeat 3] [--size 512]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from benchmarks.common import machine, median, print_table
from dreamrate.aesthetic.clip_model import ClipModel
from dreamrate.aesthetic.embed_pipeline import default_workers, iter_embeddings

SAC = Path(__file__).resolve().parents[2] / "shared" / "reference" / "simulacra-aesthetic-models"


def _model(device: str) -> ClipModel:
    import open_clip

    model, _, preprocess = open_clip.create_model_and_transforms(
        "ViT-B-32", pretrained=None, device=device
    )
    model.eval()
    return ClipModel(model, preprocess, "ViT-B-32/random", int(model.visual.output_dim), device)


def _images(folder: Path, count: int, size: int | None) -> list[tuple[int, Path]]:
    sources = sorted((SAC / "demo_images").glob("*/*.png"))
    if not sources:
        import numpy as np
        from PIL import Image

        rng = np.random.default_rng(0)
        sources = []
        for k in range(20):
            path = folder / f"synthetic_{k}.png"
            Image.fromarray(rng.integers(0, 255, (512, 512, 3), dtype=np.uint8)).save(path)
            sources.append(path)
    items = []
    for k in range(count):
        path = folder / f"{k}.png"
        if size is None:
            shutil.copyfile(sources[k % len(sources)], path)
        else:  # as Stable Diffusion writes them: larger PNGs, more to decode and resize
            from PIL import Image

            with Image.open(sources[k % len(sources)]) as im:
                im.convert("RGB").resize((size, size), Image.Resampling.BICUBIC).save(path)
        items.append((k, path))
    return items


def main() -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--size", type=int, default=None, help="resize the images to SIZE px")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    print(f"machine: {machine()}")
    work = Path(tempfile.mkdtemp(prefix="dreamrate-bench-embed-"))
    try:
        clip = _model(args.device)
        items = _images(work, args.images, args.size)
        from PIL import Image

        with Image.open(items[0][1]) as first:
            size = first.size
        tensors = [clip.preprocess(Image.open(p).convert("RGB")) for _, p in items]
        batches = [
            torch.stack(tensors[i : i + args.batch]) for i in range(0, len(tensors), args.batch)
        ]
        clip.embed_batch(batches[0])  # warm up

        def bare() -> float:
            started = time.perf_counter()
            for batch in batches:
                clip.embed_batch(batch)
            return time.perf_counter() - started

        def pipeline(workers: int | None) -> float:
            started = time.perf_counter()
            for _ in iter_embeddings(clip, items, batch_size=args.batch, workers=workers):
                pass
            return time.perf_counter() - started

        def in_turn() -> float:  # no read-ahead: decode a batch, then run it
            started = time.perf_counter()
            for i in range(0, len(items), args.batch):
                chunk = [
                    clip.preprocess(Image.open(p).convert("RGB"))
                    for _, p in items[i : i + args.batch]
                ]
                clip.embed_batch(torch.stack(chunk))
            return time.perf_counter() - started

        runs = {"bare": [], "pipeline": [], "turn": []}
        for _ in range(args.repeat):  # interleaved, so drift hits all three alike
            runs["bare"].append(bare())
            runs["pipeline"].append(pipeline(None))
            runs["turn"].append(in_turn())
        rate = {k: args.images / median(v) for k, v in runs.items()}
        print_table(
            f"Embedding {args.images} images ({size[0]}x{size[1]} PNG) with ViT-B-32 on "
            f"{args.device}, batches of {args.batch}, median of {args.repeat}",
            ["run", "images/s", "vs bare forward"],
            [
                ["(a) bare forward pass, preprocessed batches in memory", f"{rate['bare']:.1f}", "100%"],
                [f"(b) dreamrate embed pipeline ({default_workers()} decode threads, a batch ahead)", f"{rate['pipeline']:.1f}", f"{rate['pipeline'] / rate['bare']:.0%}"],
                ["(c) decode then forward, in turn", f"{rate['turn']:.1f}", f"{rate['turn'] / rate['bare']:.0%}"],
            ],
        )  # fmt: skip
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
