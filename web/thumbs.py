"""Gallery thumbnails: made once per image and size, kept on disk beside the data.

A thumbnail is named by the image's content hash and its size, so it never goes stale
(the image store is content-addressed) and two processes making the same one write the
same bytes; the write is atomic, so a reader never sees half a file.
"""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

from PIL import Image as PILImage

from dreamrate.core.atomic import write_bytes_atomically
from dreamrate.core.errors import StorageError

__all__ = ["Thumbnails", "inside"]


def inside(root: Path, relative: str) -> Path | None:
    """``root / relative`` when it stays under ``root`` (no ``..``, no absolute path)."""
    base = root.resolve()
    path = (base / relative).resolve()
    return path if path.is_relative_to(base) else None


class Thumbnails:
    """WebP thumbnails of at most ``size`` pixels a side, cached under ``folder``."""

    def __init__(self, folder: Path, size: int) -> None:
        self.folder = folder
        self.size = size
        self._making: dict[str, asyncio.Future[Path]] = {}

    def path_of(self, sha256: str) -> Path:
        return self.folder / sha256[:2] / f"{sha256}-{self.size}.webp"

    def _make(self, source: Path, out: Path) -> Path:
        with PILImage.open(source) as image:
            image = image.convert("RGB")
            image.thumbnail((self.size, self.size), PILImage.Resampling.LANCZOS)
            buffer = io.BytesIO()
            image.save(buffer, format="WEBP", quality=82, method=4)
        write_bytes_atomically(out, buffer.getvalue(), StorageError, "DREAMRATE_DATA_DIR")
        return out

    async def get(self, sha256: str, source: Path) -> Path:
        """The thumbnail of the image at ``source``, made now if it is not on disk yet (one
        maker per image at a time; the others wait for it)."""
        out = self.path_of(sha256)
        if out.is_file():
            return out
        pending = self._making.get(sha256)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[Path] = asyncio.get_running_loop().create_future()
        self._making[sha256] = future
        try:
            made = await asyncio.to_thread(self._make, source, out)
            future.set_result(made)
            return made
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: no "never retrieved" warning when none waits
            raise
        finally:
            del self._making[sha256]
