"""The image store writes atomically: a failed write leaves no file, real or temporary."""

from __future__ import annotations

import errno
import hashlib
import os
from pathlib import Path

import pytest
from PIL import Image

from dreamrate.core.errors import StorageError
from dreamrate.generation.store import FolderStore, encode_png


def test_same_pixels_same_file(tmp_path: Path) -> None:
    store = FolderStore(tmp_path)
    image = Image.new("RGB", (16, 16), (10, 200, 30))
    first = store.save(image)
    second = store.save(image.copy())
    assert first == second
    digest, relative = first
    assert relative == f"{digest[:2]}/{digest}.png"
    assert hashlib.sha256((tmp_path / relative).read_bytes()).hexdigest() == digest
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == [f"{digest}.png"]


def test_disk_full_leaves_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = FolderStore(tmp_path)

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(StorageError, match="No space left on device"):
        store.save(Image.new("RGB", (8, 8)))
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_crash_before_rename_leaves_no_real_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = FolderStore(tmp_path)
    image = Image.new("RGB", (8, 8), "blue")

    def crash(src: str, dst: str) -> None:
        raise OSError(errno.EIO, "simulated crash")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(StorageError):
        store.save(image)
    monkeypatch.undo()
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []
    _, relative = store.save(image)  # and the retry works
    assert (tmp_path / relative).read_bytes() == encode_png(image)


def test_outputs_get_the_usual_permissions(tmp_path: Path) -> None:
    # Written through private temporary files, but readable like any file the user writes.
    from dreamrate.core.atomic import FILE_MODE, FOLDER_MODE, atomic_folder

    _, relative = FolderStore(tmp_path).save(Image.new("RGB", (8, 8)))
    assert (tmp_path / relative).stat().st_mode & 0o777 == FILE_MODE
    with atomic_folder(tmp_path / "folder", StorageError) as tmp:
        (tmp / "a").write_text("a")
    assert (tmp_path / "folder").stat().st_mode & 0o777 == FOLDER_MODE
    umask = os.umask(0)
    os.umask(umask)
    assert 0o666 & ~umask == FILE_MODE
