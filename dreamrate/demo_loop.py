"""The demo's second half: from the community's predictor to a model judged in the arena.

A pool of the toy world's captioned images is served by a local HTTP server on 127.0.0.1 and
embedded with the demo's CLIP model into a clip-retrieval folder; the predictor scores it,
the manifest keeps the best quarter, ``fetch`` downloads those images through img2dataset,
``finetune`` trains a LoRA of the model on them, the LoRA is registered, the same prompts
and seeds are rendered before and after, scored by the predictor and by the community's
hidden taste (with a paired interval), and the members play arena rounds of the old model
against the new.
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

SAMPLE_IMAGES = 400
KEEP = 0.25
#: What the before/after renders are asked for: colours left unsaid, so taste has room.
BEFORE_AFTER_PROMPTS = (
    "a circle",
    "a square",
    "a shape",
    "a large shape",
    "a triangle",
    "a small shape",
)
BEFORE_AFTER_SEEDS = 8
FINETUNE = {"steps": 80, "rank": 8, "lr": 1e-3, "batch_size": 8}


def _sample(folder: Path, count: int, seed: int, size: int) -> list[tuple[str, str]]:
    """``count`` PNGs of the toy world and their captions."""
    from PIL import Image

    from dreamrate.generation.toy_world import sample_world

    folder.mkdir(parents=True, exist_ok=True)
    _, captions, pixels = sample_world(count, seed + 101, size)
    written = []
    for i, (caption, array) in enumerate(zip(captions, pixels, strict=True)):
        name = f"{i:05d}.png"
        Image.fromarray(array).save(folder / name)
        written.append((name, caption))
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


def _renders(pipeline: Any, seed: int) -> list[Any]:
    """The before/after prompts at the same seeds, with the model's own steps and guidance."""
    import torch

    from dreamrate.generation.model_info import model_defaults

    defaults = model_defaults(pipeline.name_or_path)
    prompts = [p for p in BEFORE_AFTER_PROMPTS for _ in range(BEFORE_AFTER_SEEDS)]
    seeds = [seed + k for _ in BEFORE_AFTER_PROMPTS for k in range(BEFORE_AFTER_SEEDS)]
    return pipeline(
        prompt=prompts,
        num_inference_steps=defaults.steps,
        guidance_scale=defaults.guidance,
        width=defaults.width,
        height=defaults.height,
        generator=[torch.Generator().manual_seed(s) for s in seeds],
    ).images


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
    from dreamrate.generation.model_info import model_defaults
    from dreamrate.generation.pipeline import load_text2image
    from dreamrate.generation.served_models import add_model, spec_for
    from dreamrate.ratings.arena_stats import paired_gain
    from dreamrate.retraining.finetune import FinetuneOptions, finetune
    from dreamrate.toy_community import tastes_of

    model = settings.generation.model
    size = model_defaults(model).width
    say(f"a pool of {SAMPLE_IMAGES} images of the toy world, served on 127.0.0.1 and embedded")
    sample = _sample(folder / "sample-images", SAMPLE_IMAGES, seed, size)
    from PIL import Image

    vectors = clip.embed_images(
        [Image.open(folder / "sample-images" / n).convert("RGB") for n, _ in sample]
    )
    with _serving(folder / "sample-images") as base_url:
        shards_dir = folder / "laion-sample"
        _write_shard(
            shards_dir, vectors, [f"{base_url}/{n}" for n, _ in sample], [c for _, c in sample]
        )
        say("scoring the pool with the community's predictor; the manifest keeps the best quarter")
        shards, _ = discover_shards(str(shards_dir))
        results = run_local(shards, predictor, str(folder / "scored" / "scores"), workers=1)
        summary.rows_scored = sum(r.rows for r in results)
        manifest = export_manifest(
            folder / "scored" / "scores", folder / "manifest", top_fraction=KEEP
        )
        summary.rows_kept = int(manifest["rows_out"])
        say("fetching the kept images with img2dataset")
        # On this thread (img2dataset sets a signal handler); nothing else runs meanwhile.
        fetched = fetch_manifest(
            folder / "manifest", folder / "fetched", image_size=size, threads=8, timeout=5
        )
    summary.fetched = int(fetched["fetched"])

    say(f"fine-tuning a LoRA of the generation model on the {summary.fetched} fetched images")
    options = FinetuneOptions(resolution=size, seed=seed, checkpoint_every=1000, **FINETUNE)  # type: ignore[arg-type]
    record = await asyncio.to_thread(
        finetune, folder / "fetched", model, folder / "lora", options, show_progress=False
    )
    summary.finetune_steps = int(record["steps_done"])
    await add_model(engine, spec_for("community-v1", path=None, lora=folder / "lora", base=model))

    say("rendering the same prompts and seeds before and after: the predictor and the hidden taste")

    def before_after() -> tuple[list[Any], list[Any]]:
        pipeline = load_text2image(model, device="cpu")
        before = _renders(pipeline, seed)
        pipeline.load_lora_weights(str(folder / "lora"))
        return before, _renders(pipeline, seed)

    before, after = await asyncio.to_thread(before_after)
    summary.aesthetic_before = float(predictor.predict(clip.embed_images(before)).mean())
    summary.aesthetic_after = float(predictor.predict(clip.embed_images(after)).mean())
    taste_before, taste_after = tastes_of(before), tastes_of(after)
    gain = paired_gain(taste_before, taste_after)
    summary.taste_before, summary.taste_after = (
        float(taste_before.mean()),
        float(taste_after.mean()),
    )
    summary.taste_gain_ci = (gain.low, gain.high)
    say("arena rounds: the base against community-v1, judged blind by the members")
    (
        summary.arena_judgements,
        summary.arena_win_rate,
        summary.arena_win_rate_ci,
    ) = await arena_round("community-v1")
