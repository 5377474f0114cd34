"""Separable regularizers g and their Euclidean proximity operators.

Every regularizer is separable, g(z) = Σⱼ g̃(zⱼ), so its value is summed over
the last (feature) dimension and its prox acts elementwise:

    prox_{τg}(v) = argmin_u τ g(u) + ½‖u − v‖².

Besides the Euclidean prox, each regularizer describes itself to the Bregman
prox of :mod:`mmbilevel.prox.bregman` through three pieces of data: the
interval [lower, upper] that is its domain, the weight λ of an ℓ1 term λ|u|,
and the first and second derivatives of the remaining part, which must be
smooth on the open domain. A custom regularizer that gives these gets a
Bregman prox from the scalar solver without further code.

Examples 3.1 and 3.2 of "Bilevel Learning of Deep Representations" (Frecon,
Salzo, Pontil, 2021) call their functions nonconvex. Both are convex: on
]−1, 1[ the second derivatives are (1 − u²)^(−3/2) − 1 ≥ 0 (ISRU) and
(π/2)·sec²(πu/2) − 1 ≥ π/2 − 1 > 0 (arctan). ``is_convex`` is True for both.
"""

from __future__ import annotations

import logging
import math
from abc import ABC, abstractmethod

import torch
from torch import Tensor

from mmbilevel.legendre.special import log_cos_half_pi_scaled, tan_half_pi_scaled

__all__ = [
    "Regularizer",
    "Zero",
    "Indicator",
    "NonNegative",
    "L1",
    "SquaredL2",
    "ElasticNet",
    "ISRUPenalty",
    "ArctanPenalty",
    "check_step",
]

logger = logging.getLogger(__name__)


def check_step(tau: float | Tensor, like: Tensor) -> Tensor:
    """Validate a step τ > 0 and return it as a tensor on the dtype and device of ``like``.

    Args:
        tau: a float or a tensor broadcastable against ``like``.
        like: the point the step applies to.

    Raises:
        ValueError: when τ is not finite and positive everywhere, or does not
            broadcast against ``like``.
    """
    step = torch.as_tensor(tau, dtype=like.dtype, device=like.device)
    try:
        torch.broadcast_shapes(step.shape, like.shape)
    except RuntimeError as error:
        raise ValueError(
            f"step tau of shape {tuple(step.shape)} does not broadcast against a point of "
            f"shape {tuple(like.shape)}; pass a float or a tensor of a broadcastable shape"
        ) from error
    if not bool(torch.all(torch.isfinite(step) & (step > 0))):
        raise ValueError(
            f"step tau must be finite and > 0, got {tau!r}; pass a positive step size"
        )
    return step


def _as_float_tensor(v: Tensor) -> Tensor:
    """Return ``v`` as a tensor, with integer and boolean entries converted to the default float dtype."""
    tensor = torch.as_tensor(v)
    if not tensor.is_floating_point():
        tensor = tensor.to(torch.get_default_dtype())
    return tensor


def _check_weight(name: str, weight: float) -> float:
    if not (math.isfinite(weight) and weight >= 0):
        raise ValueError(f"{name} must be finite and >= 0, got {weight!r}; pass a non-negative weight")
    return float(weight)


class _RaiseOnBackward(torch.autograd.Function):
    """Pass a first derivative through and raise if it is differentiated again."""

    @staticmethod
    def forward(ctx, grad, anchor, message):  # type: ignore[override]
        ctx.message = message
        return grad.clone()

    @staticmethod
    def backward(ctx, grad_output):  # type: ignore[override]
        raise RuntimeError(ctx.message)


class _FirstOrderOnly(torch.autograd.Function):
    """Identity whose gradient raises when differentiated (no second derivatives)."""

    @staticmethod
    def forward(ctx, value, message):  # type: ignore[override]
        ctx.message = message
        ctx.save_for_backward(value)
        return value.clone()

    @staticmethod
    def backward(ctx, grad_output):  # type: ignore[override]
        if torch.is_grad_enabled():
            # Under create_graph the gradient must depend on the input, so that
            # differentiating it reaches this node and raises.
            (value,) = ctx.saved_tensors
            grad_output = _RaiseOnBackward.apply(grad_output, value, ctx.message)
        return grad_output, None


