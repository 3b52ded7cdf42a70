"""The local Discord-compatible server answers like Discord where a bot meets Discord's edges.

Each test below holds the server to one thing Discord's published spec or reference says,
which the server once got wrong (issue 27): it accepted what Discord refuses, or answered
what Discord would not. The REST answers of every test are also checked against Discord's
OpenAPI description by tests/conftest.py.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest

from dreamrate.fake_discord import BASIC, CHANNEL_ID, GUILD_ID, SEND_MESSAGES, FakeDiscord, Member
from dreamrate.fake_discord.gateway import INTENTS
from dreamrate.fake_discord.payloads import APP_ID, BOT_TOKEN
from dreamrate.fake_discord.ratelimits import Bucket, RateLimiter, bucket_for

ADA = Member(71, "ada")
BOT = {"Authorization": f"Bot {BOT_TOKEN}"}
GUILD_EVENTS = INTENTS["guilds"] | INTENTS["guild_messages"] | INTENTS["guild_message_reactions"]


@asynccontextmanager
async def serving(**options: Any) -> AsyncIterator[tuple[FakeDiscord, aiohttp.ClientSession]]:
    server = FakeDiscord(**options)
    await server.start()
    try:
        async with aiohttp.ClientSession(base_url=server.api_base + "/", headers=BOT) as http:
            yield server, http
    finally:
        await server.stop()


async def call(
    http: aiohttp.ClientSession, method: str, path: str, **kwargs: Any
) -> tuple[int, Any]:
    async with http.request(method, path.lstrip("/"), **kwargs) as response:
        text = await response.text()
        return response.status, (json.loads(text) if text else None)


async def post_message(http: aiohttp.ClientSession, body: dict[str, Any]) -> tuple[int, Any]:
    return await call(http, "POST", f"channels/{CHANNEL_ID}/messages", json=body)


class Client:
    """A bare gateway client: what a bot sends, and every payload it receives."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws

    async def send(self, op: int, d: Any) -> None:
        await self.ws.send_json({"op": op, "d": d})

    async def receive(self) -> dict[str, Any]:
        msg = await asyncio.wait_for(self.ws.receive(), 10)
        if msg.type != aiohttp.WSMsgType.TEXT:
            return {"closed": self.ws.close_code}
        return json.loads(msg.data)

    async def until(self, want: str | int) -> list[dict[str, Any]]:
        """Every payload up to and including the first that is event ``want`` (a name), op
        ``want`` (a number) or a close (``"closed"``)."""
        seen = []
        while True:
            payload = await self.receive()
            seen.append(payload)
            if "closed" in payload or payload.get("t") == want or payload.get("op") == want:
                return seen

    async def identify(self, intents: int = GUILD_EVENTS, token: str = BOT_TOKEN) -> dict[str, Any]:
        await self.send(2, {"token": token, "intents": intents, "properties": {}})
        ready = (await self.until("READY"))[-1]
        return ready

    async def events_until_heartbeat_ack(self) -> list[str]:
        """The events (but the guilds') sent before the answer to a heartbeat sent now: the
        socket keeps order, so nothing sent before this call comes later."""
        await self.send(1, None)
        payloads = await self.until(11)
        return [p["t"] for p in payloads if p.get("op") == 0 and p["t"] != "GUILD_CREATE"]


@asynccontextmanager
async def gateway(server: FakeDiscord) -> AsyncIterator[Client]:
    async with aiohttp.ClientSession() as http, http.ws_connect(server.gateway_url) as ws:
        client = Client(ws)
        assert (await client.receive())["op"] == 10  # HELLO
        yield client


async def register(http: aiohttp.ClientSession) -> None:
    status, _ = await call(
        http,
        "PUT",
        f"applications/{APP_ID}/commands",
        json=[{"name": "ping", "description": "Ping.", "type": 1}],
    )
    assert status == 200


# -- rate limits (unchanged) ----------------------------------------------------------------


