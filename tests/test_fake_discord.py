"""The local Discord-compatible server answers like Discord where a bot meets Discord's edges."""

from __future__ import annotations

import aiohttp

from dreamrate.fake_discord import BASIC, CHANNEL_ID, GUILD_ID, SEND_MESSAGES, FakeDiscord
from dreamrate.fake_discord.ratelimits import Bucket, RateLimiter, bucket_for


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
    server = FakeDiscord()
    await server.start()
    headers = {"Authorization": "Bot x", "Content-Type": "application/json"}
    url = f"{server.api_base}/channels/{CHANNEL_ID}/messages"
    try:
        async with aiohttp.ClientSession(headers=headers) as http:
            answers = []
            for _ in range(6):  # five messages per 5 s per channel
                async with http.post(url, json={"content": "hi"}) as response:
                    answers.append((response.status, dict(response.headers), await response.json()))
            assert [a[0] for a in answers] == [200] * 5 + [429]
            assert answers[0][1]["X-RateLimit-Limit"] == "5"
            assert answers[4][1]["X-RateLimit-Remaining"] == "0"
            _, limited, body = answers[5]
            assert body["message"] == "You are being rate limited." and body["global"] is False
            assert 0 < body["retry_after"] <= 5 and "Via" in limited and "Retry-After" in limited
            server.set_bot_permissions(CHANNEL_ID, BASIC & ~SEND_MESSAGES)
            server.limiter.enabled = False
            async with http.post(url, json={"content": "hi"}) as response:
                assert response.status == 403
                assert await response.json() == {"code": 50013, "message": "Missing Permissions"}
            server.set_bot_permissions(CHANNEL_ID, 0)
            async with http.get(url) as response:
                assert (await response.json())["code"] == 50001  # Missing Access
            deleted = server.channels_of(GUILD_ID)[1]
            await server.delete_channel(deleted)
            async with http.get(f"{server.api_base}/channels/{deleted}") as response:
                assert response.status == 404
                assert await response.json() == {"code": 10003, "message": "Unknown Channel"}
    finally:
        await server.stop()
    assert server.rate_limited == 1 and server.invalid_requests == 3  # a 429 and two 403s
