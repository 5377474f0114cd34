r"""Standard, Euclidean and Bregman feed-forward layers.

"Bilevel Learning of Deep Representations" (Frecon, Salzo, Pontil, 2021)
compares three layer updates built from one activation ρ = ∇φ*, with φ a
Legendre function and ρ⁻¹ = ∇φ:

- Standard:  z⁺ = ρ(Wz + b);
- Euclidean: z⁺ = ρ(z + Wz + b), the Standard layer with W replaced by I + W;
- Bregman:   z⁺ = ρ(ρ⁻¹(z) + Wz + b) (Definition 4.3), one step of the MM
  algorithm with a Bregman majorant; with W = 0 and b = 0 it is the identity.

With W = −τ(A + C)ᵀ and b = −τd from a quadratic form (A, C, d), the
Bregman layer is the Bregman forward-backward step of that form with g the
indicator of dom φ, and the Standard layer with W = I − τ(A + C)ᵀ is the
Euclidean forward-backward step prox_{τg} with prox_{τg} = ρ.

When in_features ≠ out_features the Euclidean and Bregman skip terms use
a row-stochastic map S (see :mod:`mmbilevel.nn.skip`): ρ(S z + Wz + b) and
ρ(ρ⁻¹(S z) + Wz + b).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional

from mmbilevel.legendre import Legendre
from mmbilevel.nn import functional as fused
from mmbilevel.nn.preprocess import resolve_activation
from mmbilevel.nn.skip import SKIP_MODES, SkipMap
from mmbilevel.registry import Registry

__all__ = ["INITS", "VARIANTS", "BregmanLayer", "EuclideanLayer", "FeedForwardLayer", "StandardLayer"]

INITS = ("random", "deterministic")


def _check_width(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}={value!r} must be a positive integer")


class FeedForwardLayer(nn.Module):
    """Common part of the three layers: the affine map Wz + b and its initialisation.

    Args:
        in_features: width of the input z.
        out_features: width of the output.
        activation: catalogue name of a Legendre function (see
            ``mmbilevel.legendre.available()``) or a ``Legendre`` object,
            custom ones included; the layer applies ρ = ∇φ*.
        bias: whether to learn the bias b; without it b = 0.
        init: ``"random"`` (the initialisation of ``torch.nn.Linear``:
            W and b uniform in ±1/√in_features) or ``"deterministic"`` (the
            non-informative weights of the paper: see each layer's
            ``deterministic_weight``, and b = 0).
        device: device of the parameters.
        dtype: floating dtype of the parameters.

    Attributes:
        weight: the Parameter W, shape (out_features, in_features).
        bias: the Parameter b, shape (out_features,), or None.
        phi: the Legendre function φ of the activation.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        activation: str | Legendre,
        bias: bool = True,
        *,
        init: str = "random",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        _check_width("in_features", in_features)
        _check_width("out_features", out_features)
        if init not in INITS:
            raise ValueError(f"unknown init {init!r}; expected one of {list(INITS)}")
        factory = {"device": device, "dtype": dtype}
        self.in_features = in_features
        self.out_features = out_features
        self.phi = resolve_activation(activation)
        self.init = init
        self.weight = nn.Parameter(torch.empty(out_features, in_features, **factory))
        if bias:
            self.bias = nn.Parameter(torch.empty(out_features, **factory))
        else:
            self.register_parameter("bias", None)

    def deterministic_weight(self) -> torch.Tensor:
        """Return the weight that ``init="deterministic"`` copies into W."""
        return torch.zeros_like(self.weight)

    def reset_parameters(self) -> None:
        """Initialise W and b in place, following ``self.init``."""
        with torch.no_grad():
            if self.init == "deterministic":
                self.weight.copy_(self.deterministic_weight())
                if self.bias is not None:
                    self.bias.zero_()
                return
            nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
            if self.bias is not None:
                bound = 1.0 / math.sqrt(self.in_features)
                nn.init.uniform_(self.bias, -bound, bound)

    def affine(self, z: torch.Tensor) -> torch.Tensor:
        """Compute Wz + b for a batch of row vectors z of shape (*, in_features)."""
        return functional.linear(z, self.weight, self.bias)

    def activation(self, pre_activation: torch.Tensor) -> torch.Tensor:
        """Apply ρ = ∇φ* elementwise, without the NaN check of ``phi.grad_conjugate``."""
        return fused.activation(self.phi, pre_activation)

    def step(
        self, z: torch.Tensor, inverse: torch.Tensor | None = None, *, check: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Return the output z⁺ and, when it comes for free, ρ⁻¹(z⁺); else None in its place.

        A network passes the second value to the next layer as ``inverse``,
        the known ρ⁻¹(z). Only Bregman layers use it. ``check=False``
        skips the domain check of z, for inputs that an earlier layer
        produced.
        """
        return self(z), None

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}, activation={self.phi.name!r}, init={self.init!r}"
        )


class StandardLayer(FeedForwardLayer):
    r"""Standard feed-forward layer z⁺ = ρ(Wz + b).

    ``init="deterministic"`` sets W = I, the rectangular identity
    (Wᵢⱼ = 1 if i = j else 0) when the widths differ, and b = 0.

    Args:
        See :class:`FeedForwardLayer`.

    Shape:
        - Input: (*, in_features).
        - Output: (*, out_features), inside dom φ.

    Example:
        >>> layer = StandardLayer(3, 2, "arctan")
        >>> layer(torch.zeros(5, 3)).shape
        torch.Size([5, 2])
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        activation: str | Legendre,
        bias: bool = True,
        *,
        init: str = "random",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(
            in_features, out_features, activation, bias, init=init, device=device, dtype=dtype
        )
        self.reset_parameters()

    def deterministic_weight(self) -> torch.Tensor:
        """Return the (rectangular) identity."""
        return torch.eye(
            self.out_features, self.in_features, device=self.weight.device, dtype=self.weight.dtype
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.activation(self.affine(z))


class _SkipLayer(FeedForwardLayer):
    """Layer with a skip term of its input, through the skip map S when widths differ."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        activation: str | Legendre,
        bias: bool = True,
        *,
        skip: str = "fixed",
        init: str = "random",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(
            in_features, out_features, activation, bias, init=init, device=device, dtype=dtype
        )
        if skip not in SKIP_MODES:
            raise ValueError(f"unknown skip mode {skip!r}; expected one of {list(SKIP_MODES)}")
        self.skip_mode = skip
        if in_features == out_features:
            self.skip = None
        else:
            self.skip = SkipMap(in_features, out_features, skip, device=device, dtype=dtype)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Initialise W and b (see ``init``) and the learned skip map, in place."""
        super().reset_parameters()
        if getattr(self, "skip", None) is not None:
            self.skip.reset_parameters()

    def skip_input(self, z: torch.Tensor) -> torch.Tensor:
        """Return S z, or z itself when the widths are equal."""
        return z if self.skip is None else self.skip(z)

    def extra_repr(self) -> str:
        text = super().extra_repr()
        if self.skip is not None:
            text += f", skip={self.skip_mode!r}"
        return text


class EuclideanLayer(_SkipLayer):
    r"""Euclidean feed-forward layer z⁺ = ρ(S z + Wz + b).

    S is the identity when in_features = out_features (the layer of the
    paper, ρ(z + Wz + b)), else the row-stochastic skip map of
    :mod:`mmbilevel.nn.skip`. ``init="deterministic"`` sets W = 0, b = 0.

    Args:
        skip: ``"fixed"`` (default, area resampling, not learned) or
            ``"learned"`` (row-wise softmax of a Parameter); used only when
            the widths differ.
        The others: see :class:`FeedForwardLayer`.

    Shape:
        - Input: (*, in_features).
        - Output: (*, out_features), inside dom φ.

    Example:
        >>> layer = EuclideanLayer(2, 2, "arctan", init="deterministic")
        >>> torch.allclose(layer(torch.ones(1, 2)), torch.atan(torch.ones(1, 2)))
        True
    """

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.activation(self.skip_input(z) + self.affine(z))


class BregmanLayer(_SkipLayer):
    r"""Bregman feed-forward layer z⁺ = ρ(ρ⁻¹(S z) + Wz + b), ρ = ∇φ*, ρ⁻¹ = ∇φ.

    Definition 4.3 of "Bilevel Learning of Deep Representations". S is the
    identity when in_features = out_features; then W = 0 and b = 0 give
    z⁺ = ρ(ρ⁻¹(z)) = z. When the widths differ S is the row-stochastic skip
    map of :mod:`mmbilevel.nn.skip`, so S z stays in dom φ.
    ``init="deterministic"`` sets W = 0, b = 0.

    The input must lie in dom φ: by default a point outside the closed
    domain raises ``ValueError`` (the error of ``phi.grad``), naming the
    function, its domain and the value. A point on a finite end of the
    domain, where ρ⁻¹ is infinite, is moved to the nearest representable
    interior point, so outputs and gradients stay finite (float32 outputs
    of saturating activations round onto the end). With ``clamp=True``
    inputs are instead clamped a few ulps inside the domain
    (``phi.clamp``), and points outside it raise no error.

    The update runs as one fused autograd node (see
    :func:`mmbilevel.nn.functional.bregman_step`). Inside an
    :class:`~mmbilevel.nn.FFNN`, a layer whose input comes from a Bregman
    layer of the same width, with an activation for which ρ⁻¹(ρ(u)) = u,
    takes that layer's pre-activation u as ρ⁻¹ of its input, which saves
    the evaluation of ρ⁻¹. Only the network input is checked.

    Args:
        skip: ``"fixed"`` (default, area resampling, not learned) or
            ``"learned"`` (row-wise softmax of a Parameter); used only when
            the widths differ.
        clamp: clamp inputs into the interior of dom φ instead of raising.
        The others: see :class:`FeedForwardLayer`.

    Shape:
        - Input: (*, in_features), inside dom φ.
        - Output: (*, out_features), inside dom φ.

    Example:
        >>> layer = BregmanLayer(3, 3, "sigmoid", init="deterministic")
        >>> z = torch.tensor([[0.2, 0.5, 0.9]])
        >>> torch.allclose(layer(z), z)
        True
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        activation: str | Legendre,
        bias: bool = True,
        *,
        skip: str = "fixed",
        clamp: bool = False,
        init: str = "random",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(
            in_features, out_features, activation, bias,
            skip=skip, init=init, device=device, dtype=dtype,
        )
        self.clamp = clamp

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.step(z)[0]

    def step(
        self, z: torch.Tensor, inverse: torch.Tensor | None = None, *, check: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Return z⁺ and, for activations with ρ⁻¹(ρ(u)) = u, the pre-activation u = ρ⁻¹(z⁺).

        ``inverse``, when given, must be ρ⁻¹(z). It is used only when
        in_features = out_features, in place of evaluating ρ⁻¹(z).
        ``check=False`` skips the domain check of z.
        """
        if inverse is not None and self.skip is None:
            pre_activation = inverse + self.affine(z)
            output = self.activation(pre_activation)
        else:
            skipped = self.skip_input(z)
            if self.clamp:
                skipped = self.phi.clamp(skipped)
            elif check:
                fused.check_domain(self.phi, z)
            output, pre_activation = fused.bregman_step(self.phi, skipped, self.affine(z))
        if not fused.inverts_activation(self.phi):
            return output, None
        return output, pre_activation

    def extra_repr(self) -> str:
        return super().extra_repr() + (", clamp=True" if self.clamp else "")


VARIANTS: Registry[type[FeedForwardLayer]] = Registry("layer variant")
VARIANTS.register("standard", StandardLayer)
VARIANTS.register("euclidean", EuclideanLayer)
VARIANTS.register("bregman", BregmanLayer)
