"""The fetched images a fine-tune reads: img2dataset's ``files`` or ``webdataset`` output.

A sample is an image with its caption (``.txt``) and its ``.json`` (url, ``aesthetic``),
under one key; img2dataset writes them side by side in ``00000/`` folders or in
``00000.tar`` files. Samples are listed once, in key order (for a webdataset shard: one pass
over its headers, noting where each image's bytes lie), and a batch's images are read and
decoded when it needs them, so a large set costs its listing, not its pixels, in memory, and
a sample in the middle of a shard costs one read, not a scan of the shard.
"""

from __future__ import annotations

import io
import json
import math
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dreamrate.core.errors import DreamrateError

__all__ = ["DataError", "Sample", "TrainingImages", "load_images"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
FETCH_RECORD = Path("_dreamrate") / "fetch.json"


class DataError(DreamrateError):
    """A data folder a fine-tune cannot read."""


@dataclass(frozen=True)
class Sample:
    key: str
    caption: str
    aesthetic: float | None
    #: A file path, or (tar path, offset, size) of the image's bytes in a webdataset shard.
    image: Path | tuple[Path, int, int]


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _from_files(folder: Path) -> list[Sample]:
    samples = []
    for image in sorted(p for p in folder.glob("*/*") if p.suffix.lower() in IMAGE_SUFFIXES):
        caption_file, meta_file = image.with_suffix(".txt"), image.with_suffix(".json")
        caption = caption_file.read_text(encoding="utf-8").strip() if caption_file.is_file() else ""
        meta = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
        samples.append(Sample(image.stem, caption, _number(meta.get("aesthetic")), image))
    return samples


def _from_tars(folder: Path) -> list[Sample]:
    samples = []
    for tar_path in sorted(folder.glob("*.tar")):
        with tarfile.open(tar_path) as tar:
            members: dict[str, dict[str, tarfile.TarInfo]] = {}
            for member in tar.getmembers():
                key, _, suffix = member.name.rpartition(".")
                members.setdefault(key, {})["." + suffix.lower()] = member
            for key in sorted(members):
                parts = members[key]
                image = next((parts[s] for s in IMAGE_SUFFIXES if s in parts), None)
                if image is None:
                    continue

                def text(suffix: str, parts: dict[str, tarfile.TarInfo] = parts) -> str:
                    handle = tar.extractfile(parts[suffix]) if suffix in parts else None
                    return handle.read().decode("utf-8") if handle else ""

                meta = json.loads(text(".json") or "{}")
                samples.append(
                    Sample(
                        key,
                        text(".txt").strip(),
                        _number(meta.get("aesthetic")),
                        (tar_path, image.offset_data, image.size),
                    )
                )
    return samples


class TrainingImages:
    """The samples of a data folder, and square float tensors of the ones a batch asks for."""

    def __init__(self, folder: Path, samples: list[Sample]) -> None:
        self.folder, self.samples = folder, samples

    def __len__(self) -> int:
        return len(self.samples)

    def record(self) -> dict[str, Any]:
        """What a ``train.json`` says of its data: folder, counts and the fetched manifest."""
        fetched: dict[str, Any] = {}
        record_path = self.folder / FETCH_RECORD
        if record_path.is_file():
            fetched = json.loads(record_path.read_text())
        scored = [s.aesthetic for s in self.samples if s.aesthetic is not None]
        return {
            "folder": str(self.folder.resolve()),
            "images": len(self.samples),
            "with_caption": sum(bool(s.caption) for s in self.samples),
            "aesthetic_mean": float(np.mean(scored)) if scored else None,
            "manifest": fetched.get("manifest"),
        }

    def pixels(self, index: int, resolution: int) -> np.ndarray:
        """Sample ``index`` as (3, resolution, resolution) float32 in [-1, 1], centre-cropped."""
        from PIL import Image

        sample = self.samples[index]
        if isinstance(sample.image, Path):
            image = Image.open(sample.image)
        else:
            tar_path, offset, size = sample.image
            with tar_path.open("rb") as handle:
                handle.seek(offset)
                image = Image.open(io.BytesIO(handle.read(size)))
        with image:
            rgb = image.convert("RGB")
        side = min(rgb.size)
        left, top = (rgb.width - side) // 2, (rgb.height - side) // 2
        rgb = rgb.crop((left, top, left + side, top + side))
        rgb = rgb.resize((resolution, resolution), Image.Resampling.BICUBIC)
        return (np.asarray(rgb, dtype=np.float32).transpose(2, 0, 1) / 127.5) - 1.0


def load_images(folder: Path) -> TrainingImages:
    """The samples of ``folder`` (img2dataset files or webdataset output)."""
    if not folder.is_dir():
        raise DataError(f"--data: {folder} is not a folder (fetch one with `dreamrate fetch`)")
    samples = _from_files(folder) or _from_tars(folder)
    if not samples:
        raise DataError(
            f"--data: no images in {folder} (fetch them with `dreamrate fetch --manifest ...`)"
        )
    return TrainingImages(folder, samples)
