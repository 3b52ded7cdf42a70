"""Pointing discord.py at Discord, or at a Discord-compatible server."""

from __future__ import annotations

import discord
import yarl

__all__ = ["point_discord_at"]


def point_discord_at(api_base: str | None, gateway_url: str | None) -> None:
    """Use ``api_base`` for REST and ``gateway_url`` for the gateway (None keeps Discord's own).

    discord.py reads both from class attributes when it connects, so this must
    run before the client logs in.
    """
    if api_base:
        discord.http.Route.BASE = api_base.rstrip("/")
    if gateway_url:
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(gateway_url)
