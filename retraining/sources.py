"""What each fine-tuning method reads, behind one interface: which samples a step takes, their
pixels, captions and per-sample extras.

A step's samples follow from the seed and the step alone (epochs of a seeded permutation,
back to back), so a resumed run and a run split over several processes see exactly the
batches an uninterrupted single process would.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import numpy as np

from dreamrate.retraining.fetched_images import TrainingImages, load_images
from dreamrate.retraining.preferences import (
    LabelledImages,
    PreferencePairs,
    load_labelled,
    load_pairs,
)

__all__ = ["TrainingSource", "epoch_indices", "open_source"]


def epoch_indices(step: int, size: int, count: int, seed: int, stream: int = 0) -> list[int]:
    """Sample indices of ``step`` (from 1): epochs of a seeded permutation, back to back."""
    indices = []
    for i in range((step - 1) * size, step * size):
        epoch, position = divmod(i, count)
        order = np.random.default_rng([seed, stream, epoch]).permutation(count)
        indices.append(int(order[position]))
    return indices


class TrainingSource(Protocol):
    """The samples of one method's data."""

    def record(self) -> dict[str, Any]:
        """What ``train.json`` says of the data (a resumed run must see the same)."""
        ...

    def indices(self, step: int, size: int, seed: int) -> list[int]:
        """The samples of ``step``."""
        ...

    def pixels(self, indices: list[int], resolution: int) -> np.ndarray:
        """``(n, 3, r, r)`` float32 in [-1, 1]; pairs as all winners, then all losers."""
        ...

    def captions(self, indices: list[int]) -> list[str]: ...

    def extra(self, indices: list[int]) -> np.ndarray | None:
        """Per-sample weights (sft) or verdicts (kto), or None."""
        ...

    def enable_weights(self) -> None:
        """Weigh samples by their aesthetic score (sft)."""
        ...


class FetchedSource:
    """``sft``: fetched images with their captions (and aesthetic scores)."""

    def __init__(self, images: TrainingImages) -> None:
        self.images = images
        self.weights: np.ndarray | None = None

    def record(self) -> dict[str, Any]:
        return self.images.record()

    def enable_weights(self) -> None:
        from dreamrate.retraining.fetched_images import DataError

        scores = np.array(
            [np.nan if s.aesthetic is None else s.aesthetic for s in self.images.samples]
        )
        if not np.isfinite(scores).any():
            raise DataError("--aesthetic-weighting: the data has no aesthetic scores")
        scores = np.where(np.isfinite(scores), scores, np.nanmean(scores))
        shifted = scores - scores.min() + max(float(np.ptp(scores)), 1e-6) * 0.1
        self.weights = (shifted / shifted.mean()).astype(np.float32)

    def indices(self, step: int, size: int, seed: int) -> list[int]:
        return epoch_indices(step, size, len(self.images), seed)

    def pixels(self, indices: list[int], resolution: int) -> np.ndarray:
        return np.stack([self.images.pixels(i, resolution) for i in indices])

    def captions(self, indices: list[int]) -> list[str]:
        return [self.images.samples[i].caption for i in indices]

    def extra(self, indices: list[int]) -> np.ndarray | None:
        return None if self.weights is None else self.weights[indices]


class PairSource:
    """``dpo``: each sample is one choice, its preferred and its rejected image."""

    def __init__(self, pairs: PreferencePairs) -> None:
        self.pairs = pairs

    def record(self) -> dict[str, Any]:
        return self.pairs.record()

    def enable_weights(self) -> None:  # checked away by FinetuneOptions
        raise AssertionError("dpo has no aesthetic weighting")

    def indices(self, step: int, size: int, seed: int) -> list[int]:
        return epoch_indices(step, size, len(self.pairs), seed)

    def pixels(self, indices: list[int], resolution: int) -> np.ndarray:
        images = self.pairs.images
        winners = [images.pixels(int(self.pairs.winners[k]), resolution) for k in indices]
        losers = [images.pixels(int(self.pairs.losers[k]), resolution) for k in indices]
        return np.stack(winners + losers)

    def captions(self, indices: list[int]) -> list[str]:
        return [self.pairs.prompt(k) for k in indices]

    def extra(self, indices: list[int]) -> np.ndarray | None:
        return None


class LabelledSource:
    """``kto``: liked and disliked images, half of each in every batch (so neither verdict
    outweighs the other however many of each there are)."""

    def __init__(self, labelled: LabelledImages) -> None:
        self.labelled = labelled
        self.liked = np.flatnonzero(labelled.liked)
        self.disliked = np.flatnonzero(~labelled.liked)

    def record(self) -> dict[str, Any]:
        return self.labelled.record()

    def enable_weights(self) -> None:  # checked away by FinetuneOptions
        raise AssertionError("kto has no aesthetic weighting")

    def indices(self, step: int, size: int, seed: int) -> list[int]:
        half = size // 2
        liked = epoch_indices(step, half, len(self.liked), seed, stream=1)
        disliked = epoch_indices(step, size - half, len(self.disliked), seed, stream=2)
        # Interleaved, so any share of the batch (one process's) holds both verdicts.
        picks = [int(self.liked[k]) for k in liked]
        other = [int(self.disliked[k]) for k in disliked]
        merged = [x for pair in zip(picks, other, strict=False) for x in pair]
        return merged + picks[len(other) :] + other[len(picks) :]

    def pixels(self, indices: list[int], resolution: int) -> np.ndarray:
        ids = self.labelled.image_ids
        return np.stack([self.labelled.images.pixels(int(ids[k]), resolution) for k in indices])

    def captions(self, indices: list[int]) -> list[str]:
        images = self.labelled.images
        return [images.prompts[int(self.labelled.image_ids[k])] for k in indices]

    def extra(self, indices: list[int]) -> np.ndarray | None:
        return self.labelled.liked[indices]


def open_source(
    method: str, data: Path, *, comparisons: Path | None = None, ratings: Path | None = None
) -> TrainingSource:
    """The source for ``method`` over ``data`` (checked, nothing decoded yet)."""
    from dreamrate.retraining.preferences import PreferenceDataError

    if method == "sft":
        for option, given in (("--comparisons", comparisons), ("--ratings", ratings)):
            if given is not None:
                raise PreferenceDataError(f"{option}: only for --method dpo or kto")
        return FetchedSource(load_images(data))
    if method == "dpo":
        if ratings is not None:
            raise PreferenceDataError("--ratings: --method dpo learns from --comparisons")
        return PairSource(load_pairs(data, comparisons))
    if comparisons is not None:
        raise PreferenceDataError("--comparisons: --method kto learns from --ratings")
    return LabelledSource(load_labelled(data, ratings))
