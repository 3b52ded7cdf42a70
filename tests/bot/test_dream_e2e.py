"""End to end through the local Discord-compatible server with an unmodified discord.py client."""

from __future__ import annotations

from tests.discord_server.server import Member


def image_messages(server, token: str) -> list[dict]:  # type: ignore[no-untyped-def, type-arg]
    return [
        server.messages[mid]
        for mid in server.followups.get(token, [])
        if server.messages[mid]["attachments"]
    ]


async def test_dream_posts_each_image_as_its_own_message_with_rating_emoji(running) -> None:  # type: ignore[no-untyped-def]
    server = running.discord
    ada, bob = Member(11, "ada"), Member(12, "bob")
    _, ada_token = await server.slash(
        ada,
        "dream",
        [
            {"name": "prompt", "type": 3, "value": "a red fox"},
            {"name": "images", "type": 4, "value": 2},
            {"name": "seed", "type": 4, "value": 7},
        ],
    )
    _, bob_token = await server.slash(
        bob, "dream", [{"name": "prompt", "type": 3, "value": "a lighthouse"}]
    )
    await server.wait_for(
        lambda: (
            len(image_messages(server, ada_token)) == 2
            and len(image_messages(server, bob_token)) == 1
        )
    )
    # Deferred first, then the queue position, then the outcome.
    assert server.callbacks and all(c[0]["type"] == 5 for c in server.callbacks.values())
    edits = [e.get("content", "") for e in server.edits[ada_token]]
    assert any("in the queue" in e or "rendering" in e for e in edits)
    await server.wait_for(lambda: "done, 2 image(s)" in server.originals[ada_token]["content"])
    for message in image_messages(server, ada_token):
        assert message["attachments"][0]["filename"].endswith(".png")
        embed = message["embeds"][0]
        fields = {f["name"]: f["value"] for f in embed["fields"]}
        assert (
            embed["description"] == "a red fox"
            and fields["size"] == "64x64"
            and fields["steps"] == "2"
        )
        assert fields["seed"] in ("7", "8") and "by ada" in embed["footer"]["text"]
    seeds = sorted(
        next(f["value"] for f in m["embeds"][0]["fields"] if f["name"] == "seed")
        for m in image_messages(server, ada_token)
    )
    assert seeds == ["7", "8"]
    for message in image_messages(server, ada_token) + image_messages(server, bob_token):
        await server.wait_for(lambda m=message: len(server.reactions[int(m["id"])]) == 11)
        assert list(server.reactions[int(message["id"])]) == [
            "1️⃣",
            "2️⃣",
            "3️⃣",
            "4️⃣",
            "5️⃣",
            "6️⃣",
            "7️⃣",
            "8️⃣",
            "9️⃣",
            "🔟",
            "🚩",
        ]
