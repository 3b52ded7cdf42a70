"""Checking up front that a folder dreamrate must write into can be used."""

from __future__ import annotations

import tempfile
from pathlib import Path

from dreamrate.core.errors import StorageError

__all__ = ["ensure_writable_dir"]


def ensure_writable_dir(path: Path, setting: str) -> Path:
    """Create ``path`` if needed and prove it is writable.

    Raises
    ------
    StorageError
        naming ``setting`` and the reason, when the folder cannot be used.
    """
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise StorageError(f"{setting}: {path} is not a writable folder ({reason})") from None
    return path
