r"""Feed-forward networks: hidden layers of one variant followed by a linear head.

With inputs x and hidden layers T₀, …, T_{L−1} of the chosen variant,

    z⁽⁰⁾ = x,  z⁽ˡ⁺¹⁾ = T_l(z⁽ˡ⁾),  logits = ψ(z⁽ᴸ⁾) = V z⁽ᴸ⁾ + c,

the network of Problems 3.1 and 4.1 in "Bilevel Learning of Deep
Representations": the hidden layers are L iterations of an MM algorithm and
ψ is the upper-level linear map.
"""

from __future__ import annotations

import numbers
import operator
from collections.abc import Iterable, Sequence

import torch
from torch import nn

from mmbilevel.legendre import Legendre
from mmbilevel.nn.layers import INITS, VARIANTS, BregmanLayer, StandardLayer
from mmbilevel.nn.preprocess import resolve_activation

__all__ = ["FFNN"]


def _hidden_widths(hidden: int | Iterable[int]) -> list[int]:
    """Return the hidden widths as a list, an int being one hidden layer.

    Raises:
        TypeError: ``hidden`` is neither an int nor an iterable of ints.
        ValueError: a width is smaller than 1.
    """
    expected = f"hidden must be an int or a sequence of ints such as [784, 784], got {hidden!r}"
    if isinstance(hidden, (bool, str, bytes)):
        raise TypeError(expected)
    if isinstance(hidden, numbers.Integral):
        items = [hidden]
    else:
        try:
            items = list(hidden)
        except TypeError:
            raise TypeError(expected) from None

    widths = []
    for item in items:
        try:
            width = operator.index(item)
        except TypeError:
            raise TypeError(f"{expected}; {item!r} is not an int") from None
        if isinstance(item, bool) or width < 1:
            raise ValueError(f"hidden widths must be integers >= 1, got {item!r} in {hidden!r}")
        widths.append(width)
    return widths


class FFNN(nn.Module):
    r"""Feed-forward network of Standard, Euclidean or Bregman layers and a linear head ψ.

    The first hidden layer maps in_features to hidden[0], layer l maps
    hidden[l − 1] to hidden[l], and the head ψ (``torch.nn.Linear``) maps
    hidden[−1] to out_features (the logits). Inputs must lie in dom φ for a
    Bregman network; map data there with :func:`mmbilevel.nn.to_domain`.

    Initialisation:
        - ``"random"``: every layer and the head as ``torch.nn.Linear``.
        - ``"deterministic"``: the non-informative weights of the two-spiral
          experiment of "Bilevel Learning of Deep Representations", W = I for Standard (the rectangular identity
          when widths differ) and W = 0 for Euclidean and Bregman, all hidden
          biases 0. The head keeps the random weight of ``torch.nn.Linear``
          and gets bias 0: a zero head would give zero gradients to every
          hidden layer at the first step. Learned skip maps start as
          described in :mod:`mmbilevel.nn.skip`.

    Args:
        in_features: width of the input.
        hidden: widths of the hidden layers (may be empty); an int is one
            hidden layer of that width, so ``FFNN(2, 4, 3)`` equals
            ``FFNN(2, [4], 3)``.
        out_features: number of outputs of the head.
        activation: catalogue name or ``Legendre`` object, shared by all
            hidden layers.
        variant: ``"standard"``, ``"euclidean"`` or ``"bregman"`` (see
            ``mmbilevel.nn.VARIANTS``).
        init: ``"random"`` or ``"deterministic"``.
        bias: whether hidden layers learn a bias (the head always does).
        skip: skip map of Euclidean and Bregman layers that change the
            width, ``"fixed"`` (default) or ``"learned"``.
        clamp: Bregman layers clamp their inputs into dom φ instead of
            raising (see :class:`~mmbilevel.nn.BregmanLayer`).
        device: device of the parameters.
        dtype: floating dtype of the parameters.

    Shape:
        - Input: (*, in_features).
        - Output: (*, out_features).

    Attributes:
        layers: the hidden layers, a ``ModuleList``.
        head: the linear head ψ.

    Example:
        >>> model = FFNN(2, [2, 2, 2], 2, "arctan", "bregman", init="deterministic")
        >>> x = torch.tensor([[0.3, -0.4]])
        >>> outputs = model.hidden_outputs(x)
        >>> len(outputs), torch.allclose(outputs[-1], x)
        (4, True)
    """

    def __init__(
        self,
        in_features: int,
        hidden: int | Sequence[int],
        out_features: int,
        activation: str | Legendre = "arctan",
        variant: str = "bregman",
        init: str = "random",
        *,
        bias: bool = True,
        skip: str = "fixed",
        clamp: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if init not in INITS:
            raise ValueError(f"unknown init {init!r}; expected one of {list(INITS)}")
        layer_class = VARIANTS.get(variant)
        self.phi = resolve_activation(activation)
        self.variant = variant.lower()
        self.init = init
        self.in_features = in_features
        self.out_features = out_features
        self.hidden = _hidden_widths(hidden)

        options: dict = {"init": init, "device": device, "dtype": dtype}
        if not issubclass(layer_class, StandardLayer):
            options["skip"] = skip
        if issubclass(layer_class, BregmanLayer):
            options["clamp"] = clamp

        widths = [in_features, *self.hidden]
        self.layers = nn.ModuleList(
            layer_class(width_in, width_out, self.phi, bias, **options)
            for width_in, width_out in zip(widths[:-1], widths[1:])
        )
        self.head = nn.Linear(widths[-1], out_features, device=device, dtype=dtype)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Initialise every layer and the head in place, following ``init``."""
        for layer in self.layers:
            layer.reset_parameters()
        self.head.reset_parameters()
        if self.init == "deterministic":
            with torch.no_grad():
                self.head.bias.zero_()

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Return z⁽ᴸ⁾, the output of the last hidden layer."""
        return self.hidden_outputs(x)[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def hidden_outputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Return [z⁽⁰⁾ = x, z⁽¹⁾, …, z⁽ᴸ⁾], every hidden layer's output, input first."""
        outputs = [x]
        inverse = None
        for index, layer in enumerate(self.layers):
            # Only the input is checked: later inputs are outputs of a layer, in dom φ.
            output, inverse = layer.step(outputs[-1], inverse, check=index == 0)
            outputs.append(output)
        return outputs

    def extra_repr(self) -> str:
        return f"variant={self.variant!r}, activation={self.phi.name!r}, init={self.init!r}"
