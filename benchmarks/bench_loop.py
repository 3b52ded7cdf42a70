"""Loop benchmark: does the loop make the model more to the community's taste, and which way
pays most?

A toy model of the toy world (``dreamrate models make-toy``) and a simulated community with a
hidden taste (:mod:`dreamrate.toy_community`: a function of the rendered pixels that no
stage ever sees) play the whole loop at one feedback budget (the same number of clicks for
every row) and one number of fine-tune steps:

(a) the base model, no retraining;
(b) ``finetune --method sft`` on a **random** sample of the pool, as large as (c)'s: the
    control that tells "more training" from "better data";
(c) the seed's method: the members' ratings train the predictor (``train``), which scores
    a pool of the world's captioned images (clip-retrieval layout, embedded with the
    ``embed`` pipeline), ``export manifest`` keeps the top fraction, ``fetch`` brings it over
    HTTP from 127.0.0.1 with img2dataset, and ``finetune --method sft`` trains on it;
(d) ``finetune --method dpo`` on the members' choices between two images of one prompt;
(e) ``finetune --method kto`` on the members' ratings (liked / disliked by the rater-aware
    targets);
(f) best-of-N at generation: N renders per image, the predictor keeps the best (no training).

The same evaluation prompts (parts of the scene left unsaid, so taste has room) and seeds are
rendered by every row. Columns: the hidden taste's mean with its 95 % t interval over the
renders, the gain over (a) paired by prompt and seed with its interval, the predictor's
score, the diversity of the renders (entropy in bits of the colour x shape read off the
pixels), steps and wall time. One more line: ``finetune``'s time per step against a bare
peft + diffusers loop on the same batch.

Run: .venv/bin/python -m benchmarks.bench_loop [--quick] [--work DIR] [--device cuda]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import machine, print_table

#: Prompts the evaluation renders: shapes, backgrounds and positions said, colours mostly not.
EVAL_PROMPTS = (
    "a circle",
    "a square",
    "a triangle",
    "a shape",
    "a large shape",
    "a small shape, top left",
    "a circle on a blue background",
    "a square on a grey background",
    "a shape on a teal background",
    "a triangle, bottom right",
    "a small circle",
    "a large square, centre",
)


@dataclass
class Plan:
    """The benchmark's sizes."""

    members: int = 40
    community_prompts: int = 150
    images_per_prompt: int = 4
    budget: int = 1500  #: clicks: ratings for (c) and (e), choices for (d)
    pool: int = 20_000
    top_fraction: float = 0.1
    steps: int = 300
    batch: int = 8
    rank: int = 8
    lr: float = 5e-4
    best_of: int = 4
    seeds: int = 16
    toy_preset: str = "full"
    sample_steps: int = 20
    guidance: float = 4.0
    device: str = "cpu"
    size: int = 32  #: the toy model's side (read from the model)
    seed: int = 0
    quick: bool = False
    timings: dict[str, float] = field(default_factory=dict)


QUICK = {
    "members": 20, "community_prompts": 60, "budget": 600, "pool": 4000, "steps": 80,
    "seeds": 6, "toy_preset": "small",
}  # fmt: skip


@contextlib.contextmanager
def _timed(plan: Plan, name: str) -> Iterator[None]:
    started = time.perf_counter()
    print(f"[{time.strftime('%H:%M:%S')}] {name} ...", flush=True)
    yield
    plan.timings[name] = time.perf_counter() - started
    print(f"    {name}: {plan.timings[name]:.1f} s", flush=True)


@contextlib.contextmanager
def _serving(folder: Path) -> Iterator[str]:
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


def render(pipeline: Any, prompts: list[str], seeds: list[int], plan: Plan) -> list[Any]:
    """One image per (prompt, seed), in chunks, each with its own generator."""
    import torch

    images: list[Any] = []
    for start in range(0, len(prompts), 64):
        chunk = slice(start, start + 64)
        images += pipeline(
            prompt=prompts[chunk],
            num_inference_steps=plan.sample_steps,
            guidance_scale=plan.guidance,
            generator=[torch.Generator().manual_seed(s) for s in seeds[chunk]],
        ).images
    return images


