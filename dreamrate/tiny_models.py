"""Tiny random-weight models (Stable Diffusion and open_clip) for offline trials and tests."""

from __future__ import annotations

from pathlib import Path

from dreamrate.core.atomic import atomic_folder
from dreamrate.core.errors import StorageError
from dreamrate.core.paths import ensure_writable_dir

__all__ = ["make_tiny_models"]


def make_tiny_models(directory: Path) -> tuple[Path, Path]:
    """Write ``tiny-sd/`` and ``tiny-clip/`` under ``directory``; return their paths."""
    from dreamrate.aesthetic.tiny_clip import write_tiny_clip
    from dreamrate.generation.tiny_sd import write_tiny_sd

    ensure_writable_dir(directory, "DIR")
    sd, clip = directory.resolve() / "tiny-sd", directory.resolve() / "tiny-clip"
    for target, write in ((sd, write_tiny_sd), (clip, write_tiny_clip)):
        # A crash mid-write never leaves half a model where a good one was.
        with atomic_folder(target, StorageError, overwrite=True, option="DIR") as staging:
            write(staging)
    return sd, clip
