"""``dreamrate demo``: the whole loop on one machine, offline, in a few minutes.

A local Discord-compatible server (:mod:`dreamrate.fake_discord`) stands in for Discord; the
real bot and an in-process worker run against it on SQLite. A small community plays:
members ``/dream``, the bot posts every image with rating emoji, members react following a
hidden taste (brighter images are better) with two careless raters among them, and one
member opts out first. Then the maintainer's stages run on what was collected: embed,
train (with the report), score a synthetic clip-retrieval dataset, export a manifest and
the ratings dataset.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["DemoSummary", "run_demo"]

logger = logging.getLogger(__name__)

MARKER = ".dreamrate-demo"
#: How long the demo's arena round stays open (a day in a real community).
ARENA_SECONDS = 10
PROMPTS = (
    "a lighthouse at dawn",
    "a cat made of clouds",
    "an orchard in autumn",
    "a brutalist library",
    "a paper boat on a lake",
    "a neon city in the rain",
    "a tea house in the mountains",
    "a fox in the snow",
    "a greenhouse full of orchids",
    "a desert caravan at night",
    "a lantern festival",
    "a whale above the clouds",
)


@dataclass
class DemoSummary:
    folder: Path
    jobs: int = 0
    images: int = 0
    ratings: int = 0
    reactions: int = 0
    opted_out_reactions: int = 0
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    spearman_vs_taste: float = float("nan")
    spam_raters: int = 0
    rows_scored: int = 0
    rows_kept: int = 0
    fetched: int = 0
    finetune_steps: int = 0
    aesthetic_before: float = float("nan")
    aesthetic_after: float = float("nan")
    arena_judgements: int = 0
    arena_win_rate: float = float("nan")
    paths: dict[str, Path] = field(default_factory=dict)
    seconds: float = 0.0

    def as_json(self) -> dict[str, Any]:
        """``summary.json``: the loop's figures, NaN as null."""

        def number(value: float) -> float | None:
            return None if value != value else round(float(value), 4)

        return {
            "jobs": self.jobs,
            "images": self.images,
            "ratings": self.ratings,
            "heldout_spearman_truth": number(self.spearman_vs_taste),
            "heldout_spearman_mean_ratings": number(
                self.metrics.get("dreamrate", {}).get("spearman", float("nan"))
            ),
            "rows_scored": self.rows_scored,
            "rows_kept": self.rows_kept,
            "fetched": self.fetched,
            "finetune_steps": self.finetune_steps,
            "aesthetic_before": number(self.aesthetic_before),
            "aesthetic_after": number(self.aesthetic_after),
            "arena_judgements": self.arena_judgements,
            "arena_win_rate": number(self.arena_win_rate),
            "seconds": round(self.seconds, 1),
        }


def _hidden_direction(dim: int, seed: int) -> np.ndarray:
    """The community's hidden taste: a direction in CLIP space (taste is close to linear
    there, which is why LAION's and Simulacra's linear heads work)."""
    direction = np.random.default_rng(seed).normal(size=dim).astype(np.float32)
    return direction / np.linalg.norm(direction)


def _tastes(clip: Any, pngs: list[bytes], seed: int) -> np.ndarray:
    from PIL import Image

    images = [Image.open(io.BytesIO(png)).convert("RGB") for png in pngs]
    return clip.embed_images(images) @ _hidden_direction(clip.dim, seed)


def prepare_folder(folder: Path) -> Path:
    """A fresh demo folder (an earlier demo's folder is replaced; anything else is refused)."""
    from dreamrate.core.errors import ConfigError

    if folder.exists() and any(folder.iterdir()):
        if not (folder / MARKER).exists():
            raise ConfigError(f"--dir: {folder} is not empty and not a dreamrate demo folder")
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MARKER).write_text("created by dreamrate demo; safe to delete\n")
    return folder


