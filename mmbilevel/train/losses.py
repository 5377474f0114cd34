"""Upper-level losses ℓ(ŷ, y) on logits ŷ and integer class labels y.

Every loss maps logits of shape ``(batch, classes)`` and labels of shape
``(batch,)`` to the mean loss over the batch, a scalar. The losses use only
operations that ``torch.vmap`` can batch, so the vectorized trainer can
evaluate them for many models at once.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from mmbilevel.registry import Registry

__all__ = ["LOSSES", "LossFn", "cross_entropy", "squared", "get_loss", "accuracy"]

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

LOSSES: Registry[LossFn] = Registry("loss")


def _check_shapes(logits: torch.Tensor, targets: torch.Tensor) -> None:
    if logits.dim() != 2 or targets.dim() != 1 or logits.shape[0] != targets.shape[0]:
        raise ValueError(
            f"expected logits of shape (batch, classes) and labels of shape (batch,), "
            f"got {tuple(logits.shape)} and {tuple(targets.shape)}"
        )


@LOSSES.register("cross-entropy")
def cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Compute the mean cross-entropy −log softmax(ŷ)_y over the batch."""
    _check_shapes(logits, targets)
    return F.cross_entropy(logits, targets)


@LOSSES.register("squared")
def squared(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Compute the mean squared error between the logits and one-hot targets.

    The value is (1 / (n K)) Σᵢ ‖ŷᵢ − e_{yᵢ}‖², the mean over all n·K entries,
    as ``torch.nn.functional.mse_loss`` computes it.
    """
    _check_shapes(logits, targets)
    one_hot = torch.zeros_like(logits).scatter(-1, targets.unsqueeze(-1), 1.0)
    return F.mse_loss(logits, one_hot)


def get_loss(name: str) -> LossFn:
    """Return the loss registered under ``name`` (``cross-entropy`` or ``squared``)."""
    return LOSSES.get(name)


def accuracy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Return the fraction of rows whose largest logit is at the label, as a tensor."""
    return (logits.argmax(dim=-1) == targets).to(logits.dtype).mean()