def _community(plan: Plan, pipeline: Any, clip: Any, work: Path) -> dict[str, Any]:
    """The members' prompts, the images the model made of them, their clicks, written as a
    dataset export; returns what later stages need."""
    from dreamrate.generation.toy_world import caption, random_scene
    from dreamrate.toy_community import Community, tastes_of, write_dataset

    rng = np.random.default_rng([plan.seed, 11])
    prompts = [caption(random_scene(rng), rng) for _ in range(plan.community_prompts)]
    generation = np.repeat(np.arange(len(prompts)), plan.images_per_prompt)
    seeds = [int(s) for s in rng.integers(0, 2**31, len(generation))]
    images = render(pipeline, [prompts[g] for g in generation], seeds, plan)
    taste = tastes_of(images)
    people = Community.make(plan.members, plan.seed)
    # Ratings: the budget's clicks on random images by random members, one each at most.
    pairs = set()
    while len(pairs) < plan.budget:
        pairs.add((int(rng.integers(len(images))), int(rng.integers(plan.members))))
    rated, raters = (np.array(x) for x in zip(*sorted(pairs), strict=True))
    values = people.rate(taste, rated, raters, rng)
    # Choices: the same number of clicks on two images of one prompt.
    first = rng.integers(0, plan.images_per_prompt, plan.budget)
    second = (first + rng.integers(1, plan.images_per_prompt, plan.budget)) % plan.images_per_prompt
    prompt = rng.integers(0, len(prompts), plan.budget)
    a = prompt * plan.images_per_prompt + first
    b = prompt * plan.images_per_prompt + second
    choosers = rng.integers(0, plan.members, plan.budget)
    winners = people.choose(taste, a, b, choosers, rng)
    embeddings = clip.embed_images(images)
    folder = write_dataset(
        work / "community",
        images,
        prompts,
        generation.tolist(),
        (rated, raters, values),
        (a, b, choosers, winners),
        embeddings=embeddings,
    )
    return {"folder": folder, "taste": taste, "images": images, "embeddings": embeddings}


def _train_predictor(plan: Plan, community: dict[str, Any], clip: Any, work: Path) -> Any:
    from scipy.stats import spearmanr

    from dreamrate.aesthetic.predictor import save_predictor
    from dreamrate.aesthetic.train import train_predictor
    from dreamrate.ratings.training_data import load_files

    folder = community["folder"]
    data = load_files(
        folder / "ratings.parquet",
        None,
        folder / "embeddings.parquet",
        embedding_model=clip.id,
        dim=clip.dim,
    )
    result = train_predictor(
        data, name="loop", scale={"scale": "numbers-10", "min": 1.0, "max": 10.0}
    )
    save_predictor(result.predictor, work / "predictor")
    rows = {int(i): k for k, i in enumerate(data.image_ids.tolist())}
    truth = community["taste"][[rows[int(i)] - 0 for i in result.image_ids]]
    held_out = float(spearmanr(result.oof, truth).statistic)
    print(f"    predictor: held-out Spearman with the hidden taste {held_out:.3f}", flush=True)
    community["predictor_spearman"] = held_out
    return result.predictor


