"""The three fine-tuning objectives, as pure functions of the UNet's noise predictions.

* ``sft``: Stable Diffusion's own objective on images worth imitating (the seed's method:
  fine-tune on the predictor's top fraction of a large set), optionally weighted per image.
* ``dpo``: Diffusion-DPO (Wallace et al., 2023, "Diffusion Model Alignment Using Direct
  Preference Optimization"): for a preferred and a rejected image of one prompt, noised with
  the same noise at the same timestep, the model should lower its denoising error on the
  preferred one more than the frozen reference does, relative to the rejected one::

      loss = -log sigmoid(-beta / 2 * ((e_w - e_l) - (ref_w - ref_l)))

  where ``e`` are the per-image mean squared errors of the trained model and ``ref`` of the
  reference (the base model with the LoRA switched off), as diffusers' ``train_diffusion_dpo``
  computes it.
* ``kto``: Diffusion-KTO (Li et al., 2024, "Aligning Diffusion Models by Optimizing Human
  Utility"), which needs no pairs, only liked and disliked images: the implicit reward of an
  image is ``r = beta * (ref - e)`` (how much better than the reference the model denoises
  it); with the reference point ``z`` (the batch's mean reward, not below 0, no gradient),
  liked images lose ``1 - sigmoid(r - z)`` and disliked ones ``1 - sigmoid(z - r)``.

Each function takes per-image errors, so the caller runs the UNet once per forward and the
objectives are tested directly on numbers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

__all__ = ["DEFAULT_BETA", "METHODS", "dpo_loss", "kto_loss", "per_image_error", "sft_loss"]

METHODS = ("sft", "dpo", "kto")
#: Default strength of the pull towards the reference: diffusers' DPO script defaults to
#: 2500 for Stable Diffusion 1.5 (the paper used 2000-5000); Diffusion-KTO's released
#: configuration for SD 1.5 used beta = 5000 on errors of the same scale.
DEFAULT_BETA: dict[str, float] = {"dpo": 2500.0, "kto": 5000.0}


def per_image_error(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error of each image's prediction, in float32: shape ``(n,)``."""
    return (predicted.float() - target.float()).pow(2).mean(dim=tuple(range(1, predicted.ndim)))


def sft_loss(error: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """The denoising loss, each image weighted (mean weight 1 keeps the learning rate's meaning)."""
    return error.mean() if weight is None else (error * weight).mean()


def dpo_loss(
    error_w: torch.Tensor,
    error_l: torch.Tensor,
    ref_w: torch.Tensor,
    ref_l: torch.Tensor,
    beta: float,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Diffusion-DPO over a batch of pairs; also returns the share of pairs the model already
    ranks as the reference should (its implicit accuracy) and the reward margin."""
    import torch.nn.functional as F

    inside = -0.5 * beta * ((error_w - error_l) - (ref_w - ref_l).detach())
    loss = -F.logsigmoid(inside).mean()
    return loss, {
        "accuracy": float((inside > 0).float().mean()),
        "margin": float(inside.detach().mean()),
    }


def kto_loss(
    error: torch.Tensor, ref: torch.Tensor, liked: torch.Tensor, beta: float
) -> tuple[torch.Tensor, dict[str, float]]:
    """Diffusion-KTO over a batch of liked (``liked`` True) and disliked images."""
    import torch

    reward = beta * (ref.detach() - error)
    z = reward.detach().mean().clamp(min=0)
    utility = torch.where(liked, torch.sigmoid(reward - z), torch.sigmoid(z - reward))
    seen = reward.detach()
    return (1 - utility).mean(), {
        "reward_liked": float(seen[liked].mean()) if bool(liked.any()) else float("nan"),
        "reward_disliked": float(seen[~liked].mean()) if bool((~liked).any()) else float("nan"),
    }
