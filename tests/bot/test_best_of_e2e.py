"""Best-of-N: /dream renders N candidates per image, the active predictor posts the best,
the rest are kept back; the guild's default; what is refused."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select

from dreamrate.aesthetic.predictor import Predictor, save_predictor
from dreamrate.aesthetic.predictor_registry import register_predictor
from dreamrate.db.models import Image, Job
from dreamrate.fake_discord import BASIC, MANAGE_GUILD, FakeDiscord, Member
from tests.bot.conftest import start_bot, stop_bot
from tests.bot.test_discord_world_e2e import say

pytestmark = pytest.mark.slow

ANA = Member(41, "ana", permissions=BASIC)


def _option(name: str, value: object, kind: int = 4) -> dict[str, object]:
    return {"name": name, "type": kind, "value": value}


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_best_of_posts_the_requested_count_and_they_are_the_predictors_best(
    discord_server: FakeDiscord, database_url: str, tmp_path: Path, tiny_models
) -> None:  # type: ignore[no-untyped-def]
    from dreamrate.aesthetic.clip_model import load_clip

    tiny_sd, tiny_clip = tiny_models
    running = await start_bot(
        discord_server, database_url, tmp_path / "data", tiny_sd,
        embedding={"model": str(tiny_clip), "device": "cpu"}, max_best_of=4,
    )  # fmt: skip
    server, engine = discord_server, running.engine
    try:
        clip = load_clip(str(tiny_clip), None, device="cpu")
        # Refused at once, nothing queued: no predictor is active yet, and over the maximum.
        lantern = _option("prompt", "a lantern", 3)
        answer = await say(server, ANA, "dream", [lantern, _option("best_of", 3)])
        assert answer.startswith("best_of: no predictor is active to pick the best")
        answer = await say(server, ANA, "dream", [lantern, _option("best_of", 9)])
        assert answer == "best_of: must be between 1 and 4, got 9."
        async with engine.connect() as conn:
            assert (await conn.execute(select(Job.id))).all() == []

        # A predictor on the tiny CLIP's space: one direction it likes.
        direction = np.random.default_rng(1).normal(size=clip.dim).astype(np.float32)
        predictor = Predictor(clip.id, clip.dim, [(direction[None, :], np.zeros(1, np.float32))])
        folder = save_predictor(predictor, tmp_path / "predictor")
        await register_predictor(engine, predictor, folder, activate=True)

        _, token = await server.slash(
            ANA, "dream",
            [_option("prompt", "a lantern", 3), _option("images", 2), _option("best_of", 3),
             _option("seed", 7)],
        )  # fmt: skip
        posted = await server.wait_for(
            lambda: (
                [m for m in server.followups.get(token, []) if server.messages[m]["attachments"]]
                or None
            )
        )
        async with engine.connect() as conn:
            (job,) = (await conn.execute(select(Job))).all()
            images = (
                await conn.execute(
                    select(Image).where(Image.job_id == job.id).order_by(Image.index)
                )
            ).all()
        assert job.best_of == 3 and job.num_images == 2
        assert len(images) == 6 and [i.seed for i in images] == list(range(7, 13))
        kept = [i for i in images if not i.passed_over]
        assert len(kept) == 2
        # Scored again here, from the stored files, with the same CLIP and predictor.
        from PIL import Image as PILImage

        files = [PILImage.open(running.data_dir / "images" / i.path) for i in images]
        scores = predictor.predict(clip.embed_images(files))
        assert {i.index for i in kept} == set(np.argsort(-scores)[:2].tolist())
        np.testing.assert_allclose([i.predicted for i in images], scores, rtol=1e-4, atol=1e-5)
        # Exactly the two best were posted, each once; the passed-over ones never.
        await server.wait_for(
            lambda: (
                len(
                    [
                        m
                        for m in server.followups.get(token, [])
                        if server.messages[m]["attachments"]
                    ]
                )
                == 2
            )
        )
        # The bot records each message once Discord has answered its send: wait for both.
        for _ in range(600):
            async with engine.connect() as conn:
                messages = dict(
                    (await conn.execute(
                        select(Image.id, Image.discord_message_id).where(Image.job_id == job.id)
                    )).all()
                )  # fmt: skip
            if sum(1 for m in messages.values() if m) >= 2:
                break
            await asyncio.sleep(0.05)
        assert sorted(m for m in messages.values() if m) == sorted(
            m for m in server.followups[token] if server.messages[m]["attachments"]
        )
        assert all(messages[i.id] is None for i in images if i.passed_over)
        assert posted  # seen while waiting

        # A moderator sets the guild's default; a /dream without best_of takes it.
        boss = Member(42, "boss", permissions=BASIC | MANAGE_GUILD)
        answer = await say(server, boss, "admin", [_option("candidates", 2)], subcommand="bestof")
        assert "renders 2 candidates per image" in answer
        _, token = await server.slash(ANA, "dream", [_option("prompt", "a kite", 3)])
        await server.wait_for(
            lambda: any(server.messages[m]["attachments"] for m in server.followups.get(token, []))
        )
        async with engine.connect() as conn:
            latest = (await conn.execute(select(Job).order_by(Job.id.desc()).limit(1))).one()
        assert latest.best_of == 2 and latest.num_images == 1
    finally:
        await stop_bot(running)
