"""Upper-level optimizers, looked up by name.

Each entry is a factory ``(params, lr, **options) -> torch.optim.Optimizer``.
Both optimizers here update each parameter entry from its own gradient and
state only (their step counter is shared), which is what lets the vectorized
trainer apply them to stacked parameters of many models at once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch

from mmbilevel.registry import Registry

__all__ = ["OPTIMIZERS", "OptimizerFactory", "make_optimizer"]

OptimizerFactory = Callable[..., torch.optim.Optimizer]

OPTIMIZERS: Registry[OptimizerFactory] = Registry("optimizer")


@OPTIMIZERS.register("sgd")
def _sgd(params: Iterable[torch.Tensor], lr: float, **options: Any) -> torch.optim.Optimizer:
    # foreach=False keeps the per-tensor kernels, so a stacked parameter and
    # its slices go through the same arithmetic.
    return torch.optim.SGD(params, lr=lr, foreach=False, **options)


@OPTIMIZERS.register("adam")
def _adam(params: Iterable[torch.Tensor], lr: float, **options: Any) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=lr, foreach=False, **options)


def make_optimizer(
    name: str, params: Iterable[torch.Tensor], lr: float, **options: Any
) -> torch.optim.Optimizer:
    """Build the optimizer registered under ``name`` (``sgd`` or ``adam``).

    Args:
        name: optimizer name, case-insensitive.
        params: the tensors to optimize.
        lr: learning rate, > 0.
        **options: further keyword arguments of the torch optimizer
            (for example ``momentum`` or ``weight_decay``).

    Raises:
        ValueError: unknown name or a learning rate that is not > 0.
    """
    factory = OPTIMIZERS.get(name)
    if not lr > 0:
        raise ValueError(f"learning rate must be > 0, got {lr}; pass a positive value")
    return factory(params, lr, **options)
