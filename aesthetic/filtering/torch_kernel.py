"""Scoring on a GPU: the same contract as :class:`~dreamrate.aesthetic.filtering.kernel.ScoreKernel`
with torch, for affine and MLP heads.

Each chunk is copied into one pinned host buffer (allocated once), moved to the device
without blocking, widened to float32 there, normalised, and run through the head; the
scores come back into the caller's array. On the CPU (where the numba kernel is faster)
it runs the same code, which is how the tests check it against the numba kernel.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dreamrate.aesthetic.predictor import Predictor

__all__ = ["TorchKernel", "choose_kernel", "kernel_name"]


class TorchKernel:
    """Scores float16/float32 chunks on ``device`` (``cuda``, or ``cpu`` for tests)."""

    def __init__(self, predictor: Predictor, dim: int, rows: int, device: str) -> None:
        import torch

        self.torch, self.device = torch, torch.device(device)
        cuda = self.device.type == "cuda"
        self.staging = {
            dtype: torch.empty((rows, dim), dtype=dtype, pin_memory=cuda)
            for dtype in (torch.float16, torch.float32)
        }
        self.layers = [
            (
                torch.from_numpy(np.ascontiguousarray(w, np.float32)).to(self.device),
                torch.from_numpy(np.ascontiguousarray(b, np.float32)).to(self.device),
            )
            for w, b in predictor.layers
        ]
        self.relu = predictor.activation == "relu"
        self.scale = float(predictor.input_scale)
        self.norm_min = float("inf")
        self.norm_max = 0.0

    def __call__(self, chunk: np.ndarray, out: np.ndarray) -> None:
        """Write the scores of ``chunk`` into ``out``; NaN where the embedding is not finite."""
        torch = self.torch
        m = len(chunk)
        dtype = torch.float16 if chunk.dtype == np.float16 else torch.float32
        host = self.staging[dtype][:m]
        host.numpy()[:] = chunk
        with torch.inference_mode():
            x = host.to(self.device, non_blocking=True).float()
            norm = x.norm(dim=1)
            h = x / norm[:, None] * self.scale
            for k, (w, b) in enumerate(self.layers):
                h = torch.addmm(b, h, w.T)
                if k < len(self.layers) - 1 and self.relu:
                    h.clamp_(min=0)
            out[:] = h[:, 0].cpu().numpy()
            norms = norm.cpu().numpy()
        finite = norms[np.isfinite(norms)]
        if len(finite):
            self.norm_min = min(self.norm_min, float(finite.min()))
            self.norm_max = max(self.norm_max, float(finite.max()))


def _has_cuda() -> bool:
    """Whether a CUDA GPU is there; torch (a second of imports) is only asked when the
    NVIDIA driver's device files exist."""
    import os

    if not os.path.exists("/dev/nvidiactl"):
        return False
    import torch

    return bool(torch.cuda.is_available())


def kernel_name(device: str = "auto") -> str:
    """What :func:`choose_kernel` picks for ``device``: ``numba`` or ``torch-cuda``."""
    if device == "auto":
        device = "cuda" if _has_cuda() else "cpu"
    return "numba" if device == "cpu" else f"torch-{device}"


def choose_kernel(
    predictor: Predictor, dim: int, rows: int, device: str = "auto", *, serial: bool = False
) -> Any:
    """The numba kernel on the CPU (``serial``: its single-threaded, GIL-free form, for one
    shard per thread); :class:`TorchKernel` when ``device`` is (or, for ``auto``, finds) a
    CUDA GPU."""
    from dreamrate.aesthetic.filtering.kernel import ScoreKernel

    if device == "auto":
        device = "cuda" if _has_cuda() else "cpu"
    if device == "cpu":
        return ScoreKernel(predictor, dim, rows, serial=serial)
    return TorchKernel(predictor, dim, rows, device)
