"""Outputs that appear whole or not at all: written beside the target, flushed, renamed.

Every file dreamrate writes (images, predictors, score files, manifests, exports, models)
goes through :func:`atomic_file` or :func:`atomic_folder`: the data is written under a
temporary name in the target's folder, flushed to disk (``fsync``), renamed over the
target, and the folder entry is flushed too. A crash or a full disk leaves either the old
target or the new one, never half of one and never a temporary file under a real name.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from dreamrate.core.errors import DreamrateError

__all__ = ["atomic_file", "atomic_folder", "create_private_file", "write_bytes_atomically"]

# Temporary files and folders are created private (0600/0700); what they become gets the
# usual permissions instead, so other users and services can read outputs as before.
_UMASK = os.umask(0o022)
os.umask(_UMASK)
FILE_MODE = 0o666 & ~_UMASK
FOLDER_MODE = 0o777 & ~_UMASK


def _fsync_file(path: Path) -> None:
    with path.open("rb") as handle:
        os.fsync(handle.fileno())


def _fsync_dir(path: Path) -> None:
    # A rename is durable once its folder is; some filesystems cannot open folders.
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(folder: Path) -> None:
    for path in sorted(folder.rglob("*")):
        if path.is_file() and not path.is_symlink():
            _fsync_file(path)
    for path in sorted((p for p in folder.rglob("*") if p.is_dir()), reverse=True):
        _fsync_dir(path)
    _fsync_dir(folder)


def _reason(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


@contextmanager
def atomic_file(out: Path, error: type[DreamrateError], option: str = "--out") -> Iterator[Path]:
    """Yield a temporary path beside ``out``; it replaces ``out`` when the block succeeds.

    Raises
    ------
    error
        one line naming ``option`` and the reason, when the folder or file cannot be
        written; nothing is left behind.
    """
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
        os.close(fd)
    except OSError as exc:
        raise error(f"{option}: cannot write in {out.parent} ({_reason(exc)})") from None
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, FILE_MODE)
        _fsync_file(tmp)
        os.replace(tmp, out)
        _fsync_dir(out.parent)
    except OSError as exc:
        raise error(f"{option}: cannot write {out} ({_reason(exc)})") from None
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes_atomically(
    out: Path, data: bytes, error: type[DreamrateError], option: str = "--out"
) -> None:
    """``out`` holds exactly ``data`` afterwards, or is untouched (see :func:`atomic_file`)."""
    with atomic_file(out, error, option) as tmp:
        tmp.write_bytes(data)


def create_private_file(
    out: Path, data: bytes, error: type[DreamrateError], option: str = "--out"
) -> bool:
    """Create ``out`` holding ``data``, readable and writable by its owner only (0600) from
    its first byte, unless it exists already (then it is left as it is). For secrets.

    The data goes into a temporary file created 0600 (``O_CREAT | O_EXCL``), which is then
    linked to ``out``: a reader never sees half of it, and of two processes creating it at
    once the first one's file is the one both read. Returns whether this call created it.

    Raises
    ------
    error
        one line naming ``option`` and the reason, when it cannot be written.
    """
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    except OSError as exc:
        raise error(f"{option}: cannot write in {out.parent} ({_reason(exc)})") from None
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as handle:  # mkstemp: O_CREAT | O_EXCL, mode 0600
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(tmp, out)
        except FileExistsError:
            return False
        except OSError:  # a filesystem without hard links: create it in place, as privately
            try:
                made = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                return False
            with os.fdopen(made, "wb") as handle:
                handle.write(data)
                os.fsync(handle.fileno())
        _fsync_dir(out.parent)
        return True
    except OSError as exc:
        raise error(f"{option}: cannot write {out} ({_reason(exc)})") from None
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def atomic_folder(
    out: Path, error: type[DreamrateError], *, overwrite: bool = False, option: str = "--out"
) -> Iterator[Path]:
    """Yield a temporary folder beside ``out``; it becomes ``out`` when the block succeeds.

    An existing ``out`` is replaced only with ``overwrite``, and only then.

    Raises
    ------
    error
        when ``out`` exists without ``overwrite``, or cannot be written.
    """
    if out.exists() and not overwrite:
        raise error(f"{option}: {out} already exists (choose another folder or --force)")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    except OSError as exc:
        raise error(f"{option}: cannot write in {out.parent} ({_reason(exc)})") from None
    try:
        yield tmp
        os.chmod(tmp, FOLDER_MODE)
        _fsync_tree(tmp)
        if out.exists():
            old = out.with_name(f".{out.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
        _fsync_dir(out.parent)
    except OSError as exc:
        raise error(f"{option}: cannot write {out} ({_reason(exc)})") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
