"""Choosing the torch device and dtype (a leaf module: generation and aesthetic both use it)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import torch

__all__ = ["DevicePreference", "pick_device", "pick_dtype"]

DevicePreference = Literal["auto", "cuda", "mps", "cpu"]


def pick_device(preference: DevicePreference = "auto") -> str:
    """The device to run on: the one asked for, or the best available for ``auto``.

    Raises
    ------
    ValueError
        when a device is asked for that this machine does not have.
    """
    import torch

    if preference == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if preference == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for but no CUDA GPU is available")
    if preference == "mps" and not torch.backends.mps.is_available():
        raise ValueError("device 'mps' was asked for but Apple MPS is not available")
    return preference


def pick_dtype(device: str) -> torch.dtype:
    """float16 on GPUs (half the memory, tensor cores), float32 on the CPU."""
    import torch

    return torch.float16 if device in ("cuda", "mps") else torch.float32
