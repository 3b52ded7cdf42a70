"""Checking up front that a folder dreamrate must write into can be used."""

from __future__ import annotations

import tempfile
from pathlib import Path

from dreamrate.core.errors import StorageError

__all__ = ["ensure_writable_dir"]


def ensure_writable_dir(path: Path, setting: str, *, private: bool = False) -> Path:
    """Create ``path`` if needed and prove it is writable. A ``private`` folder this creates
    (and the missing folders above it) is its owner's only (0700); one that exists already
    keeps its mode.

    Raises
    ------
    StorageError
        naming ``setting`` and the reason, when the folder cannot be used.
    """
    try:
        if private:
            missing = [p for p in (path, *path.parents) if not p.exists()]
            for folder in reversed(missing):
                folder.mkdir(mode=0o700, exist_ok=True)
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise StorageError(f"{setting}: {path} is not a writable folder ({reason})") from None
    return path
