"""The toy world: a procedural image-text set a small model can really learn on a CPU.

A scene is one shape (circle, square or triangle) of one of eight colours on a flat
background of another, at one of five positions, small or large. The renderer draws it
(supersampled, so edges are smooth) and writes its caption, in full ("a large red circle on
a teal background, top left") or with parts left unsaid ("a red circle", "a square on a
blue background", "a shape"). :func:`describe` reads a scene back from pixels alone, so
tests and benchmarks can check what a model rendered without knowing how it was made.

This one module is what the toy model trains on, what the filtering pool is made of and
what tests measure with.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from PIL import Image

__all__ = [
    "COLOURS",
    "POSITIONS",
    "SHAPES",
    "SIZES",
    "Scene",
    "SceneReading",
    "caption",
    "describe",
    "random_scene",
    "render",
    "sample_world",
]

SHAPES = ("circle", "square", "triangle")
#: The palette, as the demo used it; names are what captions say.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (205, 40, 40), "orange": (235, 140, 30), "yellow": (235, 215, 50),
    "green": (50, 165, 70), "teal": (30, 155, 160), "blue": (45, 75, 205),
    "purple": (135, 55, 175), "grey": (128, 128, 128),
}  # fmt: skip
#: Centre of the shape as a fraction of the side.
POSITIONS: dict[str, tuple[float, float]] = {
    "top left": (0.3, 0.3),
    "top right": (0.7, 0.3),
    "bottom left": (0.3, 0.7),
    "bottom right": (0.7, 0.7),
    "centre": (0.5, 0.5),
}
#: Half the shape's side (its radius) as a fraction of the image side.
SIZES: dict[str, float] = {"small": 0.13, "large": 0.22}

_PALETTE = np.array(list(COLOURS.values()), dtype=np.float32)
_SUPERSAMPLE = 3


@dataclass(frozen=True, slots=True)
class Scene:
    """What one image shows; ``jitter`` moves, resizes and tints it a little."""

    shape: str
    colour: str
    background: str
    position: str
    size: str
    jitter: tuple[float, float, float, float] = (0.0, 0.0, 1.0, 0.0)  #: dx, dy, scale, tint


def random_scene(rng: np.random.Generator) -> Scene:
    """A scene drawn uniformly from the world (foreground and background differ)."""
    colour, background = rng.choice(len(COLOURS), 2, replace=False)
    names = list(COLOURS)
    return Scene(
        shape=SHAPES[int(rng.integers(len(SHAPES)))],
        colour=names[int(colour)],
        background=names[int(background)],
        position=list(POSITIONS)[int(rng.integers(len(POSITIONS)))],
        size=list(SIZES)[int(rng.integers(len(SIZES)))],
        jitter=(
            float(rng.uniform(-0.04, 0.04)),
            float(rng.uniform(-0.04, 0.04)),
            float(rng.uniform(0.9, 1.1)),
            float(rng.uniform(-12, 12)),
        ),
    )


def caption(scene: Scene, rng: np.random.Generator | None = None, *, full: bool = False) -> str:
    """The scene's caption: everything with ``full``, otherwise each part left unsaid at
    random (colour, background, position and size often; the shape now and then)."""

    def say(p: float) -> bool:
        return full or rng is None or bool(rng.random() < p)

    shape = scene.shape if say(0.85) else "shape"
    words = ["a"]
    if say(0.4):
        words.append(scene.size)
    if say(0.7):
        words.append(scene.colour)
    words.append(shape)
    if say(0.55):
        words += ["on", "a", scene.background, "background"]
    text = " ".join(words)
    if say(0.5):
        text += f", {scene.position}"
    return text


def render(scene: Scene, size: int = 64) -> Image.Image:
    """Draw ``scene`` as an RGB image of ``size`` pixels a side."""
    from PIL import Image, ImageDraw

    big = size * _SUPERSAMPLE
    dx, dy, scale, tint = scene.jitter
    back = tuple(int(np.clip(c + tint * 0.5, 0, 255)) for c in COLOURS[scene.background])
    fore = tuple(int(np.clip(c + tint, 0, 255)) for c in COLOURS[scene.colour])
    image = Image.new("RGB", (big, big), back)  # type: ignore[arg-type]
    draw = ImageDraw.Draw(image)
    cx, cy = POSITIONS[scene.position]
    cx, cy = (cx + dx) * big, (cy + dy) * big
    r = SIZES[scene.size] * scale * big
    if scene.shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fore)  # type: ignore[arg-type]
    elif scene.shape == "square":
        s = r * 0.886  # the same area as the circle
        draw.rectangle((cx - s, cy - s, cx + s, cy + s), fill=fore)  # type: ignore[arg-type]
    else:  # an upward triangle of the circle's area, centred on its centroid
        h = r * 2.02
        half = h / np.sqrt(3)
        draw.polygon(
            [(cx, cy - 2 * h / 3), (cx - half, cy + h / 3), (cx + half, cy + h / 3)],
            fill=fore,  # type: ignore[arg-type]
        )
    return image.resize((size, size), Image.Resampling.BOX)


def sample_world(
    count: int, seed: int, size: int = 64, *, full_captions: bool = False
) -> tuple[list[Scene], list[str], np.ndarray]:
    """``count`` random scenes, their captions and their pixels (``(n, size, size, 3)`` uint8)."""
    rng = np.random.default_rng(seed)
    scenes = [random_scene(rng) for _ in range(count)]
    captions = [caption(s, rng, full=full_captions) for s in scenes]
    pixels = np.stack([np.asarray(render(s, size)) for s in scenes])
    return scenes, captions, pixels


@dataclass(frozen=True, slots=True)
class SceneReading:
    """What :func:`describe` reads off an image's pixels."""

    colour: str  #: the palette colour nearest the foreground's mean
    background: str  #: the palette colour nearest the border's median
    shape: str  #: by how much of its bounding box the foreground fills
    position: str  #: the named position nearest the foreground's centroid
    size: str
    foreground_rgb: tuple[float, float, float]
    background_rgb: tuple[float, float, float]
    area: float  #: the foreground's share of the image
    contrast: float  #: distance between foreground and background colours, 0..1

    @property
    def found(self) -> bool:
        """Whether a foreground stood out from the background at all."""
        return self.area > 0.005


