"""What tests do on the local Discord as its members would: react, clear reactions as a
moderator, run slash commands and press buttons; each sends the bot the gateway events
Discord would send (if its intents ask for them)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from dreamrate.fake_discord.emoji import MAX_REACTIONS, ReactionEmoji, parse_emoji
from dreamrate.fake_discord.limits import upload_limit
from dreamrate.fake_discord.payloads import APP_ID, BASIC, BOT_ID, GUILD_ID, Member, snowflake

__all__ = ["Driving", "Interaction"]


@dataclass
class Interaction:
    """An interaction the server dispatched, and where its response stands."""

    id: str
    token: str
    kind: int  # 2: application command, 3: component
    channel_id: int
    dispatched: float
    message_id: int | None = None  # the message a component is on
    acknowledged: bool = False
    #: A deferred "thinking" response the first follow-up (or an edit) completes.
    loading: bool = False


class Driving:
    """The test-facing part of :class:`~dreamrate.fake_discord.server.FakeDiscord`, working
    on its state."""

    # -- reactions ------------------------------------------------------------------------

    def _emoji(self, emoji: str) -> ReactionEmoji:
        parsed = parse_emoji(emoji, self.custom_emoji())
        if parsed is None:
            raise ValueError(f"Discord offers no emoji {emoji!r} to react with")
        return parsed

    async def _reaction_event(
        self, added: bool, user_id: int, message_id: int, emoji: ReactionEmoji
    ) -> None:
        message = self.messages[message_id]
        data: dict[str, Any] = {
            "user_id": str(user_id),
            "channel_id": message["channel_id"],
            "message_id": str(message_id),
            "emoji": emoji.payload(),
            "burst": False,
            "type": 0,
        }
        guild = self.guilds.get(int(message.get("guild_id", 0)))
        if guild is not None:
            data["guild_id"] = str(guild.id)
        if added:
            data["message_author_id"] = message["author"]["id"]
            data["burst_colors"] = []
            if user_id != BOT_ID and guild is not None:
                name = self._member_names.get(user_id, f"user{user_id}")
                data["member"] = self._member_payload(Member(user_id, name), guild)
        await self.dispatch("MESSAGE_REACTION_ADD" if added else "MESSAGE_REACTION_REMOVE", data)

    async def react(self, member: Member, message_id: int, emoji: str) -> None:
        """``member`` adds ``emoji`` (Unicode, or a guild's custom emoji as ``<:name:id>`` or
        ``name:id``) under a message.

        Raises
        ------
        ValueError
            for an emoji Discord does not have, or a 21st distinct emoji on the message.
        """
        parsed = self._emoji(emoji)
        self._member_names[member.id] = member.name
        on_message = self.reactions.setdefault(message_id, {})
        present = {k for k, users in on_message.items() if users}
        if parsed.key not in present and len(present) >= MAX_REACTIONS:
            raise ValueError(f"message {message_id} already has {MAX_REACTIONS} distinct emoji")
        users = on_message.setdefault(parsed.key, [])
        if member.id not in users:
            users.append(member.id)
            await self._reaction_event(True, member.id, message_id, parsed)

    async def unreact(self, member: Member, message_id: int, emoji: str) -> None:
        """``member`` takes their ``emoji`` back (nothing happens if they had not reacted)."""
        parsed = self._emoji(emoji)
        users = self.reactions.setdefault(message_id, {}).setdefault(parsed.key, [])
        if member.id in users:
            users.remove(member.id)
            await self._reaction_event(False, member.id, message_id, parsed)

    async def clear_reactions(self, message_id: int, emoji: str | None = None) -> None:
        """A moderator removes every reaction from a message (MESSAGE_REACTION_REMOVE_ALL), or
        every reaction of one emoji (MESSAGE_REACTION_REMOVE_EMOJI)."""
        await self._clear(message_id, None if emoji is None else self._emoji(emoji))

    async def _clear(self, message_id: int, emoji: ReactionEmoji | None) -> None:
        message = self.messages[message_id]
        on_message = self.reactions.setdefault(message_id, {})
        data: dict[str, Any] = {"channel_id": message["channel_id"], "message_id": str(message_id)}
        if "guild_id" in message:
            data["guild_id"] = message["guild_id"]
        if emoji is None:
            on_message.clear()
            await self.dispatch("MESSAGE_REACTION_REMOVE_ALL", data)
        else:
            on_message.pop(emoji.key, None)
            await self.dispatch("MESSAGE_REACTION_REMOVE_EMOJI", {**data, "emoji": emoji.payload()})

    # -- interactions ---------------------------------------------------------------------

    def _command(self, name: str, guild: int | None) -> dict[str, Any]:
        available = [*(self.guild_commands.get(guild, []) if guild else []), *self.global_commands]
        for command in available:
            if command["name"] != name:
                continue
            if guild is None and (
                command.get("dm_permission") is False
                or 1 not in (command.get("contexts") or [0, 1])
            ):
                raise LookupError(f"/{name} is not offered in DMs")
            return command
        where = f"in guild {guild}" if guild else "for DMs"
        raise LookupError(f"/{name} is not registered {where}")

    async def slash(
        self,
        member: Member,
        name: str,
        options: list[dict[str, Any]] | None = None,
        *,
        subcommand: str | None = None,
        guild: int | None = GUILD_ID,
        channel: int | None = None,
        dm: bool = False,
    ) -> tuple[str, str]:
        """Send a slash command as ``member`` in ``channel`` of ``guild`` (default: its first
        channel), or in their DM with the bot; returns ``(interaction id, token)``.

        Raises
        ------
        LookupError
            when Discord would not offer the command there (not registered, or guild-only).
        """
        guild = None if dm else guild
        command = self._command(name, guild)
        opts = options or []
        if subcommand is not None:
            opts = [{"type": 1, "name": subcommand, "options": opts}]
        resolved: dict[str, dict[str, Any]] = {}
        world = self.guilds[guild] if guild is not None else None
        for option in options or []:
            if option["type"] == 6:  # USER
                other = Member(int(option["value"]), f"user{option['value']}")
                resolved.setdefault("users", {})[str(other.id)] = other.user()
                if world is not None:
                    resolved.setdefault("members", {})[str(other.id)] = {
                        k: v for k, v in self._member_payload(other, world).items() if k != "user"
                    }
            elif option["type"] == 7:  # CHANNEL
                target = self.channel(int(option["value"]))
                resolved.setdefault("channels", {})[str(option["value"])] = {
                    "id": str(option["value"]),
                    "type": 0,
                    "name": target.name if target else "unknown",
                    "permissions": str(BASIC),
                    "guild_id": str(target.guild_id if target and target.guild_id else guild),
                }
        data = {"id": command["id"], "name": name, "type": 1, "options": opts, "resolved": resolved}
        if guild is not None:
            data["guild_id"] = str(guild)
        where = self._dm(member.id).id if dm else channel or self.channels_of(guild)[0]  # type: ignore[arg-type]
        return await self._interaction(member, 2, data, where)

    async def click(self, member: Member, message_id: int, custom_id: str) -> tuple[str, str]:
        """Press a button on a message as ``member``; returns ``(interaction id, token)``."""
        data = {"custom_id": custom_id, "component_type": 2}
        message = self._with_reactions(self.messages[message_id])
        return await self._interaction(
            member, 3, data, int(message["channel_id"]), message=message, on_message=message_id
        )

    async def _interaction(
        self,
        member: Member,
        kind: int,
        data: dict[str, Any],
        channel_id: int,
        *,
        on_message: int | None = None,
        **extra: Any,
    ) -> tuple[str, str]:
        """Dispatch INTERACTION_CREATE in Discord's shape (2: slash command, 3: component)."""
        self._member_names[member.id] = member.name
        interaction_id, token = snowflake(), "tok-" + snowflake()
        channel = self.channel(channel_id)
        assert channel is not None, f"no channel {channel_id}"
        guild = self.guilds.get(channel.guild_id or 0)
        body: dict[str, Any] = {
            "id": interaction_id,
            "application_id": str(APP_ID),
            "type": kind,
            "token": token,
            "version": 1,
            "data": data,
            "channel_id": str(channel.id),
            "channel": channel.payload(),
            # What the bot may do where the member asked, as Discord sends with every interaction.
            "app_permissions": str(channel.bot_permissions if guild else BASIC),
            "locale": "en-US",
            "entitlements": [],
            "attachment_size_limit": upload_limit(guild.premium_tier if guild else 0),
            **extra,
        }
        if guild is not None:
            body |= {
                "guild_id": str(guild.id),
                "guild_locale": "en-US",
                "member": self._member_payload(member, guild),
                "authorizing_integration_owners": {"0": str(guild.id)},
                "context": 0,
            }
        else:
            body |= {
                "user": member.user(),
                "authorizing_integration_owners": {"0": "0"},
                "context": 1,
            }
        self._interactions[token] = Interaction(
            interaction_id, token, kind, channel.id, time.monotonic(), message_id=on_message
        )
        await self.dispatch("INTERACTION_CREATE", body)
        return interaction_id, token
