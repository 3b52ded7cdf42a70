"""score -> export manifest, end to end on small synthetic clip-retrieval folders."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dreamrate.aesthetic.filtering.engines import run_local
from dreamrate.aesthetic.filtering.reader import discover_shards
from dreamrate.aesthetic.predictor import Predictor, save_predictor
from dreamrate.aesthetic.synthetic import write_clip_retrieval
from tests.test_cli import run_cli

DIM = 64


def _affine(seed: int = 0, dim: int = DIM) -> Predictor:
    rng = np.random.default_rng(seed)
    return Predictor(
        "ViT-test/none", dim,
        [(rng.normal(size=(1, dim)).astype(np.float32), np.array([5.0], np.float32))],
        name=f"affine{seed}",
    )  # fmt: skip


def _mlp(dim: int = DIM) -> Predictor:
    rng = np.random.default_rng(1)
    layers = [
        (rng.normal(size=(16, dim)).astype(np.float32), rng.normal(size=16).astype(np.float32)),
        (rng.normal(size=(1, 16)).astype(np.float32), np.array([0.5], np.float32)),
    ]
    return Predictor("ViT-test/none", dim, layers, activation="relu", input_scale=2.0, name="mlp")


def _embeddings(folder: Path, label: str) -> np.ndarray:
    return np.load(folder / "img_emb" / f"img_emb_{label}.npy")


@pytest.fixture
def source(tmp_path: Path) -> Path:
    folder = tmp_path / "laion"
    write_clip_retrieval(folder, shards=3, rows=3000, dim=DIM, dtype="float16", pad=2, seed=4)
    return folder


def _score(predictor_dir: Path, source: str, out: Path, *extra: str):  # type: ignore[no-untyped-def]
    return run_cli(
        "score",
        "--predictor",
        str(predictor_dir),
        "--embeddings",
        source,
        "--out",
        str(out),
        *extra,
    )


def test_scores_match_the_predictor_and_keep_order_and_columns(
    tmp_path: Path, source: Path
) -> None:
    predictor = _affine()
    folder = save_predictor(predictor, tmp_path / "p")
    result = _score(folder, str(source), tmp_path / "out", "--workers", "2")
    assert result.returncode == 0, result.stderr
    assert "scored 9,000 rows in 3 shard(s)" in result.stdout
    names = sorted(p.name for p in (tmp_path / "out" / "scores").iterdir())
    assert names == ["scores_00.parquet", "scores_01.parquet", "scores_02.parquet"]
    # By default a score file is a sidecar: the scores alone, row-aligned with the source,
    # whose files and identities its footer names.
    sidecar = pq.read_table(tmp_path / "out" / "scores" / "scores_00.parquet")
    assert sidecar.column_names == ["aesthetic"]
    footer = json.loads(sidecar.schema.metadata[b"dreamrate.shard"])
    assert footer["rows"] == 3000 and footer["metadata"]["url"].endswith("metadata_00.parquet")
    assert footer["embeddings"]["identity"].startswith(
        f"{(source / 'img_emb' / 'img_emb_00.npy').stat().st_size}:"
    )
    joined = _score(folder, str(source), tmp_path / "joined", "--columns", "url,caption,key")
    assert joined.returncode == 0, joined.stderr
    for label in ("00", "01", "02"):
        table = pq.read_table(tmp_path / "joined" / "scores" / f"scores_{label}.parquet")
        assert table.column_names == ["url", "caption", "key", "aesthetic"]
        sidecar = pq.read_table(tmp_path / "out" / "scores" / f"scores_{label}.parquet")
        assert sidecar.column("aesthetic").equals(table.column("aesthetic"))
        assert table.schema.field("aesthetic").type == pa.float32()
        meta = pq.read_table(source / "metadata" / f"metadata_{label}.parquet")
        assert table.column("key").to_pylist() == meta.column("key").to_pylist()
        expected = predictor.predict(_embeddings(source, label).astype(np.float32))
        np.testing.assert_allclose(
            table.column("aesthetic").to_numpy(), expected, rtol=1e-5, atol=1e-5
        )


def test_mlp_heads_and_parquet_datasets_and_urls(tmp_path: Path) -> None:
    predictor = _mlp()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2500, DIM)).astype(np.float32)
    folder = tmp_path / "pq"
    folder.mkdir()
    column = pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), DIM)
    pq.write_table(
        pa.table(
            {"url": [f"u{i}" for i in range(2500)], "caption": ["c"] * 2500, "embedding": column}
        ),
        folder / "part_7.parquet",
    )
    shards, problems = discover_shards(f"file://{folder}")
    assert [(s.n, s.rows, s.dim) for s in shards] == [(7, 2500, DIM)] and not problems
    results = run_local(shards, predictor, str(tmp_path / "scores"))
    assert results[0].error is None and results[0].rows == 2500
    table = pq.read_table(tmp_path / "scores" / "scores_7.parquet")
    assert table.column_names == ["aesthetic"]
    np.testing.assert_allclose(
        table.column("aesthetic").to_numpy(), predictor.predict(x), rtol=1e-4, atol=1e-4
    )


@pytest.mark.needs("ray")
def test_ray_engine_writes_byte_identical_files(tmp_path: Path, source: Path) -> None:
    folder = save_predictor(_affine(), tmp_path / "p")
    local = _score(folder, str(source), tmp_path / "local")
    assert local.returncode == 0, local.stderr
    distributed = _score(folder, str(source), tmp_path / "ray", "--engine", "ray", "--workers", "2")
    assert distributed.returncode == 0, distributed.stderr
    for name in ("scores_00.parquet", "scores_01.parquet", "scores_02.parquet"):
        assert (tmp_path / "local" / "scores" / name).read_bytes() == (
            tmp_path / "ray" / "scores" / name
        ).read_bytes()


def test_resume_recomputes_only_missing_or_stale_shards(tmp_path: Path, source: Path) -> None:
    folder = save_predictor(_affine(), tmp_path / "p")
    out = tmp_path / "out"
    assert _score(folder, str(source), out).returncode == 0
    scores = out / "scores"
    kept = (scores / "scores_00.parquet").stat().st_mtime_ns
    # An interrupted run: one output missing, a half-written temporary left behind.
    (scores / "scores_01.parquet").unlink()
    (scores / ".scores_01.parquet.deadbeef.tmp").write_bytes(b"PAR1 half")
    again = _score(folder, str(source), out)
    assert again.returncode == 0, again.stderr
    assert (
        "scored 3,000 rows in 1 shard(s)" in again.stdout
        and "2 shard(s) already scored" in again.stdout
    )
    assert (scores / "scores_00.parquet").stat().st_mtime_ns == kept
    assert sorted(p.name for p in scores.iterdir()) == [
        "scores_00.parquet",
        "scores_01.parquet",
        "scores_02.parquet",
    ]
    # Another predictor's scores are stale; --force recomputes everything.
    other = save_predictor(_affine(seed=9), tmp_path / "q")
    assert "scored 9,000 rows in 3 shard(s)" in _score(other, str(source), out).stdout
    assert "scored 9,000 rows in 3 shard(s)" in _score(other, str(source), out, "--force").stdout


def test_bad_shards_are_listed_and_good_ones_kept(tmp_path: Path) -> None:
    source = tmp_path / "bad"
    write_clip_retrieval(source, shards=6, rows=1000, dim=DIM, seed=1)
    (source / "metadata" / "metadata_1.parquet").unlink()  # missing metadata
    meta2 = pq.read_table(source / "metadata" / "metadata_2.parquet").slice(0, 900)
    pq.write_table(meta2, source / "metadata" / "metadata_2.parquet")  # misaligned rows
    npy3 = source / "img_emb" / "img_emb_3.npy"
    npy3.write_bytes(npy3.read_bytes()[:-5000])  # truncated
    x4 = np.load(source / "img_emb" / "img_emb_4.npy")
    x4[[3, 10]] = np.nan
    x4[11, 0] = np.inf
    np.save(source / "img_emb" / "img_emb_4.npy", x4)  # NaN/inf rows
    x5 = np.load(source / "img_emb" / "img_emb_5.npy").astype(np.float32) * 3.0
    np.save(source / "img_emb" / "img_emb_5.npy", x5)  # unnormalised float32
    folder = save_predictor(_affine(), tmp_path / "p")
    out = tmp_path / "out"
    result = _score(folder, str(source), out)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert any("img_emb_1.npy" in e and "no metadata_1.parquet" in e for e in errors)
    assert any(
        "img_emb_2.npy" in e and "1000 embeddings but metadata_2.parquet has 900 rows" in e
        for e in errors
    )
    assert any("img_emb_3.npy" in e and "truncated" in e for e in errors)
    assert errors[-1] == "error: 3 shard(s) failed; the others are kept"
    assert "3 NaN/inf row(s) scored as null" in result.stdout
    assert re.search(r"not unit length \(norms (0\.99\d*|1) to 3\)", result.stderr), result.stderr
    assert sorted(p.name for p in (out / "scores").iterdir()) == [
        "scores_0.parquet",
        "scores_4.parquet",
        "scores_5.parquet",
    ]
    scores4 = pq.read_table(out / "scores" / "scores_4.parquet").column("aesthetic")
    assert scores4.null_count == 3 and scores4[3].as_py() is None and scores4[4].as_py() is not None
    unit5 = x5 / np.linalg.norm(x5, axis=1, keepdims=True)
    np.testing.assert_allclose(
        pq.read_table(out / "scores" / "scores_5.parquet").column("aesthetic").to_numpy(),
        _affine().predict(unit5), rtol=1e-5, atol=1e-5,
    )  # fmt: skip

    wide = save_predictor(_affine(dim=DIM * 2), tmp_path / "wide")
    result = _score(wide, str(source), tmp_path / "out2")
    assert result.returncode == 2 and "embeddings are 64-d but the predictor" in result.stderr
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    result = _score(folder, str(source), blocker / "out")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: --out:")


def test_manifest_threshold_order_files_and_json(tmp_path: Path, source: Path) -> None:
    folder = save_predictor(_affine(), tmp_path / "p")
    assert (
        _score(folder, str(source), tmp_path / "out", "--columns", "url,caption,key").returncode
        == 0
    )
    scores = tmp_path / "out" / "scores"
    everything = pa.concat_tables(
        [pq.read_table(scores / f"scores_{n:02d}.parquet") for n in range(3)]
    )
    values = everything.column("aesthetic").to_numpy()

    man = tmp_path / "top"
    result = run_cli(
        "export",
        "manifest",
        "--scores",
        str(scores),
        "--top-fraction",
        "0.05",
        "--out",
        str(man),
        "--rows-per-file",
        "200",
    )
    assert result.returncode == 0, result.stderr
    manifest = json.loads((man / "manifest.json").read_text())
    cut = float(np.sort(values)[::-1][449])  # 5 % of 9,000 rows
    assert manifest["selection"] == {
        "mode": "top_fraction",
        "value": 0.05,
        "threshold": pytest.approx(cut),
    }
    assert manifest["rows_in"] == 9000 and manifest["rows_out"] == 450
    assert manifest["source_shards"] == [
        "scores_00.parquet",
        "scores_01.parquet",
        "scores_02.parquet",
    ]
    assert (
        manifest["predictor"]["id"] == _affine().id and len(manifest["predictor"]["sha256"]) == 64
    )
    assert sum(manifest["histogram"]["counts"]) == 9000
    parts = sorted(man.glob("part-*.parquet"))
    assert [p.name for p in parts] == [
        "part-00000.parquet",
        "part-00001.parquet",
        "part-00002.parquet",
    ]
    assert [f["rows"] for f in manifest["files"]] == [200, 200, 50]
    kept = pa.concat_tables([pq.read_table(p) for p in parts])
    expected = everything.filter(pa.compute.greater_equal(everything.column("aesthetic"), cut))
    assert kept.column("key").to_pylist() == expected.column("key").to_pylist()  # source order
    assert pq.read_metadata(parts[0]).row_group(0).column(0).compression == "ZSTD"

    by_score = tmp_path / "min"
    assert (
        run_cli(
            "export",
            "manifest",
            "--scores",
            str(scores),
            "--min-score",
            "5.5",
            "--out",
            str(by_score),
        ).returncode
        == 0
    )
    assert json.loads((by_score / "manifest.json").read_text())["rows_out"] == int(
        (values >= 5.5).sum()
    )
    again = run_cli(
        "export", "manifest", "--scores", str(scores), "--min-score", "5.5", "--out", str(by_score)
    )
    assert again.returncode == 2 and "already exists" in again.stderr
    both = run_cli("export", "manifest", "--scores", str(scores), "--out", str(tmp_path / "x"))
    assert both.returncode == 2 and "exactly one of --min-score and --top-fraction" in both.stderr
    shutil.copy(scores / "scores_00.parquet", tmp_path / "keep.parquet")
    other = save_predictor(_affine(seed=3), tmp_path / "other")
    run_local(
        discover_shards(str(source))[0][:1],
        _affine(seed=3),
        str(scores),
        columns=("url", "caption", "key"),
        force=True,
    )
    mixed = run_cli(
        "export",
        "manifest",
        "--scores",
        str(scores),
        "--min-score",
        "1",
        "--out",
        str(tmp_path / "y"),
    )
    assert mixed.returncode == 2 and "different predictors" in mixed.stderr
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists() and other.exists()


def _manifest(scores: Path, out: Path, *extra: str):  # type: ignore[no-untyped-def]
    return run_cli("export", "manifest", "--scores", str(scores), "--out", str(out), *extra)


def test_sidecar_manifest_equals_the_joined_one_and_refuses_stale_sources(
    tmp_path: Path, source: Path
) -> None:
    folder = save_predictor(_affine(), tmp_path / "p")
    assert _score(folder, str(source), tmp_path / "side").returncode == 0
    assert (
        _score(folder, str(source), tmp_path / "joined", "--columns", "url,caption,key").returncode
        == 0
    )
    for name in ("side", "joined"):
        result = _manifest(
            tmp_path / name / "scores",
            tmp_path / f"m-{name}",
            "--top-fraction",
            "0.1",
            "--rows-per-file",
            "250",
        )
        assert result.returncode == 0, result.stderr
        assert "kept 900 of 9,000 rows" in result.stdout
    side, joined = tmp_path / "m-side", tmp_path / "m-joined"
    parts = sorted(p.name for p in side.glob("part-*.parquet"))
    assert parts == sorted(p.name for p in joined.glob("part-*.parquet")) and len(parts) == 4
    for name in parts:  # the same rows, columns and scores, in the same order
        assert pq.read_table(side / name).equals(pq.read_table(joined / name))
    manifest = json.loads((side / "manifest.json").read_text())
    assert manifest["columns"] == ["url", "caption", "key", "aesthetic"]
    # A --min-score written as a score prints (float32's shortest form) keeps the same rows
    # either way: both compare in float64.
    some = pq.read_table(tmp_path / "side" / "scores" / "scores_00.parquet").column("aesthetic")
    cut = str(np.float32(np.median(some.to_numpy())))
    kept = []
    for name in ("side", "joined"):
        result = _manifest(tmp_path / name / "scores", tmp_path / f"cut-{name}", "--min-score", cut)
        assert result.returncode == 0, result.stderr
        kept.append(
            json.loads((tmp_path / f"cut-{name}" / "manifest.json").read_text())["rows_out"]
        )
    assert kept[0] == kept[1]
    # --columns picks the metadata a sidecar manifest carries; unknown ones are one line.
    assert (
        _manifest(
            tmp_path / "side" / "scores",
            tmp_path / "urls",
            "--top-fraction",
            "0.1",
            "--columns",
            "url",
        ).returncode
        == 0
    )
    assert pq.read_table(tmp_path / "urls" / "part-00000.parquet").column_names == [
        "url",
        "aesthetic",
    ]
    bad = _manifest(
        tmp_path / "side" / "scores",
        tmp_path / "bad",
        "--top-fraction",
        "0.1",
        "--columns",
        "url,nope",
    )
    assert (
        bad.returncode == 2
        and "--columns: nope not in the metadata of scores_00.parquet" in bad.stderr
    )
    # A threshold that keeps nothing is reported, nothing written.
    empty = _manifest(tmp_path / "side" / "scores", tmp_path / "empty", "--min-score", "1000")
    assert (
        empty.returncode == 2
        and "keeps no row" in empty.stderr
        and "nothing written" in empty.stderr
    )
    # The source changes after scoring: the manifest refuses, naming the shard.
    meta = source / "metadata" / "metadata_01.parquet"
    table = pq.read_table(meta)
    pq.write_table(table.set_column(1, "caption", pa.array(["changed"] * len(table))), meta)
    stale = _manifest(tmp_path / "side" / "scores", tmp_path / "stale", "--top-fraction", "0.1")
    assert stale.returncode == 2
    assert (
        "scores_01.parquet is stale" in stale.stderr
        and "metadata_01.parquet changed" in stale.stderr
    )
    # ... and a rerun of score rescores just that shard.
    again = _score(folder, str(source), tmp_path / "side")
    assert (
        "scored 3,000 rows in 1 shard(s)" in again.stdout
        and "2 shard(s) already scored" in again.stdout
    )
    # A metadata shard gone at export time is named too.
    meta.unlink()
    missing = _manifest(tmp_path / "side" / "scores", tmp_path / "missing", "--top-fraction", "0.1")
    assert missing.returncode == 2 and "metadata_01.parquet is missing" in missing.stderr
    for name in ("bad", "empty", "stale", "missing"):
        assert not (tmp_path / name).exists()


def test_every_forkserver_preload_imports() -> None:
    # multiprocessing skips a preload that fails to import without a word; workers would then
    # import the runner themselves, once each.
    import importlib

    from dreamrate.aesthetic.filtering.engines import FORKSERVER_PRELOAD

    for name in FORKSERVER_PRELOAD:
        importlib.import_module(name)


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_the_gpu_kernel_scores_like_the_numba_kernel(dtype) -> None:  # type: ignore[no-untyped-def]
    from dreamrate.aesthetic.filtering.kernel import ScoreKernel
    from dreamrate.aesthetic.filtering.torch_kernel import TorchKernel, choose_kernel

    rng = np.random.default_rng(5)
    chunk = (rng.normal(size=(300, DIM)) * 2).astype(dtype)
    chunk[7] = np.nan
    for predictor in (_affine(), _mlp()):
        numba_out, torch_out = np.empty(300, np.float32), np.empty(300, np.float32)
        reference = ScoreKernel(predictor, DIM, 512)
        reference(chunk, numba_out)
        gpu_path = TorchKernel(predictor, DIM, 512, "cpu")  # the CUDA code, run on the CPU
        gpu_path(chunk, torch_out)
        assert np.isnan(torch_out[7]) and np.isnan(numba_out[7])
        np.testing.assert_allclose(torch_out, numba_out, rtol=1e-4, atol=1e-4)
        assert gpu_path.norm_min == pytest.approx(reference.norm_min, rel=1e-5)
        assert gpu_path.norm_max == pytest.approx(reference.norm_max, rel=1e-5)
    # Chosen automatically: the torch kernel where a CUDA GPU is, the numba one elsewhere.
    import torch

    automatic = TorchKernel if torch.cuda.is_available() else ScoreKernel
    assert isinstance(choose_kernel(_affine(), DIM, 16), automatic)
    assert isinstance(choose_kernel(_affine(), DIM, 16, "cpu"), ScoreKernel)


def test_the_threads_engine_writes_the_local_engines_files(tmp_path: Path, source: Path) -> None:
    folder = save_predictor(_affine(), tmp_path / "p")
    assert _score(folder, str(source), tmp_path / "local").returncode == 0
    threads = _score(
        folder, str(source), tmp_path / "threads", "--engine", "threads", "--workers", "2"
    )
    assert threads.returncode == 0, threads.stderr
    assert "scored 9,000 rows in 3 shard(s)" in threads.stdout
    for name in ("scores_00.parquet", "scores_01.parquet", "scores_02.parquet"):
        assert (tmp_path / "local" / "scores" / name).read_bytes() == (
            tmp_path / "threads" / "scores" / name
        ).read_bytes()
    # MLP heads take the serial widening kernel; their BLAS products run on one thread per
    # shard here, which sums in another order: equal to float32 rounding.
    mlp = save_predictor(_mlp(), tmp_path / "mlp")
    assert _score(mlp, str(source), tmp_path / "mlp-local").returncode == 0
    assert _score(mlp, str(source), tmp_path / "mlp-threads", "--engine", "threads").returncode == 0
    for name in ("scores_00.parquet", "scores_02.parquet"):
        local = pq.read_table(tmp_path / "mlp-local" / "scores" / name).column("aesthetic")
        threaded = pq.read_table(tmp_path / "mlp-threads" / "scores" / name).column("aesthetic")
        np.testing.assert_allclose(threaded.to_numpy(), local.to_numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.needs("f16c")  # elsewhere the bit kernels are the only ones used
def test_the_cpus_own_float16_conversion_gives_the_bit_kernels_results() -> None:
    from dreamrate.aesthetic.filtering import kernel

    rng = np.random.default_rng(8)
    x = (rng.normal(size=(1000, 768)) * 0.05).astype(np.float16)
    every_half = np.arange(2**16, dtype=np.uint16).view(np.float16)  # subnormals, inf, NaN
    x[:85] = np.resize(every_half, (85, 768))
    x[100] = 0
    x[101, :7] = np.float16(6e-8)  # the smallest subnormal
    bits, w = x.view(np.uint16), rng.normal(size=768).astype(np.float32)
    outputs = []
    for affine, widen in (
        (kernel.affine_f16_hw, kernel.widen_f16_hw),
        (kernel.affine_f16_bits, kernel.widen_f16_bits),
    ):
        dots, norms = np.empty(1000, np.float32), np.empty(1000, np.float32)
        wide, wide_norms = np.empty((1000, 768), np.float32), np.empty(1000, np.float32)
        with np.errstate(invalid="ignore", over="ignore"):
            affine(bits, w, dots, norms)
            widen(bits, wide, wide_norms)
        outputs.append((dots, norms, wide, wide_norms))
    for hardware, portable in zip(*outputs, strict=True):
        np.testing.assert_array_equal(hardware, portable)  # bit for bit, NaN where NaN
    # The widened values are float16's own.
    wide = outputs[0][2]
    np.testing.assert_array_equal(wide, x.astype(np.float32))
