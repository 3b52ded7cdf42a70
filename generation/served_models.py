"""Generation models served by name: whole diffusers models, and LoRA adapters on a base.

``dreamrate models add`` checks a model before it is registered: a folder must be a
diffusers pipeline; an adapter must be a diffusers LoRA file whose every matrix fits the
base's UNet (checked against the base's UNet built without weights, so a mismatch is one
line at registration, not a failed job later). Workers load each base once and switch
adapters on it (:class:`~dreamrate.generation.worker.PipelineCache`).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import delete, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from dreamrate.core.errors import DreamrateError
from dreamrate.db.models import RegisteredModel
from dreamrate.generation.pipeline import looks_like_path

__all__ = [
    "LORA_FILE",
    "ModelSpec",
    "RegistryError",
    "add_model",
    "check_lora_fits",
    "get_model",
    "list_models",
    "remove_model",
    "spec_for",
]

LORA_FILE = "pytorch_lora_weights.safetensors"
NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


class RegistryError(DreamrateError):
    """A model that cannot be registered, or a name that is not."""


@dataclass(frozen=True)
class ModelSpec:
    name: str
    kind: str  #: "path" or "lora"
    path: str
    base: str | None = None

    @property
    def loads(self) -> str:
        """The diffusers model a worker loads for it (the base, for an adapter)."""
        return self.base if self.kind == "lora" and self.base else self.path

    @property
    def adapter(self) -> tuple[str, str] | None:
        """``(adapter name, folder)`` for a LoRA: the name is unique to name and folder, and
        a valid module name for peft."""
        if self.kind != "lora":
            return None
        # The file's size and time too: a LoRA retrained into the same folder is a new
        # adapter to a warm worker, not the one it loaded before.
        try:
            stat = (Path(self.path) / LORA_FILE).stat()
            version = f"{stat.st_size}|{stat.st_mtime_ns}"
        except OSError:
            version = "missing"
        digest = hashlib.sha256(f"{self.name}|{self.path}|{version}".encode()).hexdigest()[:12]
        return f"m{digest}", self.path


def _diffusers_file(model: str, name: str) -> Path | None:
    """``name`` inside ``model`` (a folder or a hub id in the local cache), if it is there."""
    if looks_like_path(model):
        path = Path(model).expanduser() / name
        return path if path.is_file() else None
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(model, name)
    return Path(found) if isinstance(found, str) else None


def _check_diffusers(model: str, option: str) -> None:
    if _diffusers_file(model, "model_index.json") is None:
        where = "has no model_index.json" if looks_like_path(model) else "is not in the local cache"
        raise RegistryError(f"{option}: {model} is not a diffusers model ({where})")


def check_lora_fits(lora: Path, base: str) -> int:
    """Check that every matrix of the LoRA in ``lora`` fits ``base``'s UNet; return how many
    layers it adapts."""
    from accelerate import init_empty_weights
    from diffusers import UNet2DConditionModel
    from safetensors import safe_open

    file = lora / LORA_FILE
    if not file.is_file():
        raise RegistryError(
            f"--lora: {lora} has no {LORA_FILE} (write one with `dreamrate finetune`)"
        )
    config_file = _diffusers_file(base, "unet/config.json")
    if config_file is None:
        raise RegistryError(f"--base: {base} has no UNet (unet/config.json)")
    with init_empty_weights():
        unet = UNet2DConditionModel.from_config(json.loads(config_file.read_text()))
    modules = dict(unet.named_modules())
    layers: set[str] = set()
    try:
        with safe_open(str(file), framework="pt") as tensors:
            for key in tensors.keys():  # noqa: SIM118 (safe_open is not a mapping)
                if not key.startswith("unet.") or ".lora" not in key:
                    continue
                where, _, which = key[len("unet.") :].partition(".lora")
                module = modules.get(where)
                shape = tensors.get_slice(key).get_shape()
                if module is None:
                    raise RegistryError(f"--lora: {lora} adapts {where}, which {base}'s UNet lacks")
                fits = (
                    shape[1] == getattr(module, "in_features", None)
                    if which.startswith(("_A", ".down"))
                    else shape[0] == getattr(module, "out_features", None)
                )
                if not fits:
                    raise RegistryError(
                        f"--lora: {lora} does not fit --base {base} ({where} is "
                        f"{getattr(module, 'in_features', '?')}->{getattr(module, 'out_features', '?')}, "
                        f"the adapter's matrix is {tuple(shape)})"
                    )
                layers.add(where)
    except (OSError, ValueError) as exc:
        if isinstance(exc, RegistryError):
            raise
        raise RegistryError(f"--lora: {file} is not a safetensors file ({exc})") from None
    if not layers:
        raise RegistryError(f"--lora: {file} adapts no UNet layer")
    return len(layers)


def spec_for(name: str, *, path: Path | None, lora: Path | None, base: str | None) -> ModelSpec:
    """A checked :class:`ModelSpec` from ``models add``'s options."""
    if not NAME.match(name):
        raise RegistryError(
            f"NAME: {name!r} must be 1-64 lowercase letters, digits, '.', '_' or '-' "
            "(starting with a letter or digit)"
        )
    if (path is None) == (lora is None):
        raise RegistryError("give exactly one of --path and --lora")
    if path is not None:
        if base is not None:
            raise RegistryError("--base goes with --lora, not --path")
        _check_diffusers(str(path.resolve()), "--path")
        return ModelSpec(name, "path", str(path.resolve()))
    assert lora is not None
    if base is None:
        raise RegistryError("--lora needs --base (the model it was trained on)")
    base_id = str(Path(base).expanduser().resolve()) if looks_like_path(base) else base
    _check_diffusers(base_id, "--base")
    check_lora_fits(lora.resolve(), base_id)
    return ModelSpec(name, "lora", str(lora.resolve()), base_id)