def test_buckets_are_fixed_windows_keyed_by_route_and_major_parameter() -> None:
    clock = [100.0]
    limiter = RateLimiter(clock=lambda: clock[0])
    react = bucket_for("PUT", "/channels/*/messages/*/reactions/*/@me", ("1", "2", "x"))
    assert react == ("reaction", "reaction", "1")
    first = limiter.check(*react)
    assert first.retry_after == 0 and first.headers["X-RateLimit-Remaining"] == "0"
    second = limiter.check(*react)
    assert 0 < second.retry_after <= 0.25 and not second.is_global
    other_channel = bucket_for("PUT", "/channels/*/messages/*/reactions/*/@me", ("9", "2", "x"))
    assert limiter.check(*other_channel).retry_after == 0  # its own bucket
    clock[0] += 0.25
    assert limiter.check(*react).retry_after == 0  # the window has passed
    bucket = Bucket(5, 5.0)
    assert [bucket.take(0.0) for _ in range(6)] == [0, 0, 0, 0, 0, 5.0]


async def test_rest_answers_with_discords_bodies_headers_and_429s() -> None:
    async with serving() as (server, http):
        answers = []
        for _ in range(6):  # five messages per 5 s per channel
            async with http.post(
                f"channels/{CHANNEL_ID}/messages", json={"content": "hi"}
            ) as response:
                answers.append((response.status, dict(response.headers), await response.json()))
        assert [a[0] for a in answers] == [200] * 5 + [429]
        assert answers[0][1]["X-RateLimit-Limit"] == "5"
        assert answers[4][1]["X-RateLimit-Remaining"] == "0"
        _, limited, body = answers[5]
        assert body["message"] == "You are being rate limited." and body["global"] is False
        assert body["code"] == 0  # Discord's spec requires a code on a 429 too
        assert 0 < body["retry_after"] <= 5 and "Via" in limited and "Retry-After" in limited
        server.set_bot_permissions(CHANNEL_ID, BASIC & ~SEND_MESSAGES)
        server.limiter.enabled = False
        assert await post_message(http, {"content": "hi"}) == (
            403,
            {"code": 50013, "message": "Missing Permissions"},
        )
        server.set_bot_permissions(CHANNEL_ID, 0)
        _, body = await call(http, "GET", f"channels/{CHANNEL_ID}/messages")
        assert body["code"] == 50001  # Missing Access
        deleted = server.channels_of(GUILD_ID)[1]
        await server.delete_channel(deleted)
        assert await call(http, "GET", f"channels/{deleted}") == (
            404,
            {"code": 10003, "message": "Unknown Channel"},
        )
    assert server.rate_limited == 1 and server.invalid_requests == 3  # a 429 and two 403s


# -- REST bodies ------------------------------------------------------------------------------


async def test_message_bodies_outside_discords_limits_are_refused() -> None:
    async with serving(rate_limits=False) as (_, http):
        status, body = await post_message(http, {"content": "x" * 2001})
        assert (status, body["code"]) == (400, 50035)
        assert body["errors"]["content"]["_errors"][0]["code"] == "BASE_TYPE_MAX_LENGTH"
        assert await post_message(http, {"content": ""}) == (
            400,
            {"code": 50006, "message": "Cannot send an empty message"},
        )
        status, body = await post_message(http, {"embeds": [{"title": "t"}] * 11})
        assert (status, list(body["errors"])) == (400, ["embeds"])
        status, body = await post_message(http, {"embeds": [{"title": "t" * 300}]})
        assert status == 400 and "title" in body["errors"]["embeds"]["0"]
        status, body = await post_message(
            http, {"embeds": [{"description": "d" * 4000}, {"description": "d" * 2001}]}
        )
        assert status == 400 and body["errors"]["embeds"]["_errors"][0]["code"] == (
            "MAX_EMBED_SIZE_EXCEEDED"
        )
        # At the limits Discord takes them, and embeds come back typed as it sends them.
        status, body = await post_message(
            http, {"content": "x" * 2000, "embeds": [{"title": "t" * 256}] * 10}
        )
        assert status == 200 and all(e["type"] == "rich" for e in body["embeds"])


