"""Scoring benchmark on a synthetic clip-retrieval folder (4 shards x 250k rows, 768-d float16).

Side by side in one run, files in the page cache for all:
1. LAION's reference pipeline: embedding-reader (``file_format="parquet_npy"``) batches,
   a torch ``nn.Linear`` on normalised float32, pandas parquet writes;
2. ``dreamrate score`` with one worker; 3. with two workers;
4. the floor: read the npy files and one float16 matrix-vector product, nothing written.
Then an MLP head (LAION's ReLU variant) against the machine's float32 GEMM rate.

``--end-to-end`` measures what a maintainer waits for instead, in whole processes: (1)
LAION's pipeline, then pandas keeps the top 10 % and writes them, against (2) ``dreamrate
score`` + ``dreamrate export manifest --top-fraction 0.1`` (default workers), and prints the
symmetric difference of the two kept sets.

Run: .venv/bin/python -m benchmarks.bench_score [--rows 250000] [--shards 4] [--repeat 3]
     .venv/bin/python -m benchmarks.bench_score --end-to-end --rows 1000000 [--repeat 3]
"""

from __future__ import annotations

import argparse
import itertools
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import machine, median, print_table
from dreamrate.aesthetic.filtering.engines import local_pool, run_local, run_threads
from dreamrate.aesthetic.filtering.reader import discover_shards
from dreamrate.aesthetic.interop import import_head
from dreamrate.aesthetic.predictor import Predictor, save_predictor
from dreamrate.aesthetic.synthetic import write_clip_retrieval

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference"
V2 = REFERENCE / "laion-improved-aesthetic-predictor" / "sac+logos+ava1-l14-linearMSE.pth"
RELU = REFERENCE / "laion-improved-aesthetic-predictor" / "ava+logos-l14-reluMSE.pth"


def _affine_predictor() -> Predictor:
    if V2.is_file():
        return import_head(V2)
    rng = np.random.default_rng(0)
    weight = rng.normal(size=(1, 768)).astype(np.float32)
    return Predictor("ViT-L-14/openai", 768, [(weight, np.zeros(1, np.float32))], name="random")


def _mlp_predictor() -> Predictor:
    if RELU.is_file():
        return import_head(RELU)
    rng = np.random.default_rng(0)
    sizes = [768, 1024, 128, 64, 16, 1]
    layers = [
        (rng.normal(size=(o, i)).astype(np.float32) / np.sqrt(i), np.zeros(o, np.float32))
        for i, o in itertools.pairwise(sizes)
    ]
    return Predictor("ViT-L-14/openai", 768, layers, activation="relu", name="random-mlp")


def reference_pipeline(source: Path, out: Path, predictor: Predictor) -> int:
    """What LAION ran: embedding-reader batches -> nn.Linear -> pandas parquet."""
    import torch
    from embedding_reader import EmbeddingReader

    weight, bias = predictor.affine()
    linear = torch.nn.Linear(predictor.dim, 1)
    with torch.no_grad():
        linear.weight.copy_(torch.from_numpy(weight).reshape(1, -1))
        linear.bias.fill_(bias)
    reader = EmbeddingReader(
        embeddings_folder=str(source / "img_emb"),
        metadata_folder=str(source / "metadata"),
        meta_columns=["url", "caption"],
        file_format="parquet_npy",
    )
    out.mkdir(parents=True, exist_ok=True)
    rows = 0
    for k, (embeddings, meta) in enumerate(
        reader(batch_size=250_000, start=0, end=reader.count, show_progress=False)
    ):
        with torch.no_grad():
            x = torch.from_numpy(embeddings).float()
            x = x / x.norm(dim=-1, keepdim=True)
            meta["aesthetic"] = linear(x)[:, 0].numpy()
        meta.to_parquet(out / f"scores_{k}.parquet")
        rows += len(meta)
    return rows


