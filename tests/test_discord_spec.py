"""The spec check itself: it names the route and the field of a deviation, and the suite-wide
hook (tests/conftest.py) fails a test whose local-Discord traffic deviates."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.discord_spec import checker

pytest_plugins = ["pytester"]

MESSAGES = "/channels/{channel_id}/messages"
USER = {
    "id": "5",
    "username": "ada",
    "discriminator": "0",
    "global_name": None,
    "avatar": None,
    "public_flags": 0,
    "flags": 0,
    "primary_guild": None,
}
MESSAGE = {
    "id": "1",
    "channel_id": "2",
    "author": USER,
    "content": "hi",
    "timestamp": "2026-01-01T00:00:00+00:00",
    "edited_timestamp": None,
    "tts": False,
    "mention_everyone": False,
    "mentions": [],
    "mention_roles": [],
    "attachments": [],
    "embeds": [{"type": "rich", "title": "t"}],
    "pinned": False,
    "type": 0,
    "flags": 0,
    "components": [],
}


def deviations(method: str, route: str, status: int, body: object) -> list[str]:
    record = {"method": method, "route": route, "status": status, "body": body}
    return [str(d) for d in checker().check(record)]


def test_a_conforming_answer_passes_and_each_deviation_names_route_and_field() -> None:
    assert deviations("POST", MESSAGES, 200, MESSAGE) == []
    untyped = {**MESSAGE, "embeds": [{"title": "t"}]}
    assert deviations("POST", MESSAGES, 200, untyped) == [
        f"POST {MESSAGES} -> 200: $.embeds[0]: 'type' is a required property"
    ]
    anonymous = {**MESSAGE, "author": {"id": "5", "username": "ada"}}
    assert any(
        "$.author: 'avatar' is a required property" in d
        for d in deviations("POST", MESSAGES, 200, anonymous)
    )
    limited = {"message": "You are being rate limited.", "retry_after": 1.0, "global": False}
    assert deviations("POST", MESSAGES, 429, limited) == [
        f"POST {MESSAGES} -> 429: $: 'code' is a required property"
    ]
    # Field errors carry Discord's string codes (the spec's one erratum we correct).
    form = {"code": 50035, "message": "Invalid Form Body", "errors": {"content": {"_errors": [
        {"code": "BASE_TYPE_MAX_LENGTH", "message": "Must be 2000 or fewer in length."}]}}}  # fmt: skip
    assert deviations("POST", MESSAGES, 400, form) == []


def test_statuses_routes_and_bodies_the_spec_does_not_give_are_deviations() -> None:
    reaction = "/channels/{channel_id}/messages/{message_id}/reactions/{emoji_name}/@me"
    assert deviations("PUT", reaction, 204, None) == []
    assert deviations("PUT", reaction, 200, {}) == [
        f"PUT {reaction} -> 200: (operation): status 200 is not one this operation answers"
    ]
    assert deviations("PUT", reaction, 204, {"ok": True}) == [
        f"PUT {reaction} -> 204: $: the spec gives this answer no body"
    ]
    assert deviations("GET", "/nowhere", 404, {"code": 0, "message": "404: Not Found"}) == [
        "GET /nowhere -> 404: (operation): no such operation in Discord's spec"
    ]
    assert deviations("POST", MESSAGES, 500, {"message": "boom"})  # Discord documents no 5XX


def test_the_suite_hook_fails_a_test_whose_discord_traffic_deviates(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).resolve().parents[1]))
    pytester.makeconftest(
        "from tests.conftest import _discord_spec_conformance, _discord_traffic_root  # noqa: F401\n"
    )
    pytester.makepyfile(
        test_traffic="""
import aiohttp, pytest
from dreamrate.fake_discord import CHANNEL_ID, FakeDiscord
from dreamrate.fake_discord.payloads import BOT_TOKEN, json_response

async def post(server):
    await server.start()
    try:
        async with aiohttp.ClientSession(headers={"Authorization": f"Bot {BOT_TOKEN}"}) as http:
            url = f"{server.api_base}/channels/{CHANNEL_ID}/messages"
            async with http.post(url, json={"content": "hi"}) as response:
                return response.status
    finally:
        await server.stop()

async def test_conforming():
    assert await post(FakeDiscord()) == 200

async def test_deviating(monkeypatch):
    async def kinder(self, request, channel_id):  # a message without its author
        return json_response({"id": "1", "channel_id": channel_id, "content": "hi"})
    monkeypatch.setattr(FakeDiscord, "_post_message", kinder)
    assert await post(FakeDiscord()) == 200
"""
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-o", "asyncio_mode=auto")
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*the local Discord answered outside Discord's published spec:*",
            "*POST /channels/{channel_id}/messages -> 200: $: 'author' is a required property*",
        ]
    )
