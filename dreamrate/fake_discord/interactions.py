"""The local Discord's interaction responses: the callback within 3 s, the original
response, and follow-ups through the interaction's webhook for 15 minutes; a deferred
("thinking") response is completed by the first follow-up or an edit, and keeps the
ephemerality it was deferred with."""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from dreamrate.fake_discord.driving import Interaction
from dreamrate.fake_discord.messages import EPHEMERAL, LOADING
from dreamrate.fake_discord.payloads import (
    APP_ID,
    error_response,
    invalid_form_body,
    json_response,
)

__all__ = ["Interactions"]

#: What marks a message as the application's interaction response or follow-up.
FROM_APP = {"webhook_id": str(APP_ID), "application_id": str(APP_ID)}


class Interactions:
    """The interaction routes: a part of :class:`~dreamrate.fake_discord.server.FakeDiscord`,
    working on its state."""

    # -- interactions ---------------------------------------------------------------------

    def _live_interaction(self, token: str) -> Interaction | web.Response:
        interaction = self._interactions.get(token)
        if interaction is None:
            return error_response("unknown_webhook")
        if time.monotonic() - interaction.dispatched > self.token_lifetime:
            return error_response("invalid_webhook_token")
        return interaction

    async def _callback(
        self, request: web.Request, interaction_id: str, token: str
    ) -> web.Response:
        body, files = await self._read_message_body(request)
        interaction = self._interactions.get(token)
        if interaction is None or interaction.id != interaction_id:
            return error_response("unknown_interaction")
        latency = time.monotonic() - interaction.dispatched
        self.ack_latencies.setdefault(interaction_id, latency)
        if interaction.acknowledged:
            return error_response("already_acknowledged")
        if latency > self.ack_deadline:
            return error_response("unknown_interaction")  # the member saw "did not respond"
        kind = body.get("type")
        allowed = (4, 5, 9) if interaction.kind == 2 else (4, 5, 6, 7, 9)
        if kind not in allowed:
            return invalid_form_body(
                {
                    "type": {
                        "_errors": [
                            {
                                "code": "BASE_TYPE_CHOICES",
                                "message": f"Value must be one of {allowed}.",
                            }
                        ]
                    }
                }
            )
        data = body.get("data") or {}
        if kind in (4, 7):
            refused = self._refused_body(interaction.channel_id, data, files, new=kind == 4)
            if refused is not None:
                return refused
        interaction.acknowledged = True
        self.callbacks.setdefault(interaction_id, []).append(body)
        message = None
        flags = int(data.get("flags") or 0) & EPHEMERAL
        if kind == 4:
            message = self._store_message(
                interaction.channel_id,
                {**data, "flags": flags},
                files,
                **FROM_APP,
            )
            self.originals[token] = message
            await self._created(message)
        elif kind == 5:
            message = self._store_message(
                interaction.channel_id,
                {"flags": flags | LOADING},
                [],
                **FROM_APP,
            )
            interaction.loading = True
            self.originals[token] = message
            await self._created(message)
        elif kind in (6, 7) and interaction.message_id in self.messages:
            message = self.messages[interaction.message_id]
            self.originals[token] = message
            if kind == 7:
                self._update(message, data)
                await self.dispatch("MESSAGE_UPDATE", self._public(message))
        if request.query.get("with_response", "").lower() not in ("1", "true"):
            return web.Response(status=204)
        answer: dict[str, Any] = {
            "interaction": {
                "id": interaction_id,
                "type": interaction.kind,
                **({"response_message_id": message["id"]} if message else {}),
                "response_message_loading": kind == 5,
                "response_message_ephemeral": bool(message and message["flags"] & EPHEMERAL),
            }
        }
        if kind in (4, 7) and message is not None:
            answer["resource"] = {"type": kind, "message": self._with_reactions(message)}
        return json_response(answer)

    async def _edit_original(self, request: web.Request, app_id: str, token: str) -> web.Response:
        body, files = await self._read_message_body(request)
        interaction = self._live_interaction(token)
        if isinstance(interaction, web.Response):
            return interaction
        denied = self._deny(interaction.channel_id, self._content_needs(body, files))
        if denied is not None and denied.status == 403 and not files and not body.get("embeds"):
            denied = None  # editing text of one's own response needs no channel permission
        if denied is not None:
            return denied
        original = self.originals.get(token)
        if original is None:
            return error_response("unknown_message")
        refused = self._refused_body(interaction.channel_id, body, files, new=False)
        if refused is not None:
            return refused
        self._complete(interaction, original)
        self._update(original, body)
        self._attach(original, files)
        self.edits.setdefault(token, []).append(body)
        if not original["flags"] & EPHEMERAL:
            await self.dispatch("MESSAGE_UPDATE", self._public(original))
        return json_response(self._with_reactions(original))

    def _complete(self, interaction: Interaction, original: dict[str, Any]) -> None:
        """A deferred response stops "thinking" (its ephemerality stays as deferred)."""
        if interaction.loading:
            interaction.loading = False
            original["flags"] &= ~LOADING

    async def _get_original(self, request: web.Request, app_id: str, token: str) -> web.Response:
        interaction = self._live_interaction(token)
        if isinstance(interaction, web.Response):
            return interaction
        original = self.originals.get(token)
        if original is None or int(original["id"]) not in self.messages:
            return error_response("unknown_message")
        return json_response(self._with_reactions(original))

    async def _delete_original(self, request: web.Request, app_id: str, token: str) -> web.Response:
        interaction = self._live_interaction(token)
        if isinstance(interaction, web.Response):
            return interaction
        original = self.originals.get(token)
        if original is None or int(original["id"]) not in self.messages:
            return error_response("unknown_message")
        interaction.loading = False
        await self._remove_message(int(original["id"]))
        return web.Response(status=204)

    async def _followup(self, request: web.Request, app_id: str, token: str) -> web.Response:
        """A follow-up: after a deferred ("thinking") response, the first one completes that
        message (same id, and ephemeral only if the defer was); later ones are new messages.
        Before any response there is no webhook yet: 404 Unknown Webhook."""
        body, files = await self._read_message_body(request)
        interaction = self._live_interaction(token)
        if isinstance(interaction, web.Response):
            return interaction
        if not interaction.acknowledged:
            return error_response("unknown_webhook")
        # Follow-ups need no Send Messages, but files and embeds need their permissions.
        channel = self.channel(interaction.channel_id)
        if channel is None or channel.deleted:
            return error_response("unknown_channel")
        if (
            channel.guild_id is not None
            and self._content_needs(body, files) & ~channel.bot_permissions
        ):
            return error_response("missing_permissions")
        refused = self._refused_body(interaction.channel_id, body, files, new=True)
        if refused is not None:
            return refused
        original = self.originals.get(token)
        if interaction.loading and original is not None and int(original["id"]) in self.messages:
            self._complete(interaction, original)
            self._update(original, {k: v for k, v in body.items() if k != "flags"})
            self._attach(original, files)
            message = original
            if not message["flags"] & EPHEMERAL:
                await self.dispatch("MESSAGE_UPDATE", self._public(message))
        else:
            flags = int(body.get("flags") or 0) & EPHEMERAL
            message = self._store_message(
                interaction.channel_id,
                {**body, "flags": flags},
                files,
                **FROM_APP,
            )
            await self._created(message)
        self.followups.setdefault(token, []).append(int(message["id"]))
        if request.query.get("wait", "").lower() not in ("1", "true"):
            return web.Response(status=204)
        return json_response(self._with_reactions(message))