async def test_attachments_over_the_advertised_limit_are_refused() -> None:
    async with serving(rate_limits=False) as (server, http):
        limit = server.upload_limit(CHANNEL_ID)
        assert limit == 10 * 1024 * 1024  # what discord.py's Guild.filesize_limit says too
        for size, expected in ((limit, 200), (limit + 1, 413)):
            form = aiohttp.FormData()
            form.add_field("payload_json", json.dumps({"content": "img"}))
            form.add_field("files[0]", b"\0" * size, filename="a.png")
            status, body = await call(http, "POST", f"channels/{CHANNEL_ID}/messages", data=form)
            assert status == expected, body
        assert body == {"code": 40005, "message": "Request entity too large"}


async def test_rest_needs_the_bot_token() -> None:
    async with serving() as (server, http):
        url = f"{server.api_base}/channels/{CHANNEL_ID}/messages"
        async with aiohttp.ClientSession() as anonymous:
            for headers in ({}, {"Authorization": "Bot not-the-token"}):
                async with anonymous.get(url, headers=headers) as response:
                    assert response.status == 401
                    assert await response.json() == {"code": 0, "message": "401: Unauthorized"}
        assert (await call(http, "GET", f"channels/{CHANNEL_ID}/messages"))[0] == 200


async def test_commands_discord_would_refuse_are_refused() -> None:
    async with serving() as (server, http):
        url = f"applications/{APP_ID}/commands"
        for bad in (
            {"name": "BAD NAME!", "description": "Shouts.", "type": 1},
            {"name": "quiet", "description": "", "type": 1},
            {"name": "many", "description": "Too many options.", "options": [
                {"type": 3, "name": f"o{k}", "description": "An option."} for k in range(26)
            ]},
        ):  # fmt: skip
            status, body = await call(http, "PUT", url, json=[bad])
            assert (status, body["code"]) == (400, 50035), bad
            assert body["errors"]["0"], bad
        assert server.global_commands == []
        await register(http)
        assert [c["name"] for c in server.global_commands] == ["ping"]


# -- interactions ---------------------------------------------------------------------------


async def test_a_follow_up_needs_a_response_first() -> None:
    async with serving() as (server, http):
        await register(http)
        interaction_id, token = await server.slash(ADA, "ping")
        followup = f"webhooks/{APP_ID}/{token}?wait=true"
        assert await call(http, "POST", followup, json={"content": "early"}) == (
            404,
            {"code": 10015, "message": "Unknown Webhook"},
        )
        callback = f"interactions/{interaction_id}/{token}/callback?with_response=true"
        assert (await call(http, "POST", callback, json={"type": 4, "data": {"content": "hi"}}))[
            0
        ] == 200
        status, message = await call(http, "POST", followup, json={"content": "later"})
        assert status == 200 and message["content"] == "later"


async def test_the_first_follow_up_after_a_defer_completes_the_thinking_message() -> None:
    async with serving() as (server, http):
        await register(http)
        for flags in (64, 0):  # an ephemeral defer, then a public one
            interaction_id, token = await server.slash(ADA, "ping")
            callback = f"interactions/{interaction_id}/{token}/callback?with_response=true"
            status, answer = await call(
                http, "POST", callback, json={"type": 5, "data": {"flags": flags}}
            )
            assert status == 200 and answer["interaction"]["response_message_loading"] is True
            thinking = answer["interaction"]["response_message_id"]
            followup = f"webhooks/{APP_ID}/{token}?wait=true"
            _, first = await call(
                http, "POST", followup, json={"content": "done", "flags": 64 - flags}
            )
            # The same message, no longer loading, and as ephemeral as the defer was.
            assert first["id"] == thinking and first["content"] == "done"
            assert first["flags"] == flags
            _, second = await call(http, "POST", followup, json={"content": "more"})
            assert second["id"] != thinking


# -- reactions --------------------------------------------------------------------------------