def reference_end_to_end(source: str, out: str, predictor_dir: str) -> None:
    """LAION's pipeline, then what a maintainer does next with pandas: keep the top 10 %
    (by ``nlargest``) and write them. Run in its own process by :func:`end_to_end`."""
    import glob

    import pandas as pd

    from dreamrate.aesthetic.predictor import load_predictor

    predictor = load_predictor(Path(predictor_dir))
    scores = Path(out) / "scores"
    reference_pipeline(Path(source), scores, predictor)
    table = pd.concat(pd.read_parquet(f) for f in sorted(glob.glob(str(scores / "*.parquet"))))
    keep = -(-len(table) // 10)
    table.nlargest(keep, "aesthetic").to_parquet(Path(out) / "top.parquet")


def _run(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - started


def end_to_end(source: Path, work: Path, predictor: Predictor, repeat: int, total: int) -> None:
    """Whole processes, from shards to the kept rows: LAION's way against dreamrate's."""
    import pyarrow.parquet as pq

    folder = save_predictor(predictor, work / "predictor")
    cli = str(Path(sys.executable).with_name("dreamrate"))
    ref = work / "e2e-reference"
    snippet = (
        "from benchmarks.bench_score import reference_end_to_end; "
        f"reference_end_to_end({str(source)!r}, {str(ref)!r}, {str(folder)!r})"
    )

    def reference() -> float:
        shutil.rmtree(ref, ignore_errors=True)
        return _run([sys.executable, "-c", snippet])

    ours_dir = work / "e2e-dreamrate"

    def ours() -> tuple[float, float]:
        shutil.rmtree(ours_dir, ignore_errors=True)
        score = _run(
            [cli, "score", "--predictor", str(folder), "--embeddings", str(source),
             "--out", str(ours_dir)]
        )  # fmt: skip
        manifest = _run(
            [cli, "export", "manifest", "--scores", str(ours_dir / "scores"),
             "--top-fraction", "0.1", "--out", str(ours_dir / "manifest")]
        )  # fmt: skip
        return score, manifest

    ref_s = median([reference() for _ in range(repeat)])
    runs = [ours() for _ in range(repeat)]
    score_s = median([a for a, _ in runs])
    manifest_s = median([b for _, b in runs])
    ours_s = median([a + b for a, b in runs])
    kept_ref = set(pq.read_table(ref / "top.parquet", columns=["url"]).column(0).to_pylist())
    kept_ours = set()
    for part in sorted((ours_dir / "manifest").glob("part-*.parquet")):
        kept_ours |= set(pq.read_table(part, columns=["url"]).column(0).to_pylist())
    print_table(
        f"End to end, whole processes: {total:,} rows in, the top 10 % out (median of {repeat})",
        ["pipeline", "seconds", "rows/s", "vs (1)"],
        [
            ["(1) LAION's pipeline + pandas top 10 %", f"{ref_s:.1f}", f"{total / ref_s:,.0f}", "1.0x"],
            ["(2) dreamrate score + export manifest", f"{ours_s:.1f}", f"{total / ours_s:,.0f}", f"{ref_s / ours_s:.1f}x"],
            ["    of which score", f"{score_s:.1f}", f"{total / score_s:,.0f}", ""],
            ["    of which export manifest", f"{manifest_s:.1f}", "", ""],
        ],
    )  # fmt: skip
    print(
        f"kept: reference {len(kept_ref):,}, dreamrate {len(kept_ours):,}; "
        f"symmetric difference {len(kept_ref ^ kept_ours):,} row(s)"
    )


def floor(source: Path, predictor: Predictor, *, mmap: bool) -> int:
    """Read every npy and do one float16 matrix-vector product (torch's float16 ``mv``),
    nothing written: with ``mmap`` the product reads the page cache directly, otherwise
    16k-row chunks are read into one reusable buffer first."""
    import torch

    weight, _ = predictor.affine()
    w16 = torch.from_numpy(weight.astype(np.float16))
    shards, _ = discover_shards(str(source))
    rows = 0
    chunk = np.empty((16384, predictor.dim), dtype=np.float16)
    view = memoryview(chunk).cast("B")
    for shard in shards:
        if mmap:
            data = np.load(shard.embeddings, mmap_mode="r")
            tensor = torch.from_numpy(np.asarray(data))
            for start in range(0, shard.rows, 16384):
                torch.mv(tensor[start : start + 16384], w16)
            del tensor, data
        else:
            with open(shard.embeddings, "rb") as handle:
                handle.seek(shard.data_offset)
                for start in range(0, shard.rows, 16384):
                    m = min(16384, shard.rows - start)
                    handle.readinto(view[: m * predictor.dim * 2])
                    torch.mv(torch.from_numpy(chunk[:m]), w16)
        rows += shard.rows
    return rows


def gemm_rate(threads: int) -> float:
    """Measured float32 GEMM FLOP/s (torch, 4096 x 768 @ 768 x 1024)."""
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(4096, 768), torch.randn(768, 1024)
    out = torch.empty(4096, 1024)
    torch.mm(a, b, out=out)
    times = []
    for _ in range(20):
        started = time.perf_counter()
        torch.mm(a, b, out=out)
        times.append(time.perf_counter() - started)
    return 2 * 4096 * 768 * 1024 / median(times)


def timed(fn, repeat: int) -> tuple[float, int]:  # type: ignore[no-untyped-def]
    seconds, rows = [], 0
    for _ in range(repeat):
        started = time.perf_counter()
        rows = fn()
        seconds.append(time.perf_counter() - started)
    return median(seconds), rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=250_000)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--data", type=Path, default=None, help="keep the synthetic folder here")
    parser.add_argument(
        "--end-to-end", action="store_true", help="shards in, top 10 %% out, whole processes"
    )
    args = parser.parse_args()
    print(f"machine: {machine()}")
    work = Path(tempfile.mkdtemp(prefix="dreamrate-bench-score-"))
    source = args.data or work / "laion"
    try:
        if not (source / "img_emb").is_dir():
            started = time.perf_counter()
            write_clip_retrieval(
                source, shards=args.shards, rows=args.rows, dim=768, dtype="float16"
            )
            print(
                f"wrote {args.shards} x {args.rows:,} rows in {time.perf_counter() - started:.0f} s"
            )
        predictor = _affine_predictor()
        shards, _ = discover_shards(str(source))
        total = sum(s.rows for s in shards)
        floor(source, predictor, mmap=False)  # warm the page cache and torch
        if args.end_to_end:
            end_to_end(source, work, predictor, args.repeat, total)
            return

        def ours(workers: int, pool=None):  # type: ignore[no-untyped-def]
            def run() -> int:
                results = run_local(
                    shards,
                    predictor,
                    str(work / f"scores{workers}"),
                    workers=workers,
                    force=True,
                    pool=pool,
                )
                assert all(r.error is None for r in results), results
                return sum(r.rows for r in results)

            return run

        ref_s, ref_rows = timed(
            lambda: reference_pipeline(source, work / "reference", predictor), 1
        )
        one_s, _ = timed(ours(1), args.repeat)
        two_s, _ = timed(ours(2), args.repeat)
        with local_pool(2) as pool:
            ours(2, pool)()  # start the workers and load the kernels once
            warm_s, _ = timed(ours(2, pool), args.repeat)

        def threaded() -> int:
            results = run_threads(shards, predictor, str(work / "threads"), workers=2, force=True)
            assert all(r.error is None for r in results), results
            return sum(r.rows for r in results)

        threads_s, _ = timed(threaded, args.repeat)
        floor_s, _ = timed(lambda: floor(source, predictor, mmap=False), args.repeat)
        mmap_s, _ = timed(lambda: floor(source, predictor, mmap=True), args.repeat)
        assert ref_rows == total
        seconds = {
            "ref": ref_s,
            "one": one_s,
            "two": two_s,
            "warm": warm_s,
            "threads": threads_s,
            "floor": floor_s,
            "mmap": mmap_s,
        }
        rate = {k: total / v for k, v in seconds.items()}
        names = {
            "ref": "(1) embedding-reader + nn.Linear + pandas (LAION)",
            "one": "(2) dreamrate score, 1 worker",
            "two": "(3) dreamrate score, 2 workers (process start included)",
            "warm": "(3') dreamrate score, 2 workers already started",
            "threads": "(5) dreamrate score --engine threads, 2 threads (nothing to start)",
            "floor": "(4) floor: read npy into a buffer + float16 matvec, no output",
            "mmap": "(4') floor: memory-mapped npy + float16 matvec, no output",
        }
        print_table(
            f"Scoring {len(shards)} x {args.rows:,} rows of 768-d float16 (affine head, median of {args.repeat})",
            ["pipeline", "rows/s", "vs reference", "vs floor (4)", "vs floor (4')"],
            [
                [
                    names[k],
                    f"{rate[k]:,.0f}",
                    f"{rate[k] / rate['ref']:.1f}x",
                    f"{rate[k] / rate['floor']:.0%}",
                    f"{rate[k] / rate['mmap']:.0%}",
                ]
                for k in names
            ],
        )
        mlp = _mlp_predictor()
        flops_per_row = 2 * sum(w.size for w, _ in mlp.layers)
        rows_mlp = []
        for workers in (1, 2):
            seconds, rows = timed(
                lambda w=workers: sum(
                    r.rows
                    for r in run_local(
                        shards[:1], mlp, str(work / f"mlp{w}"), workers=w, force=True
                    )
                ),
                args.repeat,
            )
            achieved = rows / seconds * flops_per_row
            peak = gemm_rate(2)  # numpy and torch share the machine's BLAS-class GEMM rate
            rows_mlp.append(
                [
                    f"{workers}",
                    f"{rows / seconds:,.0f}",
                    f"{achieved / 1e9:.1f}",
                    f"{peak / 1e9:.1f}",
                    f"{achieved / peak:.0%}",
                ]
            )
        print_table(
            f"MLP head ({mlp.name}, {flops_per_row / 1e6:.2f} MFLOP per row), one shard",
            ["workers", "rows/s", "GFLOP/s achieved", "float32 GEMM GFLOP/s (2 threads)", "share"],
            rows_mlp,
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
