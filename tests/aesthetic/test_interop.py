"""LAION and Simulacra heads imported from ../shared/reference reproduce their own outputs;
corrupted files and pickles with code in them are refused (those tests need no reference data)."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from dreamrate.aesthetic.interop import export_laion, import_head
from dreamrate.aesthetic.predictor import Predictor, PredictorError, load_predictor, save_predictor

REFERENCE = Path(__file__).resolve().parents[2].parent / "shared" / "reference"
V2 = REFERENCE / "laion-improved-aesthetic-predictor" / "sac+logos+ava1-l14-linearMSE.pth"
V2_RELU = REFERENCE / "laion-improved-aesthetic-predictor" / "ava+logos-l14-reluMSE.pth"
V1 = REFERENCE / "laion-aesthetic-predictor" / "sa_0_4_vit_l_14_linear.pth"
SIMULACRA = (
    REFERENCE
    / "simulacra-aesthetic-models"
    / "models"
    / "sac_public_2022_06_29_vit_l_14_linear.pth"
)

#: The tests that read the real heads and embeddings in ../shared/reference.
needs_reference = pytest.mark.needs("reference")


def _buckets() -> np.ndarray:
    folder = REFERENCE / "laion-aesthetic-predictor" / "vit_l_14_embeddings"
    return np.concatenate([np.load(folder / f"rating{i}.npy") for i in range(10)]).astype(
        np.float32
    )


def _load(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)


def _unit(x: np.ndarray) -> torch.Tensor:
    t = torch.from_numpy(x).float()
    return t / t.norm(dim=-1, keepdim=True)


@needs_reference
def test_laion_v2_folds_into_one_affine_map_that_matches_the_mlp() -> None:
    reference = nn.Sequential(
        nn.Linear(768, 1024), nn.Dropout(0.2), nn.Linear(1024, 128), nn.Dropout(0.2),
        nn.Linear(128, 64), nn.Dropout(0.1), nn.Linear(64, 16), nn.Linear(16, 1),
    )  # fmt: skip
    reference.load_state_dict({k.removeprefix("layers."): v for k, v in _load(V2).items()})
    reference.eval()
    with torch.no_grad():
        expected = reference(_unit(_buckets()))[:, 0].numpy()
    predictor = import_head(V2)
    assert predictor.source.startswith("laion-v2:") and predictor.is_affine
    assert predictor.embedding_model == "ViT-L-14/openai" and predictor.dim == 768
    got = predictor.predict(_buckets())
    np.testing.assert_allclose(got, expected, atol=1e-4)
    assert (np.diff(got) > 0).all()
    np.testing.assert_allclose(got[[0, 9]], [1.66, 5.75], atol=0.01)


@needs_reference
def test_laion_relu_variant_is_kept_as_an_mlp() -> None:
    reference = nn.Sequential(
        nn.Linear(768, 1024), nn.ReLU(), nn.Dropout(0.2), nn.Linear(1024, 128), nn.ReLU(),
        nn.Dropout(0.2), nn.Linear(128, 64), nn.ReLU(), nn.Dropout(0.1), nn.Linear(64, 16),
        nn.ReLU(), nn.Linear(16, 1),
    )  # fmt: skip
    reference.load_state_dict({k.removeprefix("layers."): v for k, v in _load(V2_RELU).items()})
    reference.eval()
    with torch.no_grad():
        expected = reference(_unit(_buckets()))[:, 0].numpy()
    predictor = import_head(V2_RELU)
    assert predictor.kind == "mlp-relu" and len(predictor.layers) == 5
    np.testing.assert_allclose(predictor.predict(_buckets()), expected, atol=1e-4)
    with pytest.raises(PredictorError, match="MLP"):
        predictor.affine()


@needs_reference
@pytest.mark.parametrize(("path", "scale"), [(V1, 1.0), (SIMULACRA, 768**0.5)])
def test_linear_heads_match_their_reference(path: Path, scale: float) -> None:
    state = _load(path)
    linear = nn.Linear(768, 1)
    linear.load_state_dict({k.removeprefix("linear."): v for k, v in state.items()})
    with torch.no_grad():
        expected = linear(_unit(_buckets()) * scale)[:, 0].numpy()
    predictor = import_head(path)
    assert predictor.input_scale == pytest.approx(scale)
    got = predictor.predict(_buckets())
    np.testing.assert_allclose(got, expected, atol=1e-4)
    assert (np.diff(got) > 0).all()


@needs_reference
def test_kind_can_be_forced_and_must_fit_the_keys() -> None:
    assert import_head(V1, kind="laion-v1").source.startswith("laion-v1:")
    with pytest.raises(PredictorError, match="do not match a simulacra head"):
        import_head(V1, kind="simulacra")
    with pytest.raises(PredictorError, match="--kind: must be one of"):
        import_head(V1, kind="laion-v9")


@needs_reference
def test_artifact_round_trip_and_laion_export(tmp_path: Path) -> None:
    predictor = import_head(SIMULACRA, name="simulacra-l14")
    folder = save_predictor(predictor, tmp_path / "simulacra")
    assert sorted(p.name for p in folder.iterdir()) == ["model.safetensors", "predictor.json"]
    loaded = load_predictor(folder, embedding_model="ViT-L-14/openai")
    assert loaded.id == predictor.id and loaded.input_scale == predictor.input_scale
    np.testing.assert_array_equal(loaded.predict(_buckets()), predictor.predict(_buckets()))
    # LAION's tools: nn.Linear(768, 1) on unit embeddings gives the same scores.
    out = export_laion(loaded, tmp_path / "laion.pth")
    linear = nn.Linear(768, 1)
    linear.load_state_dict(torch.load(out, weights_only=True))
    with torch.no_grad():
        laion_scores = linear(_unit(_buckets()))[:, 0].numpy()
    np.testing.assert_allclose(laion_scores, predictor.predict(_buckets()), atol=1e-4)
    # Saving over an existing folder needs overwrite.
    with pytest.raises(PredictorError, match="already exists"):
        save_predictor(predictor, folder)


@needs_reference
def test_predictor_from_another_embedding_model_is_refused(tmp_path: Path) -> None:
    folder = save_predictor(import_head(V1), tmp_path / "v1")
    with pytest.raises(
        PredictorError, match="reads ViT-L-14/openai embeddings, not ViT-B-32/openai"
    ):
        load_predictor(folder, embedding_model="ViT-B-32/openai")
    with pytest.raises(PredictorError, match="512 dimensions but predictor"):
        load_predictor(folder).predict(np.ones((2, 512), dtype=np.float32))
    with pytest.raises(PredictorError, match="NaN"):
        load_predictor(folder).predict(np.full((1, 768), np.nan, dtype=np.float32))


def test_corrupted_predictor_files_are_one_line_errors(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    head = (rng.normal(size=(1, 768)).astype(np.float32), np.zeros(1, np.float32))
    folder = save_predictor(Predictor("ViT-L-14/openai", 768, [head]), tmp_path / "v1")
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(PredictorError, match="corrupted predictor") as info:
        load_predictor(folder)
    assert "\n" not in info.value.message
    with pytest.raises(PredictorError, match="not a predictor folder"):
        load_predictor(tmp_path)


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_a_pickle_with_code_is_refused_not_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    evil = tmp_path / "evil.pth"
    evil.write_bytes(pickle.dumps({"weight": _Evil()}))
    with pytest.raises(PredictorError, match="not a plain state dict"):
        import_head(evil)
    assert "pwned" not in capsys.readouterr().out
    not_a_dict = tmp_path / "list.pth"
    torch.save([torch.zeros(3)], not_a_dict)
    with pytest.raises(PredictorError, match="not a plain state dict"):
        import_head(not_a_dict)


def test_trained_affine_predictor_needs_matching_shapes() -> None:
    with pytest.raises(PredictorError, match="reads 4 values but dim is 8"):
        Predictor("m", 8, [(np.zeros((1, 4), np.float32), np.zeros(1, np.float32))])
