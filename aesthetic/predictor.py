"""The predictor artifact: a folder with ``model.safetensors`` and ``predictor.json``.

A head is a stack of dense layers (``layers.K.weight`` of shape ``(out, in)`` and
``layers.K.bias``) with an optional activation between them; an affine head is one layer.
``predictor.json`` says which embedding space the head reads, how inputs are normalised
and what the outputs mean. Nothing is unpickled: safetensors holds only arrays.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np

from dreamrate.core.atomic import atomic_folder
from dreamrate.core.errors import DreamrateError

__all__ = [
    "FORMAT",
    "META_FILE",
    "Predictor",
    "PredictorError",
    "load_predictor",
    "save_predictor",
]

FORMAT = "dreamrate-predictor"
#: 2: ``sha256`` is the predictor fingerprint (version 1 stored the weight file's hash).
VERSION = 2
WEIGHTS_FILE = "model.safetensors"
META_FILE = "predictor.json"

Activation = Literal["none", "relu"]


class PredictorError(DreamrateError):
    """A predictor file that cannot be read, written or used with these embeddings."""


@dataclass
class Predictor:
    """An aesthetic head on CLIP image embeddings.

    ``predict`` L2-normalises its input, multiplies it by ``input_scale`` (1 for LAION's
    heads, sqrt(dim) for Simulacra's) and runs the layers.
    """

    embedding_model: str
    dim: int
    layers: list[tuple[np.ndarray, np.ndarray]]
    activation: Activation = "none"
    input_scale: float = 1.0
    name: str = "predictor"
    #: e.g. {"scale": "numbers-10", "min": 1.0, "max": 10.0}
    output: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    source: str = "trained"
    #: Optional (k, dim) weights and (k,) biases of CV-fold affine heads: their spread is
    #: the uncertainty that active selection uses.
    ensemble: tuple[np.ndarray, np.ndarray] | None = None
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    def __post_init__(self) -> None:
        if not self.layers:
            raise PredictorError("a predictor needs at least one layer")
        if self.layers[0][0].shape[1] != self.dim:
            raise PredictorError(
                f"first layer reads {self.layers[0][0].shape[1]} values but dim is {self.dim}"
            )
        if self.layers[-1][0].shape[0] != 1:
            raise PredictorError("the last layer must have one output")

    @property
    def is_affine(self) -> bool:
        return len(self.layers) == 1

    @property
    def kind(self) -> str:
        return "affine" if self.is_affine else f"mlp-{self.activation}"

    def affine(self) -> tuple[np.ndarray, float]:
        """``(w, b)`` with ``score = w @ normalise(x) + b``, input scale folded into ``w``."""
        if not self.is_affine:
            raise PredictorError(f"{self.name} is an MLP and has no single weight vector")
        weight, bias = self.layers[0]
        return (weight[0] * self.input_scale).astype(np.float32), float(bias[0])

    def prepare(self, embeddings: np.ndarray) -> np.ndarray:
        """Check shape and values and apply the input convention; float32 ``(n, dim)``."""
        x = np.asarray(embeddings, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise PredictorError(
                f"embeddings have {x.shape[-1] if x.ndim else 0} dimensions but predictor "
                f"{self.name} ({self.embedding_model}) reads {self.dim}"
            )
        if not np.isfinite(x).all():
            bad = int((~np.isfinite(x).all(axis=1)).sum())
            raise PredictorError(f"{bad} embedding(s) contain NaN or infinite values")
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        return x / np.maximum(norms, 1e-12) * np.float32(self.input_scale)

    def predict(self, embeddings: np.ndarray, *, batch: int = 65536) -> np.ndarray:
        """Scores of ``(n, dim)`` embeddings as float32 ``(n,)``."""
        x = self.prepare(embeddings)
        out = np.empty(len(x), dtype=np.float32)
        for start in range(0, len(x), batch):
            h = x[start : start + batch]
            for k, (weight, bias) in enumerate(self.layers):
                h = h @ weight.T + bias
                if k < len(self.layers) - 1 and self.activation == "relu":
                    np.maximum(h, 0, out=h)
            out[start : start + batch] = h[:, 0]
        return out

    def ensemble_predict(self, embeddings: np.ndarray) -> np.ndarray | None:
        """``(n, k)`` scores of the CV-fold heads, or None when there are none."""
        if self.ensemble is None:
            return None
        weights, biases = self.ensemble
        return self.prepare(embeddings) @ weights.T + biases

    @property
    def sha256(self) -> str:
        """The predictor's fingerprint: sha256 of its input convention and weights.

        The one hash a predictor has; ``predictor.json``, score files and manifests carry it,
        and loading checks it, so a copy that scores differently can never pass as this one.
        """
        digest = hashlib.sha256()
        digest.update(
            f"{self.embedding_model}|{self.dim}|{self.activation}|{self.input_scale}".encode()
        )
        for weight, bias in self.layers:
            digest.update(np.ascontiguousarray(weight, dtype=np.float32).tobytes())
            digest.update(np.ascontiguousarray(bias, dtype=np.float32).tobytes())
        return digest.hexdigest()

    @property
    def id(self) -> str:
        """The first 16 hex digits of :attr:`sha256`: short enough for names and messages."""
        return self.sha256[:16]

    def metadata(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "id": self.id,
            "sha256": self.sha256,
            "name": self.name,
            "source": self.source,
            "created_at": self.created_at,
            "embedding_model": self.embedding_model,
            "dim": self.dim,
            "input": {"normalize": "l2", "scale": self.input_scale},
            "head": {
                "kind": self.kind,
                "layers": len(self.layers),
                "activation": self.activation,
                "ensemble": 0 if self.ensemble is None else len(self.ensemble[1]),
            },
            "output": self.output,
            "training": self.training,
            "metrics": self.metrics,
        }


def save_predictor(
    predictor: Predictor,
    out: Path,
    *,
    overwrite: bool = False,
    extras: Callable[[Path], object] | None = None,
) -> Path:
    """Write ``out/`` atomically (a sibling temporary folder renamed into place).

    ``extras`` may add files (the training report) to the folder before it appears.

    Raises
    ------
    PredictorError
        when ``out`` exists and ``overwrite`` is false, or cannot be written.
    """
    from safetensors.numpy import save_file

    out = Path(out)
    tensors: dict[str, np.ndarray] = {}
    for k, (weight, bias) in enumerate(predictor.layers):
        tensors[f"layers.{k}.weight"] = np.ascontiguousarray(weight, dtype=np.float32)
        tensors[f"layers.{k}.bias"] = np.ascontiguousarray(bias, dtype=np.float32)
    if predictor.ensemble is not None:
        tensors["ensemble.weight"] = np.ascontiguousarray(predictor.ensemble[0], dtype=np.float32)
        tensors["ensemble.bias"] = np.ascontiguousarray(predictor.ensemble[1], dtype=np.float32)
    with atomic_folder(out, PredictorError, overwrite=overwrite) as tmp:
        save_file(tensors, str(tmp / WEIGHTS_FILE), metadata={"format": FORMAT})
        meta = predictor.metadata()
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2, default=_json_default) + "\n")
        if extras is not None:
            extras(tmp)
    return out


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} to predictor.json")


def load_predictor(path: Path, *, embedding_model: str | None = None) -> Predictor:
    """Read a predictor folder (or its ``predictor.json``) without unpickling anything.

    Raises
    ------
    PredictorError
        one line, for a missing or corrupted file, or a predictor made for another
        embedding model than ``embedding_model``.
    """
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    folder = Path(path)
    if folder.name == META_FILE:
        folder = folder.parent
    meta_path, weights_path = folder / META_FILE, folder / WEIGHTS_FILE
    if not meta_path.is_file() or not weights_path.is_file():
        raise PredictorError(
            f"{folder} is not a predictor folder (needs {META_FILE} and {WEIGHTS_FILE}); "
            "import LAION or Simulacra .pth files with `dreamrate predictor import`"
        )
    try:
        meta = json.loads(meta_path.read_text())
        if meta.get("format") != FORMAT:
            raise ValueError(f"format is {meta.get('format')!r}, not {FORMAT!r}")
        if int(meta.get("version", 0)) > VERSION:
            raise ValueError(f"version {meta['version']} is newer than this dreamrate reads")
        tensors = load_file(str(weights_path))
        n_layers = int(meta["head"]["layers"])
        layers = [
            (tensors[f"layers.{k}.weight"], tensors[f"layers.{k}.bias"]) for k in range(n_layers)
        ]
        ensemble = (
            (tensors["ensemble.weight"], tensors["ensemble.bias"])
            if "ensemble.weight" in tensors
            else None
        )
        predictor = Predictor(
            embedding_model=str(meta["embedding_model"]),
            dim=int(meta["dim"]),
            layers=layers,
            activation=meta["head"].get("activation", "none"),
            input_scale=float(meta["input"]["scale"]),
            name=str(meta.get("name", folder.name)),
            output=dict(meta.get("output", {})),
            training=dict(meta.get("training", {})),
            metrics=dict(meta.get("metrics", {})),
            source=str(meta.get("source", "trained")),
            ensemble=ensemble,
            created_at=str(meta.get("created_at", "")),
        )
    except PredictorError as exc:
        raise PredictorError(f"{folder}: {exc.message}") from None
    except (OSError, ValueError, KeyError, TypeError, SafetensorError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise PredictorError(f"{folder}: corrupted predictor ({reason[:200]})") from None
    # Version 1 stored the weight file's hash under "sha256"; its "id" is still this digest's.
    stored_hash = meta.get("sha256") if int(meta.get("version", 1)) >= 2 else None
    stored_id = meta.get("id")
    if (stored_hash is not None and stored_hash != predictor.sha256) or (
        stored_id is not None and stored_id != predictor.id
    ):
        raise PredictorError(f"{folder}: weights do not match predictor.json (id {stored_id})")
    if embedding_model is not None and predictor.embedding_model != embedding_model:
        raise PredictorError(
            f"{folder}: predictor reads {predictor.embedding_model} embeddings, "
            f"not {embedding_model}"
        )
    return predictor
