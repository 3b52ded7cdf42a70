"""Small models written on the spot, for offline trials, tests, the demo and the loop
benchmark: tiny random-weight ones (Stable Diffusion and open_clip) and the toy world's
trained text-to-image model."""

from __future__ import annotations

from pathlib import Path

from dreamrate.core.atomic import atomic_folder
from dreamrate.core.errors import StorageError
from dreamrate.core.paths import ensure_writable_dir

__all__ = ["make_tiny_models", "make_toy_model"]


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


def make_toy_model(
    directory: Path,
    *,
    seed: int = 0,
    preset: str = "full",
    force: bool = False,
    show_progress: bool = True,
) -> dict[str, object]:
    """Train the toy world's model into ``directory`` (a diffusers folder); return its record.

    A folder that holds anything is refused unless ``force``; the model appears whole or not
    at all (trained in a staging folder beside it, then moved in)."""
    from dreamrate.generation.toy_model import TOY_PRESETS, ToyModelError, train_toy_model

    if preset not in TOY_PRESETS:
        raise ToyModelError(f"--preset: one of {', '.join(TOY_PRESETS)}, not {preset!r}")
    if directory.exists() and not directory.is_dir():
        raise ToyModelError(f"DIR: {directory} is a file")
    if directory.is_dir() and any(directory.iterdir()) and not force:
        raise ToyModelError(f"DIR: {directory} is not empty (--force replaces it)")
    ensure_writable_dir(directory.parent, "DIR")
    with atomic_folder(directory.resolve(), StorageError, overwrite=True, option="DIR") as staging:
        return train_toy_model(staging, seed=seed, config=preset, show_progress=show_progress)
