"""Outputs that appear whole or not at all: written beside the target, then renamed."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from dreamrate.errors import DreamrateError

__all__ = ["atomic_file", "atomic_folder"]


@contextmanager
def atomic_file(out: Path, error: type[DreamrateError], option: str = "--out") -> Iterator[Path]:
    """Yield a temporary path beside ``out``; it replaces ``out`` when the block succeeds.

    Raises ``error`` (one line naming ``option``) when the folder cannot be written.
    """
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
        os.close(fd)
    except OSError as exc:
        raise error(f"{option}: cannot write in {out.parent} ({exc.strerror})") from None
    tmp = Path(name)
    try:
        yield tmp
        os.replace(tmp, out)
    except OSError as exc:
        raise error(f"{option}: cannot write {out} ({exc.strerror})") from None
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def atomic_folder(
    out: Path, error: type[DreamrateError], *, overwrite: bool = False, option: str = "--out"
) -> Iterator[Path]:
    """Yield a temporary folder beside ``out``; it becomes ``out`` when the block succeeds
    (an existing ``out`` is replaced only with ``overwrite``, and only then)."""
    if out.exists() and not overwrite:
        raise error(f"{option}: {out} already exists (choose another folder or --force)")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    except OSError as exc:
        raise error(f"{option}: cannot write in {out.parent} ({exc.strerror})") from None
    try:
        yield tmp
        if out.exists():
            old = out.with_name(f".{out.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except OSError as exc:
        raise error(f"{option}: cannot write {out} ({exc.strerror})") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