def _first_order_only(value: Tensor, description: str) -> Tensor:
    """Return ``value`` unchanged, with a gradient that raises when differentiated again.

    The solver-based prox attaches only first derivatives (one Newton step at
    a detached root). A double backward through it would silently miss the
    second-order terms, so it raises a RuntimeError naming ``description`` instead.
    """
    if not value.requires_grad:
        return value
    message = (
        f"{description} is differentiable once only: its derivative comes from one Newton step at the "
        "solver's root, so second derivatives are not available; use a closed-form prox (for "
        "instance τ = 1 for ISRUPenalty and ArctanPenalty) or finite differences"
    )
    return _FirstOrderOnly.apply(value, message)


def _soft_threshold(v: Tensor, threshold: Tensor | float) -> Tensor:
    return torch.sign(v) * torch.clamp(v.abs() - threshold, min=0)


class Regularizer(ABC):
    """Base class of separable regularizers g(z) = Σⱼ g̃(zⱼ).

    Subclasses implement :meth:`elementwise` (g̃ applied to each entry, +∞
    outside the domain) and :meth:`_prox` (the Euclidean prox for a validated
    step). To get a Bregman prox from the scalar solver, a subclass also sets
    ``l1_weight`` and ``domain`` (or overrides :meth:`bounds`) and implements
    :meth:`smooth_derivative` and :meth:`smooth_second_derivative` for the part
    of g̃ other than λ|u|.
    """

    #: whether g is convex; the Bregman prox solver requires it.
    is_convex: bool = True
    #: weight λ of the non-smooth term λ|u| of g̃ (0 when there is none).
    l1_weight: float = 0.0
    #: interval outside which g̃ = +∞, as floats (±inf allowed).
    domain: tuple[float, float] = (-math.inf, math.inf)

    def __call__(self, z: Tensor) -> Tensor:
        """Evaluate g(z), summed over the last dimension: shape ``z.shape[:-1]``."""
        return self.elementwise(z).sum(dim=-1)

    @abstractmethod
    def elementwise(self, z: Tensor) -> Tensor:
        """Evaluate g̃ at every entry of ``z`` (+∞ outside the domain)."""

    def prox(self, v: Tensor, tau: float | Tensor = 1.0) -> Tensor:
        """Compute the Euclidean prox argmin_u τ g(u) + ½‖u − v‖², elementwise.

        Args:
            v: point of any shape; integer entries are converted to the
                default float dtype.
            tau: step τ > 0, a float or a tensor broadcastable against ``v``.

        Raises:
            ValueError: when τ ≤ 0 or does not broadcast against ``v``.
        """
        v = _as_float_tensor(v)
        return self._prox(v, check_step(tau, v))

    @abstractmethod
    def _prox(self, v: Tensor, tau: Tensor) -> Tensor:
        """Compute the Euclidean prox for a validated step."""

    def has_closed_form_prox(self, tau: Tensor) -> bool:
        """Return whether :meth:`prox` at step ``tau`` is a closed form (not a solver)."""
        return True

    def bounds(self, like: Tensor) -> tuple[Tensor, Tensor]:
        """Return the domain ends as tensors broadcast to the shape of ``like``."""
        lower = torch.full_like(like, self.domain[0])
        upper = torch.full_like(like, self.domain[1])
        return lower, upper

    def smooth_derivative(self, u: Tensor) -> Tensor:
        """Differentiate the smooth part of g̃ (g̃ without λ|u|) on the open domain."""
        raise NotImplementedError(
            f"{type(self).__name__} gives no smooth_derivative, so its Bregman prox has no "
            "solver; implement smooth_derivative and smooth_second_derivative"
        )

    def smooth_second_derivative(self, u: Tensor) -> Tensor:
        """Differentiate the smooth part of g̃ twice on the open domain."""
        raise NotImplementedError(
            f"{type(self).__name__} gives no smooth_second_derivative, so its Bregman prox "
            "has no solver; implement smooth_derivative and smooth_second_derivative"
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Zero(Regularizer):
    """The zero function g = 0, whose prox is the identity."""

    def elementwise(self, z: Tensor) -> Tensor:
        return torch.zeros_like(z)

    def _prox(self, v: Tensor, tau: Tensor) -> Tensor:
        return v.clone()

    def smooth_derivative(self, u: Tensor) -> Tensor:
        return torch.zeros_like(u)

    def smooth_second_derivative(self, u: Tensor) -> Tensor:
        return torch.zeros_like(u)


class Indicator(Regularizer):
    """Indicator of the box [lower, upper]: 0 inside, +∞ outside.

    The prox is the projection clip(v, lower, upper), whatever τ.

    Args:
        lower: lower bounds, a float or a tensor broadcastable against the
            points (−inf allowed).
        upper: upper bounds, same rules (+inf allowed).

    Raises:
        ValueError: when some lower bound exceeds its upper bound, a bound is
            NaN, or the bounds do not broadcast against each other.
    """

    def __init__(self, lower: float | Tensor = 0.0, upper: float | Tensor = 1.0) -> None:
        lower_t = torch.as_tensor(lower, dtype=torch.float64)
        upper_t = torch.as_tensor(upper, dtype=torch.float64)
        try:
            torch.broadcast_shapes(lower_t.shape, upper_t.shape)
        except RuntimeError as error:
            raise ValueError(
                f"bounds of shapes {tuple(lower_t.shape)} and {tuple(upper_t.shape)} do not "
                "broadcast; pass bounds of broadcastable shapes"
            ) from error
        if bool(torch.any(torch.isnan(lower_t))) or bool(torch.any(torch.isnan(upper_t))):
            raise ValueError(f"bounds must not be NaN, got lower={lower!r}, upper={upper!r}")
        if bool(torch.any(lower_t > upper_t)):
            raise ValueError(
                f"lower bound must be <= upper bound, got lower={lower!r}, upper={upper!r}; "
                "swap or fix the bounds"
            )
        self.lower = lower
        self.upper = upper
        if not torch.is_tensor(lower) and not torch.is_tensor(upper):
            self.domain = (float(lower), float(upper))

    def bounds(self, like: Tensor) -> tuple[Tensor, Tensor]:
        lower = torch.as_tensor(self.lower, dtype=like.dtype, device=like.device)
        upper = torch.as_tensor(self.upper, dtype=like.dtype, device=like.device)
        try:
            shape = torch.broadcast_shapes(lower.shape, upper.shape, like.shape)
        except RuntimeError as error:
            raise ValueError(
                f"bounds of shapes {tuple(lower.shape)} and {tuple(upper.shape)} do not broadcast "
                f"against a point of shape {tuple(like.shape)}; pass bounds of matching shape"
            ) from error
        if shape != like.shape:
            raise ValueError(
                f"bounds broadcast to shape {tuple(shape)}, larger than the point shape "
                f"{tuple(like.shape)}; pass bounds that fit the point"
            )
        return lower.expand_as(like), upper.expand_as(like)

    def elementwise(self, z: Tensor) -> Tensor:
        lower, upper = self.bounds(z)
        inside = (z >= lower) & (z <= upper)
        return torch.where(inside, torch.zeros_like(z), torch.full_like(z, math.inf))

    def _prox(self, v: Tensor, tau: Tensor) -> Tensor:
        lower, upper = self.bounds(v)
        return torch.minimum(torch.maximum(v, lower), upper)

    def smooth_derivative(self, u: Tensor) -> Tensor:
        return torch.zeros_like(u)

    def smooth_second_derivative(self, u: Tensor) -> Tensor:
        return torch.zeros_like(u)

    def __repr__(self) -> str:
        return f"Indicator(lower={self.lower!r}, upper={self.upper!r})"


class NonNegative(Indicator):
    """Indicator of the non-negative orthant; its prox is max(v, 0), the ReLU."""

    def __init__(self) -> None:
        super().__init__(0.0, math.inf)

    def __repr__(self) -> str:
        return "NonNegative()"


class L1(Regularizer):
    """Weighted ℓ1 norm g(z) = w Σⱼ |zⱼ|, whose prox is soft thresholding at τw."""

    def __init__(self, weight: float = 1.0) -> None:
        self.weight = _check_weight("weight", weight)
        self.l1_weight = self.weight

    def elementwise(self, z: Tensor) -> Tensor:
        return self.weight * z.abs()

    def _prox(self, v: Tensor, tau: Tensor) -> Tensor:
        return _soft_threshold(v, tau * self.weight)

    def smooth_derivative(self, u: Tensor) -> Tensor:
        return torch.zeros_like(u)

    def smooth_second_derivative(self, u: Tensor) -> Tensor:
        return torch.zeros_like(u)

    def __repr__(self) -> str:
        return f"L1(weight={self.weight})"


class SquaredL2(Regularizer):
    """Squared norm g(z) = (w/2)‖z‖², whose prox is v / (1 + τw)."""

    def __init__(self, weight: float = 1.0) -> None:
        self.weight = _check_weight("weight", weight)

    def elementwise(self, z: Tensor) -> Tensor:
        return 0.5 * self.weight * z.square()

    def _prox(self, v: Tensor, tau: Tensor) -> Tensor:
        return v / (1 + tau * self.weight)

    def smooth_derivative(self, u: Tensor) -> Tensor:
        return self.weight * u

    def smooth_second_derivative(self, u: Tensor) -> Tensor:
        return torch.full_like(u, self.weight)

    def __repr__(self) -> str:
        return f"SquaredL2(weight={self.weight})"


class ElasticNet(Regularizer):
    """Elastic net g(z) = λ₁‖z‖₁ + (λ₂/2)‖z‖², whose prox is soft(v, τλ₁) / (1 + τλ₂)."""

    def __init__(self, l1: float = 1.0, l2: float = 1.0) -> None:
        self.l1 = _check_weight("l1", l1)
        self.l2 = _check_weight("l2", l2)
        self.l1_weight = self.l1

    def elementwise(self, z: Tensor) -> Tensor:
        return self.l1 * z.abs() + 0.5 * self.l2 * z.square()

    def _prox(self, v: Tensor, tau: Tensor) -> Tensor:
        return _soft_threshold(v, tau * self.l1) / (1 + tau * self.l2)

    def smooth_derivative(self, u: Tensor) -> Tensor:
        return self.l2 * u

    def smooth_second_derivative(self, u: Tensor) -> Tensor:
        return torch.full_like(u, self.l2)

    def __repr__(self) -> str:
        return f"ElasticNet(l1={self.l1}, l2={self.l2})"


class _ActivationPenalty(Regularizer):
    """Penalty on [−1, 1] whose Euclidean prox at τ = 1 is a known activation.

    For τ ≠ 1 the prox solves u + τ g̃′(u) = v, whose left side is increasing
    with slope ≥ 1 because g̃ is convex, by the batched scalar solver; the
    solution is differentiable once, through one Newton step at the root
    (a second derivative raises a RuntimeError).
    """

    domain = (-1.0, 1.0)

    def has_closed_form_prox(self, tau: Tensor) -> bool:
        return bool(torch.all(tau == 1))

    def _prox(self, v: Tensor, tau: Tensor) -> Tensor:
        if self.has_closed_form_prox(tau):
            return self.activation(v)
        return self._solve_prox(v, tau)

    @abstractmethod
    def activation(self, v: Tensor) -> Tensor:
        """Evaluate the activation ρ = prox_g (the prox at τ = 1)."""

    def _solve_prox(self, v: Tensor, tau: Tensor) -> Tensor:
        from mmbilevel.rootfind import solve_increasing

        tau = tau.expand_as(v) if tau.shape != v.shape else tau
        tau_fixed = tau.detach()

        def equation(u: Tensor) -> Tensor:
            return u + tau_fixed * self.smooth_derivative(u)

        def equation_grad(u: Tensor) -> Tensor:
            return 1 + tau_fixed * self.smooth_second_derivative(u)

        # The root is interior because g̃′ → ±∞ at ±1.
        result = solve_increasing(
            equation,
            v.detach(),
            torch.full_like(v, -1.0),
            torch.full_like(v, 1.0),
            fn_grad=equation_grad,
        )
        if not result.converged:
            logger.warning(
                "%s prox with step %s did not converge: residual %.3g after %d iterations",
                type(self).__name__, tau_fixed.max().item(), result.residual, result.iterations,
            )
        # Keep the root inside dom g = [−1, 1], whatever rounding did to it.
        root = result.root.detach().clamp(-1.0, 1.0)
        if not (v.requires_grad or tau.requires_grad):
            return root
        # A Newton step at the root whose value part cancels exactly gives
        # autograd du/dv = 1 / (1 + τ g̃″(u)) and du/dτ = −g̃′(u) / (1 + τ g̃″(u)).
        # At u = ±1 (or where g̃″ overflows) the derivative is 0.
        interior = root.abs() < 1
        safe = torch.where(interior, root, torch.zeros_like(root))
        slope = 1 + tau_fixed * self.smooth_second_derivative(safe)
        interior = interior & torch.isfinite(slope)
        slope = torch.where(interior, slope, torch.ones_like(slope))
        residual = safe + tau * self.smooth_derivative(safe) - v
        step = (residual - residual.detach()) / slope
        value = root - torch.where(interior, step, torch.zeros_like(step))
        return _first_order_only(value, f"the {type(self).__name__} prox with a step τ ≠ 1")


class ISRUPenalty(_ActivationPenalty):
    """Penalty of Example 3.1 (ISRU) in "Bilevel Learning of Deep Representations".

    g̃(u) = −u²/2 − √(1 − u²) on [−1, 1], +∞ outside. Its Euclidean prox at
    τ = 1 is the ISRU activation v / √(1 + v²), from u + g̃′(u) = u/√(1 − u²) = v.
    Other steps go through the scalar solver (see the base class). g̃ is convex.
    """

    def elementwise(self, z: Tensor) -> Tensor:
        inside = z.abs() <= 1
        safe = torch.where(inside, z, torch.zeros_like(z))
        value = -0.5 * safe.square() - torch.sqrt(torch.clamp(1 - safe.square(), min=0))
        return torch.where(inside, value, torch.full_like(z, math.inf))

    def activation(self, v: Tensor) -> Tensor:
        # v / √(1 + v²) overflows in v² for large |v|; there use sign(v) / √(1 + 1/v²).
        large = v.abs() > 1
        small_v = torch.where(large, torch.zeros_like(v), v)
        large_v = torch.where(large, v, torch.ones_like(v))
        small_value = small_v * torch.rsqrt(1 + small_v.square())
        large_value = torch.sign(large_v) * torch.rsqrt(1 + large_v.reciprocal().square())
        return torch.where(large, large_value, small_value)

    def smooth_derivative(self, u: Tensor) -> Tensor:
        return u * torch.rsqrt(1 - u.square()) - u

    def smooth_second_derivative(self, u: Tensor) -> Tensor:
        return torch.pow(1 - u.square(), -1.5) - 1


class ArctanPenalty(_ActivationPenalty):
    """Penalty of Example 3.2 (arctan) in "Bilevel Learning of Deep Representations".

    g̃(u) = −(2/π) log cos(πu/2) − u²/2 on ]−1, 1[, +∞ outside. Its Euclidean
    prox at τ = 1 is (2/π) arctan(v), from u + g̃′(u) = tan(πu/2) = v. Other
    steps go through the scalar solver (see the base class). g̃ is convex.
    """

    def elementwise(self, z: Tensor) -> Tensor:
        inside = z.abs() < 1
        safe = torch.where(inside, z, torch.zeros_like(z))
        value = (2 / math.pi) * log_cos_half_pi_scaled(safe) - 0.5 * safe.square()
        return torch.where(inside, value, torch.full_like(z, math.inf))

    def activation(self, v: Tensor) -> Tensor:
        return (2 / math.pi) * torch.atan(v)

    # tan(πu/2) via `tan_half_pi_scaled`: plain torch.tan of the rounded
    # product πu/2 changes sign one ulp before u = ±1 in float32.
    def smooth_derivative(self, u: Tensor) -> Tensor:
        return tan_half_pi_scaled(u) - u

    def smooth_second_derivative(self, u: Tensor) -> Tensor:
        return 0.5 * math.pi * (1 + tan_half_pi_scaled(u).square()) - 1
