"""Kernel: scores from embedding rows; one fused pass over float16 rows gives dot product and norm.

numpy has no fast float16 -> float32 cast (0.5 M rows/s of 768-d here) and torch's
float16 paths either round the result to float16 or need a second pass for the norms, so
the affine head, the only hot loop of LAION-scale scoring, is compiled with numba: each
row's halves are widened to float32 (exact, NaN/inf kept), then the dot product with the
weights and the squared norm are summed in float32. The widening is LLVM's ``fpext half``,
which is the CPU's own conversion (F16C's ``vcvtph2ps`` on x86, native on ARM) and 2.6x
faster here than the portable form, integer bit operations, used on CPUs without it; both
give the same bits. Rows are split across threads (``prange``); every row is summed by one
thread in a fixed order, so the result does not depend on the number of threads.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic

from dreamrate.aesthetic.predictor import Predictor

__all__ = [
    "HARDWARE_HALF",
    "ScoreKernel",
    "affine_f16",
    "affine_f32",
    "limit_threads",
    "widen_f16",
]

# Reassociation lets the sums vectorise; NaN/inf stay meaningful (no nnan/ninf flags).
_FAST = {"reassoc", "contract", "nsz", "arcp"}


@njit(inline="always")
def _widen_row(bits: np.ndarray, out: np.ndarray, fix: np.ndarray) -> None:
    """float16 bits -> float32 bits, branch-free so it vectorises: the exponent is rebased,
    inf/NaN kept; zeros and subnormals come out as +-2^-14 * (1 + m) and ``fix`` holds the
    bits of +-2^-14 to subtract (0 for normal numbers)."""
    for j in range(bits.shape[0]):
        h = np.uint32(bits[j])
        sign = (h & np.uint32(0x8000)) << np.uint32(16)
        o = (h & np.uint32(0x7FFF)) << np.uint32(13)
        e = o & np.uint32(0x0F800000)
        special = np.uint32(e == np.uint32(0x0F800000))
        small = np.uint32(e == np.uint32(0))
        o = o + np.uint32(0x38000000) + special * np.uint32(0x38000000)
        o = o + small * np.uint32(0x00800000)
        out[j] = o | sign
        fix[j] = (small * np.uint32(0x38800000)) | (small * sign)


_BLOCK = 256  #: rows per parallel work item (scratch is allocated per block, not per row)


def _has_hardware_half() -> bool:
    import platform

    import llvmlite.binding as llvm

    if platform.machine().lower() in ("aarch64", "arm64"):
        return True  # half <-> float conversion is part of ARMv8's floating point
    return "+f16c" in llvm.get_host_cpu_features().flatten().split(",")


#: Whether this CPU converts float16 itself (the fast kernels) or needs the bit form.
HARDWARE_HALF = _has_hardware_half()


@intrinsic
def _half_to_float(typingctx, bits):  # type: ignore[no-untyped-def]
    """float16 bits (uint16) -> float32, as LLVM's ``fpext half``; vectorised into F16C."""
    sig = types.float32(types.uint16)

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        return builder.fpext(builder.bitcast(args[0], ir.HalfType()), ir.FloatType())

    return sig, codegen


@njit(parallel=True, fastmath=_FAST, cache=True)
def affine_f16_hw(bits: np.ndarray, w: np.ndarray, dots: np.ndarray, norms: np.ndarray) -> None:
    """:func:`affine_f16_bits` with the CPU's own float16 conversion."""
    n, d = bits.shape
    for i in prange(n):
        dot = np.float32(0.0)
        sq = np.float32(0.0)
        for j in range(d):
            v = _half_to_float(bits[i, j])
            dot += v * w[j]
            sq += v * v
        dots[i] = dot
        norms[i] = np.sqrt(sq)


@njit(parallel=True, fastmath=_FAST, cache=True)
def widen_f16_hw(bits: np.ndarray, out: np.ndarray, norms: np.ndarray) -> None:
    """:func:`widen_f16_bits` with the CPU's own float16 conversion."""
    n, d = bits.shape
    for i in prange(n):
        sq = np.float32(0.0)
        for j in range(d):
            v = _half_to_float(bits[i, j])
            out[i, j] = v
            sq += v * v
        norms[i] = np.sqrt(sq)


