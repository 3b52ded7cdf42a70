"""Asking the community for a rating or a choice from the database (issue 28, part 2), on
both databases: the kinds follow the predictor's information, pairs stay within a prompt,
and only images that may be shown are asked about."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from sqlalchemy import insert, select

from dreamrate.aesthetic.predictor import Predictor
from dreamrate.aesthetic.select import select_what_to_ask
from dreamrate.db.models import Embedding, Image
from tests.aesthetic.community import GUILD, seed_community

DIM = 8


def _predictor(*, rating: float | None, choice: float | None) -> Predictor:
    """A head whose CV heads disagree most about the first embedding direction."""
    heads = np.zeros((5, DIM), dtype=np.float32)
    heads[:, 0] = [-2, -1, 0, 1, 2]
    heads[:, 1] = 1.0
    sources = {k: 0.5 for k, v in (("ratings", rating), ("choices", choice)) if v is not None}
    return Predictor(
        embedding_model="synthetic",
        dim=DIM,
        layers=[(np.eye(DIM, dtype=np.float32)[1:2], np.zeros(1, dtype=np.float32))],
        training={
            "sources": sources,
            "rating_information": rating,
            "choice_information": choice,
            "choice_scale": 1.0,
        },
        ensemble=(heads, np.zeros(5, dtype=np.float32)),
    )


async def test_asks_follow_the_information_and_stay_within_what_may_be_shown(
    engine, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    community = await seed_community(engine, tmp_path / "images", prompts=6, per_prompt=3)
    rng = np.random.default_rng(0)
    vectors = {}
    for image_id in community.image_ids:
        v = rng.normal(size=DIM).astype(np.float32)
        vectors[image_id] = v / np.linalg.norm(v)
    async with engine.begin() as conn:
        await conn.execute(
            insert(Embedding),
            [
                {"image_id": i, "model": "synthetic", "dim": DIM, "vector": v.tobytes()}
                for i, v in vectors.items()
            ],
        )
        rows = (await conn.execute(select(Image.id, Image.job_id))).all()
    job_of = {int(i): int(j) for i, j in rows}
    shown = set(community.image_ids) - {community.removed_image}

    # Ratings tell the predictor far more per click: every ask is a rating, of the images its
    # heads disagree on most (largest first coordinate), each once.
    asks = await select_what_to_ask(engine, 4, _predictor(rating=10.0, choice=0.01), GUILD)
    assert [kind for kind, _ in asks] == ["rating"] * 4
    rated = [ids[0] for _, ids in asks]
    assert set(rated) <= shown and len(set(rated)) == 4
    by_spread = sorted(shown, key=lambda i: -abs(vectors[i][0]))
    assert rated[0] == by_spread[0]

    # Choices tell it more: pairs of one prompt, none with the removed image, none twice.
    asks = await select_what_to_ask(engine, 3, _predictor(rating=0.01, choice=10.0), GUILD)
    assert [kind for kind, _ in asks] == ["choice"] * 3
    for _, (left, right) in asks:
        assert {left, right} <= shown and job_of[left] == job_of[right]
    assert len({i for _, pair in asks for i in pair}) == 6

    # /rate asks ratings only, whatever the information; a predictor of ratings alone
    # splits a mixed batch; no predictor: nothing to weigh (the caller keeps its mix).
    asks = await select_what_to_ask(
        engine, 2, _predictor(rating=0.01, choice=10.0), GUILD, kinds=("rating",)
    )
    assert [kind for kind, _ in asks] == ["rating", "rating"]
    asks = await select_what_to_ask(engine, 4, _predictor(rating=1.0, choice=None), GUILD)
    assert sorted(kind for kind, _ in asks) == ["choice", "choice", "rating", "rating"]
    assert await select_what_to_ask(engine, 4, None, GUILD) == []
    assert await select_what_to_ask(engine, 4, _predictor(rating=1.0, choice=1.0), GUILD + 1) == []
