"""A synthetic community with a hidden taste, for the benchmark, tests and the demo.

Images come in prompts (four near-identical embeddings per prompt) drawn around a few
dozen themes, like CLIP embeddings of generated images; a hidden "true aesthetic" is a
direction plus a non-linear part; raters have their own offset, scale and noise, and a
share of them are spammers (constant or random ratings).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dreamrate.core.atomic import atomic_file
from dreamrate.core.errors import StorageError

__all__ = ["SyntheticWorld", "make_world"]


@dataclass
class SyntheticWorld:
    embeddings: np.ndarray  #: (n_images, dim) float32 unit vectors
    truth: np.ndarray  #: hidden aesthetic of each image (standardised)
    groups: np.ndarray  #: prompt of each image
    rater_offset: np.ndarray
    rater_scale: np.ndarray
    rater_noise: np.ndarray
    spammer: np.ndarray  #: 0 honest, 1 constant, 2 random
    seed: int
    #: Steepness of each rater's private curve (0: linear in the truth); a steep curve
    #: grades nearly everything 1-3 or 8-10.
    rater_curve: np.ndarray | None = None

    @property
    def n_raters(self) -> int:
        return len(self.rater_offset)

    def rate(self, images: np.ndarray, raters: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Ratings 1..10 that ``raters`` give ``images`` (pairwise)."""
        felt = self.truth[images]
        if self.rater_curve is not None:
            steep = self.rater_curve[raters]
            bent = np.tanh(np.maximum(steep, 1e-6) * felt) / np.maximum(steep, 1e-6) * 3.0
            felt = np.where(steep > 0, bent, felt)
        raw = (
            5.5
            + self.rater_offset[raters]
            + self.rater_scale[raters] * 1.5 * felt
            + rng.normal(0, 1, len(images)) * self.rater_noise[raters]
        )
        values = np.clip(np.rint(raw), 1, 10)
        values = np.where(self.spammer[raters] == 1, 8.0, values)
        return np.where(self.spammer[raters] == 2, rng.integers(1, 11, len(images)), values)

    def random_ratings(
        self, n: int, rng: np.random.Generator, images: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``n`` ratings of random images (from ``images``) by random raters, no repeats."""
        pool = np.arange(len(self.truth)) if images is None else images
        img = rng.choice(pool, n)
        rat = rng.integers(0, self.n_raters, n)
        pairs = np.unique(img.astype(np.int64) * self.n_raters + rat, return_index=True)[1]
        img, rat = img[np.sort(pairs)], rat[np.sort(pairs)]
        return img, rat, self.rate(img, rat, rng)

    def choice_noise(self) -> float:
        """The noise of an honest member's choices: an honest member agrees with the truth
        on about 70 % of within-prompt pairs (the published single-human figure is 65-78 %)."""
        pairs = [np.flatnonzero(self.groups == g) for g in np.unique(self.groups)]
        diffs = np.concatenate([self.truth[p[0]] - self.truth[p[1:]] for p in pairs if len(p) > 1])
        # E[Phi(|d| / s)] = 1/2 + arctan(D / s) / pi for d ~ N(0, D^2): 70 % at D / s = tan(0.2 pi)
        return float(np.std(diffs) / np.tan(0.2 * np.pi))

    def random_choices(
        self, n: int, rng: np.random.Generator, *, within_prompt: float = 0.8
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``n`` clicks ``(image a, image b, rater, winner)``: mostly two images of one
        prompt, as members compare them; winners ``"a"``, ``"b"`` or ``"tie"``. Spammers
        always take the left image (constant raters) or choose at random."""
        a = rng.integers(0, len(self.truth), n)
        members = [np.flatnonzero(self.groups == g) for g in range(int(self.groups.max()) + 1)]
        b = rng.integers(0, len(self.truth), n)
        same = rng.random(n) < within_prompt
        for k in np.flatnonzero(same):
            options = members[self.groups[a[k]]]
            options = options[options != a[k]]
            if len(options):
                b[k] = rng.choice(options)
        b = np.where(b == a, (a + 1) % len(self.truth), b)
        raters = rng.integers(0, self.n_raters, n)
        return a, b, raters, self.choose(a, b, raters, rng)

    def choose(
        self, a: np.ndarray, b: np.ndarray, raters: np.ndarray, rng: np.random.Generator
    ) -> np.ndarray:
        """The winners (``"a"``, ``"b"`` or ``"tie"``) ``raters`` pick between images ``a``
        and ``b`` (pairwise)."""
        n = len(a)
        # Each member's own noise, around the calibrated honest level.
        noise = self.choice_noise() * self.rater_noise[raters] / float(np.mean(self.rater_noise))
        margin = (self.truth[a] - self.truth[b]) + rng.normal(0, 1, n) * noise
        winner = np.where(margin > 0, "a", "b").astype(object)
        winner[np.abs(margin) < 0.1 * noise] = "tie"  # too close to call
        winner[self.spammer[raters] == 1] = "a"
        random = self.spammer[raters] == 2
        winner[random] = np.where(rng.random(int(random.sum())) < 0.5, "a", "b")
        return winner


def make_world(
    n_images: int,
    *,
    dim: int = 768,
    n_raters: int = 200,
    spam_share: float = 0.05,
    themes: int = 40,
    per_prompt: int = 4,
    seed: int = 0,
    steep_curves: bool = False,
) -> SyntheticWorld:
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1, (themes, dim))
    theme_weights = rng.dirichlet(np.full(themes, 0.5))  # some themes are far more popular
    n_prompts = (n_images + per_prompt - 1) // per_prompt
    prompt_theme = rng.choice(themes, n_prompts, p=theme_weights)
    prompts = centres[prompt_theme] + rng.normal(0, 1.0, (n_prompts, dim))
    groups = np.repeat(np.arange(n_prompts), per_prompt)[:n_images]
    x = prompts[groups] + rng.normal(0, 0.35, (n_images, dim))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    direction = rng.normal(0, 1, dim)
    direction /= np.linalg.norm(direction)
    bend = rng.normal(0, 1, dim)
    bend /= np.linalg.norm(bend)
    linear = x @ direction
    curve = x @ bend
    truth = (linear - linear.mean()) / linear.std()
    nonlinear = (curve - curve.mean()) / curve.std()
    truth = truth + 0.35 * (nonlinear**2 - 1)  # a part no linear head can capture
    truth = (truth - truth.mean()) / truth.std()
    spammer = np.zeros(n_raters, dtype=np.int64)
    n_spam = round(n_raters * spam_share)
    chosen = rng.choice(n_raters, n_spam, replace=False)
    spammer[chosen[: n_spam // 2]] = 1
    spammer[chosen[n_spam // 2 :]] = 2
    return SyntheticWorld(
        embeddings=x.astype(np.float32),
        truth=truth,
        groups=groups,
        rater_offset=rng.normal(0, 1.0, n_raters),
        rater_scale=rng.uniform(0.4, 1.6, n_raters),
        rater_noise=rng.uniform(0.5, 2.5, n_raters),
        spammer=spammer,
        seed=seed,
        rater_curve=rng.uniform(1.5, 4.0, n_raters) if steep_curves else None,
    )


def write_clip_retrieval(
    folder: Path,
    *,
    shards: int,
    rows: int,
    dim: int = 768,
    dtype: str = "float16",
    seed: int = 0,
    pad: int = 0,
) -> list[Path]:
    """A clip-retrieval folder: ``img_emb/img_emb_N.npy`` and ``metadata/metadata_N.parquet``
    (``url``, ``caption``, ``key``) of unit vectors; N zero-padded to ``pad`` digits."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    (folder / "img_emb").mkdir(parents=True, exist_ok=True)
    (folder / "metadata").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    written = []
    for n in range(shards):
        label = str(n).zfill(pad)
        x = np.empty((rows, dim), dtype=dtype)
        for start in range(0, rows, 65536):  # bounded memory for big shards
            block = rng.standard_normal((min(65536, rows - start), dim), dtype=np.float32)
            block /= np.linalg.norm(block, axis=1, keepdims=True)
            x[start : start + len(block)] = block
        path = folder / "img_emb" / f"img_emb_{label}.npy"
        with atomic_file(path, StorageError) as tmp, tmp.open("wb") as handle:
            np.save(handle, x)
        keys = [f"{n:05d}{i:06d}" for i in range(rows)]
        metadata = pa.table(
            {
                "url": [f"https://images.example.org/{k}.jpg" for k in keys],
                "caption": [f"synthetic caption {k} of a photo" for k in keys],
                "key": keys,
            }
        )
        with atomic_file(folder / "metadata" / f"metadata_{label}.parquet", StorageError) as tmp:
            pq.write_table(metadata, tmp)
        written.append(path)
    return written