def _write_pool(plan: Plan, clip: Any, work: Path, base_url: str) -> Path:
    """The world's captioned images as a clip-retrieval folder (images served from ``work``)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from dreamrate.aesthetic.embed_pipeline import iter_embeddings
    from dreamrate.generation.toy_world import sample_world

    images_dir = work / "pool-images"
    images_dir.mkdir(parents=True, exist_ok=True)
    _, captions, pixels = sample_world(plan.pool, plan.seed + 101, plan.size)
    from PIL import Image

    paths = []
    for i, array in enumerate(pixels):
        path = images_dir / f"{i:06d}.png"
        Image.fromarray(array).save(path)
        paths.append((i, path))
    vectors = np.zeros((plan.pool, clip.dim), dtype=np.float32)
    for ids, batch, _ in iter_embeddings(clip, paths, batch_size=256):
        vectors[ids] = batch
    shards = work / "pool"
    (shards / "img_emb").mkdir(parents=True, exist_ok=True)
    (shards / "metadata").mkdir(parents=True, exist_ok=True)
    per = 5000
    for n, start in enumerate(range(0, plan.pool, per)):
        rows = range(start, min(plan.pool, start + per))
        np.save(
            shards / "img_emb" / f"img_emb_{n}.npy", vectors[start : rows.stop].astype(np.float16)
        )
        pq.write_table(
            pa.table(
                {
                    "url": [f"{base_url}/pool-images/{i:06d}.png" for i in rows],
                    "caption": [captions[i] for i in rows],
                    "key": [f"{i:09d}" for i in rows],
                }
            ),
            shards / "metadata" / f"metadata_{n}.parquet",
        )
    return shards


def _random_manifest(plan: Plan, pool: Path, out: Path, rows: int) -> Path:
    """The control: as many pool rows as the top fraction keeps, drawn at random, written as
    a manifest ``fetch`` reads like any other."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    tables = [pq.read_table(p) for p in sorted((pool / "metadata").glob("*.parquet"))]
    table = pa.concat_tables(tables)
    rng = np.random.default_rng([plan.seed, 13])
    chosen = np.sort(rng.choice(len(table), rows, replace=False))
    out.mkdir(parents=True, exist_ok=True)
    pq.write_table(table.take(chosen).select(["url", "caption"]), out / "part-00000.parquet")
    manifest = {
        "format": "dreamrate-manifest",
        "rows_in": len(table),
        "rows_out": rows,
        "columns": ["url", "caption"],
        "files": [{"name": "part-00000.parquet", "rows": rows}],
        "selection": "random control",
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return out


@dataclass
class Row:
    name: str
    images: list[Any]
    steps: int = 0
    seconds: float = 0.0
    record: dict[str, Any] = field(default_factory=dict)


def _finetune(
    plan: Plan, name: str, method: str, data: Path, base: Path, work: Path
) -> dict[str, Any]:
    from dreamrate.retraining.finetune import FinetuneOptions, finetune

    options = FinetuneOptions(
        method=method,  # type: ignore[arg-type]
        steps=plan.steps,
        rank=plan.rank,
        lr=plan.lr,
        resolution=plan.size,
        batch_size=plan.batch,
        seed=plan.seed,
        checkpoint_every=max(plan.steps, 1),
    )
    return finetune(
        data, str(base), work / f"lora-{name}", options, device=plan.device, show_progress=False
    )


def _with_lora(model: Path, lora: Path, device: str) -> Any:
    from dreamrate.generation.pipeline import load_text2image

    pipeline = load_text2image(str(model), device=device)  # type: ignore[arg-type]
    pipeline.load_lora_weights(str(lora))
    return pipeline


def finetune_against_bare(
    plan: Plan, model: Path, work: Path, rounds: int = 3
) -> tuple[float, float]:
    """Seconds per step of ``finetune`` and of the bare loop, measured in turns on the same
    data (the medians over the rounds), so a busy machine slows both alike."""
    from dreamrate.retraining.finetune import FinetuneOptions, finetune

    options = FinetuneOptions(
        method="sft", steps=30, rank=plan.rank, lr=plan.lr, resolution=plan.size,
        batch_size=plan.batch, seed=plan.seed, checkpoint_every=1000,
    )  # fmt: skip
    ours, bare = [], []
    for k in range(rounds):
        record = finetune(work / "fetched-top", str(model), work / f"speed-{k}", options,
                          device=plan.device, show_progress=False, force=True)  # fmt: skip
        ours.append(float(record["seconds_per_step"]))
        bare.append(bare_loop_seconds(model, work / "fetched-top", plan))
    return float(np.median(ours)), float(np.median(bare))


def bare_loop_seconds(model: Path, data: Path, plan: Plan, steps: int = 30) -> float:
    """Median seconds per step of the plainest peft + diffusers LoRA loop on one fixed batch
    (no data loading, no bookkeeping): what ``finetune`` is measured against."""
    import torch
    import torch.nn.functional as F
    from diffusers import DDPMScheduler, StableDiffusionPipeline
    from diffusers.training_utils import cast_training_params
    from peft import LoraConfig
    from PIL import Image

    pipe = StableDiffusionPipeline.from_pretrained(str(model), safety_checker=None).to(plan.device)
    unet, vae, text = pipe.unet, pipe.vae, pipe.text_encoder
    for m in (unet, vae, text):
        m.requires_grad_(False)
    torch.manual_seed(0)
    unet.add_adapter(LoraConfig(r=plan.rank, lora_alpha=plan.rank, init_lora_weights="gaussian",
                                target_modules=["to_q", "to_k", "to_v", "to_out.0"]))  # fmt: skip
    cast_training_params(unet, dtype=torch.float32)
    params = [p for p in unet.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=plan.lr)
    scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    files = sorted([*data.glob("*/*.png"), *data.glob("*/*.jpg")])[: plan.batch]
    pixels = (
        torch.stack(
            [
                torch.from_numpy(np.asarray(Image.open(f).convert("RGB"), np.float32)).permute(
                    2, 0, 1
                )
                for f in files
            ]
        ).to(plan.device)
        / 127.5
        - 1
    )
    tokens = pipe.tokenizer([f.with_suffix(".txt").read_text() for f in files], padding="max_length",
                            max_length=pipe.tokenizer.model_max_length, truncation=True,
                            return_tensors="pt").input_ids.to(plan.device)  # fmt: skip
    times = []
    for _ in range(steps):
        tick = time.perf_counter()
        with torch.no_grad():
            latents = vae.encode(pixels).latent_dist.sample() * vae.config.scaling_factor
            states = text(tokens)[0]
        noise = torch.randn_like(latents)
        t = torch.randint(0, 1000, (len(latents),), device=plan.device)
        loss = F.mse_loss(unet(scheduler.add_noise(latents, noise, t), t, states).sample, noise)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if plan.device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - tick)
    return float(np.median(times[3:]))


