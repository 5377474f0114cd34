"""Training settings, device choice and seeded model construction."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from mmbilevel.train.losses import LOSSES
from mmbilevel.train.optimizers import OPTIMIZERS

__all__ = ["TrainConfig", "resolve_device", "build_seeded", "DEVICE_CHOICES"]

DEVICE_CHOICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class TrainConfig:
    """Settings of the upper-level training loop.

    Attributes:
        epochs: number of passes over the training set, ≥ 0.
        lr: learning rate, > 0.
        batch_size: mini-batch size, ≥ 1. The last batch of an epoch is
            smaller when the set size is not a multiple of it.
        optimizer: ``"sgd"`` or ``"adam"`` (see ``OPTIMIZERS``).
        loss: ``"cross-entropy"`` or ``"squared"`` (see ``LOSSES``).
        seed: seed of the mini-batch order; realization r = 1, …, R of a
            run uses ``seed + r − 1`` for both its initial weights and its
            order.
        optimizer_options: extra keyword arguments of the torch optimizer,
            for example ``{"momentum": 0.9}``.
        eval_batch_size: chunk size of the full-set evaluations, which
            bounds their memory and does not change their values.
    """

    epochs: int = 10
    lr: float = 0.1
    batch_size: int = 10
    optimizer: str = "sgd"
    loss: str = "cross-entropy"
    seed: int = 0
    optimizer_options: dict[str, Any] = field(default_factory=dict)
    eval_batch_size: int = 4096

    def __post_init__(self) -> None:
        if isinstance(self.epochs, bool) or not isinstance(self.epochs, int) or self.epochs < 0:
            raise ValueError(f"epochs must be an integer >= 0, got {self.epochs!r}")
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"learning rate must be a finite number > 0, got {self.lr!r}")
        for name in ("batch_size", "eval_batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be an integer >= 0, got {self.seed!r}")
        # Normalize names so that configs compare equal whatever the case.
        OPTIMIZERS.get(self.optimizer)
        LOSSES.get(self.loss)
        object.__setattr__(self, "optimizer", self.optimizer.lower())
        object.__setattr__(self, "loss", self.loss.lower())
        object.__setattr__(self, "optimizer_options", dict(self.optimizer_options))

    def to_dict(self) -> dict[str, Any]:
        """Return the settings as a dictionary that JSON can encode."""
        return asdict(self)


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """Turn a device request into a ``torch.device``.

    ``"auto"`` or ``None`` selects CUDA when it is available and the CPU
    otherwise.

    Raises:
        ValueError: CUDA was requested but is not available.
    """
    if device is None or (isinstance(device, str) and device.lower() == "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was requested but CUDA is not available; use --device cpu or auto")
    return device


def build_seeded(
    build_model: Callable[[], nn.Module],
    seed: int,
    device: torch.device | str | None = None,
) -> nn.Module:
    """Build a model with the global torch RNG seeded to ``seed``.

    The model is built on the CPU inside ``torch.random.fork_rng``, so its
    initial weights depend on ``seed`` only (not on the device) and the
    caller's global RNG state is left unchanged. It is then moved to
    ``device`` when one is given.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_model()
    if not isinstance(model, nn.Module):
        raise TypeError(f"build_model must return a torch.nn.Module, got {type(model).__name__}")
    if device is not None:
        model = model.to(device)
    return model
