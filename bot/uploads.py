"""Fitting an image under Discord's upload limit (PNG if it fits, else WebP, then JPEG)."""

from __future__ import annotations

import io

import discord
from PIL import Image

__all__ = ["DEFAULT_UPLOAD_LIMIT", "fit_for_upload", "image_file", "pair_file"]

#: Pixels between the two images of a comparison (so their edges never blend).
PAIR_GAP = 16

#: Discord's upload limit outside boosted guilds (DMs, and before a guild is known).
DEFAULT_UPLOAD_LIMIT = 10 * 1024 * 1024


def fit_for_upload(data: bytes, limit: int, stem: str) -> tuple[bytes, str]:
    """The image's bytes (a PNG from the store) and file name, re-encoded smaller when the
    PNG exceeds ``limit`` bytes.

    Raises
    ------
    ValueError
        when even a low-quality JPEG does not fit.
    """
    if len(data) <= limit:
        return data, f"{stem}.png"
    with Image.open(io.BytesIO(data)) as opened:
        image = opened.convert("RGB")
    for fmt, quality in (("WEBP", 90), ("WEBP", 75), ("JPEG", 85), ("JPEG", 60), ("JPEG", 40)):
        buffer = io.BytesIO()
        image.save(buffer, format=fmt, quality=quality)
        if buffer.tell() <= limit:
            return buffer.getvalue(), f"{stem}.{'webp' if fmt == 'WEBP' else 'jpg'}"
    raise ValueError(f"{stem} does not fit in {limit} bytes even as a JPEG")


def image_file(data: bytes, stem: str, limit: int = DEFAULT_UPLOAD_LIMIT) -> discord.File:
    """The PNG ``data`` as an attachment named ``stem.<format>`` that fits in ``limit`` bytes."""
    data, name = fit_for_upload(data, limit, stem)
    return discord.File(io.BytesIO(data), filename=name)


def pair_file(
    left: bytes, right: bytes, stem: str, limit: int = DEFAULT_UPLOAD_LIMIT
) -> discord.File:
    """Two images (PNG bytes) side by side in one attachment (left, a gap, right), at the
    height of the taller, named ``stem.<format>`` and fitting in ``limit`` bytes."""
    with Image.open(io.BytesIO(left)) as a_file, Image.open(io.BytesIO(right)) as b_file:
        a, b = a_file.convert("RGB"), b_file.convert("RGB")
    height = max(a.height, b.height)
    a = a.resize((round(a.width * height / a.height), height)) if a.height != height else a
    b = b.resize((round(b.width * height / b.height), height)) if b.height != height else b
    canvas = Image.new("RGB", (a.width + PAIR_GAP + b.width, height), (255, 255, 255))
    canvas.paste(a, (0, 0))
    canvas.paste(b, (a.width + PAIR_GAP, 0))
    buffer = io.BytesIO()
    canvas.save(buffer, format="PNG")
    data, name = buffer.getvalue(), f"{stem}.png"
    for quality in (90, 75, 50):
        if len(data) <= limit:
            break
        buffer = io.BytesIO()
        canvas.save(buffer, format="WEBP", quality=quality)
        data, name = buffer.getvalue(), f"{stem}.webp"
    if len(data) > limit:
        raise ValueError(f"{stem} does not fit in {limit} bytes")
    return discord.File(io.BytesIO(data), filename=name)