def run(plan: Plan, work: Path) -> dict[str, Any]:
    from dreamrate.aesthetic.clip_model import load_clip
    from dreamrate.aesthetic.filtering.engines import run_local
    from dreamrate.aesthetic.filtering.fetch import fetch_manifest
    from dreamrate.aesthetic.filtering.manifest import export_manifest
    from dreamrate.aesthetic.filtering.reader import discover_shards
    from dreamrate.aesthetic.tiny_clip import write_tiny_clip
    from dreamrate.generation.pipeline import load_text2image
    from dreamrate.generation.toy_model import train_toy_model
    from dreamrate.generation.toy_world import describe
    from dreamrate.ratings.arena_stats import diversity_bits, mean_interval, paired_gain
    from dreamrate.toy_community import tastes_of

    model = work / "toy"
    if not (model / "model_index.json").is_file():
        with _timed(plan, "make-toy"):
            model.mkdir(parents=True, exist_ok=True)
            train_toy_model(model, seed=plan.seed, config=plan.toy_preset, show_progress=False)
    from dreamrate.generation.model_info import model_defaults

    defaults = model_defaults(str(model))
    plan.size, plan.sample_steps, plan.guidance = defaults.width, defaults.steps, defaults.guidance
    clip_dir = write_tiny_clip(work / "clip", seed=plan.seed)
    clip = load_clip(str(clip_dir), None, device=plan.device)  # type: ignore[arg-type]
    base = load_text2image(str(model), device=plan.device)  # type: ignore[arg-type]

    with _timed(plan, "community: render, rate, choose"):
        community = _community(plan, base, clip, work)
    with _timed(plan, "train the predictor"):
        predictor = _train_predictor(plan, community, clip, work)

    kept_rows = round(plan.pool * plan.top_fraction)
    with _serving(work) as base_url:
        with _timed(plan, f"pool: {plan.pool:,} images rendered and embedded"):
            pool = _write_pool(plan, clip, work, base_url)
        with _timed(plan, "score, export manifest, fetch"):
            shards, _ = discover_shards(str(pool))
            run_local(shards, predictor, str(work / "scored" / "scores"), workers=1)
            export_manifest(
                work / "scored" / "scores", work / "manifest-top", top_fraction=plan.top_fraction
            )
            top = fetch_manifest(
                work / "manifest-top",
                work / "fetched-top",
                image_size=plan.size,
                threads=16,
                timeout=10,
            )
            _random_manifest(plan, pool, work / "manifest-random", kept_rows)
            rand = fetch_manifest(
                work / "manifest-random",
                work / "fetched-random",
                image_size=plan.size,
                threads=16,
                timeout=10,
            )
    top_taste = tastes_of(_folder_images(work / "fetched-top"))
    random_taste = tastes_of(_folder_images(work / "fetched-random"))
    print(
        f"    kept images' hidden taste: top {top_taste.mean():.3f}, random {random_taste.mean():.3f}",
        flush=True,
    )

    rows: dict[str, Row] = {}
    prompts = [p for p in EVAL_PROMPTS for _ in range(plan.seeds)]
    seeds = [10_000 + s for _ in EVAL_PROMPTS for s in range(plan.seeds)]
    with _timed(plan, "(a) base renders"):
        rows["a"] = Row("(a) base model", render(base, prompts, seeds, plan))
    trained = {
        "b": ("(b) sft on a random sample", "sft", work / "fetched-random"),
        "c": ("(c) sft on the predictor's top", "sft", work / "fetched-top"),
        "d": ("(d) DPO on choices", "dpo", community["folder"]),
        "e": ("(e) KTO on ratings", "kto", community["folder"]),
    }
    for key, (name, method, data) in trained.items():
        with _timed(plan, name):
            record = _finetune(plan, key, method, data, model, work)
            pipeline = _with_lora(model, work / f"lora-{key}", plan.device)
            rows[key] = Row(
                name,
                render(pipeline, prompts, seeds, plan),
                record["steps_done"],
                record["seconds"],
                record,
            )
    with _timed(plan, f"(f) best of {plan.best_of}"):
        started = time.perf_counter()
        candidates = [
            render(base, prompts, [s * 7919 + k for s in seeds], plan) if k else rows["a"].images
            for k in range(plan.best_of)
        ]
        scores = np.stack([predictor.predict(clip.embed_images(c)) for c in candidates])
        best = scores.argmax(axis=0)
        picked = [candidates[int(k)][i] for i, k in enumerate(best)]
        rows["f"] = Row(
            f"(f) best of {plan.best_of} by the predictor", picked, 0, time.perf_counter() - started
        )

    base_taste = tastes_of(rows["a"].images)
    table = []
    results: dict[str, Any] = {}
    for key, row in rows.items():
        taste = tastes_of(row.images)
        mean = mean_interval(taste)
        gain = paired_gain(base_taste, taste)
        predicted = float(predictor.predict(clip.embed_images(row.images)).mean())
        readings = [describe(np.asarray(im)) for im in row.images]
        diversity = diversity_bits((r.colour, r.shape) for r in readings)
        results[key] = {
            "name": row.name, "taste": mean.value, "taste_ci": [mean.low, mean.high],
            "gain": gain.value, "gain_ci": [gain.low, gain.high], "predicted": predicted,
            "diversity_bits": diversity, "steps": row.steps, "seconds": row.seconds,
        }  # fmt: skip
        table.append(
            [
                row.name,
                f"{mean.value:.3f} [{mean.low:.3f}, {mean.high:.3f}]",
                "—" if key == "a" else f"{gain.value:+.3f} [{gain.low:+.3f}, {gain.high:+.3f}]",
                f"{predicted:.2f}",
                f"{diversity:.2f}",
                row.steps or "—",
                f"{row.seconds:.0f} s" if row.seconds else "—",
            ]
        )
    print_table(
        f"The loop at {plan.budget:,} clicks, {plan.steps} fine-tune steps "
        f"({len(prompts)} renders per row: {len(EVAL_PROMPTS)} prompts x {plan.seeds} seeds); {machine()}",
        [
            "row",
            "hidden taste (95 % CI)",
            "gain over (a) (95 % CI)",
            "predicted",
            "diversity (bits)",
            "steps",
            "wall time",
        ],
        table,
    )
    with _timed(plan, "finetune against a bare loop"):
        ours, bare = finetune_against_bare(plan, model, work)
    print(
        f"\nfinetune: {ours * 1000:.1f} ms/step; a bare peft + diffusers loop on the same batch size: "
        f"{bare * 1000:.1f} ms/step; finetune runs at {bare / ours:.0%} of its speed (goal >= 90 %)"
    )
    goals = {
        "c_beats_b": paired_gain(tastes_of(rows["b"].images), tastes_of(rows["c"].images)),
        "best_of_d_e_beats_c": max(
            (
                paired_gain(tastes_of(rows["c"].images), tastes_of(rows[k].images))
                for k in ("d", "e")
            ),
            key=lambda e: e.value,
        ),
    }
    for name, estimate in goals.items():
        print(f"{name}: {estimate.value:+.3f} [{estimate.low:+.3f}, {estimate.high:+.3f}] -> "
              f"{'met' if estimate.low > 0 else 'missed'}")  # fmt: skip
    drop = 1 - min(results[k]["diversity_bits"] for k in "bcde") / results["a"]["diversity_bits"]
    print(f"largest diversity drop among the fine-tunes: {drop:.0%} of the base's bits")
    summary = {
        "machine": machine(), "plan": {k: v for k, v in vars(plan).items() if k != "timings"},
        "rows": results, "predictor_spearman": community["predictor_spearman"],
        "kept_taste": {"top": float(top_taste.mean()), "random": float(random_taste.mean())},
        "fetched": {"top": top["fetched"], "random": rand["fetched"]},
        "finetune_ms_per_step": ours * 1000, "bare_ms_per_step": bare * 1000,
        "timings": plan.timings,
    }  # fmt: skip
    (work / "loop.json").write_text(json.dumps(summary, indent=2, default=float) + "\n")
    _grid(rows, work / "loop-grid.png", plan.seeds)
    print(f"\nresults: {work / 'loop.json'}; renders: {work / 'loop-grid.png'}")
    return summary


