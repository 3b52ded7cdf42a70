"""Reader: finding, checking and reading embedding shards.

Two layouts are read, local or behind any fsspec URL:

* clip-retrieval's: ``img_emb/img_emb_N.npy`` (float16 or float32, ``(rows, dim)``)
  row-aligned with ``metadata/metadata_N.parquet``; N zero-padded or not;
* a Parquet dataset: ``*.parquet`` files with an ``embedding`` list column (the other
  columns are the metadata); N is the number at the end of each file name.

Each shard is checked from headers and footers only (row counts, dtype, width, file size)
so a bad shard is reported up front by file name and the good ones still run.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import numpy as np

__all__ = [
    "Shard",
    "ShardProblem",
    "discover_shards",
    "npy_header",
    "open_source",
    "read_npy_chunks",
    "read_parquet_embeddings",
    "source_identity",
]

_NUMBER = re.compile(r"(\d+)$")


@dataclass(frozen=True)
class Shard:
    n: int
    label: str  #: N as written in the source file name (keeps zero padding)
    kind: Literal["npy", "parquet"]
    embeddings: str  #: path or URL of the npy / parquet file
    metadata: str | None  #: path or URL of the metadata parquet (npy layout)
    rows: int
    dim: int
    dtype: str  #: "float16" or "float32" (npy) / arrow type name (parquet)
    data_offset: int = 0  #: where the npy array starts

    @property
    def output_name(self) -> str:
        return f"scores_{self.label}.parquet"


@dataclass(frozen=True)
class ShardProblem:
    file: str
    message: str


def _fs(source: str) -> tuple[Any, str]:
    import fsspec

    fs, root = fsspec.core.url_to_fs(source)
    return fs, root.rstrip("/")


def npy_header(handle: Any) -> tuple[tuple[int, ...], str, bool, int]:
    """``(shape, dtype, fortran_order, data offset)`` of an open ``.npy`` file."""
    magic = handle.read(8)
    if len(magic) < 8 or magic[:6] != b"\x93NUMPY":
        raise ValueError("not a .npy file")
    major = magic[6]
    size_bytes = 2 if major == 1 else 4
    header_len = int.from_bytes(handle.read(size_bytes), "little")
    header = ast.literal_eval(handle.read(header_len).decode("latin1"))
    return (
        tuple(header["shape"]),
        str(header["descr"]),
        bool(header["fortran_order"]),
        8 + size_bytes + header_len,
    )


def _number(name: str, prefix: str, suffix: str) -> tuple[int, str] | None:
    stem = name.rsplit("/", 1)[-1]
    if not (stem.startswith(prefix) and stem.endswith(suffix)):
        return None
    middle = stem[len(prefix) : len(stem) - len(suffix)]
    return (int(middle), middle) if middle.isdigit() else None


def _npy_shard(fs: Any, n: int, label: str, emb: str, meta: str | None, scheme: str) -> Shard:
    import numpy as np
    import pyarrow.parquet as pq

    with fs.open(emb, "rb") as handle:
        shape, descr, fortran, offset = npy_header(handle)
    if len(shape) != 2:
        raise ValueError(f"array has shape {shape}, expected (rows, dim)")
    dtype = np.dtype(descr)
    if dtype not in (np.dtype("<f2"), np.dtype("<f4")) or fortran:
        raise ValueError(
            f"dtype {descr}{' (Fortran order)' if fortran else ''} is not float16/float32"
        )
    expected = offset + shape[0] * shape[1] * dtype.itemsize
    size = fs.size(emb)
    if size < expected:
        raise ValueError(f"truncated: {size} bytes, the header promises {expected}")
    if meta is None:
        raise ValueError(f"no metadata_{label}.parquet for this shard")
    with fs.open(meta, "rb") as handle:
        meta_rows = pq.ParquetFile(handle).metadata.num_rows
    if meta_rows != shape[0]:
        raise ValueError(f"{shape[0]} embeddings but metadata_{label}.parquet has {meta_rows} rows")
    return Shard(
        n, label, "npy", scheme + emb, scheme + meta, shape[0], shape[1], dtype.name, offset
    )


def _parquet_shard(fs: Any, n: int, label: str, path: str, scheme: str) -> Shard:
    import pyarrow as pa
    import pyarrow.parquet as pq

    with fs.open(path, "rb") as handle:
        file = pq.ParquetFile(handle)
        schema = file.schema_arrow
        rows = file.metadata.num_rows
        if "embedding" not in schema.names:
            raise ValueError("no embedding column")
        field = schema.field("embedding").type
        if pa.types.is_fixed_size_list(field):
            dim = field.list_size
        elif pa.types.is_list(field) or pa.types.is_large_list(field):
            first = (
                file.read_row_group(0, columns=["embedding"]).column(0)
                if file.num_row_groups
                else None
            )
            dim = len(first[0].as_py()) if first is not None and len(first) else 0
        else:
            raise ValueError(f"embedding column is {field}, not a list of floats")
        dtype = str(field.value_type)
    return Shard(n, label, "parquet", scheme + path, None, rows, dim, dtype)


def discover_shards(source: str) -> tuple[list[Shard], list[ShardProblem]]:
    """All shards under ``source`` in N order, and the problems of those that cannot run.

    Raises
    ------
    FileNotFoundError
        when ``source`` holds neither layout.
    """
    fs, root = _fs(source)
    scheme = (
        ""
        if source.startswith(("/", ".")) or "://" not in source
        else source.split("://", 1)[0] + "://"
    )
    if not fs.exists(root):
        raise FileNotFoundError(f"{source} does not exist")
    shards: list[Shard] = []
    problems: list[ShardProblem] = []
    if fs.isdir(f"{root}/img_emb"):
        metas: dict[int, str] = {}
        if fs.isdir(f"{root}/metadata"):
            for path in fs.ls(f"{root}/metadata", detail=False):
                found = _number(path, "metadata_", ".parquet")
                if found:
                    metas[found[0]] = path
        for path in sorted(fs.ls(f"{root}/img_emb", detail=False)):
            found = _number(path, "img_emb_", ".npy")
            if not found:
                continue
            n, label = found
            try:
                shards.append(_npy_shard(fs, n, label, path, metas.get(n), scheme))
            except (ValueError, OSError, SyntaxError, KeyError) as exc:
                problems.append(ShardProblem(scheme + path, _first_line(exc)))
    else:
        files = sorted(p for p in fs.ls(root, detail=False) if p.endswith(".parquet"))
        if not files and fs.isfile(root) and root.endswith(".parquet"):
            files = [root]
        numbers = [_NUMBER.search(p.rsplit("/", 1)[-1].removesuffix(".parquet")) for p in files]
        distinct = all(numbers) and len({int(m.group(1)) for m in numbers if m}) == len(files)
        for index, path in enumerate(files):
            match = numbers[index]
            n, label = (
                (int(match.group(1)), match.group(1)) if distinct and match else (index, str(index))
            )
            try:
                shards.append(_parquet_shard(fs, n, label, path, scheme))
            except (ValueError, OSError, KeyError) as exc:
                problems.append(ShardProblem(scheme + path, _first_line(exc)))
    if not shards and not problems:
        raise FileNotFoundError(
            f"{source} holds neither img_emb/img_emb_N.npy + metadata/metadata_N.parquet "
            "nor .parquet files with an embedding column"
        )
    shards.sort(key=lambda s: s.n)
    return shards, problems


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:200]


class TruncatedShard(ValueError):
    """A shard whose file ended before the rows its header promised."""


def open_source(url: str):  # type: ignore[no-untyped-def]
    """A binary file handle for a local path or any fsspec URL."""
    if "://" not in url:
        return open(url, "rb")
    import fsspec

    return fsspec.open(url, "rb").open()


#: Bytes read from each end of a file for its identity (a Parquet file's footer is at the end).
_IDENTITY_BYTES = 65_536


def source_identity(url: str) -> str:
    """A short fingerprint of a source file: its size and a hash of its first and last
    64 KiB (which hold an npy header and a Parquet footer). It survives a copy and changes
    when the file is rewritten, at the cost of two small reads."""
    import hashlib

    if "://" in url:  # two range reads: an fsspec file would read ahead a block of MiBs
        fs, path = _fs(url)
        size = int(fs.size(path))
        head = fs.cat_file(path, 0, min(_IDENTITY_BYTES, size))
        tail = fs.cat_file(path, max(0, size - _IDENTITY_BYTES), size)
    else:
        with open(url, "rb") as handle:
            head = handle.read(_IDENTITY_BYTES)
            handle.seek(0, 2)
            size = handle.tell()
            handle.seek(max(0, size - _IDENTITY_BYTES))
            tail = handle.read(_IDENTITY_BYTES)
    digest = hashlib.sha256(str(size).encode() + b"|" + head + b"|" + tail).hexdigest()
    return f"{size}:{digest[:16]}"


def _read_exact(handle: Any, view: memoryview, start_row: int, row_bytes: int, rows: int) -> None:
    got = handle.readinto(view)
    while got < len(view):
        more = handle.readinto(view[got:])
        if not more:
            raise TruncatedShard(f"truncated at row {start_row + got // row_bytes} of {rows}")
        got += more


def read_npy_chunks(shard: Shard, chunk_rows: int) -> Iterator[tuple[int, np.ndarray]]:
    """``(first row, rows)`` of an npy shard in chunks of ``chunk_rows``.

    Local files are memory-mapped (the kernel reads the page cache directly); remote ones
    are read into two alternating buffers, the next chunk on a thread while the caller
    works on this one, so a chunk is valid only until the next is yielded.
    """
    import numpy as np

    dtype = np.dtype(shard.dtype)
    starts = range(0, shard.rows, chunk_rows)
    if "://" not in shard.embeddings:
        data = np.memmap(
            shard.embeddings,
            dtype=dtype,
            mode="r",
            offset=shard.data_offset,
            shape=(shard.rows, shard.dim),
        )
        try:
            for start in starts:
                yield start, data[start : start + chunk_rows]
        finally:
            del data
        return
    buffers = [np.empty((chunk_rows, shard.dim), dtype=dtype) for _ in range(2)]
    views = [memoryview(b).cast("B") for b in buffers]
    row_bytes = shard.dim * dtype.itemsize
    with open_source(shard.embeddings) as handle, ThreadPoolExecutor(1) as reader:
        handle.seek(shard.data_offset)

        def read(k: int):  # type: ignore[no-untyped-def]
            m = min(chunk_rows, shard.rows - starts[k])
            view = views[k % 2][: m * row_bytes]
            return reader.submit(_read_exact, handle, view, starts[k], row_bytes, shard.rows)

        pending = read(0) if len(starts) else None
        for k, start in enumerate(starts):
            assert pending is not None
            pending.result()
            pending = read(k + 1) if k + 1 < len(starts) else None
            m = min(chunk_rows, shard.rows - start)
            yield start, buffers[k % 2][:m]


def read_parquet_embeddings(shard: Shard) -> tuple[np.ndarray, Any]:
    """A Parquet shard's embeddings as ``(rows, dim)`` float16/float32 and its other columns."""
    import numpy as np
    import pyarrow.parquet as pq

    with open_source(shard.embeddings) as handle:
        table = pq.read_table(handle)
    column = table.column("embedding").combine_chunks()
    flat = column.flatten().to_numpy(zero_copy_only=False)
    if len(flat) != len(table) * shard.dim:
        raise ValueError("embedding rows have different widths")
    emb = np.ascontiguousarray(flat).reshape(len(table), shard.dim)
    if emb.dtype not in (np.float16, np.float32):
        emb = emb.astype(np.float32)
    return emb, table.drop_columns(["embedding"])
