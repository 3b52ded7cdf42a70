"""The rating queue: which image or pair a member is shown next, in one order with one
fallback, for ``/rate``, ``/compare``, the feed and the web home's rating pages alike.

With an active predictor, the images and pairs that would teach it most
(:mod:`dreamrate.aesthetic.select`); without one, or when it cannot score them, the fewest
rated first, newest first among equals (:func:`~dreamrate.ratings.selection.
images_needing_ratings`). What may be shown is one rule
(:func:`~dreamrate.ratings.selection.shown_for_rating`).
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

from sqlalchemy import select

from dreamrate.aesthetic.select import select_images_to_rate, select_pairs_to_compare
from dreamrate.community.web_ratings import WebPair, pending_web_pair, show_pair_on_web
from dreamrate.db.models import Image
from dreamrate.db.retry import retry_on_disconnect
from dreamrate.db.types import utcnow
from dreamrate.db.users import user_id_of
from dreamrate.ratings.selection import images_needing_ratings, not_rated_by

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from dreamrate.aesthetic.active import ActivePredictor

__all__ = ["CANDIDATES", "PAIR_CANDIDATES", "RatingQueue"]

#: Images the active selection proposes for one member before the ones they rated are left
#: out (the web home shows one at a time).
CANDIDATES = 20
#: Pairs proposed for one member on the web before one is shown.
PAIR_CANDIDATES = 8


class RatingQueue:
    """What to show for rating next.

    Parameters
    ----------
    engine
        The database.
    predictor
        The active predictor, when there is one.
    reuse_within
        A pair compared in a channel this recently is not posted there again (that post is
        still open: its reactions still count).
    """

    def __init__(
        self,
        engine: AsyncEngine,
        predictor: ActivePredictor,
        *,
        reuse_within: timedelta = timedelta(days=14),
    ) -> None:
        self.engine = engine
        self.predictor = predictor
        self.reuse_within = reuse_within

    async def images_to_rate(self, count: int, guild_id: int) -> list[int]:
        """|coro| Up to ``count`` of ``guild_id``'s images that most need a rating."""
        predictor = await self.predictor.get()
        return await retry_on_disconnect(
            lambda: select_images_to_rate(self.engine, count, predictor, guild_id)
        )

    async def next_image(self, guild_id: int, member_discord_id: int) -> int | None:
        """|coro| The image this member rates next: the first of :meth:`images_to_rate`
        they have not rated, else the fewest rated one they have not; None when none is
        left."""
        user_id = await retry_on_disconnect(lambda: user_id_of(self.engine, member_discord_id))
        candidates = await self.images_to_rate(CANDIDATES, guild_id)
        if candidates and user_id is not None:
            async with self.engine.connect() as conn:
                left = set(
                    (
                        await conn.execute(
                            select(Image.id).where(Image.id.in_(candidates), not_rated_by(user_id))
                        )
                    ).scalars()
                )
            candidates = [i for i in candidates if i in left]
        if candidates:
            return candidates[0]
        fallback = await retry_on_disconnect(
            lambda: images_needing_ratings(self.engine, 1, guild_id, unrated_by=user_id)
        )
        return fallback[0] if fallback else None

    async def pairs_to_compare(
        self,
        count: int,
        guild_id: int,
        *,
        member_discord_id: int | None = None,
        channel_id: int | None = None,
    ) -> list[tuple[int, int]]:
        """|coro| Up to ``count`` pairs of ``guild_id``'s images to choose between: none the
        member (None: nobody in particular, the feed) judged, none compared in
        ``channel_id`` recently."""
        predictor = await self.predictor.get()
        since = None if channel_id is None else utcnow() - self.reuse_within
        return await retry_on_disconnect(
            lambda: select_pairs_to_compare(
                self.engine,
                count,
                predictor,
                guild_id,
                member_discord_id,
                channel_id=channel_id,
                since=since,
            )
        )

    async def next_pair(self, guild_id: int, member_discord_id: int) -> WebPair | None:
        """|coro| The pair this member chooses on next on the web: the one shown to them
        and not chosen on yet (a reload gets it again), else a new one; None when none."""
        shown = await pending_web_pair(self.engine, guild_id=guild_id, discord_id=member_discord_id)
        if shown is not None:
            return shown
        pairs = await self.pairs_to_compare(
            PAIR_CANDIDATES, guild_id, member_discord_id=member_discord_id
        )
        if not pairs:
            return None
        left, right = pairs[0]
        return await show_pair_on_web(
            self.engine, guild_id=guild_id, discord_id=member_discord_id, left=left, right=right
        )
