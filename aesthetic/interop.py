"""Reading LAION's and Simulacra's published heads, and writing ours in LAION's format.

Every ``.pth`` is read with ``torch.load(..., weights_only=True)``: a file that holds
anything but tensors (a pickle with code in it) is refused, never executed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np

from dreamrate.aesthetic.predictor import Predictor, PredictorError
from dreamrate.core.atomic import atomic_file

__all__ = ["KINDS", "detect_kind", "export_laion", "import_head", "read_state_dict"]

Kind = Literal["laion-v2", "laion-v2-relu", "laion-v1", "simulacra"]
KINDS: tuple[str, ...] = ("laion-v2", "laion-v2-relu", "laion-v1", "simulacra")

_LAION_V2_LAYERS = (0, 2, 4, 6, 7)  # Linear, Dropout, Linear, ... : no activations
_LAION_RELU_LAYERS = (0, 3, 6, 9, 11)  # Linear, ReLU, Dropout, ... : ReLU after the first four
#: The OpenAI CLIP models these heads were fitted on, by embedding width.
_DEFAULT_MODEL_BY_DIM = {
    768: "ViT-L-14/openai",
    512: "ViT-B-32/openai",
    1024: "ViT-H-14/laion2b_s32b_b79k",
}


def read_state_dict(path: Path) -> dict[str, np.ndarray]:
    """The tensors of a ``.pth`` state dict as float64 arrays (safe loading only)."""
    import pickle
    import warnings

    import torch

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch warns about the protocol of foreign pickles
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise PredictorError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise PredictorError(f"{path} is a folder, not a .pth file") from None
    except OSError as exc:
        raise PredictorError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except Exception as exc:
        # Whatever a foreign file makes the unpickler raise (KeyError, IndexError,
        # UnicodeDecodeError, ...) means one thing: this is not a checkpoint.
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        if "weights_only" in str(exc) or isinstance(exc, pickle.UnpicklingError):
            raise PredictorError(
                f"{path}: not a plain state dict (refusing to unpickle code or objects)"
            ) from None
        raise PredictorError(
            f"{path}: cannot read as a PyTorch state dict ({type(exc).__name__}: {first[:160]})"
        ) from None
    if (
        not isinstance(obj, dict)
        or not obj
        or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
    ):
        raise PredictorError(f"{path}: not a plain state dict of tensors")
    return {k: v.detach().double().numpy() for k, v in obj.items()}


def detect_kind(state: dict[str, np.ndarray], path: Path) -> Kind:
    """Guess the head's family from its keys (and LAION's file names for the ReLU variant)."""
    keys = set(state)
    if keys == _layer_keys(_LAION_V2_LAYERS):
        return "laion-v2"
    if keys == _layer_keys(_LAION_RELU_LAYERS):
        return "laion-v2-relu"
    if keys == {"weight", "bias"}:
        return "laion-v1"
    if keys == {"linear.weight", "linear.bias"}:
        return "simulacra"
    raise PredictorError(
        f"{path}: unknown head with keys {sorted(keys)[:6]}; expected a LAION or Simulacra head"
    )


def _layer_keys(indices: tuple[int, ...]) -> set[str]:
    return {f"layers.{k}.{p}" for k in indices for p in ("weight", "bias")}


def _expect_keys(state: dict[str, np.ndarray], keys: set[str], kind: str, path: Path) -> None:
    if set(state) != keys:
        raise PredictorError(
            f"{path}: keys {sorted(state)[:6]} do not match a {kind} head ({sorted(keys)[:6]})"
        )


def _model_for(dim: int, path: Path, embedding_model: str | None) -> str:
    if embedding_model:
        return embedding_model
    name = path.name.lower()
    for tag, model in (
        ("b_16", "ViT-B-16/openai"),
        ("b_32", "ViT-B-32/openai"),
        ("l_14", "ViT-L-14/openai"),
    ):
        if tag in name:
            return model
    if dim in _DEFAULT_MODEL_BY_DIM:
        return _DEFAULT_MODEL_BY_DIM[dim]
    raise PredictorError(
        f"{path}: cannot tell the embedding model of a {dim}-d head; pass --embedding-model"
    )


def import_head(
    path: Path,
    *,
    kind: str | None = None,
    embedding_model: str | None = None,
    name: str | None = None,
) -> Predictor:
    """Turn a published head into a :class:`Predictor`.

    LAION V2's five ``Linear`` layers have no activation between them (the dropouts are
    off in eval mode), so they are folded, in float64, into one exact affine map.
    """
    path = Path(path)
    if kind is not None and kind not in KINDS:  # before reading: its problems come second
        raise PredictorError(f"--kind: must be one of {', '.join(KINDS)}, not {kind!r}")
    state = read_state_dict(path)
    kind = kind or detect_kind(state, path)
    output = {"scale": "numbers-10", "min": 1.0, "max": 10.0}
    if kind == "laion-v2":
        _expect_keys(state, _layer_keys(_LAION_V2_LAYERS), kind, path)
        weight, bias = state["layers.0.weight"], state["layers.0.bias"]
        for k in _LAION_V2_LAYERS[1:]:
            w, b = state[f"layers.{k}.weight"], state[f"layers.{k}.bias"]
            weight, bias = w @ weight, w @ bias + b
        layers, activation, scale = [(weight, bias)], "none", 1.0
    elif kind == "laion-v2-relu":
        _expect_keys(state, _layer_keys(_LAION_RELU_LAYERS), kind, path)
        layers = [
            (state[f"layers.{k}.weight"], state[f"layers.{k}.bias"]) for k in _LAION_RELU_LAYERS
        ]
        activation, scale = "relu", 1.0
    elif kind == "laion-v1":
        _expect_keys(state, {"weight", "bias"}, kind, path)
        layers, activation, scale = [(state["weight"], state["bias"])], "none", 1.0
    else:
        _expect_keys(state, {"linear.weight", "linear.bias"}, kind, path)
        layers = [(state["linear.weight"], state["linear.bias"])]
        activation = "none"
        scale = float(np.sqrt(state["linear.weight"].shape[1]))
    dim = int(layers[0][0].shape[1])
    layers32 = [(w.astype(np.float32), b.astype(np.float32)) for w, b in layers]
    return Predictor(
        embedding_model=_model_for(dim, path, embedding_model),
        dim=dim,
        layers=layers32,
        activation=activation,  # type: ignore[arg-type]
        input_scale=scale,
        name=name or path.stem,
        output=output,
        source=f"{kind}:{path.name}",
    )


def export_laion(predictor: Predictor, out: Path) -> Path:
    """Write an ``nn.Linear(dim, 1)`` state dict (``weight`` (1, dim), ``bias`` (1,)) that
    LAION's tools load on L2-normalised embeddings; the input scale is folded in."""
    import torch

    weight, bias = predictor.affine()
    state = {
        "weight": torch.from_numpy(weight.reshape(1, -1).copy()),
        "bias": torch.tensor([bias], dtype=torch.float32),
    }
    out = Path(out)
    with atomic_file(out, PredictorError) as tmp:
        torch.save(state, tmp)
    return out