def _spec(row: Any) -> ModelSpec:
    return ModelSpec(row.name, row.kind, row.path, row.base)


async def add_model(engine: AsyncEngine, spec: ModelSpec, *, replace: bool = False) -> None:
    meta: dict[str, Any] = {}
    train = Path(spec.path) / "train.json"
    if spec.kind == "lora" and train.is_file():
        record = json.loads(train.read_text())
        meta = {
            "steps": record.get("steps_done"),
            "data": (record.get("data") or {}).get("manifest"),
        }
    async with engine.begin() as conn:
        exists = await conn.scalar(
            select(RegisteredModel.name).where(RegisteredModel.name == spec.name)
        )
        if exists and not replace:
            raise RegistryError(f"NAME: {spec.name} is already registered (--replace to change it)")
        if exists:
            await conn.execute(delete(RegisteredModel).where(RegisteredModel.name == spec.name))
        await conn.execute(
            insert(RegisteredModel).values(
                name=spec.name, kind=spec.kind, path=spec.path, base=spec.base, meta=meta
            )
        )


async def list_models(engine: AsyncEngine) -> list[ModelSpec]:
    async with engine.connect() as conn:
        rows = (await conn.execute(select(RegisteredModel).order_by(RegisteredModel.name))).all()
    return [_spec(r) for r in rows]


async def get_model(engine: AsyncEngine, name: str) -> ModelSpec | None:
    async with engine.connect() as conn:
        row = (
            await conn.execute(select(RegisteredModel).where(RegisteredModel.name == name))
        ).first()
    return None if row is None else _spec(row)


async def remove_model(engine: AsyncEngine, name: str) -> None:
    async with engine.begin() as conn:
        gone = await conn.execute(delete(RegisteredModel).where(RegisteredModel.name == name))
    if not gone.rowcount:
        raise RegistryError(f"NAME: {name} is not registered (see `dreamrate models list`)")
