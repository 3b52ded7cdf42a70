"""/rate picks by active selection once a predictor is active, and falls back safely."""

from __future__ import annotations

import logging
import re

import numpy as np
import pytest
from sqlalchemy import insert, select

from dreamrate.aesthetic.predictor import Predictor, save_predictor
from dreamrate.aesthetic.predictor_registry import register_predictor
from dreamrate.db.models import Embedding, ImagePost
from dreamrate.fake_discord import GUILD_ID, FakeDiscord, Member
from tests.aesthetic.community import seed_community

FAY = Member(33, "fay")
MODEL = "ViT-L-14/openai"  # the bot's configured embedding model (the default)


async def rate_once(server: FakeDiscord, engine) -> int:  # type: ignore[no-untyped-def]
    """/rate count=1; the image it showed (posted anew, or a recent repost it pointed to)."""
    _, token = await server.slash(FAY, "rate", [{"name": "count", "type": 4, "value": 1}])
    reply = await server.wait_for(
        lambda: next(
            (
                server.messages[m]["content"]
                for m in server.followups.get(token, [])
                if "image(s) to rate" in server.messages[m]["content"]
            ),
            None,
        )
    )
    if reply.startswith("Posted 1 image(s)"):
        async with engine.connect() as conn:
            return (
                await conn.execute(
                    select(ImagePost.image_id)
                    .where(ImagePost.kind == "rate")
                    .order_by(ImagePost.posted_at.desc(), ImagePost.message_id.desc())
                    .limit(1)
                )
            ).scalar_one()
    shown = int(re.findall(r"/(\d+)$", reply)[0])  # a link to the repost it reused
    async with engine.connect() as conn:
        return (
            await conn.execute(select(ImagePost.image_id).where(ImagePost.message_id == shown))
        ).scalar_one()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_rate_asks_about_the_image_the_predictor_is_least_sure_of(
    running, tmp_path, caplog
) -> None:  # type: ignore[no-untyped-def]
    engine = running.engine
    community = await seed_community(
        engine, running.data_dir / "images", prompts=6, per_prompt=3, guild_id=GUILD_ID
    )
    live = [i for i in community.image_ids if i != community.removed_image]
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(len(live), 32)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    async with engine.begin() as conn:
        await conn.execute(
            insert(Embedding),
            [
                {"image_id": i, "model": MODEL, "dim": 32, "vector": v.tobytes()}
                for i, v in zip(live, vectors, strict=True)
            ],
        )
    # Every image has three ratings; without a predictor /rate takes the newest.
    assert await rate_once(running.discord, engine) == max(live)

    # Five CV heads that agree everywhere except along one image's embedding.
    doubtful = live[4]
    direction = vectors[4]
    heads = np.stack([direction * s for s in (-3, -1.5, 0, 1.5, 3)]).astype(np.float32)
    predictor = Predictor(
        MODEL, 32, [(np.zeros((1, 32), np.float32), np.zeros(1, np.float32))],
        ensemble=(heads, np.zeros(5, np.float32)), name="doubtful",
    )  # fmt: skip
    folder = save_predictor(predictor, tmp_path / "doubtful")
    await register_predictor(engine, predictor, folder, activate=True)
    assert await rate_once(running.discord, engine) == doubtful

    # A predictor for another embedding model is ignored with a warning, not a failure.
    other = Predictor(
        "ViT-B-32/openai", 32, predictor.layers, ensemble=predictor.ensemble, name="other"
    )
    await register_predictor(
        engine, other, save_predictor(other, tmp_path / "other"), activate=True
    )
    with caplog.at_level(logging.WARNING):
        assert await rate_once(running.discord, engine) == max(live)
    assert "reads ViT-B-32/openai embeddings, not ViT-L-14/openai" in caplog.text