def _nearest(rgb: np.ndarray) -> str:
    return list(COLOURS)[int(np.argmin(((_PALETTE - rgb) ** 2).sum(axis=1)))]


def describe(pixels: np.ndarray) -> SceneReading:
    """Read one image (``(size, size, 3)`` uint8 or float 0..255) back into a scene."""
    image = np.asarray(pixels, dtype=np.float32)[..., :3]
    side = image.shape[0]
    border = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]])
    back = np.median(border, axis=0)
    distance = np.sqrt(((image - back) ** 2).sum(axis=-1))
    mask = distance > 60.0
    area = float(mask.mean())
    if area <= 0.005:
        fore = back
        return SceneReading(
            colour=_nearest(back), background=_nearest(back), shape="none",
            position="centre", size="small", foreground_rgb=tuple(map(float, back)),  # type: ignore[arg-type]
            background_rgb=tuple(map(float, back)), area=area, contrast=0.0,  # type: ignore[arg-type]
        )  # fmt: skip
    fore = image[mask].mean(axis=0)
    ys, xs = np.nonzero(mask)
    cx, cy = (xs.mean() + 0.5) / side, (ys.mean() + 0.5) / side
    position = min(
        POSITIONS, key=lambda p: (POSITIONS[p][0] - cx) ** 2 + (POSITIONS[p][1] - cy) ** 2
    )
    box = (xs.max() - xs.min() + 1) * (ys.max() - ys.min() + 1)
    fill = mask.sum() / max(box, 1)
    # circle pi/4 = 0.785, square 1, triangle 0.5: split halfway between them
    shape = "square" if fill > 0.89 else "circle" if fill > 0.64 else "triangle"
    radius = np.sqrt(area / np.pi)
    size = "large" if radius > (SIZES["small"] + SIZES["large"]) / 2 else "small"
    return SceneReading(
        colour=_nearest(fore),
        background=_nearest(back),
        shape=shape,
        position=position,
        size=size,
        foreground_rgb=tuple(float(v) for v in fore),  # type: ignore[arg-type]
        background_rgb=tuple(float(v) for v in back),  # type: ignore[arg-type]
        area=area,
        contrast=float(np.linalg.norm(fore - back) / (255 * np.sqrt(3))),
    )
