"""The demo's second half: from the community's predictor to a model judged in the arena.

A sample of real images (small PNGs of coloured scenes) is served by a local HTTP server
on 127.0.0.1 and embedded with the demo's CLIP model into a clip-retrieval folder; the
predictor scores it, the manifest keeps the best quarter, ``fetch`` downloads those
images through img2dataset, ``finetune`` trains a LoRA of the tiny model on them, the LoRA
is registered, the same prompts and seeds are rendered before and after and scored with
the predictor, and the members play one arena round of the old model against the new.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["retrain_stages"]

SAMPLE_IMAGES = 120
BEFORE_AFTER_PROMPTS = (
    "a lighthouse at dawn",
    "a fox in the snow",
    "a lantern festival",
    "an orchard in autumn",
)
SHAPES = ("circle", "square", "stripe", "sun")
COLOURS = {
    "red": (200, 40, 40), "orange": (230, 140, 40), "yellow": (235, 220, 70), "green": (60, 170, 80),
    "teal": (40, 160, 160), "blue": (50, 80, 200), "purple": (130, 60, 170), "grey": (128, 128, 128),
}  # fmt: skip


def _sample(folder: Path, count: int, seed: int) -> list[tuple[str, str]]:
    """``count`` PNGs of a shape on a background, and their captions."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    names = list(COLOURS)
    written = []
    for i in range(count):
        back, fore = rng.choice(names, 2, replace=False)
        shape = SHAPES[i % len(SHAPES)]
        light = float(rng.uniform(0.5, 1.4))
        colour = tuple(int(min(255, c * light)) for c in COLOURS[back])
        image = Image.new("RGB", (96, 96), colour)  # type: ignore[arg-type]
        draw = ImageDraw.Draw(image)
        x, y = (int(v) for v in rng.integers(20, 76, 2))
        r = int(rng.integers(10, 30))
        box = (x - r, y - r, x + r, y + r)
        if shape == "circle" or shape == "sun":
            draw.ellipse(box, fill=COLOURS[fore])
        elif shape == "square":
            draw.rectangle(box, fill=COLOURS[fore])
        else:
            draw.rectangle((0, y - r // 2, 96, y + r // 2), fill=COLOURS[fore])
        name = f"{i:05d}.png"
        image.save(folder / name)
        written.append((name, f"a {fore} {shape} on {back}"))
    return written


@contextlib.contextmanager
def _serving(folder: Path) -> Iterator[str]:
    """A local HTTP server on 127.0.0.1 serving ``folder``; yields its base URL."""

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(folder)))
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def _write_shard(folder: Path, vectors: np.ndarray, urls: list[str], captions: list[str]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    (folder / "img_emb").mkdir(parents=True, exist_ok=True)
    (folder / "metadata").mkdir(parents=True, exist_ok=True)
    np.save(folder / "img_emb" / "img_emb_0.npy", vectors.astype(np.float16))
    keys = [f"{i:09d}" for i in range(len(urls))]
    pq.write_table(
        pa.table({"url": urls, "caption": captions, "key": keys}),
        folder / "metadata" / "metadata_0.parquet",
    )


def _scores_of(pipeline: Any, clip: Any, predictor: Any, seeds: range) -> np.ndarray:
    import torch

    images = []
    for prompt in BEFORE_AFTER_PROMPTS:
        for seed in seeds:
            generator = torch.Generator().manual_seed(seed)
            images.append(
                pipeline(
                    prompt, num_inference_steps=2, guidance_scale=0.0, generator=generator
                ).images[0]
            )
    return predictor.predict(clip.embed_images(images))


async def retrain_stages(
    settings: Any,
    engine: Any,
    clip: Any,
    folder: Path,
    predictor: Any,
    summary: Any,
    seed: int,
    say: Any,
    arena_round: Any,
) -> None:
    """Everything after the predictor, filling ``summary``'s retrain fields."""
    from dreamrate.aesthetic.filtering.engines import run_local
    from dreamrate.aesthetic.filtering.fetch import fetch_manifest
    from dreamrate.aesthetic.filtering.manifest import export_manifest
    from dreamrate.aesthetic.filtering.reader import discover_shards
    from dreamrate.generation.pipeline import load_text2image
    from dreamrate.generation.registry import add_model, spec_for
    from dreamrate.retraining.finetune import FinetuneOptions, finetune

    say(f"a sample of {SAMPLE_IMAGES} real images, served on 127.0.0.1 and embedded with CLIP")
    sample = _sample(folder / "sample-images", SAMPLE_IMAGES, seed)
    from PIL import Image

    vectors = clip.embed_images(
        [Image.open(folder / "sample-images" / n).convert("RGB") for n, _ in sample]
    )
    with _serving(folder / "sample-images") as base_url:
        shards_dir = folder / "laion-sample"
        _write_shard(
            shards_dir, vectors, [f"{base_url}/{n}" for n, _ in sample], [c for _, c in sample]
        )
        say(
            "scoring the sample with the community's predictor; the manifest keeps the best quarter"
        )
        shards, _ = discover_shards(str(shards_dir))
        results = run_local(shards, predictor, str(folder / "scored" / "scores"), workers=1)
        summary.rows_scored = sum(r.rows for r in results)
        manifest = export_manifest(
            folder / "scored" / "scores", folder / "manifest", top_fraction=0.25
        )
        summary.rows_kept = int(manifest["rows_out"])
        say("fetching the kept images with img2dataset")
        # On this thread (img2dataset sets a signal handler); nothing else runs meanwhile.
        fetched = fetch_manifest(
            folder / "manifest", folder / "fetched", image_size=64, threads=8, timeout=5
        )
    summary.fetched = int(fetched["fetched"])

    model = settings.generation.model
    say(f"fine-tuning a LoRA of the generation model on the {summary.fetched} fetched images")
    options = FinetuneOptions(steps=40, rank=4, lr=1e-2, resolution=64, batch_size=4, seed=seed)
    record = await asyncio.to_thread(
        finetune, folder / "fetched", model, folder / "lora", options, show_progress=False
    )
    summary.finetune_steps = int(record["steps_done"])
    await add_model(engine, spec_for("community-v1", path=None, lora=folder / "lora", base=model))

    say("rendering the same prompts and seeds before and after, scored by the predictor")

    def before_after() -> tuple[float, float]:
        pipeline = load_text2image(model, device="cpu")
        before = _scores_of(pipeline, clip, predictor, range(seed, seed + 3))
        pipeline.load_lora_weights(str(folder / "lora"))
        after = _scores_of(pipeline, clip, predictor, range(seed, seed + 3))
        return float(before.mean()), float(after.mean())

    summary.aesthetic_before, summary.aesthetic_after = await asyncio.to_thread(before_after)
    say("an arena round: the base against community-v1, judged blind by the members")
    summary.arena_judgements, summary.arena_win_rate = await arena_round("community-v1")
