"""Images to embeddings with the forward pass kept busy: decoding and preprocessing run on a
thread pool a batch ahead, while the model runs on the current batch.

PIL decodes and resizes, and torch converts, without holding the GIL, so threads overlap
them with the forward pass and start instantly (worker processes would each import torch
and pickle the transforms). On CUDA a batch that does not fit is halved and tried again, so
the batch size settles at what memory allows.
"""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from dreamrate.aesthetic.clip_model import ClipModel
from dreamrate.generation.store import ImageUnreadable

__all__ = ["Embedded", "default_workers", "iter_embeddings"]

logger = logging.getLogger(__name__)

Embedded = tuple[list[int], np.ndarray, int]  #: (image ids, unit vectors, unreadable files)


def default_workers() -> int:
    """Threads that decode and preprocess: the cores, at most 8 (beyond that the GIL-held
    parts of the transforms dominate)."""
    return max(1, min(8, os.cpu_count() or 1))


def _prepare(clip: ClipModel, source: Path | str, read: Callable[[str], bytes] | None) -> Any:
    from PIL import Image as PILImage
    from PIL import UnidentifiedImageError

    try:
        opened = PILImage.open(source) if read is None else PILImage.open(io.BytesIO(read(source)))
        with opened as im:
            return clip.preprocess(im.convert("RGB"))
    except (OSError, UnidentifiedImageError, ValueError, ImageUnreadable) as exc:
        # One image that cannot be read is skipped; a store that cannot be reached at all
        # (StorageError) stops the run.
        logger.warning("cannot read image %s (%s); skipped", source, type(exc).__name__)
        return None


def _forward(clip: ClipModel, batch: Any) -> np.ndarray:
    """``clip.embed_batch``, halving the batch on a CUDA out-of-memory error."""
    import torch

    try:
        return clip.embed_batch(batch)
    except torch.OutOfMemoryError:
        if len(batch) == 1:
            raise
        torch.cuda.empty_cache()
        half = len(batch) // 2
        logger.warning("batch of %d does not fit on %s; halving it", len(batch), clip.device)
        return np.concatenate([_forward(clip, batch[:half]), _forward(clip, batch[half:])])


def iter_embeddings(
    clip: ClipModel,
    items: Sequence[tuple[int, Path]] | Sequence[tuple[int, str]],
    *,
    batch_size: int = 32,
    workers: int | None = None,
    read: Callable[[str], bytes] | None = None,
) -> Iterator[Embedded]:
    """Embed ``(image id, file)`` items in batches, in order; yields ``(ids, vectors,
    unreadable)`` per batch. Batch k + 1 is decoded and preprocessed while batch k runs.

    With ``read`` (an image store's), the items name paths in the store, read through it.
    """
    import torch

    batches = [items[i : i + batch_size] for i in range(0, len(items), batch_size)]
    if not batches:
        return
    with ThreadPoolExecutor(workers or default_workers()) as pool:

        def submit(batch: Sequence[tuple[int, Any]]) -> list[tuple[int, Future[Any]]]:
            return [(iid, pool.submit(_prepare, clip, source, read)) for iid, source in batch]

        ahead = submit(batches[0])
        for k in range(len(batches)):
            current = ahead
            if k + 1 < len(batches):
                ahead = submit(batches[k + 1])  # decoded while this batch runs
            ready = [(iid, future.result()) for iid, future in current]
            ok = [(iid, tensor) for iid, tensor in ready if tensor is not None]
            if not ok:
                yield [], np.zeros((0, clip.dim), dtype=np.float32), len(ready)
                continue
            vectors = _forward(clip, torch.stack([tensor for _, tensor in ok]))
            yield [iid for iid, _ in ok], vectors, len(ready) - len(ok)
