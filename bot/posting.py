"""Posting an image so that a crash never posts it twice: intent first, then the message.

The nonce of the intent (:mod:`dreamrate.db.pending`) goes into the attachment's file name,
so whoever retries an unfinished post can find the message that was sent after all.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import discord

__all__ = ["attachment_stem", "find_posted"]

#: How far back before an intent the channel is searched (clock skew, slow uploads).
_SLACK = timedelta(minutes=1)


def attachment_stem(job_id: int, index: int, nonce: str) -> str:
    """The image's file name without extension: ``dreamrate-<job>-<n>-<nonce>``."""
    return f"dreamrate-{job_id}-{index + 1}-{nonce}"


async def find_posted(
    client: discord.Client, channel_id: int, nonce: str, since: datetime
) -> discord.Message | None:
    """|coro| The bot's message in ``channel_id`` whose attachment carries ``nonce``,
    posted after ``since``; None when the post never happened."""
    me = client.user
    after = discord.Object(id=discord.utils.time_snowflake(since - _SLACK))
    channel = client.get_partial_messageable(channel_id)
    async for message in channel.history(limit=100, after=after, oldest_first=True):
        mine = me is not None and message.author.id == me.id
        if mine and any(nonce in attachment.filename for attachment in message.attachments):
            return message
    return None
