"""embed -> train -> report -> predictor commands, end to end on the tiny open_clip model."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sqlalchemy import func, select

from dreamrate.aesthetic.predictor import load_predictor
from dreamrate.aesthetic.select import select_images_to_rate, select_pairs_to_compare
from dreamrate.aesthetic.synthetic import make_world
from dreamrate.db.engine import create_engine
from dreamrate.db.models import Embedding
from dreamrate.db.models import Predictor as PredictorRow
from dreamrate.ratings.training_data import load_database_data
from tests.aesthetic.community import GUILD, seed_choices, seed_community
from tests.conftest import REFERENCE_DIR
from tests.test_cli import _one_error_line, run_cli

pytestmark = pytest.mark.slow


@pytest.fixture
def community(tmp_path: Path, tiny_models: tuple[Path, Path]):  # type: ignore[no-untyped-def]
    data_dir = tmp_path / "data"
    env = {
        "DREAMRATE_DATA_DIR": str(data_dir),
        "DREAMRATE_EMBEDDING_MODEL": str(tiny_models[1]),
        "DREAMRATE_EMBEDDING_DEVICE": "cpu",
        "HF_HUB_OFFLINE": "1",
    }
    assert run_cli("db", "upgrade", env=env).returncode == 0
    url = f"sqlite+aiosqlite:///{data_dir / 'dreamrate.db'}"

    async def seed():
        engine = create_engine(url)
        try:
            return await seed_community(engine, data_dir / "images")
        finally:
            await engine.dispose()

    return env, url, asyncio.run(seed())


def _count(url: str, query):  # type: ignore[no-untyped-def]
    async def run():
        engine = create_engine(url)
        try:
            async with engine.connect() as conn:
                return (await conn.execute(query)).scalar_one()
        finally:
            await engine.dispose()

    return asyncio.run(run())


def test_embed_is_resumable_and_train_writes_predictor_and_report(
    community, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    env, url, seeded = community
    first = run_cli("embed", "--limit", "5", env=env)
    assert first.returncode == 0, first.stderr
    assert "embedded 5 image(s)" in first.stdout
    rest = run_cli("embed", "--batch-size", "7", env=env)
    assert rest.returncode == 0, rest.stderr
    rated = len(seeded.image_ids) - 1  # the removed image is never embedded
    assert f"embedded {rated - 5} image(s)" in rest.stdout
    again = run_cli("embed", env=env)
    assert "embedded 0 image(s)" in again.stdout and f"{rated} already had one" in again.stdout
    assert _count(url, select(func.count()).select_from(Embedding)) == rated

    out = tmp_path / "predictor"
    trained = run_cli("train", "--out", str(out), "--name", "community", env=env)
    assert trained.returncode == 0, trained.stderr
    assert "Spearman" in trained.stdout and "baseline" in trained.stdout
    assert f"trained ridge on {rated} images" in trained.stdout
    meta = json.loads((out / "predictor.json").read_text())
    assert meta["dim"] == 32 and meta["head"]["kind"] == "affine" and meta["head"]["ensemble"] == 5
    assert meta["training"]["images"] == rated and meta["training"]["prompts"] == 12
    # Banned and opted-out members' ratings are not in the panel (6 raters, 3 per image).
    assert meta["training"]["raters"] == 6 and meta["training"]["ratings"] == rated * 3
    assert set(meta["metrics"]) == {"dreamrate", "baseline"}
    for name in (
        "report.html",
        "ratings.png",
        "raters.png",
        "predicted.png",
        "calibration.png",
        "learning.png",
        "highest.png",
        "lowest.png",
    ):
        assert (out / name).stat().st_size > 0, name
    report = (out / "report.html").read_text()
    assert "Held-out metrics" in report and 'src="highest.png"' in report

    predictor = load_predictor(out)
    assert _count(url, select(PredictorRow.path).where(PredictorRow.active.is_(True))) == str(
        out.resolve()
    )

    async def check_data_and_selection():
        engine = create_engine(url)
        try:
            data = await load_database_data(
                engine, embedding_model=predictor.embedding_model, scale="numbers-10"
            )
            chosen = await select_images_to_rate(engine, 4, predictor, GUILD)
            return data, chosen
        finally:
            await engine.dispose()

    data, chosen = asyncio.run(check_data_and_selection())
    assert seeded.removed_image not in data.image_ids.tolist()
    assert len(chosen) == 4 and len(set(chosen)) == 4 and seeded.removed_image not in chosen
    scores = predictor.predict(data.embeddings)
    assert scores.shape == (rated,) and np.isfinite(scores).all()

    # Nothing is overwritten without --force.
    before = (out / "model.safetensors").read_bytes()
    _one_error_line(run_cli("train", "--out", str(out), env=env), "already exists")
    assert (out / "model.safetensors").read_bytes() == before

    laion = tmp_path / "laion.pth"
    exported = run_cli("predictor", "export-laion", str(out), "--out", str(laion), env=env)
    assert exported.returncode == 0 and "nn.Linear(32, 1)" in exported.stdout
    _one_error_line(
        run_cli(
            "predictor", "activate", str(out), env={**env, "DREAMRATE_EMBEDDING_MODEL": "ViT-B-32"}
        ),
        "reads local-dir:",
        "not ViT-B-32/openai",
    )


def test_train_from_the_database_on_choices_with_and_without_ratings(
    community, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    env, url, seeded = community

    async def with_engine(step):  # type: ignore[no-untyped-def]
        engine = create_engine(url)
        try:
            return await step(engine)
        finally:
            await engine.dispose()

    posts = asyncio.run(with_engine(lambda engine: seed_choices(engine, seeded)))
    assert len(posts) == 12 * 3
    assert run_cli("embed", env=env).returncode == 0
    # 36 pairs, 2 of them with the removed image; 6 members who count choose on each.
    counted = 34 * 6
    jsonl = tmp_path / "choices.jsonl"
    exported = run_cli("comparisons", "export", "--out", str(jsonl), env=env)
    assert exported.returncode == 0, exported.stderr
    assert f"wrote {counted} choices of every guild" in exported.stdout
    rows = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert {r["rater_id"] for r in rows} == {str(1000 + k) for k in range(6)}
    assert all(seeded.removed_image not in (r["image_a"], r["image_b"]) for r in rows)
    _one_error_line(
        run_cli("comparisons", "export", "--out", str(tmp_path / "c.csv"), env=env),
        "--out: the file must end in .parquet or .jsonl",
    )
    assert not (tmp_path / "c.csv").exists()

    both = tmp_path / "both"
    trained = run_cli("train", "--out", str(both), env=env)
    assert trained.returncode == 0, trained.stderr
    assert f"{counted} choices by 6 members" in trained.stdout
    assert "held-out" in trained.stdout and "human ceiling" in trained.stdout
    meta = json.loads((both / "predictor.json").read_text())
    assert meta["training"]["ratings"] == 35 * 3 and meta["training"]["choices"] == counted
    card = (both / "PREDICTOR.md").read_text()
    assert meta["sha256"] in card and "human ceiling" in card and str(counted) in card
    assert "L2-normalised" in card and meta["embedding_model"] in card

    async def drop_ratings(engine):  # type: ignore[no-untyped-def]
        from dreamrate.db.models import Rating

        async with engine.begin() as conn:
            await conn.execute(Rating.__table__.delete())

    asyncio.run(with_engine(drop_ratings))
    alone = tmp_path / "alone"
    trained = run_cli("train", "--out", str(alone), "--no-activate", env=env)
    assert trained.returncode == 0, trained.stderr
    meta = json.loads((alone / "predictor.json").read_text())
    assert meta["training"]["ratings"] == 0 and meta["training"]["choices"] == counted
    predictor = load_predictor(alone)
    accuracy = meta["metrics"]["dreamrate"]["choice_accuracy"]
    assert accuracy > 0.6  # brighter is better, and the members mostly say so

    # The predictor now picks pairs: within a prompt, none the member judged, each image once.
    judged = {frozenset((r["image_a"], r["image_b"])) for r in rows if r["rater_id"] == "1000"}
    pairs = asyncio.run(
        with_engine(lambda engine: select_pairs_to_compare(engine, 4, predictor, GUILD, 4242))
    )
    assert len(pairs) == 4 and len({i for p in pairs for i in p}) == 8
    assert all(frozenset(p) in judged for p in pairs)  # every within-prompt pair, for a newcomer
    assert all(seeded.removed_image not in p for p in pairs)
    # Member 1000 judged every within-prompt pair: only pairs across prompts are left.
    pairs = asyncio.run(
        with_engine(lambda engine: select_pairs_to_compare(engine, 4, predictor, GUILD, 1000))
    )
    assert pairs and not {frozenset(p) for p in pairs} & judged


def test_too_few_ratings_says_how_many_are_needed(
    tmp_path: Path, tiny_models: tuple[Path, Path]
) -> None:
    env = {
        "DREAMRATE_DATA_DIR": str(tmp_path / "data"),
        "DREAMRATE_EMBEDDING_MODEL": str(tiny_models[1]),
    }
    out = tmp_path / "p"
    assert run_cli("db", "upgrade", env=env).returncode == 0
    _one_error_line(
        run_cli("train", "--out", str(out), env=env),
        "too few ratings to train: need at least 20 images",
    )
    assert not out.exists()


def _write_files(
    folder: Path, *, n_images: int = 120, dim: int = 32, nan_row: bool = False
) -> tuple[Path, Path]:
    world = make_world(n_images, dim=dim, n_raters=20, seed=3)
    rng = np.random.default_rng(0)
    img, rat, val = world.random_ratings(n_images * 3, rng)
    ratings = folder / "ratings.parquet"
    pq.write_table(
        pa.table(
            {
                "image_id": img,
                "rater_id": [f"r{r}" for r in rat],
                "rating": val,
                "group": world.groups[img].astype(str),
            }
        ),
        ratings,
    )
    emb = world.embeddings.copy()
    if nan_row:
        emb[5, 3] = np.nan
    embeddings = folder / "embeddings.parquet"
    column = pa.FixedSizeListArray.from_arrays(pa.array(emb.reshape(-1), pa.float32()), dim)
    pq.write_table(pa.table({"image_id": np.arange(n_images), "embedding": column}), embeddings)
    return ratings, embeddings


def test_train_from_parquet_files_and_bad_embeddings(
    tmp_path: Path, tiny_models: tuple[Path, Path]
) -> None:
    env = {
        "DREAMRATE_DATA_DIR": str(tmp_path / "data"),
        "DREAMRATE_EMBEDDING_MODEL": str(tiny_models[1]),
    }
    ratings, embeddings = _write_files(tmp_path)
    out = tmp_path / "from-files"
    trained = run_cli(
        "train",
        "--ratings",
        str(ratings),
        "--embeddings",
        str(embeddings),
        "--out",
        str(out),
        "--model",
        "auto",
        env=env,
    )
    assert trained.returncode == 0, trained.stderr
    meta = json.loads((out / "predictor.json").read_text())
    rated = len(set(pq.read_table(ratings).column("image_id").to_pylist()))
    assert 100 < rated < 120  # random raters miss a few images
    assert meta["training"]["images"] == rated and meta["training"]["model"] in ("ridge", "mlp")
    assert any(key.endswith("(not chosen)") for key in meta["metrics"])
    assert "trained from files" in (out / "report.html").read_text()

    wide = tmp_path / "wide"
    wide.mkdir()
    _, wide_embeddings = _write_files(wide, dim=48)
    _one_error_line(
        run_cli(
            "train",
            "--ratings",
            str(ratings),
            "--embeddings",
            str(wide_embeddings),
            "--out",
            str(tmp_path / "x"),
            env=env,
        ),
        "embeddings are 48-d but",
        "32-d",
    )
    nan = tmp_path / "nan"
    nan.mkdir()
    _, nan_embeddings = _write_files(nan, nan_row=True)
    _one_error_line(
        run_cli(
            "train",
            "--ratings",
            str(ratings),
            "--embeddings",
            str(nan_embeddings),
            "--out",
            str(tmp_path / "y"),
            env=env,
        ),
        "1 embedding(s) contain NaN",
    )
    _one_error_line(
        run_cli("train", "--ratings", str(ratings), env=env),
        "--embeddings goes with --ratings and/or --comparisons",
    )
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


@pytest.mark.needs("reference")
def test_import_and_show_a_laion_head(tmp_path: Path) -> None:
    head = REFERENCE_DIR / "laion-improved-aesthetic-predictor" / "sac+logos+ava1-l14-linearMSE.pth"
    out = tmp_path / "laion-v2"
    imported = run_cli("predictor", "import", str(head), "--out", str(out))
    assert imported.returncode == 0, imported.stderr
    assert "laion-v2" in imported.stdout and "affine" in imported.stdout
    shown = json.loads(run_cli("predictor", "show", str(out)).stdout)
    assert shown["embedding_model"] == "ViT-L-14/openai" and shown["source"].startswith("laion-v2:")


class _RunsCode:
    """Unpickled, it would run ``touch`` on its path."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):  # type: ignore[no-untyped-def]
        import os

        return (os.system, (f"touch {self.path}",))


def test_the_cli_refuses_a_pickle_with_code(tmp_path: Path) -> None:
    import pickle

    ran = tmp_path / "the-pickle-ran"
    evil = tmp_path / "evil.pth"
    evil.write_bytes(pickle.dumps({"weight": _RunsCode(ran)}))
    _one_error_line(
        run_cli("predictor", "import", str(evil), "--out", str(tmp_path / "evil")),
        "not a plain state dict",
    )
    assert not ran.exists() and not (tmp_path / "evil").exists()
    _one_error_line(run_cli("predictor", "show", str(tmp_path)), "is not a predictor folder")
