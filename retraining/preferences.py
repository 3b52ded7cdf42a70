"""The community's clicks as fine-tuning data, read from a dataset export (``export dataset``).

A dataset folder holds ``images/<id>.png``, ``images.parquet`` (each image's generation) and
``generations.parquet`` (each generation's prompt), so every image comes with the prompt it
was made from. On top of it:

* choices (``comparisons.parquet``, or a ``comparisons export`` file of the same community)
  become (preferred, rejected, prompt) pairs for DPO; ties say nothing and are left out;
* ratings (``ratings.parquet``, or a ``ratings export`` file) become liked and disliked images
  for KTO: each image's rater-aware target (generous and harsh raters, spammers and curve
  graders corrected, as ``train`` does) ranks it; the top third is liked, the bottom third
  disliked, the middle left out as undecided.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dreamrate.core.errors import DreamrateError
from dreamrate.ratings.aggregate import RatingPanel, rater_aware_targets

__all__ = [
    "LIKED_SHARE",
    "CommunityImages",
    "LabelledImages",
    "PreferenceDataError",
    "PreferencePairs",
    "load_labelled",
    "load_pairs",
]

#: The share of rated images (by rater-aware target) that counts as liked, and as disliked.
LIKED_SHARE = 1 / 3


class PreferenceDataError(DreamrateError):
    """Choices or ratings a preference fine-tune cannot use."""


def _table(path: Path, option: str) -> Any:
    import pyarrow.parquet as pq

    if path.is_dir():
        raise PreferenceDataError(f"{option}: {path} is a folder, not a Parquet file")
    if not path.is_file():
        raise PreferenceDataError(f"{option}: no such file {path}")
    try:
        return pq.read_table(path)
    except Exception as exc:  # pyarrow raises ArrowInvalid, OSError, ...
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise PreferenceDataError(
            f"{option}: {path} is not a readable Parquet file ({first[:160]})"
        ) from exc


def _columns(table: Any, path: Path, option: str, needed: tuple[str, ...]) -> None:
    missing = [c for c in needed if c not in table.column_names]
    if missing:
        raise PreferenceDataError(f"{option}: {path} lacks column(s) {', '.join(missing)}")


class CommunityImages:
    """The images of a dataset export with their prompts; pixels decoded when asked."""

    def __init__(self, folder: Path) -> None:
        if not folder.is_dir():
            raise PreferenceDataError(
                f"--data: {folder} is not a folder (write one with `dreamrate export dataset`)"
            )
        images = _table(folder / "images.parquet", "--data")
        generations = _table(folder / "generations.parquet", "--data")
        _columns(images, folder / "images.parquet", "--data", ("image_id", "generation_id", "file"))
        _columns(generations, folder / "generations.parquet", "--data", ("generation_id", "prompt"))
        prompt_of = dict(
            zip(
                generations.column("generation_id").to_pylist(),
                generations.column("prompt").to_pylist(),
                strict=True,
            )
        )
        self.folder = folder
        self.prompts: dict[int, str] = {}
        self.files: dict[int, Path] = {}
        for image_id, generation, file in zip(
            images.column("image_id").to_pylist(),
            images.column("generation_id").to_pylist(),
            images.column("file").to_pylist(),
            strict=True,
        ):
            path = (folder / str(file)).resolve()
            if folder.resolve() not in path.parents or not path.is_file():
                continue  # a row without its file (or pointing outside) cannot be trained on
            self.prompts[int(image_id)] = str(prompt_of.get(generation) or "")
            self.files[int(image_id)] = path

    def missing(self, ids: np.ndarray) -> list[int]:
        """The ids among ``ids`` that have no image file here."""
        return sorted({int(i) for i in ids.tolist()} - self.files.keys())

    def pixels(self, image_id: int, resolution: int) -> np.ndarray:
        """The image as (3, resolution, resolution) float32 in [-1, 1], centre-cropped."""
        from PIL import Image

        data = self.files[image_id].read_bytes()
        with Image.open(io.BytesIO(data)) as image:
            rgb = image.convert("RGB")
        side = min(rgb.size)
        left, top = (rgb.width - side) // 2, (rgb.height - side) // 2
        rgb = rgb.crop((left, top, left + side, top + side))
        if rgb.size != (resolution, resolution):
            rgb = rgb.resize((resolution, resolution), Image.Resampling.BICUBIC)
        return (np.asarray(rgb, dtype=np.float32).transpose(2, 0, 1) / 127.5) - 1.0


@dataclass(frozen=True)
class PreferencePairs:
    """One row per choice that said something: the preferred and the rejected image."""

    images: CommunityImages
    winners: np.ndarray
    losers: np.ndarray
    source: Path

    def __len__(self) -> int:
        return len(self.winners)

    def prompt(self, k: int) -> str:
        return self.images.prompts[int(self.winners[k])]

    def record(self) -> dict[str, Any]:
        return {
            "folder": str(self.images.folder.resolve()),
            "comparisons": str(self.source.resolve()),
            "pairs": len(self),
            "images": len(set(self.winners.tolist()) | set(self.losers.tolist())),
        }


@dataclass(frozen=True)
class LabelledImages:
    """Rated images with a verdict: liked (True) or disliked (False)."""

    images: CommunityImages
    image_ids: np.ndarray
    liked: np.ndarray
    source: Path

    def __len__(self) -> int:
        return len(self.image_ids)

    def record(self) -> dict[str, Any]:
        return {
            "folder": str(self.images.folder.resolve()),
            "ratings": str(self.source.resolve()),
            "liked": int(self.liked.sum()),
            "disliked": int((~self.liked).sum()),
        }


def load_pairs(data: Path, comparisons: Path | None) -> PreferencePairs:
    """The choices in ``comparisons`` (default: the dataset's own ``comparisons.parquet``)."""
    source = comparisons or data / "comparisons.parquet"
    if comparisons is None and not source.is_file():
        raise PreferenceDataError(
            f"--method dpo: give --comparisons (no comparisons.parquet in {data})"
        )
    option = "--comparisons"
    table = _table(source, option)
    _columns(table, source, option, ("image_a", "image_b", "winner"))
    images = CommunityImages(data)
    a = np.asarray(table.column("image_a").to_pylist(), dtype=np.int64)
    b = np.asarray(table.column("image_b").to_pylist(), dtype=np.int64)
    winner = np.asarray([str(w) for w in table.column("winner").to_pylist()])
    unknown = sorted(set(winner.tolist()) - {"a", "b", "tie"})
    if unknown:
        raise PreferenceDataError(f"{option}: winner must be a, b or tie, not {unknown[0]!r}")
    decided = winner != "tie"
    a, b, winner = a[decided], b[decided], winner[decided]
    if not len(a):
        raise PreferenceDataError(f"{option}: {source} holds no choice that prefers an image")
    lacking = images.missing(np.concatenate([a, b]))
    if lacking:
        raise PreferenceDataError(
            f"{option}: {len(lacking)} image(s) the choices name have no file in {data} "
            f"(first: {lacking[0]})"
        )
    winners = np.where(winner == "a", a, b)
    losers = np.where(winner == "a", b, a)
    return PreferencePairs(images, winners, losers, source)


def load_labelled(data: Path, ratings: Path | None) -> LabelledImages:
    """Liked and disliked images from the ratings (default: the dataset's ``ratings.parquet``)."""
    source = ratings or data / "ratings.parquet"
    if ratings is None and not source.is_file():
        raise PreferenceDataError(f"--method kto: give --ratings (no ratings.parquet in {data})")
    option = "--ratings"
    table = _table(source, option)
    _columns(table, source, option, ("image_id", "rater_id", "rating"))
    images = CommunityImages(data)
    ids = np.asarray(table.column("image_id").to_pylist(), dtype=np.int64)
    lacking = images.missing(ids)
    if lacking:
        raise PreferenceDataError(
            f"{option}: {len(lacking)} rated image(s) have no file in {data} (first: {lacking[0]})"
        )
    try:
        panel = RatingPanel.from_columns(
            ids,
            np.asarray([str(r) for r in table.column("rater_id").to_pylist()]),
            np.asarray(table.column("rating").to_pylist(), dtype=np.float64),
        )
        targets, _ = rater_aware_targets(panel)
    except (ValueError, TypeError) as exc:
        raise PreferenceDataError(f"{option}: {exc}") from exc
    order = np.argsort(targets.target, kind="stable")
    count = int(np.floor(len(order) * LIKED_SHARE))
    low, high = order[:count], order[len(order) - count :]
    # Equal targets cannot be both liked and disliked: a flat panel says nothing.
    if not count or targets.target[high].min() <= targets.target[low].max():
        raise PreferenceDataError(
            f"{option}: the ratings single out no liked and disliked images "
            f"({len(order)} rated image(s), all about equally rated)"
        )
    chosen = np.concatenate([high, low])
    liked = np.concatenate([np.ones(count, dtype=bool), np.zeros(count, dtype=bool)])
    return LabelledImages(images, targets.image_ids[chosen].astype(np.int64), liked, source)
