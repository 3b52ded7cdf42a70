"""Content-addressed image files: ``<root>/ab/<sha256>.png``, written atomically."""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from dreamrate.errors import StorageError

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

    A file is written to a temporary name in its final folder, flushed to disk
    and renamed into place, so a crash or a full disk never leaves half an
    image under a real name.
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
        if final.is_file() and final.stat().st_size == len(data):
            return digest, relative
        tmp_name: str | None = None
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp_name = tempfile.mkstemp(dir=final.parent, prefix=".tmp-", suffix=".png")
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp_name, final)
            tmp_name = None
        except OSError as exc:
            raise StorageError(f"cannot write {final} ({exc.strerror or exc})") from exc
        finally:
            if tmp_name is not None:
                Path(tmp_name).unlink(missing_ok=True)
        return digest, relative