async def run_demo(
    folder: Path,
    *,
    members: int = 8,
    prompts: int = 12,
    images_per_prompt: int = 2,
    generation_model: str | None = None,
    embedding_model: str | None = None,
    seed: int = 0,
    pace: float = 1.1,
    say: Any = print,
) -> DemoSummary:
    """Play the loop in ``folder``; return what happened."""
    from dreamrate.bot.client import DreamrateBot
    from dreamrate.bot.connection import point_discord_at
    from dreamrate.core.settings import load_settings
    from dreamrate.db.engine import create_engine
    from dreamrate.db.migrate import upgrade
    from dreamrate.fake_discord import BASIC, FakeDiscord, Member
    from dreamrate.services import WorkerProcess, build_repository

    started = time.perf_counter()
    rng = random.Random(seed)
    summary = DemoSummary(folder=folder)
    data = folder / "data"
    if generation_model is None or embedding_model is None:
        from dreamrate.tiny_models import make_tiny_models

        say("writing tiny offline models (no real ones configured)")
        tiny_sd, tiny_clip = make_tiny_models(folder / "models")
        generation_model = generation_model or str(tiny_sd)
        embedding_model = embedding_model or str(tiny_clip)

    from dreamrate.aesthetic.clip_model import load_clip

    clip = load_clip(embedding_model, None, device="cpu")
    server = FakeDiscord()
    await server.start()
    settings = load_settings(
        data_dir=data,
        # Commands sync globally (the default): the bot serves every guild it is in.
        discord={"api_base": server.api_base, "gateway_url": server.gateway_url},
        generation={
            "model": generation_model,
            "default_steps": 2,
            "device": "cpu",
            "per_user_queue_cap": prompts,  # members queue several requests at once
            "poll_interval": 0.1,
        },
        embedding={"model": embedding_model, "device": "cpu"},
    )
    point_discord_at(settings.discord.api_base, settings.discord.gateway_url)
    data.mkdir(parents=True, exist_ok=True)
    engine = create_engine(settings.database_url)
    await upgrade(engine)
    repo = build_repository(settings, engine)
    worker = WorkerProcess(settings)  # renders in its own process, as `dreamrate bot` does
    bot = DreamrateBot(
        settings=settings, engine=engine, repo=repo, worker=worker, delivery_interval=0.1
    )
    bot_task = asyncio.get_running_loop().create_task(bot.start("demo.local.token"))
    try:
        await server.wait_connected()
        await server.wait_for(lambda: server.commands and bot.is_ready())
        community = [Member(5000 + k, f"member{k}", permissions=BASIC) for k in range(members)]
        careless = set(rng.sample(range(members - 1), max(1, members // 4)))
        private = community[-1]
        say(f"{members} members join; {private.name} opts out of rating collection")
        await server.slash(private, "privacy", subcommand="optout")

        # Two communities, five channels: Discord's rate limits are per channel, so a busy
        # community spreads out (the benchmark measures how far one channel goes).
        where = [(g, c) for g in server.guilds for c in server.channels_of(g)]
        say(
            f"{prompts} /dream requests, {images_per_prompt} images each, in {len(where)} "
            f"channels of {len(server.guilds)} guilds"
        )
        tokens = []
        for k in range(prompts):
            guild, channel = where[k % len(where)]
            _, token = await server.slash(
                community[k % members],
                "dream",
                [
                    {"name": "prompt", "type": 3, "value": PROMPTS[k % len(PROMPTS)]},
                    {"name": "images", "type": 4, "value": images_per_prompt},
                    {"name": "seed", "type": 4, "value": 1000 + k},
                ],
                guild=guild,
                channel=channel,
            )
            tokens.append(token)

        def posted() -> list[int]:
            ids = [
                m
                for token in tokens
                for m in server.followups.get(token, [])
                if server.messages[m]["attachments"]
                and len(server.reactions[m]) >= len(settings.rating.emojis)
            ]
            return ids if len(ids) == prompts * images_per_prompt else []

        try:
            messages = await server.wait_for(posted, timeout=240)
        except AssertionError:
            from dreamrate.core.errors import DreamrateError

            raise DreamrateError(
                "demo: the bot did not post every image within 4 minutes"
            ) from None
        summary.jobs, summary.images = prompts, len(messages)
        tastes = _tastes(clip, [server.files[m][0] for m in messages], seed)
        lo, hi = float(tastes.min()), float(tastes.max())
        taste = {
            m: 1 + 9 * (t - lo) / max(hi - lo, 1e-9) for m, t in zip(messages, tastes, strict=True)
        }
        say(f"{len(messages)} images posted; members rate them with emoji (a few seconds apart)")
        plans: dict[int, list[tuple[int, str]]] = {k: [] for k in range(members)}
        for m in messages:
            for k in rng.sample(range(members), min(3, members)):
                if k in careless:
                    value = rng.randint(1, 10)
                else:
                    value = int(np.clip(round(taste[m] + rng.gauss(0, 1.0)), 1, 10))
                plans[k].append((m, settings.rating.emojis[value - 1]))
                summary.reactions += 1
                summary.opted_out_reactions += community[k] is private

        async def rate(k: int) -> None:
            # People take a moment per image; the aggregation flags sub-second raters.
            for m, emoji in plans[k]:
                await server.react(community[k], m, emoji)
                await asyncio.sleep(pace)

        await asyncio.gather(*(rate(k) for k in plans))

        from dreamrate.ratings.export import current_ratings

        # Every reaction the server sent is recorded once the bot's inbox has drained.
        await server.wait_for(lambda: bot.reactions.received >= server.session_reactions)
        await bot.reactions.drained()
        summary.ratings = len(await current_ratings(engine))
    finally:
        await bot.close()
        bot_task.cancel()
        await server.stop()

    async def arena_round(new_model: str) -> tuple[int, float]:
        """One /arena round of the configured model against ``new_model``, the members
        choosing by their taste; returns the judgements and ``new_model``'s win rate."""
        from sqlalchemy import select

        from dreamrate.aesthetic.arena import arena_report
        from dreamrate.db.models import ArenaRound

        arena_server = FakeDiscord()
        await arena_server.start()
        arena_settings = load_settings(
            data_dir=data,
            discord={
                "api_base": arena_server.api_base,
                "gateway_url": arena_server.gateway_url,
                "arena_hours": ARENA_SECONDS / 3600,
            },
            generation=settings.generation.model_dump(),
            embedding={"model": embedding_model, "device": "cpu"},
        )
        point_discord_at(arena_settings.discord.api_base, arena_settings.discord.gateway_url)
        arena_bot = DreamrateBot(
            settings=arena_settings,
            engine=engine,
            repo=build_repository(arena_settings, engine),
            worker=WorkerProcess(arena_settings),
            delivery_interval=0.1,
        )
        task = asyncio.get_running_loop().create_task(arena_bot.start("demo.local.token"))
        try:
            await arena_server.wait_connected()
            await arena_server.wait_for(lambda: arena_server.commands and arena_bot.is_ready())
            before = set(arena_server.messages)
            prompt = [{"name": "prompt", "type": 3, "value": "a lantern festival at night"}]
            await arena_server.slash(community[0], "arena", prompt)

            def post() -> int | None:
                for mid, message in arena_server.messages.items():
                    files = [a["filename"] for a in message["attachments"]]
                    if mid not in before and any("dreamrate-arena-" in f for f in files):
                        return mid if len(arena_server.reactions[mid]) == 3 else None
                return None

            message = await arena_server.wait_for(post, timeout=180)
            async with engine.connect() as conn:
                (round_,) = (await conn.execute(select(ArenaRound))).all()
            left_png, right_png = [
                (settings.images_dir / (await repo.images(job))[0].path).read_bytes()
                for job in (round_.left_job_id, round_.right_job_id)
            ]
            left_taste, right_taste = _tastes(clip, [left_png, right_png], seed)
            left, right, tie = arena_bot.scale.choice_emojis
            for k, member in enumerate(community[:-1]):  # the opted-out member sits it out
                if k in careless:
                    choice = rng.choice((left, right, tie))
                else:
                    choice = left if left_taste > right_taste else right
                await arena_server.react(member, message, choice)

            def named() -> bool:
                embed = arena_server.messages[message]["embeds"][0]
                return any(f["name"] == "left" for f in embed.get("fields", []))

            await arena_server.wait_for(named, timeout=ARENA_SECONDS + 60)
            report = await arena_report(engine, models=(settings.generation.model, new_model))
            if not report.pairs:
                return 0, float("nan")
            (pair,) = report.pairs
            rate = pair.win_rate if pair.first == new_model else 1 - pair.win_rate
            return pair.judgements, rate
        finally:
            await arena_bot.close()
            task.cancel()
            await arena_server.stop()

    try:
        await _maintainer_stages(settings, engine, clip, folder, summary, seed, say, arena_round)
    finally:
        await engine.dispose()
    summary.seconds = time.perf_counter() - started
    (folder / "summary.json").write_text(json.dumps(summary.as_json(), indent=2) + "\n")
    return summary


async def _maintainer_stages(
    settings: Any,
    engine: Any,
    clip: Any,
    folder: Path,
    summary: DemoSummary,
    seed: int,
    say: Any,
    arena_round: Any,
) -> None:
    from scipy.stats import spearmanr

    from dreamrate.aesthetic.card import write_card
    from dreamrate.aesthetic.clip_model import model_spec
    from dreamrate.aesthetic.embed import embed_rated_images
    from dreamrate.aesthetic.predictor import save_predictor
    from dreamrate.aesthetic.registry import register_predictor
    from dreamrate.aesthetic.report import write_report
    from dreamrate.aesthetic.train import train_predictor
    from dreamrate.demo_loop import retrain_stages
    from dreamrate.ratings.dataset_export import export_dataset
    from dreamrate.ratings.training_data import load_database_data

    say("embedding the rated images with CLIP")
    await embed_rated_images(engine, clip, settings.images_dir, show_progress=False)
    model_id = model_spec(settings.embedding.model, settings.embedding.pretrained)[2]

    say("training the predictor (rater-aware targets, grouped cross-validation)")
    data = await load_database_data(
        engine,
        embedding_model=model_id,
        scale=settings.rating.scale,
        images_dir=settings.images_dir,
    )
    result = train_predictor(
        data, name="demo", scale={"scale": "numbers-10", "min": 1.0, "max": 10.0}
    )
    predictor_dir = folder / "predictor"
    save_predictor(
        result.predictor,
        predictor_dir,
        extras=lambda tmp: (
            write_report(result, tmp, image_paths=data.image_paths),
            write_card(result, tmp),
        ),
    )
    await register_predictor(engine, result.predictor, predictor_dir, activate=True)
    summary.metrics = result.metrics
    summary.spam_raters = len(result.effects.spam)
    rows = {int(i): k for k, i in enumerate(data.image_ids.tolist())}
    hidden = data.embeddings[[rows[int(i)] for i in result.image_ids]] @ _hidden_direction(
        data.embeddings.shape[1], seed
    )
    summary.spearman_vs_taste = float(spearmanr(result.oof, hidden).statistic)

    await retrain_stages(
        settings, engine, clip, folder, result.predictor, summary, seed, say, arena_round
    )

    say("exporting the community's ratings dataset")
    await export_dataset(engine, settings.images_dir, folder / "dataset", embedding_model=model_id)
    summary.paths = {
        "training report": predictor_dir / "report.html",
        "predictor": predictor_dir,
        "manifest": folder / "manifest",
        "fetched images": folder / "fetched",
        "LoRA": folder / "lora",
        "summary": folder / "summary.json",
        "ratings dataset": folder / "dataset",
        "database": Path(str(settings.database_url).split("///", 1)[-1]),
    }