def _folder_images(folder: Path) -> list[Any]:
    from PIL import Image

    return [
        Image.open(p).convert("RGB")
        for p in sorted(folder.glob("*/*.png")) + sorted(folder.glob("*/*.jpg"))
    ]


def _grid(rows: dict[str, Row], path: Path, seeds: int) -> None:
    """One row of renders per method (the first seed of each prompt), for people to look at."""
    from PIL import Image, ImageDraw

    columns = len(EVAL_PROMPTS)
    side = 64
    grid = Image.new("RGB", (side * columns + 260, side * len(rows)), "white")
    draw = ImageDraw.Draw(grid)
    for r, row in enumerate(rows.values()):
        draw.text((4, r * side + side // 2 - 6), row.name, fill="black")
        for c in range(columns):
            grid.paste(row.images[c * seeds].resize((side, side)), (260 + c * side, r * side))
    grid.save(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smaller run (minutes)")
    parser.add_argument(
        "--work", type=Path, help="keep the run's files here (a toy model there is reused)"
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int)
    parser.add_argument("--budget", type=int)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    plan = Plan(device=args.device, seed=args.seed, quick=args.quick)
    if args.quick:
        for key, value in QUICK.items():
            setattr(plan, key, value)
    if args.steps:
        plan.steps = args.steps
    if args.budget:
        plan.budget = args.budget
    import torch

    torch.manual_seed(plan.seed)
    work = args.work or Path(tempfile.mkdtemp(prefix="dreamrate-loop-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        run(plan, work)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
