"""Content-addressed image files: ``<root>/ab/<sha256>.png``, written atomically."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import TYPE_CHECKING

from dreamrate.core.atomic import write_bytes_atomically
from dreamrate.core.errors import StorageError

if TYPE_CHECKING:
    from PIL import Image

__all__ = ["ImageStore", "encode_png"]


def encode_png(image: Image.Image) -> bytes:
    """PNG bytes with no metadata, so equal pixels give equal bytes (and hash)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False, compress_level=6)
    return buffer.getvalue()


class ImageStore:
    """Stores each image once under the hash of its PNG bytes.

    Files are written with :func:`~dreamrate.core.atomic.write_bytes_atomically`, so a crash
    or a full disk never leaves half an image under a real name.
    """

    def __init__(self, root: Path) -> None:
        self.root = root

    def save(self, image: Image.Image) -> tuple[str, str]:
        """Store ``image``; return ``(sha256, path relative to the root)``.

        Raises
        ------
        StorageError
            when the file cannot be written (no temporary file is left behind).
        """
        data = encode_png(image)
        digest = hashlib.sha256(data).hexdigest()
        relative = f"{digest[:2]}/{digest}.png"
        final = self.root / relative
        if not (final.is_file() and final.stat().st_size == len(data)):
            write_bytes_atomically(final, data, StorageError, "DREAMRATE_STORAGE_IMAGES_DIR")
        return digest, relative
