"""The image store: content-addressed PNGs (``ab/<sha256>.png``) in a local folder or in
S3-compatible object storage, written by the worker and read by every other process.

A host reaches the store the settings name (``DREAMRATE_STORAGE_URL``, else the folder
``DREAMRATE_STORAGE_IMAGES_DIR``); the database keeps each image's path relative to it, so
the bot, the web home, ``embed`` and the exports find an image wherever it was rendered.
"""

from __future__ import annotations

import hashlib
import io
import re
from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING

from dreamrate.core.atomic import write_bytes_atomically
from dreamrate.core.errors import StorageError
from dreamrate.core.paths import ensure_writable_dir

if TYPE_CHECKING:
    from PIL import Image

    from dreamrate.core.settings import Settings

__all__ = [
    "FolderStore",
    "ImageStore",
    "ImageUnreadable",
    "as_image_store",
    "encode_png",
    "open_image_store",
]

#: The setting that names the local folder (in its errors).
FOLDER_SETTING = "DREAMRATE_STORAGE_IMAGES_DIR"
#: A path the store hands out: no absolute path, no ``..``, no backslash.
_SAFE_PATH = re.compile(r"^(?!.*(?:^|/)\.\.?(?:/|$))[A-Za-z0-9._-]+(?:/[A-Za-z0-9._-]+)*$")


class ImageUnreadable(StorageError):
    """This image is not in the store (or cannot be read there); the store itself works."""


def encode_png(image: Image.Image) -> bytes:
    """PNG bytes with no metadata, so equal pixels give equal bytes (and hash)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False, compress_level=6)
    return buffer.getvalue()


def checked_path(relative: str) -> str:
    """``relative`` when it is a path inside the store.

    Raises
    ------
    ImageUnreadable
        for an absolute path, ``..``, or characters the store never writes.
    """
    if not _SAFE_PATH.match(relative):
        raise ImageUnreadable(f"{relative!r} is not a path in the image store")
    return relative


class ImageStore(ABC):
    """Stores each image once under the hash of its PNG bytes.

    A write appears whole or not at all (an atomic rename; one object upload), so a crash, a
    full disk or a store that fails mid-batch never leaves half an image under a real name.
    Every method blocks: call it from a thread in async code.
    """

    def save(self, image: Image.Image) -> tuple[str, str]:
        """Store ``image``; return ``(sha256, path relative to the store)``.

        Raises
        ------
        StorageError
            when it cannot be written (nothing is left under its name).
        """
        data = encode_png(image)
        digest = hashlib.sha256(data).hexdigest()
        relative = f"{digest[:2]}/{digest}.png"
        self.put(relative, data)
        return digest, relative

    @abstractmethod
    def put(self, relative: str, data: bytes) -> None:
        """Write ``data`` at ``relative``, whole or not at all.

        Raises
        ------
        StorageError
            when the store cannot be written.
        """

    @abstractmethod
    def read(self, relative: str) -> bytes:
        """The bytes stored at ``relative``.

        Raises
        ------
        ImageUnreadable
            when that image is missing or unreadable.
        StorageError
            when the store cannot be reached.
        """

    @abstractmethod
    def location(self, relative: str) -> str:
        """Where an operator finds the image: a file path or an ``s3://`` URL."""

    @abstractmethod
    def check(self, *, write: bool = False) -> None:
        """Prove at start that the store can be used (and written, with ``write``).

        Raises
        ------
        StorageError
            one line naming the setting and the reason.
        """


class FolderStore(ImageStore):
    """The store in a local folder: ``<root>/ab/<sha256>.png`` (the default, one host)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def __repr__(self) -> str:
        return f"FolderStore({str(self.root)!r})"

    def _path(self, relative: str) -> Path:
        return self.root / checked_path(relative)

    def put(self, relative: str, data: bytes) -> None:
        final = self._path(relative)
        if not (final.is_file() and final.stat().st_size == len(data)):
            write_bytes_atomically(final, data, StorageError, FOLDER_SETTING)

    def read(self, relative: str) -> bytes:
        path = self._path(relative)
        try:
            return path.read_bytes()
        except OSError as exc:
            raise ImageUnreadable(
                f"{relative}: cannot read it in {self.root} ({exc.strerror or type(exc).__name__})"
            ) from None

    def location(self, relative: str) -> str:
        return str(self._path(relative).resolve())

    def check(self, *, write: bool = False) -> None:
        if write:
            ensure_writable_dir(self.root, FOLDER_SETTING)
        elif self.root.exists() and not self.root.is_dir():
            # A missing folder is fine for a reader: the first image written creates it.
            raise StorageError(f"{FOLDER_SETTING}: {self.root} is not a folder")


def open_image_store(settings: Settings) -> ImageStore:
    """The store the settings name: S3 for ``DREAMRATE_STORAGE_URL``, else the local folder.
    Nothing is contacted yet (see :meth:`ImageStore.check`)."""
    url = settings.storage.url
    if url is None:
        return FolderStore(settings.images_dir)
    from dreamrate.generation.s3_store import S3Store

    return S3Store.from_url(url)


def as_image_store(images: ImageStore | Path) -> ImageStore:
    """``images`` as a store: a folder stands for the local store there."""
    return images if isinstance(images, ImageStore) else FolderStore(images)
