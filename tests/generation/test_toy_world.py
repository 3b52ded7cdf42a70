"""The toy world's renderer and its reader agree: what is drawn is what describe() reads."""

from __future__ import annotations

import numpy as np
import pytest

from dreamrate.generation.toy_world import (
    COLOURS,
    POSITIONS,
    SHAPES,
    Scene,
    caption,
    describe,
    render,
    sample_world,
)


def test_describe_reads_back_what_render_drew() -> None:
    scenes, _, pixels = sample_world(300, seed=3)
    for field in ("colour", "background", "shape", "position", "size"):
        agree = np.mean(
            [
                getattr(describe(p), field) == getattr(s, field)
                for s, p in zip(scenes, pixels, strict=False)
            ]
        )
        assert agree > 0.97, (field, agree)


@pytest.mark.parametrize("shape", SHAPES)
def test_every_shape_colour_and_position_is_drawn_where_it_is_said(shape: str) -> None:
    for colour, background in zip(COLOURS, [*list(COLOURS)[1:], *list(COLOURS)[:1]], strict=True):
        for position in POSITIONS:
            scene = Scene(shape, colour, background, position, "large")
            seen = describe(np.asarray(render(scene)))
            assert (seen.shape, seen.colour, seen.background, seen.position) == (
                shape, colour, background, position,
            )  # fmt: skip


def test_captions_say_the_scene_or_leave_parts_unsaid() -> None:
    scene = Scene("circle", "red", "teal", "top left", "small")
    assert caption(scene, full=True) == "a small red circle on a teal background, top left"
    rng = np.random.default_rng(0)
    texts = {caption(scene, rng) for _ in range(400)}
    assert "a circle" in texts and "a red circle" in texts
    assert any("shape" in t for t in texts)  # the shape itself left unsaid now and then
    for text in texts:  # whatever is said is true
        words = text.replace(",", "").split()
        assert not set(words) & (set(COLOURS) - {"red", "teal"})
        assert "square" not in words and "triangle" not in words


def test_a_blank_image_has_no_shape() -> None:
    blank = np.full((64, 64, 3), 128, dtype=np.uint8)
    assert not describe(blank).found
