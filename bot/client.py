"""The Discord bot: slash commands, delivery of images, reactions into ratings, backfill."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import io
import logging
import random
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands
from sqlalchemy import func, select, update

from dreamrate.bot.admin import is_moderator
from dreamrate.bot.commands import register_commands
from dreamrate.bot.embeds import image_embed, job_status_text, job_view
from dreamrate.bot.uploads import fit_for_upload
from dreamrate.core.errors import DreamrateError
from dreamrate.db.models import GuildSettings, Image, ImagePost, Job, JobStatus, User
from dreamrate.db.retry import retry_on_disconnect
from dreamrate.db.types import utcnow
from dreamrate.db.users import ensure_user
from dreamrate.generation.model_info import model_defaults
from dreamrate.generation.queue import JobRecord, JobRepository
from dreamrate.generation.request import (
    MAX_SEED,
    GenerationLimits,
    GenerationRequest,
    RequestInput,
    parse_size,
    validate_request,
)
from dreamrate.ratings.moderation import get_guild_settings
from dreamrate.ratings.scale import RatingScale
from dreamrate.ratings.service import RatingService, ReactionEvent

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from dreamrate.core.settings import Settings
    from dreamrate.generation.worker import GenerationWorker

__all__ = ["DreamrateBot"]

logger = logging.getLogger(__name__)

#: Interaction tokens last 15 minutes; leave a margin for the last follow-up.
TOKEN_LIFETIME = timedelta(minutes=14)
PROGRESS_EVERY_S = 2.0


class DreamrateBot(discord.Client):
    """A discord.py client wired to the queue and the rating log.

    Parameters
    ----------
    settings
        Effective settings (limits, scale, guilds to sync to).
    engine
        Database engine, already migrated.
    repo
        The generation queue.
    worker
        An in-process worker, or None when other workers serve the queue.
    """

    def __init__(
        self,
        *,
        settings: Settings,
        engine: AsyncEngine,
        repo: JobRepository,
        worker: GenerationWorker | None = None,
        delivery_interval: float = 0.5,
    ) -> None:
        # Guilds and guild reactions only: no privileged intents needed.
        intents = discord.Intents.none()
        intents.guilds = True
        intents.guild_reactions = True
        # Prompts are members' text: never let one ping @everyone, @here or a role.
        mentions = discord.AllowedMentions(everyone=False, roles=False, users=True)
        super().__init__(intents=intents, allowed_mentions=mentions)
        self.settings = settings
        self.engine = engine
        self.repo = repo
        self.worker = worker
        self.scale = RatingScale.from_settings(settings.rating)
        self.ratings: RatingService | None = None
        self.limits = GenerationLimits.from_settings(settings.generation)
        self.tree = app_commands.CommandTree(self)
        self.delivery_interval = delivery_interval
        self._tasks: list[asyncio.Task[None]] = []
        self._last_progress: dict[int, tuple[float, str]] = {}
        # Gateway order is rating order: one consumer records events as they came.
        # Backfill runs in the same queue, after every event that arrived before it:
        # otherwise a stale queued event could be applied after the reconciliation.
        self._reactions: asyncio.Queue[ReactionEvent | None] = asyncio.Queue()
        self._predictor_cache: tuple[str, float, Any] | None = None
        register_commands(self)

    # -- life cycle -----------------------------------------------------------------------

    async def setup_hook(self) -> None:
        assert self.user is not None
        self.ratings = RatingService(self.engine, self.scale, bot_user_id=self.user.id)
        guilds = [discord.Object(id=g) for g in self.settings.discord.guilds]
        for guild in guilds:
            self.tree.copy_global_to(guild=guild)
            await self.tree.sync(guild=guild)
        if not guilds:
            await self.tree.sync()
        self._tasks.append(asyncio.create_task(self._deliver_forever(), name="delivery"))
        self._tasks.append(asyncio.create_task(self._record_forever(), name="ratings"))
        self._tasks.append(asyncio.create_task(self._feed_forever(), name="feed"))
        if self.worker is not None:
            self._tasks.append(asyncio.create_task(self.worker.run(), name="worker"))

    async def close(self) -> None:
        if self.worker is not None:
            self.worker.stop.set()
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await super().close()

    async def on_ready(self) -> None:
        logger.info("connected as %s to %d guild(s)", self.user, len(self.guilds))
        self._reactions.put_nowait(None)  # None: backfill here

    async def on_resumed(self) -> None:
        self._reactions.put_nowait(None)

    # -- commands -------------------------------------------------------------------------

    async def _dream(
        self, interaction: discord.Interaction, raw: RequestInput, size: str | None
    ) -> None:
        # Validate first (pure, fast): refusals are ephemeral and enqueue nothing.
        model = raw.model or self.limits.default_model
        width, height = parse_size(size) if size else (None, None)
        request = validate_request(
            RequestInput(
                prompt=raw.prompt,
                negative=raw.negative,
                seed=raw.seed,
                steps=raw.steps,
                guidance=raw.guidance,
                images=raw.images,
                width=width,
                height=height,
                model=model,
            ),
            self.limits,
            model_defaults(model),
        )
        await self._enqueue(interaction, request)

    async def _enqueue(self, interaction: discord.Interaction, request: GenerationRequest) -> None:
        """Checks that need the database, then defer, queue, and show the position."""
        user = await retry_on_disconnect(
            lambda: ensure_user(self.engine, interaction.user.id, interaction.user.name)
        )
        if user.banned:
            raise DreamrateError("You are banned from generating images here.")
        if interaction.guild_id is not None:
            guild_id = interaction.guild_id
            guild = await retry_on_disconnect(lambda: get_guild_settings(self.engine, guild_id))
            if (
                guild is not None
                and guild.allowed_channel_ids
                and interaction.channel_id not in guild.allowed_channel_ids
            ):
                where = ", ".join(f"<#{c}>" for c in guild.allowed_channel_ids)
                raise DreamrateError(f"/dream is not allowed in this channel; use {where}.")
        await interaction.response.defer(thinking=True)
        record = await retry_on_disconnect(
            lambda: self.repo.enqueue(
                request,
                requester_id=user.id,
                guild_id=interaction.guild_id,
                channel_id=interaction.channel_id,
                interaction_token=interaction.token,
                interaction_token_expires_at=utcnow() + TOKEN_LIFETIME,
            )
        )
        info = await retry_on_disconnect(lambda: self.repo.queue_info(record.id))
        notes = "".join(f"\n-# {note}" for note in request.notes)
        await interaction.edit_original_response(
            content=job_status_text(record, info) + notes, view=job_view(record.id, running=True)
        )

    async def on_interaction(self, interaction: discord.Interaction) -> None:
        """Reroll and cancel buttons (custom ids ``dreamrate:<action>:<job id>``)."""
        if interaction.type is not discord.InteractionType.component:
            return
        custom_id = str((interaction.data or {}).get("custom_id", ""))
        parts = custom_id.split(":")
        if len(parts) != 3 or parts[0] != "dreamrate" or not parts[2].isdigit():
            return
        try:
            await self._button(interaction, parts[1], int(parts[2]))
        except DreamrateError as exc:
            if interaction.response.is_done():
                await interaction.followup.send(exc.message, ephemeral=True)
            else:
                await interaction.response.send_message(exc.message, ephemeral=True)

    async def _button(self, interaction: discord.Interaction, action: str, job_id: int) -> None:
        job = await self.repo.get(job_id)
        if job is None:
            raise DreamrateError(f"There is no job {job_id}.")
        if action == "cancel":
            user = await ensure_user(self.engine, interaction.user.id, interaction.user.name)
            moderator = is_moderator(interaction, self.settings.discord.moderator_role)
            status = await self.repo.cancel(job_id, by_user_id=user.id, is_moderator=moderator)
            text = (
                f"Job {job_id} cancelled."
                if status is JobStatus.CANCELLED
                else f"Job {job_id} will stop at its next step."
            )
            await interaction.response.send_message(text, ephemeral=True)
        elif action == "reroll":
            seed = random.SystemRandom().randint(0, MAX_SEED)
            await self._enqueue(
                interaction,
                GenerationRequest(
                    prompt=job.prompt,
                    negative_prompt=job.negative_prompt,
                    seed=seed,
                    steps=job.steps,
                    guidance=job.guidance,
                    width=job.width,
                    height=job.height,
                    num_images=job.num_images,
                    model=job.model,
                    scheduler=job.scheduler,
                    notes=(f"reroll of job {job.id}, seed {seed}",),
                ),
            )

    # -- delivery -------------------------------------------------------------------------

    async def _deliver_forever(self) -> None:
        await self.wait_until_ready()
        while not self.is_closed():
            try:
                await self.deliver_once()
            except Exception:
                logger.exception("delivery pass failed; retrying")
            await asyncio.sleep(self.delivery_interval)

    async def deliver_once(self) -> None:
        """Post finished jobs (one message per image) and refresh progress lines."""
        async with self.engine.connect() as conn:
            pending = (
                (
                    await conn.execute(
                        select(Job.id)
                        .where(Job.delivered_at.is_(None), Job.channel_id.is_not(None))
                        .order_by(Job.id)
                    )
                )
                .scalars()
                .all()
            )
        for job_id in pending:
            job = await self.repo.get(job_id)
            if job is None:
                continue
            if job.status in (JobStatus.QUEUED, JobStatus.RUNNING):
                await self._show_progress(job)
            else:
                await self._deliver(job)

    async def _token(self, job_id: int) -> str | None:
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    select(Job.interaction_token, Job.interaction_token_expires_at).where(
                        Job.id == job_id
                    )
                )
            ).one()
        return (
            row.interaction_token
            if row.interaction_token_expires_at and row.interaction_token_expires_at > utcnow()
            else None
        )

    def _webhook(self, token: str) -> discord.Webhook:
        assert self.application_id is not None
        return discord.Webhook.partial(self.application_id, token, client=self)

    async def _show_progress(self, job: JobRecord) -> None:
        last = self._last_progress.get(job.id)
        now = asyncio.get_running_loop().time()
        if last is not None and now - last[0] < PROGRESS_EVERY_S:
            return  # throttled before any query: this runs every delivery pass
        info = await self.repo.queue_info(job.id) if job.status is JobStatus.QUEUED else None
        text = job_status_text(job, info)
        if last is not None and last[1] == text:
            return
        token = await self._token(job.id)
        if token is None:
            return
        self._last_progress[job.id] = (now, text)
        with contextlib.suppress(discord.HTTPException):
            await self._webhook(token).edit_message("@original", content=text)

    async def _deliver(self, job: JobRecord) -> None:
        token = await self._token(job.id)
        if token is not None:
            with contextlib.suppress(discord.HTTPException):
                await self._webhook(token).edit_message(
                    "@original", content=job_status_text(job), view=job_view(job.id, running=False)
                )
        if job.status is JobStatus.DONE:
            images = await self.repo.images(job.id)
            requester = await self._requester_name(job.requester_id)
            channel = self.get_channel(job.channel_id or 0) or await self.fetch_channel(
                job.channel_id or 0
            )
            for image in images:
                if image.flagged or image.removed or image.discord_message_id is not None:
                    continue
                path = self.settings.images_dir / image.path
                limit = (
                    channel.guild.filesize_limit
                    if getattr(channel, "guild", None)
                    else 10 * 1024 * 1024
                )  # type: ignore[union-attr]
                data, name = fit_for_upload(path, limit, f"dreamrate-{job.id}-{image.index + 1}")
                file = discord.File(io.BytesIO(data), filename=name)
                embed = image_embed(job, image.index, image.seed, requester)
                token = await self._token(job.id)
                if token is not None:
                    message = await self._webhook(token).send(file=file, embed=embed, wait=True)
                else:
                    message = await channel.send(file=file, embed=embed)  # type: ignore[union-attr]
                async with self.engine.begin() as conn:
                    await conn.execute(
                        update(Image)
                        .where(Image.id == image.id)
                        .values(
                            discord_message_id=message.id, discord_channel_id=message.channel.id
                        )
                    )
                partial = self.get_partial_messageable(message.channel.id).get_partial_message(
                    message.id
                )
                for emoji in (*self.scale.emojis, self.scale.flag_emoji):
                    await partial.add_reaction(emoji)
        async with self.engine.begin() as conn:
            await conn.execute(update(Job).where(Job.id == job.id).values(delivered_at=utcnow()))
        self._last_progress.pop(job.id, None)

    async def images_to_rate(self, count: int) -> list[int]:
        """Image ids for /rate and the feed: active selection once a predictor is active."""
        from dreamrate.aesthetic.select import select_images_to_rate

        return await select_images_to_rate(self.engine, count, await self._active_predictor())

    async def _active_predictor(self) -> Any:
        from pathlib import Path

        from dreamrate.aesthetic.clip_model import model_spec
        from dreamrate.aesthetic.predictor import PredictorError, load_predictor
        from dreamrate.db.models import Predictor as PredictorRow

        async with self.engine.connect() as conn:
            path = await conn.scalar(select(PredictorRow.path).where(PredictorRow.active.is_(True)))
        if path is None:
            return None
        try:
            mtime = (Path(path) / "predictor.json").stat().st_mtime
            if self._predictor_cache and self._predictor_cache[:2] == (path, mtime):
                return self._predictor_cache[2]
            emb = self.settings.embedding
            predictor = load_predictor(
                Path(path), embedding_model=model_spec(emb.model, emb.pretrained)[2]
            )
        except (OSError, PredictorError) as exc:
            logger.warning("active predictor unusable, rating fewest-rated images first: %s", exc)
            return None
        self._predictor_cache = (path, mtime, predictor)
        return predictor

    async def post_for_rating(
        self, channel_id: int, image_ids: list[int], *, kind: str
    ) -> list[int]:
        """Show images again in ``channel_id`` with the rating emoji; reactions there rate them."""
        posted = []
        channel = self.get_partial_messageable(channel_id)
        for image_id in image_ids:
            async with self.engine.connect() as conn:
                image = (
                    await conn.execute(select(Image.__table__).where(Image.id == image_id))
                ).one()
            job = await self.repo.get(image.job_id)
            assert job is not None
            file = discord.File(
                self.settings.images_dir / image.path,
                filename=f"dreamrate-{job.id}-{image.index + 1}.png",
            )
            embed = image_embed(
                job, image.index, image.seed, await self._requester_name(job.requester_id)
            )
            message = await channel.send(file=file, embed=embed)
            async with self.engine.begin() as conn:
                await conn.execute(
                    ImagePost.__table__.insert().values(
                        message_id=message.id,
                        image_id=image_id,
                        channel_id=channel_id,
                        kind=kind,
                        posted_at=utcnow(),
                    )
                )
            for emoji in (*self.scale.emojis, self.scale.flag_emoji):
                await message.add_reaction(emoji)
            posted.append(message.id)
        return posted

    async def _feed_forever(self, every: float = 30.0) -> None:
        """Post one image needing ratings to each guild's feed channel at its interval."""
        await self.wait_until_ready()
        while not self.is_closed():
            try:
                await self.feed_once()
            except Exception:
                logger.exception("rating feed pass failed; retrying")
            await asyncio.sleep(every)

    async def feed_once(self) -> int:
        """Post to every feed channel whose interval has passed; returns the number of posts."""
        async with self.engine.connect() as conn:
            feeds = (
                await conn.execute(
                    select(
                        GuildSettings.feed_channel_id, GuildSettings.feed_interval_minutes
                    ).where(GuildSettings.feed_channel_id.is_not(None))
                )
            ).all()
            posts = 0
            for channel_id, minutes in feeds:
                last = await conn.scalar(
                    select(func.max(ImagePost.posted_at)).where(
                        ImagePost.channel_id == channel_id, ImagePost.kind == "feed"
                    )
                )
                interval = timedelta(minutes=minutes or self.settings.discord.feed_interval)
                if last is not None and utcnow() - last < interval:
                    continue
                chosen = await self.images_to_rate(1)
                if chosen:
                    posts += len(await self.post_for_rating(channel_id, chosen, kind="feed"))
        return posts

    async def _requester_name(self, user_id: int) -> str:
        async with self.engine.connect() as conn:
            return (
                await conn.execute(select(User.name).where(User.id == user_id))
            ).scalar_one_or_none() or "someone"

    # -- reactions ------------------------------------------------------------------------

    async def on_raw_reaction_add(self, payload: discord.RawReactionActionEvent) -> None:
        await self._reaction(payload, added=True)

    async def on_raw_reaction_remove(self, payload: discord.RawReactionActionEvent) -> None:
        await self._reaction(payload, added=False)

    async def _reaction(self, payload: discord.RawReactionActionEvent, *, added: bool) -> None:
        if self.ratings is None or payload.emoji.id is not None:
            return  # custom emoji are never rating emoji
        event = ReactionEvent(
            added=added,
            discord_user_id=payload.user_id,
            message_id=payload.message_id,
            emoji=str(payload.emoji.name),
            channel_id=payload.channel_id,
            guild_id=payload.guild_id,
            user_name=payload.member.name if payload.member is not None else "",
        )
        self._reactions.put_nowait(event)

    async def _record_forever(self) -> None:
        """Record queued reaction events in gateway order, in batches of whatever has arrived,
        and run backfills where they were queued; a failing step is retried, never dropped."""
        assert self.ratings is not None
        ratings = self.ratings
        while True:
            first = await self._reactions.get()
            batch: list[ReactionEvent] = []
            if first is not None:
                batch.append(first)
                while len(batch) < 1000 and not self._reactions.empty():
                    if self._reactions._queue[0] is None:  # type: ignore[attr-defined]
                        break  # a backfill comes next, after this batch
                    item = self._reactions.get_nowait()
                    assert item is not None
                    batch.append(item)
            if batch:
                await self._retrying(
                    functools.partial(ratings.record_many, batch), "recording reactions"
                )
            else:
                await self._retrying(self.backfill, "backfill")
            for _ in range(len(batch) or 1):
                self._reactions.task_done()

    @staticmethod
    async def _retrying(step: Callable[[], Awaitable[Any]], what: str) -> None:
        """Run ``step`` until it succeeds, backing off: nothing recorded is ever dropped."""
        delay = 0.5
        while True:
            try:
                await step()
                return
            except Exception as exc:
                logger.warning("%s failed (%s); retrying in %.1fs", what, type(exc).__name__, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)

    # -- backfill -------------------------------------------------------------------------

    async def backfill(self) -> tuple[int, int, int]:
        """Re-read the rating reactions on recent image messages and reconcile both ways."""
        if self.ratings is None:
            return 0, 0, 0
        since = utcnow() - timedelta(days=self.settings.discord.backfill_days)
        async with self.engine.connect() as conn:
            own = select(Image.discord_message_id, Image.discord_channel_id).where(
                Image.discord_message_id.is_not(None),
                Image.removed.is_(False),
                Image.created_at >= since,
            )
            reposts = (
                select(ImagePost.message_id, ImagePost.channel_id)
                .join(Image, Image.id == ImagePost.image_id)
                .where(Image.removed.is_(False), ImagePost.posted_at >= since)
            )
            rows = (await conn.execute(own.union_all(reposts))).all()
        checked = added = removed = 0
        for message_id, channel_id in rows:
            try:
                message = await self.get_partial_messageable(channel_id).fetch_message(message_id)
            except discord.NotFound:
                continue
            on_discord: dict[str, list[tuple[int, str]]] = {}
            for reaction in message.reactions:
                if (
                    isinstance(reaction.emoji, str)
                    and self.scale.value_of(reaction.emoji) is not None
                ):
                    on_discord[reaction.emoji] = [
                        (u.id, u.name) async for u in reaction.users(limit=None)
                    ]
            a, r = await self.ratings.reconcile(
                message_id,
                on_discord,
                channel_id=channel_id,
                guild_id=message.guild.id if message.guild else None,
            )
            checked, added, removed = checked + 1, added + a, removed + r
        logger.info(
            "backfill: %d message(s) checked, %d rating reaction(s) added, %d removed",
            checked,
            added,
            removed,
        )
        return checked, added, removed
