"""Models compared by the benchmark: mmbilevel's FFNN, a plain MLP, an unfused reference and bregmanet.

Every builder takes the same shape (input width, hidden widths, output
width) and activation, so that all models of one row of the table hold the
same parameters up to initialization.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional

from mmbilevel.legendre import Legendre
from mmbilevel.nn import FFNN

__all__ = [
    "PLAIN_ACTIVATIONS",
    "BREGMANET_ACTIVATIONS",
    "Shape",
    "SHAPES",
    "UnfusedBregman",
    "bregmanet_model",
    "bregmanet_version",
    "plain_mlp",
]

#: torch function of each activation ρ that the plain MLP can use.
PLAIN_ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "arctan": torch.atan,
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
}

#: bregmanet's name of each activation.
BREGMANET_ACTIVATIONS = {"arctan": "atan", "sigmoid": "sigmoid", "tanh": "tanh"}


@dataclass(frozen=True)
class Shape:
    """Network and batch sizes of one benchmark row."""

    name: str
    in_features: int
    hidden: tuple[int, ...]
    out_features: int
    batch: int


SHAPES = (
    Shape("two-spiral", 2, (2, 2, 2), 2, 10),
    Shape("mnist-1", 784, (784,), 10, 128),
    Shape("mnist-3", 784, (784, 784, 784), 10, 128),
    Shape("wide", 2048, (2048, 2048, 2048), 10, 256),
)


class _Elementwise(nn.Module):
    """Apply a torch function elementwise, as a module for ``nn.Sequential``."""

    def __init__(self, function: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.function = function

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.function(x)


def plain_mlp(shape: Shape, activation: str, device: torch.device) -> nn.Sequential:
    """Build ``nn.Sequential`` of ``Linear`` and the activation, with a linear head: the baseline."""
    function = PLAIN_ACTIVATIONS[activation]
    widths = [shape.in_features, *shape.hidden]
    layers: list[nn.Module] = []
    for width_in, width_out in zip(widths[:-1], widths[1:]):
        layers += [nn.Linear(width_in, width_out, device=device), _Elementwise(function)]
    layers.append(nn.Linear(widths[-1], shape.out_features, device=device))
    return nn.Sequential(*layers)


class UnfusedBregman(nn.Module):
    """Bregman FFNN evaluated through the checked public Legendre methods, layer by layer.

    Every layer computes ρ(ρ⁻¹(z) + Wz + b) as ``phi.grad_conjugate(phi.grad(z) +
    affine(z))``, so each ρ⁻¹ and ρ checks its input, the computation of
    ``BregmanLayer`` before it was fused. It serves as the before-and-after
    reference in one process. Needs equal widths (no skip map).
    """

    def __init__(self, network: FFNN) -> None:
        super().__init__()
        if any(layer.skip is not None for layer in network.layers):
            raise ValueError("UnfusedBregman needs equal hidden widths; the network has a skip map")
        self.network = network
        self.phi: Legendre = network.phi

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = x
        for layer in self.network.layers:
            z = self.phi.grad_conjugate(self.phi.grad(z) + functional.linear(z, layer.weight, layer.bias))
        return self.network.head(z)


def mmbilevel_model(shape: Shape, activation: str, variant: str, device: torch.device) -> FFNN:
    """Build mmbilevel's ``FFNN`` of the given variant with random initial weights."""
    return FFNN(shape.in_features, list(shape.hidden), shape.out_features, activation, variant, device=device)


def bregmanet_version() -> str | None:
    """Return the installed bregmanet version, or None when it is not importable."""
    try:
        from importlib.metadata import version

        import bregmanet  # noqa: F401
    except ImportError:
        return None
    return version("bregmanet")


def bregmanet_model(shape: Shape, activation: str, version: str, device: torch.device) -> nn.Module:
    """Build bregmanet's ``MLP`` ("standard" or "bregman" version) with random initial weights.

    With equal widths its Bregman layer is ρ(ρ⁻¹(clamp(z)) + Wz + b), with z
    clamped 10⁻⁵ inside the activation's range, the same update as ours.
    """
    import bregmanet

    model = bregmanet.MLP(
        activation=BREGMANET_ACTIVATIONS[activation],
        version=version,
        hidden_dim=list(shape.hidden),
        input_dim=shape.in_features,
        output_dim=shape.out_features,
    )
    return model.to(device)


def train_step(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor) -> Callable[[], None]:
    """Return a closure running one SGD step: zero_grad, forward, cross-entropy, backward, step."""
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        functional.cross_entropy(model(inputs), labels).backward()
        optimizer.step()

    return step


def forward_only(model: nn.Module, inputs: torch.Tensor) -> Callable[[], torch.Tensor]:
    """Return a closure evaluating the model without gradient tracking."""

    def forward() -> torch.Tensor:
        with torch.no_grad():
            return model(inputs)

    return forward


def model_names(sequence: Sequence[str]) -> list[str]:
    """Return the names in order without repeats."""
    return list(dict.fromkeys(sequence))
