"""The bot fixtures of ``tests/bot`` for the fault suite's end-to-end tests."""

from tests.bot.conftest import discord_server, running  # noqa: F401 - fixtures, by name
