"""Bad input on the command line: one ``error:`` line on stderr, exit code 2, nothing left behind.

The CLI runs in this process (``dreamrate.cli.main`` with an argv), as the installed script
calls it, so these tests stay fast; tests/test_cli.py covers the script itself.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from tests.cli_helpers import Run, refused


def _predictor(folder: Path, dim: int = 8) -> Path:
    from dreamrate.aesthetic.predictor import Predictor, save_predictor

    weight = np.random.default_rng(0).normal(size=(1, dim)).astype(np.float32)
    return save_predictor(
        Predictor("ViT-test/none", dim, [(weight, np.array([5.0], np.float32))]), folder
    )


# -- item 10: tracebacks ---------------------------------------------------------------


def test_predictor_import_of_what_is_not_a_checkpoint(
    cli: Callable[..., Run], tmp_path: Path
) -> None:
    text = tmp_path / "notes.pth"
    text.write_text("hello, not a checkpoint\n")
    refused(cli("predictor", "import", text, "--out", "p"), "notes.pth", "cannot read")
    refused(cli("predictor", "import", tmp_path, "--out", "p"), "PATH:", "is a folder")
    # --kind is checked before anything is read: the file's own problem does not hide it.
    refused(cli("predictor", "import", text, "--out", "p", "--kind", "bogus"), "--kind", "'bogus'")


def test_predictor_import_library_errors_are_predictor_errors(tmp_path: Path) -> None:
    from dreamrate.aesthetic.interop import import_head
    from dreamrate.aesthetic.predictor import PredictorError

    (tmp_path / "garbage.pth").write_bytes(b"\x80\x02}q\x00(X\x01\x00\x00\x00ah\x65")
    with pytest.raises(PredictorError, match=r"garbage\.pth: cannot read"):
        import_head(tmp_path / "garbage.pth")
    with pytest.raises(PredictorError, match="is a folder"):
        import_head(tmp_path)
    with pytest.raises(PredictorError, match="--kind: must be one of"):
        import_head(tmp_path / "missing.pth", kind="bogus")


def test_demo_dir_that_is_a_file(cli: Callable[..., Run], tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not a folder")
    refused(cli("demo", "--dir", "notes.txt"), "--dir:", "notes.txt is a file, not a folder")


# -- item 11: accepted nonsense ----------------------------------------------------------


@pytest.mark.parametrize("timeout", ["-5", "0", "nan"])
def test_generate_with_a_timeout_that_cannot_be_waited_enqueues_nothing(
    cli: Callable[..., Run], tmp_path: Path, timeout: str
) -> None:
    refused(cli("generate", "a cat", "--no-worker", "--timeout", timeout), "--timeout:")
    assert not (tmp_path / "data" / "dreamrate.db").exists()


def test_generate_that_times_out_cancels_its_job(cli: Callable[..., Run], tmp_path: Path) -> None:
    result = cli("generate", "a cat", "--no-worker", "--timeout", "1")
    assert result.code == 1 and "error: job 1 still queued after 1s; cancelled" in result.err
    with sqlite3.connect(tmp_path / "data" / "dreamrate.db") as db:
        assert db.execute("SELECT id, status FROM jobs").fetchall() == [(1, "cancelled")]


@pytest.mark.parametrize(
    "args",
    [
        ("models", "make-tiny", ""),
        ("score", "--predictor", "pred", "--embeddings", "", "--out", "o"),
        ("score", "--predictor", "pred", "--embeddings", "shards", "--out", ""),
        ("generate", "a cat", "--model", ""),
        ("train", "--ratings", "r.parquet", "--embeddings", ""),
        ("ratings", "export", "--out", ""),
        ("web", "--host", ""),
        ("synthetic", "panel", "--out", ""),
    ],
    ids=lambda args: " ".join(a or "''" for a in args),
)
def test_empty_strings_are_not_the_current_folder(
    cli: Callable[..., Run], tmp_path: Path, args: tuple[str, ...]
) -> None:
    _predictor(tmp_path / "pred")
    line = refused(cli(*args), "must not be empty")
    assert line.split(":")[1].strip() in {"--embeddings", "--out", "--model", "--host", "DIRECTORY"}


def test_score_of_files_that_hold_no_shard(cli: Callable[..., Run], tmp_path: Path) -> None:
    _predictor(tmp_path / "pred")
    (tmp_path / "bad.parquet").write_text("not parquet at all")
    refused(
        cli("score", "--predictor", "pred", "--embeddings", "bad.parquet", "--out", "o"),
        "--embeddings:",
        "bad.parquet:",
        "magic bytes",
    )
    source = tmp_path / "two"
    source.mkdir()
    (source / "a.parquet").write_text("x")
    (source / "b.parquet").write_text("y")
    refused(
        cli("score", "--predictor", "pred", "--embeddings", source, "--out", "o"),
        "a.parquet:",
        "(and 1 other shard that cannot be scored)",
    )
    from dreamrate.aesthetic.synthetic import write_clip_retrieval

    write_clip_retrieval(tmp_path / "wide", shards=1, rows=10, dim=16, dtype="float16", seed=0)
    refused(
        cli("score", "--predictor", "pred", "--embeddings", "wide", "--out", "o"),
        "embeddings are 16-d but the predictor",
    )
    # Shards that fail only while scoring are listed, and still leave no empty folder.
    write_clip_retrieval(tmp_path / "ok", shards=1, rows=100, dim=8, dtype="float16", seed=0)
    result = cli(
        "score", "--predictor", "pred", "--embeddings", "ok", "--out", "o", "--columns", "nosuch"
    )
    assert result.code == 2 and not result.changed and not result.out, result
    assert result.err.splitlines()[-1] == "error: all 1 shard(s) failed; nothing was written"
    assert "img_emb_0.npy: metadata lacks column(s) nosuch" in result.err


@pytest.mark.parametrize(
    "args",
    [
        ("comparisons", "export", "--out", "{tmp}/nope/dir/c.jsonl"),
        ("ratings", "export", "--out", "nope/r.parquet"),
        ("predictor", "export-laion", "pred", "--out", "nope/head.pth"),
    ],
    ids=" ".join,
)
def test_files_are_not_written_into_folders_that_do_not_exist(
    cli: Callable[..., Run], tmp_path: Path, args: tuple[str, ...]
) -> None:
    _predictor(tmp_path / "pred")
    argv = [a.format(tmp=tmp_path) for a in args]
    refused(cli(*argv), "--out:", "nope", "does not exist")


def test_folders_that_cannot_be_written_are_refused_before_any_work(
    cli: Callable[..., Run], tmp_path: Path
) -> None:
    (tmp_path / "file").write_text("x")
    refused(cli("train", "--out", "file/pred"), "--out:", "file is a file, not a folder")
    refused(cli("synthetic", "shards", "--out", "file"), "--out:", "file is a file, not a folder")
    refused(cli("synthetic", "panel", "--out", "sp", "--seed", "-1"), "--seed:")
    # A folder to write is made when the command succeeds, not before it can fail.
    assert cli("db", "upgrade").code == 0
    refused(cli("train", "--out", "new/deep/pred"), "too few ratings to train")


def test_train_ratings_that_is_a_folder(cli: Callable[..., Run], tmp_path: Path) -> None:
    (tmp_path / "ratings").mkdir()
    (tmp_path / "emb.parquet").write_text("x")
    refused(
        cli("train", "--ratings", "ratings", "--embeddings", "emb.parquet"),
        "--ratings:",
        "ratings is a folder, not a file",
    )


# -- item 12: usage errors ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("score", "--workers", "abc", "--predictor", "p", "--embeddings", "e", "--out", "o"),
         "--workers: Input should be a valid integer"),
        (("embed", "--batch-size", "0"), "--batch-size: Input should be greater than or equal to 1"),
        (("web", "--port", "99999"), "--port: Input should be less than or equal to 65535"),
        (("db", "no-such-command"), "No such command 'no-such-command'"),
        (("score", "--frobnicate"), "No such option: --frobnicate"),
        (("ratings", "export"), "Missing option '--out'"),
        (("generate",), "Missing argument 'prompt'"),
        (("arena", "report", "--guild", "0"), "--guild: Input should be greater than or equal to 1"),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, tuple) else "",
)  # fmt: skip
def test_usage_errors_are_one_line(
    cli: Callable[..., Run], args: tuple[str, ...], needle: str
) -> None:
    line = refused(cli(*args), needle)
    assert "(see `dreamrate" in line and "--help`)" in line


def test_help_and_version_still_work(cli: Callable[..., Run]) -> None:
    helped = cli("score", "--help")
    assert helped.code == 0 and "Usage: dreamrate score" in helped.out and not helped.err
    versioned = cli("--version")
    assert versioned.code == 0 and versioned.out.startswith("dreamrate ")
    bare = cli("db")  # a group without a command shows its help, as before
    assert bare.code == 2 and "Usage: dreamrate db" in bare.out + bare.err
    assert "error:" not in bare.err
