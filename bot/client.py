"""The Discord client: wires the bot's rooms together and routes gateway events to them.

The commands live in cogs, one per theme (``/dream`` and its buttons, ``/privacy``,
``/rate`` and ``/compare``, ``/arena``, ``/admin``), loaded in :meth:`DreamrateBot.setup_hook`;
each translates an interaction into one call to a use case (:mod:`dreamrate.community`).
Delivery, the rating feed, the arena's rounds and the reaction recorder run as loops.
This class only builds them, loads the cogs, starts the loops and hands them events.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Protocol

import discord
from discord.ext import commands

from dreamrate.aesthetic.active import ActivePredictor
from dreamrate.aesthetic.clip_model import model_spec
from dreamrate.bot.admin_commands import AdminCog
from dreamrate.bot.arena_commands import ArenaCog
from dreamrate.bot.arena_rounds import Arena
from dreamrate.bot.delivery import Delivery
from dreamrate.bot.dream_commands import dream_cog
from dreamrate.bot.feed import RatingPosts
from dreamrate.bot.metrics import BotMetrics
from dreamrate.bot.privacy_commands import PrivacyCog
from dreamrate.bot.publisher import Publisher
from dreamrate.bot.rating_commands import RatingCog
from dreamrate.bot.reactions import ReactionRecorder
from dreamrate.bot.tree import DreamrateTree
from dreamrate.community.arena import ArenaRounds
from dreamrate.community.moderation import Moderation
from dreamrate.community.posts import PostRepository
from dreamrate.community.rating_queue import RatingQueue
from dreamrate.community.requests import Requests
from dreamrate.db.engine import database_down
from dreamrate.generation.request import GenerationLimits, prepare_validation
from dreamrate.generation.store import open_image_store
from dreamrate.ratings.scale import RatingScale
from dreamrate.ratings.service import RatingService

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from dreamrate.core.settings import Settings
    from dreamrate.generation.queue import JobRepository
    from dreamrate.generation.store import ImageStore

__all__ = ["BackgroundWorker", "DreamrateBot"]

logger = logging.getLogger(__name__)

#: Seconds the bot's worker may take to finish its step and release its batch at shutdown.
WORKER_STOP_TIMEOUT_S = 60.0


class BackgroundWorker(Protocol):
    """What the bot runs beside itself: a generation worker in its own process
    (:class:`dreamrate.services.WorkerProcess`) or, in tests, in this one."""

    stop: asyncio.Event

    async def run(self) -> None: ...


class DreamrateBot(commands.Bot):
    """A discord.py bot wired to the use cases, the queue and the rating log.

    Parameters
    ----------
    settings
        Effective settings (limits, scale, guilds to sync to).
    engine
        Database engine, already migrated.
    repo
        The generation queue.
    worker
        The worker to run beside the bot (normally in its own process), or None when other
        workers serve the queue.
    store
        The image store the images are posted from; default: the one the settings name.
    delivery_interval
        Seconds between delivery passes.
    """

    def __init__(
        self,
        *,
        settings: Settings,
        engine: AsyncEngine,
        repo: JobRepository,
        worker: BackgroundWorker | None = None,
        store: ImageStore | None = None,
        delivery_interval: float = 0.5,
    ) -> None:
        # Guilds and guild reactions only: no privileged intents needed (no message content:
        # the bot has slash commands only, no prefix ones).
        intents = discord.Intents.none()
        intents.guilds = True
        intents.guild_reactions = True
        # Prompts are members' text: never let one ping @everyone, @here or a role.
        mentions = discord.AllowedMentions(everyone=False, roles=False, users=True)
        self.metrics = BotMetrics()
        super().__init__(
            command_prefix=commands.when_mentioned,
            help_command=None,
            intents=intents,
            allowed_mentions=mentions,
            tree_cls=DreamrateTree,
            http_trace=self.metrics.trace_config(),  # counts Discord's answers (429s, 403s)
        )
        self.settings = settings
        self.engine = engine
        self.repo = repo
        self.worker = worker
        self.store = store or open_image_store(settings)
        self.scale = RatingScale.from_settings(settings.rating)
        emb = settings.embedding
        self.requests = Requests(
            engine=engine, repo=repo, limits=GenerationLimits.from_settings(settings.generation)
        )
        self.moderation = Moderation(engine, max_best_of=settings.generation.max_best_of)
        self.publisher = Publisher(
            self, PostRepository(engine), self.scale, seed=settings.rating.seed_reactions
        )
        self.delivery = Delivery(
            self,
            repo=repo,
            publisher=self.publisher,
            store=self.store,
            interval=delivery_interval,
        )
        self.posts = RatingPosts(
            self,
            queue=RatingQueue(
                engine,
                ActivePredictor(engine, model_spec(emb.model, emb.pretrained)[2]),
                reuse_within=timedelta(days=settings.discord.backfill_days),
            ),
            publisher=self.publisher,
            repo=repo,
            store=self.store,
            feed_interval_minutes=settings.discord.feed_interval,
            rate_cooldown=settings.discord.rate_cooldown,
            reuse_within=timedelta(days=settings.discord.backfill_days),
        )
        self.reactions = ReactionRecorder(
            self, engine=engine, backfill_days=settings.discord.backfill_days
        )
        self.arena = Arena(
            self,
            rounds=ArenaRounds(self.requests),
            publisher=self.publisher,
            store=self.store,
            hours=settings.discord.arena_hours,
            interval=max(delivery_interval, 1.0),
        )
        self._tasks: list[asyncio.Task[None]] = []

    # -- life cycle -----------------------------------------------------------------------

    async def setup_hook(self) -> None:
        assert self.user is not None
        # Before the gateway connects, so no interaction waits for the tokenizer or a config;
        # /dream offers the models registered now (its cog reads them when it loads).
        role = self.settings.discord.moderator_role
        dream = dream_cog(self.settings.generation, self.requests, moderator_role=role)
        cogs = [
            dream,
            PrivacyCog(self.engine),
            RatingCog(self.requests, self.posts),
            ArenaCog(self.arena.rounds),
            AdminCog(
                self,
                self.moderation,
                moderator_role=role,
                offered_models=dream.offered_models,
                arena_feed_on=self.arena.look_at_feeds_soon,
            ),
        ]
        for cog in cogs:
            await self.add_cog(cog)
        await asyncio.to_thread(prepare_validation, self.requests.limits)
        ratings = RatingService(self.engine, self.scale, bot_user_id=self.user.id)
        guilds = [discord.Object(id=g) for g in self.settings.discord.guilds]
        for guild in guilds:
            self.tree.copy_global_to(guild=guild)
            await self.tree.sync(guild=guild)
        if not guilds:
            await self.tree.sync()
        loops = {
            "delivery": self.delivery.run_forever(),
            "ratings": self.reactions.record_forever(ratings),
            "baselines": self.reactions.watch_baselines(),
            "feed": self.posts.feed_forever(),
            "arena": self.arena.run_forever(),
        }
        if self.worker is not None:
            loops["worker"] = self.worker.run()
        self._tasks += [asyncio.create_task(coro, name=name) for name, coro in loops.items()]

    async def close(self) -> None:
        # The worker first, and given time: it finishes its step and hands its batch back
        # (a cancelled worker would leave its lease to expire and spend an attempt).
        workers = [t for t in self._tasks if t.get_name() == "worker"]
        if self.worker is not None:
            self.worker.stop.set()
            with contextlib.suppress(TimeoutError, asyncio.CancelledError, Exception):
                await asyncio.wait_for(asyncio.gather(*workers), timeout=WORKER_STOP_TIMEOUT_S)
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self.publisher.close()
        await super().close()

    # -- health and metrics ---------------------------------------------------------------

    async def refresh_metrics(self) -> None:
        """|coro| Bring the gauges up to date (before each scrape)."""
        m = self.metrics
        m.set_latency(self.latency)
        m.reactions_waiting.set(self.reactions.queued)
        m.rating_log_lag.set(self.reactions.lag())
        m.deliveries_waiting.set(len(await self.delivery.posts.undelivered()))

    def health_checks(self) -> dict[str, Callable[[], Awaitable[str | None]]]:
        """What the bot needs to be ready: a live gateway session and the database."""

        async def gateway() -> str | None:
            if self.is_closed():
                return "the bot is closed"
            return None if self.metrics.connected else "no gateway session"

        return {"gateway": gateway, "database": lambda: database_down(self.engine)}

    # -- gateway events -------------------------------------------------------------------

    async def on_socket_event_type(self, event_type: str) -> None:
        self.metrics.events.labels(event_type).inc()

    async def on_ready(self) -> None:
        logger.info("connected as %s to %d guild(s)", self.user, len(self.guilds))
        self.metrics.connected = True
        self.reactions.replaying = False
        self.reactions.request_backfill()

    async def on_disconnect(self) -> None:
        self.metrics.connected = False
        self.reactions.replaying = True

    async def on_resumed(self) -> None:
        self.metrics.connected = True
        self.reactions.replaying = False
        self.reactions.request_backfill()

    async def on_raw_reaction_add(self, payload: discord.RawReactionActionEvent) -> None:
        self.reactions.reaction(payload, added=True)

    async def on_raw_reaction_remove(self, payload: discord.RawReactionActionEvent) -> None:
        self.reactions.reaction(payload, added=False)

    async def on_raw_reaction_clear(self, payload: discord.RawReactionClearEvent) -> None:
        self.reactions.cleared(payload.message_id, payload.channel_id)

    async def on_raw_reaction_clear_emoji(
        self, payload: discord.RawReactionClearEmojiEvent
    ) -> None:
        self.reactions.cleared(payload.message_id, payload.channel_id)
