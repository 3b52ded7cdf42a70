"""A simulated community with a hidden taste for the toy world, for the loop benchmark, the
demo and tests.

The taste is a function of an image's pixels alone (read with
:func:`dreamrate.generation.toy_world.describe`): the members like warm foregrounds (red,
orange, yellow), strong contrast with the background, large shapes and, a little, circles.
No part of the loop ever sees this function: it only shapes the members' clicks. Members
rate on 1-10 with their own offset, scale and noise, and a few are spammers (constant or
random), as in :mod:`dreamrate.aesthetic.synthetic`; their choices between two images
follow the taste with the noise of one honest human (about 70 % agreement on close pairs).

What the community leaves behind is written in the project's own schemas (a folder laid
out as ``dreamrate export dataset`` writes it), so ``train`` and ``finetune --method
dpo|kto`` read it as they read a real community's export.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from dreamrate.generation.toy_world import describe

if TYPE_CHECKING:
    from PIL import Image

__all__ = ["Community", "hidden_taste", "tastes_of", "write_dataset"]


def _warmth(rgb: Sequence[float]) -> float:
    red, _, blue = rgb
    return (red - blue) / 255.0


def hidden_taste(pixels: np.ndarray) -> float:
    """How much the community likes one image (``(h, w, 3)`` uint8): higher is better.

    Roughly in [-1.5, 2.5]: warm foreground (-0.6..0.8), contrast (0..0.8 weighted),
    the shape's share of the image (0..0.15, weighted x4), a circle's bonus (0.3).
    An image with no shape to see scores as a grey nothing would.
    """
    seen = describe(pixels)
    if not seen.found:
        return -1.0
    return (
        1.0 * _warmth(seen.foreground_rgb)
        + 1.0 * seen.contrast
        + 4.0 * seen.area
        + 0.3 * (seen.shape == "circle")
    )


def tastes_of(images: Sequence[Image.Image]) -> np.ndarray:
    """The hidden taste of each image."""
    return np.array([hidden_taste(np.asarray(im.convert("RGB"))) for im in images])


@dataclass
class Community:
    """Members with their own way of rating; spammers among them."""

    offset: np.ndarray
    scale: np.ndarray
    noise: np.ndarray
    spammer: np.ndarray  #: 0 honest, 1 constant, 2 random
    seed: int

    @classmethod
    def make(cls, members: int, seed: int, spam_share: float = 0.1) -> Community:
        rng = np.random.default_rng([seed, 7])
        spammer = np.zeros(members, dtype=np.int64)
        count = round(members * spam_share)
        chosen = rng.choice(members, count, replace=False)
        spammer[chosen] = rng.integers(1, 3, count)
        return cls(
            offset=rng.normal(0, 0.8, members),
            scale=np.exp(rng.normal(0, 0.3, members)),
            noise=rng.uniform(0.8, 1.6, members),
            spammer=spammer,
            seed=seed,
        )

    @property
    def members(self) -> int:
        return len(self.offset)

    def rate(
        self, taste: np.ndarray, images: np.ndarray, raters: np.ndarray, rng: np.random.Generator
    ) -> np.ndarray:
        """Ratings 1..10 that ``raters`` give ``images`` (indices into ``taste``)."""
        z = (taste - taste.mean()) / max(float(taste.std()), 1e-9)
        raw = (
            5.5
            + self.offset[raters]
            + self.scale[raters] * 1.5 * z[images]
            + rng.normal(0, 1, len(images)) * self.noise[raters]
        )
        values = np.clip(np.rint(raw), 1, 10)
        values = np.where(self.spammer[raters] == 1, 8.0, values)
        return np.where(self.spammer[raters] == 2, rng.integers(1, 11, len(images)), values)

    def choose(
        self,
        taste: np.ndarray,
        a: np.ndarray,
        b: np.ndarray,
        raters: np.ndarray,
        rng: np.random.Generator,
    ) -> np.ndarray:
        """``"a"``, ``"b"`` or ``"tie"`` for each pair, by the taste and one human's noise."""
        spread = max(float(taste.std()), 1e-9)
        # Noise of one honest human: about 70 % agreement on pairs one taste-sd apart.
        felt = (taste[a] - taste[b]) / spread + rng.normal(0, 1.2, len(a)) * np.sqrt(2)
        winner = np.where(felt > 0, "a", "b")
        winner = np.where(np.abs(felt) < 0.1, "tie", winner)
        random = rng.choice(np.array(["a", "b", "tie"]), len(a))
        return np.where(self.spammer[raters] > 0, random, winner)


def write_dataset(
    out: Path,
    images: Sequence[Image.Image],
    prompts: Sequence[str],
    generation: Sequence[int],
    ratings: tuple[np.ndarray, np.ndarray, np.ndarray] | None,
    choices: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None,
    embeddings: np.ndarray | None = None,
) -> Path:
    """Write the community's images and clicks as ``export dataset`` lays them out.

    ``prompts`` are per generation, ``generation`` maps each image to one; ``ratings`` is
    ``(image, rater, value)`` and ``choices`` ``(image_a, image_b, rater, winner)``, with
    images as indices (image id = index + 1)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from dreamrate.ratings.schema import choice_schema, prompt_group, rating_schema

    (out / "images").mkdir(parents=True, exist_ok=True)
    ids = list(range(1, len(images) + 1))
    for image_id, image in zip(ids, images, strict=True):
        image.save(out / "images" / f"{image_id}.png")
    pq.write_table(
        pa.table(
            {
                "generation_id": list(range(1, len(prompts) + 1)),
                "prompt": list(prompts),
            }
        ),
        out / "generations.parquet",
    )
    pq.write_table(
        pa.table(
            {
                "image_id": ids,
                "generation_id": [int(g) + 1 for g in generation],
                "file": [f"images/{i}.png" for i in ids],
            }
        ),
        out / "images.parquet",
    )
    group = [prompt_group(prompts[int(g)]) for g in generation]
    if ratings is not None:
        image, rater, value = ratings
        rows = [
            {"image_id": int(i) + 1, "rater_id": f"member-{int(r)}", "rating": float(v),
             "scale": "numbers-10", "rated_at": None, "group": group[int(i)]}
            for i, r, v in zip(image, rater, value, strict=True)
        ]  # fmt: skip
        pq.write_table(pa.Table.from_pylist(rows, schema=rating_schema()), out / "ratings.parquet")
    if choices is not None:
        a, b, rater, winner = choices
        rows = [
            {"image_a": int(x) + 1, "image_b": int(y) + 1, "rater_id": f"member-{int(r)}",
             "winner": str(w), "group_a": group[int(x)], "group_b": group[int(y)], "timestamp": None}
            for x, y, r, w in zip(a, b, rater, winner, strict=True)
        ]  # fmt: skip
        pq.write_table(
            pa.Table.from_pylist(rows, schema=choice_schema()), out / "comparisons.parquet"
        )
    if embeddings is not None:
        flat = pa.array(np.asarray(embeddings, dtype=np.float32).reshape(-1))
        pq.write_table(
            pa.table(
                {
                    "image_id": pa.array(ids, pa.int64()),
                    "embedding": pa.FixedSizeListArray.from_arrays(flat, embeddings.shape[1]),
                }
            ),
            out / "embeddings.parquet",
        )
    return out