async def test_reactions_take_only_real_emoji_and_at_most_twenty() -> None:
    async with serving(rate_limits=False) as (server, http):
        _, message = await post_message(http, {"content": "rate me"})
        base = f"channels/{CHANNEL_ID}/messages/{message['id']}/reactions"
        assert await call(http, "PUT", f"{base}/notanemoji/@me") == (
            400,
            {"code": 10014, "message": "Unknown Emoji"},
        )
        assert (await call(http, "PUT", f"{base}/nope:123/@me"))[0] == 400  # no such custom emoji
        with pytest.raises(ValueError, match="no emoji"):
            await server.react(ADA, int(message["id"]), "notanemoji")
        emoji = [chr(0x1F600 + k) for k in range(20)]
        for e in emoji:
            assert (await call(http, "PUT", f"{base}/{e}/@me"))[0] == 204
        assert await call(http, "PUT", f"{base}/{chr(0x1F600 + 20)}/@me") == (
            400,
            {"code": 30010, "message": "Maximum number of reactions reached (20)"},
        )
        assert (await call(http, "PUT", f"{base}/{emoji[0]}/@me"))[0] == 204  # already there


async def test_custom_guild_emoji_are_reactions_with_their_id() -> None:
    async with serving(rate_limits=False) as (server, http):
        (dreamy_id,) = [i for i, n in server.guilds[GUILD_ID].emojis.items() if n == "dreamy"]
        _, message = await post_message(http, {"content": "rate me"})
        mid = int(message["id"])
        path = f"channels/{CHANNEL_ID}/messages/{mid}/reactions/dreamy:{dreamy_id}"
        assert (await call(http, "PUT", f"{path}/@me"))[0] == 204
        await server.react(ADA, mid, f"<:dreamy:{dreamy_id}>")
        _, shown = await call(http, "GET", f"channels/{CHANNEL_ID}/messages/{mid}")
        assert shown["reactions"][0]["emoji"] == {
            "id": str(dreamy_id),
            "name": "dreamy",
            "animated": False,
        }
        assert shown["reactions"][0]["count"] == 2
        _, users = await call(http, "GET", path)
        assert [u["id"] for u in users] == [str(ADA.id), str(APP_ID)]


# -- history ----------------------------------------------------------------------------------


async def test_history_pages_as_discord_pages() -> None:
    async with serving(rate_limits=False) as (_, http):
        ids = [int((await post_message(http, {"content": str(k)}))[1]["id"]) for k in range(25)]
        history = f"channels/{CHANNEL_ID}/messages"
        _, page = await call(http, "GET", history, params={"after": str(ids[4]), "limit": "5"})
        # Newest first whatever the direction: the five right after ids[4], newest first.
        assert [int(m["id"]) for m in page] == ids[5:10][::-1]
        # discord.py's paging after= takes data[0] as the next cursor: no overlap, no gap.
        seen, after = [], ids[0] - 1
        while True:
            _, page = await call(http, "GET", history, params={"after": str(after), "limit": "7"})
            if not page:
                break
            seen += [int(m["id"]) for m in reversed(page)]
            after = int(page[0]["id"])
        assert seen == ids
        _, page = await call(http, "GET", history, params={"around": str(ids[12]), "limit": "5"})
        assert [int(m["id"]) for m in page] == ids[10:15][::-1]
        _, page = await call(http, "GET", history, params={"before": str(ids[3])})
        assert [int(m["id"]) for m in page] == ids[:3][::-1]
        status, body = await call(http, "GET", history, params={"limit": "101"})
        assert (status, body["code"], list(body["errors"])) == (400, 50035, ["limit"])
        _, page = await call(http, "GET", history)
        assert len(page) == 25  # the default limit is 50


# -- gateway ----------------------------------------------------------------------------------


async def test_identify_needs_the_bot_token() -> None:
    async with serving() as (server, _), gateway(server) as client:
        await client.send(2, {"token": "wrong", "intents": GUILD_EVENTS, "properties": {}})
        assert (await client.until("closed"))[-1] == {"closed": 4004}
        assert server.identifies == 0


