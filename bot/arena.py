"""``/arena``: one prompt and seed on two models, posted side by side with the names hidden.

The two jobs go through the ordinary queue but are never delivered as posts of their own
(no channel on the job), so nothing names the models while the round is open; the
comparison post goes out through :class:`~dreamrate.bot.feed.RatingPosts`' post-once
machinery, and when the round closes its card is edited to name them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import time
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import discord

from dreamrate.aesthetic.arena import (
    RoundState,
    close_round,
    fail_round,
    feed_arena_channels,
    open_round,
    posted_message,
    rounds_due,
    start_round,
)
from dreamrate.bot.embeds import _short
from dreamrate.bot.uploads import pair_file
from dreamrate.core.errors import DreamrateError
from dreamrate.db.models import JobStatus
from dreamrate.db.retry import retry_on_disconnect
from dreamrate.db.types import utcnow
from dreamrate.db.users import ensure_user
from dreamrate.generation.model_info import model_defaults
from dreamrate.generation.pipeline import looks_like_path
from dreamrate.generation.request import MAX_SEED, RequestInput, validate_request
from dreamrate.ratings.posts import record_comparison

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from dreamrate.bot.dreams import DreamRequests
    from dreamrate.bot.feed import RatingPosts
    from dreamrate.generation.queue import JobRepository

__all__ = ["ARENA_PROMPTS", "Arena", "arena_embed"]

logger = logging.getLogger(__name__)

#: Seconds between looks for feed channels that need a new round.
FEED_CHECK_SECONDS = 30.0

#: Prompts for a round started without one: plain subjects every model can draw.
ARENA_PROMPTS = (
    "a lighthouse on a cliff at dusk",
    "a bowl of ripe cherries on a wooden table",
    "a fox in fresh snow",
    "a quiet harbour at sunrise",
    "a city street after rain, neon reflections",
    "a mountain lake under the stars",
)


def arena_embed(
    emojis: tuple[str, str, str], prompt: str, names: tuple[str, str] | None = None
) -> discord.Embed:
    """The round's card: the prompt and which emoji means what; the models only once
    ``names`` (left, right) are given, when the round has closed."""
    text = _short(discord.utils.escape_markdown(prompt), 300)
    embed = discord.Embed(
        title="Arena: which model drew it better?",
        description=f"{text}\n{emojis[0]} left · {emojis[1]} right · {emojis[2]} can't choose",
    )
    if names is None:
        embed.set_footer(text="The models are named when the round closes.")
    else:
        embed.add_field(name="left", value=_short(names[0], 256), inline=True)
        embed.add_field(name="right", value=_short(names[1], 256), inline=True)
        embed.set_footer(text="Round closed: later choices do not count.")
    return embed


def _shown(model: str) -> str:
    """A model as members read it: a registered name or hub id as is, a folder by its name."""
    return Path(model).name if looks_like_path(model) else model


class Arena:
    """Starts rounds, posts them when both images are made, closes them after ``hours``."""

    def __init__(
        self,
        client: discord.Client,
        *,
        engine: AsyncEngine,
        repo: JobRepository,
        dreams: DreamRequests,
        posts: RatingPosts,
        hours: float = 24.0,
        interval: float = 5.0,
    ) -> None:
        self.client, self.engine, self.repo = client, engine, repo
        self.dreams, self.posts = dreams, posts
        self.duration = timedelta(hours=hours)
        self.interval = interval
        self._feed_checked = -math.inf

    async def start(self, interaction: discord.Interaction, prompt: str | None) -> None:
        """|coro| ``/arena``: queue the two jobs of a new round here (the checks are /dream's)."""
        await self.dreams.check(interaction, "/arena")
        assert interaction.guild_id is not None and interaction.channel_id is not None
        await interaction.response.defer(thinking=True)
        user = await retry_on_disconnect(
            lambda: ensure_user(self.engine, interaction.user.id, interaction.user.name)
        )
        text = await self.start_round(
            interaction.guild_id, interaction.channel_id, user.id, prompt, enforce_caps=True
        )
        await interaction.followup.send(
            f"Arena round started: two models draw “{_short(text, 200)}” with the same seed. "
            "The pair appears here, unnamed, when both are done."
        )

    async def start_round(
        self,
        guild_id: int,
        channel_id: int,
        requester_id: int,
        prompt: str | None,
        *,
        enforce_caps: bool,
    ) -> str:
        """|coro| Queue a round's two jobs (two of the models /dream offers, drawn at random,
        the first shown left) and record it; returns the prompt."""
        limits = await self.dreams.current_limits()
        models = list(dict.fromkeys(limits.models))
        if len(models) < 2:
            raise DreamrateError(
                "The arena needs two models; a maintainer registers one with `dreamrate models add`."
            )
        pair = random.sample(models, 2)  # which two, and which one is shown left
        seed = random.SystemRandom().randint(0, MAX_SEED)
        text = prompt or random.choice(ARENA_PROMPTS)
        requests = [
            validate_request(
                RequestInput(prompt=text, seed=seed, images=1, model=m),
                limits,
                model_defaults(limits.loads(m)),
            )
            for m in pair
        ]
        jobs = []
        try:
            for request in requests:
                # No channel: the worker renders it, the delivery loop never posts it.
                jobs.append(
                    await self.repo.enqueue(
                        request,
                        requester_id=requester_id,
                        guild_id=guild_id,
                        enforce_caps=enforce_caps,
                    )
                )
        except BaseException:
            for job in jobs:  # half a round is no round: its first job goes too
                with contextlib.suppress(DreamrateError):
                    await self.repo.cancel(job.id, by_user_id=requester_id)
            raise
        await retry_on_disconnect(
            partial(
                start_round,
                self.engine,
                guild_id=guild_id,
                channel_id=channel_id,
                prompt=requests[0].prompt,
                seed=seed,
                left_job_id=jobs[0].id,
                right_job_id=jobs[1].id,
            )
        )
        return requests[0].prompt

    async def feed_rounds(self) -> int:
        """|coro| A new round in every feed channel whose moderators turned the arena on and
        whose last round has closed; the bot asks."""
        channels = await retry_on_disconnect(partial(feed_arena_channels, self.engine))
        if not channels:
            return 0
        me = self.client.user
        assert me is not None
        bot = await retry_on_disconnect(lambda: ensure_user(self.engine, me.id, me.name))
        started = 0
        for guild_id, channel_id in channels:
            try:
                await self.start_round(guild_id, channel_id, bot.id, None, enforce_caps=False)
                started += 1
            except DreamrateError as exc:  # e.g. fewer than two models: try again later
                logger.warning("feed arena in channel %s: %s", channel_id, exc.message)
        return started

    async def run_forever(self) -> None:
        while True:
            try:
                await self.step()
            except asyncio.CancelledError:
                raise
            except Exception:  # one bad round never stops the loop
                logger.exception("arena step failed")
            await asyncio.sleep(self.interval)

    async def step(self) -> int:
        """|coro| Post, fail or close the rounds that are due, and start the feeds' next
        ones; returns how many changed."""
        now = time.monotonic()
        if now - self._feed_checked >= FEED_CHECK_SECONDS:
            self._feed_checked = now
            await self.feed_rounds()
        due = await retry_on_disconnect(partial(rounds_due, self.engine))
        for state in due:
            try:
                if state.status == "open":
                    await self._close(state)
                elif JobStatus.DONE == state.left_status == state.right_status:
                    await self._post(state)
                else:
                    await self._fail(state, "could not be rendered")
            except discord.HTTPException as exc:
                # One round that cannot post (a deleted channel, lost permissions) never
                # holds up the others; refused outright, it ends.
                logger.warning("arena round %s: Discord answered %s", state.id, exc.status)
                if exc.status < 500:
                    await retry_on_disconnect(partial(fail_round, self.engine, state.id))
            except (OSError, IndexError) as exc:  # an image file gone, a job without images
                logger.warning("arena round %s: %s", state.id, exc)
                await retry_on_disconnect(partial(fail_round, self.engine, state.id))
        return len(due)

    async def _fail(self, state: RoundState, why: str) -> None:
        await retry_on_disconnect(partial(fail_round, self.engine, state.id))
        channel = self.client.get_partial_messageable(state.channel_id)
        await channel.send(f"An arena round {why}; start another with /arena.")

    async def _post(self, state: RoundState) -> None:
        left = (await retry_on_disconnect(partial(self.repo.images, state.left_job_id)))[0]
        right = (await retry_on_disconnect(partial(self.repo.images, state.right_job_id)))[0]
        if left.flagged or left.removed or right.flagged or right.removed:
            await self._fail(
                state, "was stopped: the safety check or a moderator held an image back"
            )
            return
        recovered = await retry_on_disconnect(
            partial(posted_message, self.engine, left.id, right.id)
        )
        if recovered is not None:  # posted before a crash, recorded by the recovery since
            await open_round(self.engine, state.id, recovered, utcnow() + self.duration)
            return
        channel = self.client.get_partial_messageable(state.channel_id)
        scale = self.posts.scale

        def send(nonce: str):  # type: ignore[no-untyped-def]
            return channel.send(
                file=pair_file(
                    self.posts.images_dir / left.path,
                    self.posts.images_dir / right.path,
                    f"dreamrate-arena-{state.id}-{nonce}",
                ),
                embed=arena_embed(scale.choice_emojis, state.prompt),
            )

        async def record(*, message_id: int, nonce: str) -> None:
            await record_comparison(
                self.engine,
                message_id=message_id,
                pair=(left.id, right.id),
                channel_id=state.channel_id,
                kind="arena",
                nonce=nonce,
            )
            await open_round(self.engine, state.id, message_id, utcnow() + self.duration)

        await self.posts._post_once(
            state.channel_id, (left.id, right.id, "arena"), send, record, scale.choice_reactions
        )

    async def _close(self, state: RoundState) -> None:
        await retry_on_disconnect(partial(close_round, self.engine, state.id))
        if state.message_id is None:
            return
        message = self.client.get_partial_messageable(state.channel_id).get_partial_message(
            state.message_id
        )
        names = (_shown(state.left_model), _shown(state.right_model))
        try:
            await message.edit(
                embed=arena_embed(self.posts.scale.choice_emojis, state.prompt, names)
            )
        except discord.HTTPException as exc:  # deleted by a moderator: the round still closes
            logger.warning("arena round %s: cannot name the models (%s)", state.id, exc.status)
