"""Registered models: `models add/list/remove`, and workers that switch LoRA adapters on a
base loaded once, never mixing models in a batch."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dreamrate.db.models import JobStatus
from dreamrate.generation.served_models import add_model, spec_for
from dreamrate.generation.store import FolderStore
from dreamrate.generation.worker import GenerationWorker, PipelineCache
from dreamrate.retraining.finetune import FinetuneOptions, finetune
from tests.generation.conftest import enqueue
from tests.test_cli import _one_error_line, run_cli

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def lora(tiny_models: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A few strong steps on two red images: an adapter that visibly changes the output."""
    root = tmp_path_factory.mktemp("lora")
    shard = root / "data" / "00000"
    shard.mkdir(parents=True)
    for i in range(2):
        Image.new("RGB", (32, 32), (230, 20, 20)).save(shard / f"{i:09d}.jpg")
        (shard / f"{i:09d}.txt").write_text("red")
    options = FinetuneOptions(steps=4, rank=4, lr=0.05, resolution=32, batch_size=2)
    finetune(root / "data", str(tiny_models[0]), root / "out", options, show_progress=False)
    return root / "out"


def _pixels(root: Path, path: str) -> np.ndarray:
    return np.asarray(Image.open(root / path)).astype(np.int16)


async def test_a_worker_switches_adapters_on_one_loaded_base(
    engine, repo, user_factory, tiny_models, lora, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    tiny = str(tiny_models[0])
    await add_model(engine, spec_for("red", path=None, lora=lora, base=tiny))
    await add_model(engine, spec_for("plain", path=Path(tiny), lora=None, base=None))
    pipelines = PipelineCache(device="cpu", max_models=2)
    worker = GenerationWorker(
        repo=repo, store=FolderStore(tmp_path), pipelines=pipelines, worker_id="w1", max_batch=4
    )
    user = await user_factory(1)
    jobs, made = [], []
    # Base, the LoRA (two jobs, one batch), base again, the registered folder: in turn.
    for models in ([tiny], ["red", "red"], [tiny], ["plain"]):
        jobs += [await enqueue(repo, user, "a fox", model=m, seed=5) for m in models]
        made.append(await worker.run_once())
    assert made == [1, 2, 1, 1] and await worker.run_once() is None
    assert pipelines.loads == 1  # the base was loaded once for all of them
    images = []
    for job in jobs:
        record = await repo.get(job.id)
        assert record is not None and record.status is JobStatus.DONE, record
        (image,) = await repo.images(job.id)
        images.append(_pixels(tmp_path, image.path))
    base, red, red_again, base_again, plain = images
    assert np.abs(red - base).max() > 10  # the adapter changes the picture
    assert np.array_equal(red, red_again)
    assert np.array_equal(base, base_again) and np.array_equal(base, plain)  # and is off again


async def test_a_batch_never_mixes_registered_models(
    engine, repo, user_factory, tiny_models, lora
) -> None:  # type: ignore[no-untyped-def]
    tiny = str(tiny_models[0])
    await add_model(engine, spec_for("red", path=None, lora=lora, base=tiny))
    user = await user_factory(1)
    for model in ("red", tiny, "red", tiny):
        await enqueue(repo, user, "same prompt", model=model, seed=1)
    seen = []
    while batch := await repo.claim_batch("w1", max_images=8):
        assert len({j.model for j in batch}) == 1
        seen.append((batch[0].model, len(batch)))
        for job in batch:
            await repo.complete("w1", job.id, [])
    assert sorted(seen) == sorted([("red", 2), (tiny, 2)])


def test_models_add_list_remove_and_what_they_refuse(
    tiny_models: tuple[Path, Path], lora: Path, tmp_path: Path
) -> None:
    tiny = str(tiny_models[0])
    env = {"DREAMRATE_DATA_DIR": str(tmp_path / "data")}

    def models(*args: str):  # type: ignore[no-untyped-def]
        return run_cli("models", *args, env=env, timeout=300)

    added = models("add", "red", "--lora", str(lora), "--base", tiny)
    assert added.returncode == 0, added.stderr
    assert models("add", "tiny", "--path", tiny).returncode == 0
    listed = models("list")
    assert listed.returncode == 0
    lines = listed.stdout.splitlines()
    assert lines[0].startswith("red  lora  ") and f"on {tiny}" in lines[0]
    assert lines[1].startswith("tiny  path  ")

    _one_error_line(models("add", "red", "--path", tiny), "already registered", "--replace")
    _one_error_line(models("add", "Bad Name", "--path", tiny), "NAME")
    _one_error_line(models("add", "x", "--path", str(tmp_path)), "not a diffusers model")
    _one_error_line(models("add", "x", "--lora", str(lora)), "--lora needs --base")
    _one_error_line(
        models("add", "x", "--lora", str(tmp_path), "--base", tiny), "no pytorch_lora_weights"
    )
    # An adapter trained on another architecture: its matrices do not fit this UNet.
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    from safetensors.numpy import load_file, save_file

    tensors = load_file(str(lora / "pytorch_lora_weights.safetensors"))
    save_file(
        {
            k: np.zeros((v.shape[0], v.shape[1] * 2) if ".down" in k else v.shape, v.dtype)
            for k, v in tensors.items()
        },
        str(wrong / "pytorch_lora_weights.safetensors"),
    )
    _one_error_line(models("add", "x", "--lora", str(wrong), "--base", tiny), "does not fit")

    assert models("remove", "red").returncode == 0
    _one_error_line(models("remove", "red"), "not registered")
    assert [line.split()[0] for line in models("list").stdout.splitlines()] == ["tiny"]
    assert json.loads((lora / "train.json").read_text())["status"] == "done"  # files untouched
