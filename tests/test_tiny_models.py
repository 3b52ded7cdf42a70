"""make-tiny output loads through the real diffusers and open_clip code paths."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dreamrate.aesthetic.clip_model import load_clip, model_spec
from dreamrate.core.errors import ModelError
from dreamrate.generation.pipeline import load_text2image
from tests.conftest import REFERENCE_DIR


def test_tiny_sd_generates_an_image_deterministically(tiny_models: tuple[Path, Path]) -> None:
    import torch

    sd, _ = tiny_models
    assert (
        json.loads((sd / "model_index.json").read_text())["_class_name"]
        == "StableDiffusionPipeline"
    )
    pipeline = load_text2image(str(sd), device="cpu")
    assert type(pipeline).__name__ == "StableDiffusionPipeline"

    def render(seed: int) -> np.ndarray:
        out = pipeline(
            "a red fox", num_inference_steps=2, generator=torch.Generator().manual_seed(seed)
        )
        return np.asarray(out.images[0])

    first, again, other = render(1), render(1), render(2)
    assert first.shape == (64, 64, 3)
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)
    assert first.std() > 0  # an image, not a blank


def test_tiny_sd_tokenizer_is_real_clip_bpe(tiny_models: tuple[Path, Path]) -> None:
    import open_clip
    from transformers import CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(str(tiny_models[0] / "tokenizer"))
    for text in [
        "a photo of a cat",
        "Ünïcödé, emoji 🐱 and CAPS!!",
        "watercolor lighthouse at dusk, trending",
    ]:
        ids = tokenizer(text).input_ids
        reference = open_clip.tokenize([text])[0].tolist()
        assert ids == reference[: len(ids)]
        assert reference[len(ids) :] == [0] * (77 - len(ids))


@pytest.mark.needs("reference")
def test_tiny_clip_embeds_real_images(tiny_models: tuple[Path, Path]) -> None:
    _, clip_dir = tiny_models
    clip = load_clip(f"local-dir:{clip_dir}", None, device="cpu")
    assert clip.dim == 32 and clip.id == f"local-dir:{clip_dir}"
    paths = sorted((REFERENCE_DIR / "simulacra-aesthetic-models" / "demo_images").rglob("*.png"))[
        :3
    ]
    assert paths, "reference images missing"
    vectors = clip.embed_images([Image.open(p) for p in paths])
    assert vectors.shape == (3, 32) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert not np.allclose(vectors[0], vectors[1])
    # A folder path works too, through the same local-dir: route.
    assert model_spec(str(clip_dir), "openai")[0] == f"local-dir:{clip_dir.resolve()}"


def test_missing_model_paths_fail_in_one_line(tmp_path: Path) -> None:
    with pytest.raises(
        ModelError,
        match=r"DREAMRATE_GENERATION_MODEL: .* does not exist; for offline trials run `dreamrate models make-tiny",
    ):
        load_text2image(str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match=r"has no model_index\.json"):
        load_text2image(str(tmp_path / "empty"))
    with pytest.raises(ModelError, match=r"DREAMRATE_EMBEDDING_MODEL: .* does not exist"):
        load_clip(f"local-dir:{tmp_path / 'nope'}", None)
    with pytest.raises(
        ModelError, match=r"DREAMRATE_EMBEDDING_PRETRAINED: checkpoint .* does not exist"
    ):
        load_clip("ViT-B-32", str(tmp_path / "weights.safetensors"))
    with pytest.raises(ModelError, match="unknown open_clip model 'ViT-Q-99'"):
        load_clip("ViT-Q-99", "openai")


def test_hub_models_without_internet_name_make_tiny() -> None:
    # HF_HUB_OFFLINE=1 (set for every test) stands in for a machine without internet.
    with pytest.raises(ModelError) as info:
        load_text2image("stabilityai/sd-turbo")
    assert "no internet?" in str(info.value) and "make-tiny" in str(info.value)
    with pytest.raises(ModelError) as info:
        load_clip("ViT-B-32", "openai")
    assert "cannot load 'ViT-B-32/openai'" in str(info.value) and "make-tiny" in str(info.value)
    assert "\n" not in str(info.value)


def test_make_tiny_cli_prints_the_settings(tmp_path: Path) -> None:
    from tests.test_cli import run_cli

    result = run_cli("models", "make-tiny", str(tmp_path / "m"))
    assert result.returncode == 0, result.stderr
    assert f"export DREAMRATE_GENERATION_MODEL={tmp_path / 'm' / 'tiny-sd'}" in result.stdout
    assert (
        f"export DREAMRATE_EMBEDDING_MODEL=local-dir:{tmp_path / 'm' / 'tiny-clip'}"
        in result.stdout
    )
    assert not list((tmp_path / "m").glob(".*"))  # no staging folders left behind
    check = run_cli(
        "models",
        "check",
        env={
            "DREAMRATE_GENERATION_MODEL": str(tmp_path / "m" / "tiny-sd"),
            "DREAMRATE_EMBEDDING_MODEL": f"local-dir:{tmp_path / 'm' / 'tiny-clip'}",
            "HF_HUB_OFFLINE": "1",
        },
    )
    assert check.returncode == 0, check.stderr
    assert "64x64 image" in check.stdout and "32-d, norm 1.000" in check.stdout