async def test_intents_decide_which_events_a_session_gets() -> None:
    async with serving(rate_limits=False) as (server, http):
        _, message = await post_message(http, {"content": "rate me"})
        mid = int(message["id"])
        async with gateway(server) as client:
            await client.identify(intents=INTENTS["guilds"])
            await server.react(ADA, mid, "👍")
            assert await client.events_until_heartbeat_ack() == []
        async with gateway(server) as client:
            await client.identify(intents=GUILD_EVENTS)
            await server.react(ADA, mid, "🔥")
            assert await client.events_until_heartbeat_ack() == ["MESSAGE_REACTION_ADD"]
        async with gateway(server) as client:  # privileged intents the app has not enabled
            await client.send(
                2, {"token": BOT_TOKEN, "intents": INTENTS["message_content"], "properties": {}}
            )
            assert (await client.until("closed"))[-1] == {"closed": 4014}


async def test_the_gateway_sends_message_and_reaction_clearing_events() -> None:
    async with serving(rate_limits=False) as (server, http), gateway(server) as client:
        await client.identify()
        await client.until("GUILD_CREATE")
        _, message = await post_message(http, {"content": "hello"})
        mid = message["id"]
        await server.react(ADA, int(mid), "👍")
        await server.react(ADA, int(mid), "🔥")
        await server.clear_reactions(int(mid), "🔥")
        await server.clear_reactions(int(mid))
        await call(http, "DELETE", f"channels/{CHANNEL_ID}/messages/{mid}")
        assert await client.events_until_heartbeat_ack() == [
            "MESSAGE_CREATE",
            "MESSAGE_REACTION_ADD",
            "MESSAGE_REACTION_ADD",
            "MESSAGE_REACTION_REMOVE_EMOJI",
            "MESSAGE_REACTION_REMOVE_ALL",
            "MESSAGE_DELETE",
        ]
        assert server.reactions[int(mid)] == {}
        await client.send(8, {"guild_id": str(GUILD_ID), "query": "ad", "limit": 10})
        chunk = (await client.until("GUILD_MEMBERS_CHUNK"))[-1]["d"]
        assert [m["user"]["username"] for m in chunk["members"]] == ["ada"]


async def test_resume_replays_what_was_missed_and_unknown_sessions_are_invalid() -> None:
    async with serving(rate_limits=False) as (server, http):
        _, message = await post_message(http, {"content": "rate me"})
        mid = int(message["id"])
        async with gateway(server) as client:
            await client.send(6, {"token": BOT_TOKEN, "session_id": "nope", "seq": 3})
            assert (await client.until(9))[-1]["d"] is False  # INVALID_SESSION
        async with gateway(server) as client:
            ready = await client.identify()
            payloads = await client.until("GUILD_CREATE")
            payloads += await client.until("GUILD_CREATE")
            seq = max(p["s"] for p in payloads if p.get("s"))
            await server.drop_connection()
        await server.react(ADA, mid, "👍")  # while the bot is away
        await server.react(ADA, mid, "🔥")
        async with gateway(server) as client:
            await client.send(
                6, {"token": BOT_TOKEN, "session_id": ready["d"]["session_id"], "seq": seq}
            )
            replay = await client.until("RESUMED")
            assert [p["t"] for p in replay] == [
                "MESSAGE_REACTION_ADD",
                "MESSAGE_REACTION_ADD",
                "RESUMED",
            ]
            assert [p["d"]["emoji"]["name"] for p in replay[:2]] == ["👍", "🔥"]
            assert server.resumes == 1 and server.connected
        await server.drop_connection(resumable=False)
        async with gateway(server) as client:
            await client.send(
                6, {"token": BOT_TOKEN, "session_id": ready["d"]["session_id"], "seq": seq}
            )
            assert (await client.until(9))[-1]["d"] is False


async def test_a_silent_client_is_dropped_and_reconnects_can_be_forced() -> None:
    async with serving(heartbeat_interval=0.2) as (server, _):
        async with gateway(server) as client:
            await client.identify()
            assert (await client.until("closed"))[-1] == {"closed": 4009}  # no heartbeats
        assert 4009 in server.gateway.close_codes
        async with gateway(server) as client:
            await client.identify()
            await client.until("GUILD_CREATE")
            await client.send(1, None)
            await server.request_reconnect()
            assert (await client.until(7))[-1]["op"] == 7  # RECONNECT
