"""``dreamrate demo``: the whole loop on one machine, offline, in a few minutes.

A local Discord-compatible server (:mod:`dreamrate.fake_discord`) stands in for Discord; the
real bot and its worker run against it on SQLite, in a database of the demo's own. Unless
real models are configured, the demo first trains the toy world's model (``models
make-toy``), which draws shapes of the colours, sizes and places its prompts say. A small
community plays: members ``/dream`` toy-world prompts, the bot posts every image with rating
emoji, members react following a hidden taste (:mod:`dreamrate.toy_community`: warm,
contrasting, large shapes, read off the pixels) with careless raters among them, and one
member opts out first. Then the maintainer's stages run on what was collected: embed, train
(with the report), and the retraining half (:mod:`dreamrate.demo_loop`): score a pool of the
world's images, keep the best, fetch them, fine-tune, and judge the result by the hidden
taste and in the arena.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
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
#: The demo bot's token on its local Discord (a local stand-in, never a real one).
DEMO_TOKEN = "demo.local.token"
#: The toy model the demo trains when no generation model is configured.
TOY_PRESET = "small"
#: How long the demo's arena rounds would stay open (as in a real community); the demo closes
#: them itself once every member has judged, so a slow machine cannot shut members out.
ARENA_HOURS = 24.0
#: Arena rounds played at once, one per channel: with the demo's members, 30+ judgements.
ARENA_ROUNDS = 5
#: The members' prompts: the toy world, often leaving colours and places unsaid.
PROMPTS = (
    "a circle",
    "a red square",
    "a shape on a blue background",
    "a large triangle",
    "a small circle, top left",
    "a yellow shape",
    "a square on a grey background",
    "a shape",
    "a green circle on a purple background",
    "a triangle, bottom right",
    "a large shape, centre",
    "a teal square",
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
    #: The hidden taste of the same prompts and seeds before and after, and the paired gain.
    taste_before: float = float("nan")
    taste_after: float = float("nan")
    taste_gain_ci: tuple[float, float] = (float("nan"), float("nan"))
    arena_judgements: int = 0
    arena_win_rate: float = float("nan")
    arena_win_rate_ci: tuple[float, float] = (float("nan"), float("nan"))
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
            "taste_before": number(self.taste_before),
            "taste_after": number(self.taste_after),
            "taste_gain_ci": [number(v) for v in self.taste_gain_ci],
            "arena_judgements": self.arena_judgements,
            "arena_win_rate": number(self.arena_win_rate),
            "arena_win_rate_ci": [number(v) for v in self.arena_win_rate_ci],
            "seconds": round(self.seconds, 1),
        }


def _tastes(pngs: list[bytes]) -> np.ndarray:
    """The community's hidden taste of posted images, read off their pixels."""
    from PIL import Image

    from dreamrate.toy_community import tastes_of

    return tastes_of([Image.open(io.BytesIO(png)).convert("RGB") for png in pngs])


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
    if generation_model is None:
        from dreamrate.tiny_models import make_toy_model

        say(
            "training the toy world's model on the CPU (models make-toy --preset small; a few minutes)"
        )
        toy = folder / "models" / "toy"
        record = make_toy_model(toy, seed=seed, preset=TOY_PRESET, show_progress=False)
        say(f"toy model trained in {record['seconds']:.0f} s")
        generation_model = str(toy)
    if embedding_model is None:
        from dreamrate.aesthetic.tiny_clip import write_tiny_clip

        embedding_model = str(write_tiny_clip(folder / "models" / "tiny-clip", seed=seed))
    for name, what in (("DATABASE_URL", "database"), ("STORAGE_URL", "images")):
        if os.environ.get(f"DREAMRATE_{name}"):
            say(f"the demo keeps its own {what} in {data} (DREAMRATE_{name} is not used)")

    from dreamrate.aesthetic.clip_model import load_clip

    clip = load_clip(embedding_model, None, device="cpu")
    server = FakeDiscord(bot_token=DEMO_TOKEN)
    await server.start()
    settings = load_settings(
        data_dir=data,
        # Its own database and images, whatever the environment says: a demo never writes
        # its fake members into a real community's database.
        database={"url": f"sqlite+aiosqlite:///{(data / 'dreamrate.db').as_posix()}"},
        storage={"images_dir": data / "images", "url": None},
        # Commands sync globally (the default): the bot serves every guild it is in.
        discord={"api_base": server.api_base, "gateway_url": server.gateway_url},
        generation={
            "model": generation_model,
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
    bot_task = asyncio.get_running_loop().create_task(bot.start(DEMO_TOKEN))
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
        tastes = _tastes([server.files[m][0] for m in messages])
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

        from dreamrate.exports.rating_export import current_ratings

        # Every reaction the server sent is recorded once the bot's inbox has drained.
        await server.wait_for(lambda: bot.reactions.received >= server.session_reactions)
        await bot.reactions.drained()
        summary.ratings = len(await current_ratings(engine))
    finally:
        await bot.close()
        bot_task.cancel()
        await server.stop()

    async def arena_round(new_model: str) -> tuple[int, float, tuple[float, float]]:
        """Arena rounds of the configured model against ``new_model``, one per channel at
        once, the members choosing blind by their taste; returns the judgements and
        ``new_model``'s win rate with Wilson's 95 % interval."""
        from sqlalchemy import select, update

        from dreamrate.community.arena_results import arena_judgements, arena_report
        from dreamrate.db.models import ArenaRound
        from dreamrate.db.types import utcnow

        arena_server = FakeDiscord(bot_token=DEMO_TOKEN)
        await arena_server.start()
        arena_settings = load_settings(
            data_dir=data,
            database=settings.database.model_dump(),
            storage=settings.storage.model_dump(),
            discord={
                "api_base": arena_server.api_base,
                "gateway_url": arena_server.gateway_url,
                "arena_hours": ARENA_HOURS,
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
        task = asyncio.get_running_loop().create_task(arena_bot.start(DEMO_TOKEN))
        try:
            await arena_server.wait_connected()
            await arena_server.wait_for(lambda: arena_server.commands and arena_bot.is_ready())
            before = set(arena_server.messages)
            where = [(g, c) for g in arena_server.guilds for c in arena_server.channels_of(g)]
            for k, (guild, channel) in enumerate(where[:ARENA_ROUNDS]):
                prompt = [{"name": "prompt", "type": 3, "value": PROMPTS[k % len(PROMPTS)]}]
                await arena_server.slash(
                    community[k % (members - 1)], "arena", prompt, guild=guild, channel=channel
                )

            def posts() -> list[int]:
                found = [
                    mid
                    for mid, message in arena_server.messages.items()
                    if mid not in before
                    and any("dreamrate-arena-" in a["filename"] for a in message["attachments"])
                    and len(arena_server.reactions[mid]) == 3
                ]
                return found if len(found) == min(ARENA_ROUNDS, len(where)) else []

            messages = await arena_server.wait_for(posts, timeout=180)
            async with engine.connect() as conn:
                rounds = {r.message_id: r for r in (await conn.execute(select(ArenaRound))).all()}
            left, right, tie = arena_bot.scale.choice_emojis
            for message in messages:
                round_ = rounds[message]
                left_png, right_png = [
                    (settings.images_dir / (await repo.images(job))[0].path).read_bytes()
                    for job in (round_.left_job_id, round_.right_job_id)
                ]
                left_taste, right_taste = _tastes([left_png, right_png])
                for k, member in enumerate(community[:-1]):  # the opted-out member sits out
                    if k in careless:
                        choice = rng.choice((left, right, tie))
                    else:
                        choice = left if left_taste > right_taste else right
                    await arena_server.react(member, message, choice)

            # A day compressed: once every judgement is in, the rounds are due now.
            expected = len(messages) * (len(community) - 1)
            deadline = time.monotonic() + 120
            while len(await arena_judgements(engine)) < expected:
                if time.monotonic() > deadline:
                    break  # the report counts what arrived
                await asyncio.sleep(0.2)
            async with engine.begin() as conn:
                await conn.execute(
                    update(ArenaRound)
                    .where(ArenaRound.message_id.in_(messages))
                    .values(closes_at=utcnow())
                )

            def named() -> bool:
                return all(
                    any(
                        f["name"] == "left"
                        for f in arena_server.messages[m]["embeds"][0].get("fields", [])
                    )
                    for m in messages
                )

            await arena_server.wait_for(named, timeout=120)
            report = await arena_report(engine, models=(settings.generation.model, new_model))
            if not report.pairs:
                return 0, float("nan"), (float("nan"), float("nan"))
            (pair,) = report.pairs
            low, high = pair.interval
            if pair.first == new_model:
                return pair.judgements, pair.win_rate, (low, high)
            return pair.judgements, 1 - pair.win_rate, (1 - high, 1 - low)
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

    from dreamrate.aesthetic.clip_model import model_spec
    from dreamrate.aesthetic.embed import embed_rated_images
    from dreamrate.aesthetic.predictor_registry import register_predictor
    from dreamrate.aesthetic.training_run import train_and_save
    from dreamrate.demo_loop import retrain_stages
    from dreamrate.exports.dataset import export_dataset
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
    # What `dreamrate train` does, through the same function.
    predictor_dir = folder / "predictor"
    result = train_and_save(
        data,
        predictor_dir,
        name="demo",
        scale={"scale": "numbers-10", "min": 1.0, "max": 10.0},
    )
    await register_predictor(engine, result.predictor, predictor_dir, activate=True)
    summary.metrics = result.metrics
    summary.spam_raters = len(result.effects.spam)
    paths = data.image_paths or {}
    hidden = _tastes([Path(paths[int(i)]).read_bytes() for i in result.image_ids])
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