@njit(parallel=True, fastmath=_FAST, cache=True)
def affine_f16_bits(bits: np.ndarray, w: np.ndarray, dots: np.ndarray, norms: np.ndarray) -> None:
    """``dots[i] = x_i . w`` and ``norms[i] = |x_i|`` for float16 rows given as uint16 bits."""
    n, d = bits.shape
    for block in prange((n + _BLOCK - 1) // _BLOCK):
        scratch = np.empty(d, dtype=np.uint32)
        fixes = np.empty(d, dtype=np.uint32)
        x = scratch.view(np.float32)
        f = fixes.view(np.float32)
        for i in range(block * _BLOCK, min(n, (block + 1) * _BLOCK)):
            _widen_row(bits[i], scratch, fixes)
            dot = np.float32(0.0)
            sq = np.float32(0.0)
            for j in range(d):
                v = x[j] - f[j]
                dot += v * w[j]
                sq += v * v
            dots[i] = dot
            norms[i] = np.sqrt(sq)


@njit(parallel=True, fastmath=_FAST, cache=True)
def affine_f32(x: np.ndarray, w: np.ndarray, dots: np.ndarray, norms: np.ndarray) -> None:
    """``dots[i] = x_i . w`` and ``norms[i] = |x_i|`` for float32 rows."""
    n, d = x.shape
    for i in prange(n):
        dot = np.float32(0.0)
        sq = np.float32(0.0)
        for j in range(d):
            v = x[i, j]
            dot += v * w[j]
            sq += v * v
        dots[i] = dot
        norms[i] = np.sqrt(sq)


@njit(parallel=True, fastmath=_FAST, cache=True)
def widen_f16_bits(bits: np.ndarray, out: np.ndarray, norms: np.ndarray) -> None:
    """float16 rows (uint16 bits) -> float32 ``out`` and their norms (for MLP heads)."""
    n, d = bits.shape
    for block in prange((n + _BLOCK - 1) // _BLOCK):
        fixes = np.empty(d, dtype=np.uint32)
        f = fixes.view(np.float32)
        for i in range(block * _BLOCK, min(n, (block + 1) * _BLOCK)):
            _widen_row(bits[i], out[i].view(np.uint32), fixes)
            x = out[i]
            sq = np.float32(0.0)
            for j in range(d):
                v = x[j] - f[j]
                x[j] = v
                sq += v * v
            norms[i] = np.sqrt(sq)


# The same loops compiled without parfors and releasing the GIL: one per thread when shards
# are scored side by side in threads (numba's default thread pool must not be entered from
# two threads at once). ``prange`` is a plain ``range`` there. Not cached: numba's cache
# names entries by the Python function, which these share with the parallel forms.
affine_f16 = affine_f16_hw if HARDWARE_HALF else affine_f16_bits
widen_f16 = widen_f16_hw if HARDWARE_HALF else widen_f16_bits

_SERIAL = {"nogil": True, "fastmath": _FAST, "cache": False}
affine_f16_serial = njit(**_SERIAL)(affine_f16.py_func)
affine_f32_serial = njit(**_SERIAL)(affine_f32.py_func)
widen_f16_serial = njit(**_SERIAL)(widen_f16.py_func)


class ScoreKernel:
    """Scores float16/float32 chunks with buffers allocated once (no per-chunk allocation).

    Affine heads: one fused pass per row (:func:`affine_f16`) gives the dot product
    with the folded weights and the row norm; the score is ``dot / norm + bias``, which is
    the head applied to the L2-normalised row. MLP heads: rows are widened to float32 and
    normalised in place, then each layer is one BLAS matrix product into its own buffer.
    """

    def __init__(self, predictor: Predictor, dim: int, rows: int, *, serial: bool = False) -> None:
        self.f16, self.f32, self.widen = (
            (affine_f16_serial, affine_f32_serial, widen_f16_serial)
            if serial
            else (affine_f16, affine_f32, widen_f16)
        )
        self.affine = predictor.is_affine
        self.relu = predictor.activation == "relu"
        self.dot = np.empty(rows, dtype=np.float32)
        self.norm = np.empty(rows, dtype=np.float32)
        if self.affine:
            weight, bias = predictor.affine()
            self.w = np.ascontiguousarray(weight, dtype=np.float32)
            self.b = np.float32(bias)
        else:
            self.x32 = np.empty((rows, dim), dtype=np.float32)
            self.layers = [
                (np.ascontiguousarray(w.T, dtype=np.float32), b.astype(np.float32))
                for w, b in predictor.layers
            ]
            self.hidden = [np.empty((rows, w.shape[1]), dtype=np.float32) for w, _ in self.layers]
            self.scale = np.float32(predictor.input_scale)
        #: Smallest and largest row norm seen (finite rows), for the unit-length warning.
        self.norm_min = float("inf")
        self.norm_max = 0.0

    def __call__(self, chunk: np.ndarray, out: np.ndarray) -> None:
        """Write the scores of ``chunk`` (rows, dim) into ``out`` (rows,); NaN/inf where the
        embedding is not finite."""
        m = len(chunk)
        norm = self.norm[:m]
        half = chunk.dtype == np.float16
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            if self.affine:
                dot = self.dot[:m]
                if half:
                    self.f16(chunk.view(np.uint16), self.w, dot, norm)
                else:
                    self.f32(chunk, self.w, dot, norm)
                np.divide(dot, norm, out=out)
                out += self.b
            else:
                x = self.x32[:m]
                if half:
                    self.widen(chunk.view(np.uint16), x, norm)
                else:
                    np.copyto(x, chunk)
                    np.sqrt(np.einsum("ij,ij->i", x, x, out=norm), out=norm)
                np.divide(x, norm[:, None], out=x)
                x *= self.scale
                h = x
                for k, ((w, b), buf) in enumerate(zip(self.layers, self.hidden, strict=True)):
                    np.matmul(h, w, out=buf[:m])
                    h = buf[:m]
                    h += b
                    if k < len(self.layers) - 1 and self.relu:
                        np.maximum(h, 0, out=h)
                out[:] = h[:, 0]
        finite = norm[np.isfinite(norm)]
        if len(finite):
            self.norm_min = min(self.norm_min, float(finite.min()))
            self.norm_max = max(self.norm_max, float(finite.max()))


@contextmanager
def limit_threads(threads: int) -> Iterator[None]:
    """Cap the kernel's numba threads and the BLAS pools at ``threads`` inside the block.

    One process per share of the cores: without a cap, every worker process would spin up
    a thread per core and they would fight over them.
    """
    import numba
    from threadpoolctl import threadpool_limits

    before = numba.get_num_threads()
    numba.set_num_threads(max(1, min(threads, numba.config.NUMBA_NUM_THREADS)))
    try:
        with threadpool_limits(limits=max(1, threads)):
            yield
    finally:
        numba.set_num_threads(before)
