"""dreamrate: community Stable Diffusion ratings turned into aesthetic filters for training data."""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0"
