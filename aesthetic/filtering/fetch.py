"""Fetch: a manifest's images with img2dataset, used as a library.

img2dataset does the downloading (threads per process, resizing, webdataset or files
output, one ``NNNNN_stats.json`` per finished shard) with its opt-out handling left on: an
image served with ``X-Robots-Tag: noai`` (or ``noimageai``, ``noindex``, ``noimageindex``)
is not kept. Its incremental mode makes a fetch resumable: finished shards are skipped,
an unfinished one is downloaded again. This module checks the folders, keeps a record of
what was fetched from which manifest (``_dreamrate/fetch.json``, outside img2dataset's
``*.json`` shard markers) and sums img2dataset's statistics.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import signal
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dreamrate.core.atomic import atomic_file
from dreamrate.core.errors import DreamrateError

__all__ = ["FETCH_RECORD", "FetchError", "fetch_manifest", "fetch_summary", "manifest_id"]

FETCH_RECORD = Path("_dreamrate") / "fetch.json"
SAMPLES_PER_SHARD = 10_000
OUTPUT_FORMATS = ("files", "webdataset")


class FetchError(DreamrateError):
    """A fetch that cannot start or did not finish."""


def manifest_id(manifest: Path) -> str:
    """A manifest's identity: the first 16 hex digits of its manifest.json's sha256."""
    return hashlib.sha256((manifest / "manifest.json").read_bytes()).hexdigest()[:16]


def _read_manifest(manifest: Path) -> dict[str, Any]:
    path = manifest / "manifest.json"
    if not path.is_file():
        raise FetchError(
            f"--manifest: {manifest} has no manifest.json (write one with `dreamrate export manifest`)"
        )
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        raise FetchError(f"--manifest: {path} is not a dreamrate manifest") from None
    if data.get("format") != "dreamrate-manifest" or not isinstance(data.get("files"), list):
        raise FetchError(f"--manifest: {path} is not a dreamrate manifest")
    missing = [f["name"] for f in data["files"] if not (manifest / f["name"]).is_file()]
    if missing:
        raise FetchError(f"--manifest: {manifest} lacks {missing[0]} (listed in manifest.json)")
    return data


def fetch_summary(out: Path) -> dict[str, Any]:
    """img2dataset's per-shard statistics in ``out``, summed."""
    totals: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    shards = 0
    for stats_file in sorted(out.glob("*_stats.json")):
        stats = json.loads(stats_file.read_text())
        shards += 1
        for key in ("count", "successes", "failed_to_download", "failed_to_resize"):
            totals[key] += int(stats.get(key, 0))
        reasons.update({k: int(v) for k, v in stats.get("status_dict", {}).items()})
    reasons.pop("success", None)
    return {
        "shards_done": shards,
        "rows": totals["count"],
        "fetched": totals["successes"],
        "failed_to_download": totals["failed_to_download"],
        "failed_to_resize": totals["failed_to_resize"],
        "failures": dict(reasons.most_common()),
    }


def _prepare_out(out: Path, ident: str, *, force: bool, resume: bool) -> None:
    if out.exists() and not out.is_dir():
        raise FetchError(f"--out: {out} is a file")
    if not out.exists() or not any(out.iterdir()):
        return
    record_path = out / FETCH_RECORD
    if force:
        shutil.rmtree(out)
        return
    if not resume:
        raise FetchError(
            f"--out: {out} already exists (--resume continues a fetch of this manifest, "
            "--force starts over)"
        )
    try:
        record = json.loads(record_path.read_text())
    except (OSError, ValueError):
        raise FetchError(f"--resume: {out} is not a dreamrate fetch folder") from None
    if record.get("manifest", {}).get("id") != ident:
        raise FetchError(
            f"--resume: {out} was fetched from another manifest "
            f"({record.get('manifest', {}).get('id')}, not {ident}); use --force to start over"
        )


def fetch_manifest(
    manifest: Path,
    out: Path,
    *,
    image_size: int = 512,
    processes: int = 1,
    threads: int = 32,
    output_format: str = "files",
    timeout: int = 10,
    retries: int = 0,
    force: bool = False,
    resume: bool = False,
) -> dict[str, Any]:
    """Download ``manifest``'s images into ``out`` and return the fetch record (on the main
    thread: img2dataset sets a signal handler).

    Images are resized to ``image_size`` squares (centre crop), the size fine-tuning reads;
    each sample keeps its caption and its ``aesthetic`` score."""
    if output_format not in OUTPUT_FORMATS:
        raise FetchError(
            f"--output-format: one of {', '.join(OUTPUT_FORMATS)}, not {output_format}"
        )
    for name, value in (
        ("--image-size", image_size),
        ("--processes", processes),
        ("--threads", threads),
    ):
        if value < 1:
            raise FetchError(f"{name}: must be at least 1, got {value}")
    data = _read_manifest(manifest)
    ident = manifest_id(manifest)
    _prepare_out(out, ident, force=force, resume=resume)
    rows = int(data.get("rows_out", 0))
    # img2dataset shards each input file on its own.
    expected_shards = sum(
        math.ceil(int(f.get("rows", 0)) / SAMPLES_PER_SHARD) for f in data["files"]
    )
    columns = data.get("columns") or []
    record: dict[str, Any] = {
        "format": "dreamrate-fetch",
        "version": 1,
        "manifest": {"path": str(manifest.resolve()), "id": ident, "rows": rows},
        "options": {
            "image_size": image_size,
            "output_format": output_format,
            "processes": processes,
            "threads": threads,
            "timeout": timeout,
            "retries": retries,
            "resize_mode": "center_crop",
        },
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "status": "running",
    }
    out.mkdir(parents=True, exist_ok=True)
    _write_record(out, record)

    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # no network call at import
    from img2dataset import download

    started = time.perf_counter()
    interrupted = False
    # img2dataset installs a Ctrl-C handler that exits 0; ours comes back afterwards.
    previous_handler = signal.getsignal(signal.SIGINT)
    try:
        download(
            url_list=str(manifest),
            input_format="parquet",
            url_col="url",
            caption_col="caption" if "caption" in columns else None,
            save_additional_columns=["aesthetic"] if "aesthetic" in columns else None,
            output_format=output_format,
            output_folder=str(out),
            image_size=image_size,
            resize_mode="center_crop",
            processes_count=processes,
            thread_count=threads,
            timeout=timeout,
            retries=retries,
            number_sample_per_shard=SAMPLES_PER_SHARD,
            incremental_mode="incremental",
            enable_wandb=False,
            distributor="multiprocessing",
        )
    except SystemExit:  # img2dataset's Ctrl-C handler exits 0
        interrupted = True
    finally:
        signal.signal(signal.SIGINT, previous_handler)
    summary = fetch_summary(out)
    record.update(summary)
    record["seconds"] = round(record.get("seconds", 0) + time.perf_counter() - started, 1)
    done = not interrupted and summary["shards_done"] >= expected_shards
    record["status"] = "done" if done else "interrupted"
    record["finished_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    _write_record(out, record)
    if not done:
        raise FetchError(
            f"fetch interrupted after {summary['shards_done']} of {expected_shards} shard(s); "
            f"rerun with --resume to continue"
        )
    return record


def _write_record(out: Path, record: dict[str, Any]) -> None:
    path = out / FETCH_RECORD
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path, FetchError) as tmp:
        Path(tmp).write_text(json.dumps(record, indent=2) + "\n")
