"""Gallery thumbnails: made once per image and size from the image store, kept on this
host's disk beside its data.

A thumbnail is named by the image's content hash and its size, so it never goes stale
(the image store is content-addressed) and two processes making the same one write the
same bytes; the write is atomic, so a reader never sees half a file. Only the first view
of an image on a host reads it from the store (which may be S3, shared by every host).
"""

from __future__ import annotations

import asyncio
import io
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image as PILImage

from dreamrate.core.atomic import write_bytes_atomically
from dreamrate.core.errors import StorageError

if TYPE_CHECKING:
    from dreamrate.generation.store import ImageStore

__all__ = ["Thumbnails", "inside"]


def inside(root: Path, relative: str) -> Path | None:
    """``root / relative`` when it stays under ``root`` (no ``..``, no absolute path)."""
    base = root.resolve()
    path = (base / relative).resolve()
    return path if path.is_relative_to(base) else None


class Thumbnails:
    """WebP thumbnails of at most ``size`` pixels a side of the images in ``store``, cached
    under ``folder``."""

    def __init__(self, folder: Path, size: int, store: ImageStore) -> None:
        self.folder = folder
        self.size = size
        self.store = store
        self._making: dict[str, asyncio.Future[Path]] = {}

    def path_of(self, sha256: str) -> Path:
        return self.folder / sha256[:2] / f"{sha256}-{self.size}.webp"

    def _make(self, relative: str, out: Path) -> Path:
        with PILImage.open(io.BytesIO(self.store.read(relative))) as image:
            image = image.convert("RGB")
            image.thumbnail((self.size, self.size), PILImage.Resampling.LANCZOS)
            buffer = io.BytesIO()
            image.save(buffer, format="WEBP", quality=82, method=4)
        write_bytes_atomically(out, buffer.getvalue(), StorageError, "DREAMRATE_DATA_DIR")
        return out

    async def get(self, sha256: str, relative: str) -> Path:
        """The thumbnail of the image at ``relative`` in the store, made now if it is not on
        disk yet (one maker per image at a time; the others wait for it).

        Raises
        ------
        ImageUnreadable
            when the image is not in the store.
        StorageError
            when the store cannot be reached.
        """
        out = self.path_of(sha256)
        if out.is_file():
            return out
        pending = self._making.get(sha256)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[Path] = asyncio.get_running_loop().create_future()
        self._making[sha256] = future
        try:
            made = await asyncio.to_thread(self._make, relative, out)
            future.set_result(made)
            return made
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: no "never retrieved" warning when none waits
            raise
        finally:
            del self._making[sha256]
