r"""Built-in Legendre functions and their registry.

Each class gives closed forms of φ, ∇φ = ρ⁻¹, φ'', ∇φ* = ρ and φ*, so that
the activation ρ is the Bregman projection onto the domain (Table 1 of
"Bilevel Learning of Deep Representations", Frecon, Salzo, Pontil, 2021).
The last three entries are activations that Combettes and Pesquet ("Deep
neural network structures solving variational inequalities", 2020) write as
proximity operators and that are Bregman projections too.

Corrections to the printed table, each checked symbolically and numerically
by the tests:

- ISRU with scale λ: φ(t) = −√(λ² − t²) on [−λ, λ], ρ⁻¹(t) = t/√(λ² − t²).
  The printed pair φ = −√(1 − t²), ρ⁻¹ = t/√(1 − t²) holds only for λ = 1.
- SoftPlus: φ(t) = t²/2 − π²/6 + Li₂(e⁻ᵗ) on [0, ∞). The printed
  t·log((eᵗ − 1)/(1 − e⁻ᵗ)) − Li₂(eᵗ) = t² − Li₂(eᵗ) is complex for t > 0.
- sin: φ(t) = √(1 − t²) + t·arcsin t is not essentially smooth (∇φ = arcsin
  is bounded by π/2), so the Bregman projection is ρ(y) = sin(y) only for
  |y| ≤ π/2 and ±1 beyond; the printed ρ = sin is not monotone on ℝ.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from mmbilevel.legendre.base import Legendre
from mmbilevel.legendre.special import (
    dilog_unit,
    expm1_minus,
    half_pi_minus,
    log_cos_half_pi_scaled,
    minus_log1p,
    minus_log1p_minus,
    tan_half_pi_scaled,
    xlog1p_minus,
)
from mmbilevel.registry import Registry

__all__ = [
    "REGISTRY",
    "Euclidean",
    "ISRU",
    "Sigmoid",
    "Softplus",
    "Arctan",
    "Tanh",
    "Sin",
    "Arcsinh",
    "ScaledArctan",
    "Elliot",
    "Log",
    "get",
    "available",
]

REGISTRY: Registry[type[Legendre]] = Registry("Legendre function")


def get(name: str, **kwargs: Any) -> Legendre:
    """Return a new instance of the catalogue function ``name`` (case-insensitive).

    Keyword arguments go to the constructor, for example ``get("isru", scale=2.0)``.

    Raises:
        ValueError: ``name`` is not in the catalogue; the message lists the valid names.
    """
    return REGISTRY.get(name)(**kwargs)


def available() -> list[str]:
    """Return the catalogue names in sorted order."""
    return REGISTRY.names()


class _KnownDerivative(torch.autograd.Function):
    """Evaluate ``value_fn(x)`` with the derivative ``derivative_fn(x)`` for autograd.

    Autograd through a formula such as x/√(1 − x²) gives inf − inf = NaN at
    an end of the domain, where the known derivative φ'' is +inf.
    """

    @staticmethod
    def forward(ctx, x, value_fn, derivative_fn):  # type: ignore[override]
        ctx.derivative_fn = derivative_fn
        ctx.save_for_backward(x)
        return value_fn(x)

    @staticmethod
    def backward(ctx, grad_output):  # type: ignore[override]
        (x,) = ctx.saved_tensors
        return grad_output * ctx.derivative_fn(x), None, None


def _with_derivative(value_fn, derivative_fn, x: torch.Tensor) -> torch.Tensor:
    """Return value_fn(x), differentiated by autograd as derivative_fn(x) (itself differentiable)."""
    if not (x.requires_grad and torch.is_grad_enabled()):
        return value_fn(x)
    return _KnownDerivative.apply(x, value_fn, derivative_fn)


def _positive_infinity_at_infinity(y: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """Return ``value`` with +inf where y = ±inf, the limit of φ* when ∇φ has range ℝ."""
    return torch.where(torch.isinf(y), torch.full_like(value, math.inf), value)


# y·arctan y − log √(1 + y²) = Σ_{k≥1} (−1)^{k+1} y^{2k} / (2k(2k − 1)), summed for |y| ≤ 1/2.
_ARCTAN_CONJUGATE_SERIES = [0.0] + [(-1.0) ** (k + 1) / (2 * k * (2 * k - 1)) for k in range(1, 31)]


def _arctan_conjugate(y: torch.Tensor) -> torch.Tensor:
    """Evaluate y·arctan y − log √(1 + y²), accurate relative to the result near 0 and +inf at ±inf."""
    small = y.abs() <= 0.5
    square = torch.where(small, y, torch.zeros_like(y)).square()
    series = torch.zeros_like(y)
    for coefficient in reversed(_ARCTAN_CONJUGATE_SERIES):
        series = series * square + coefficient
    large_y = torch.where(small, torch.ones_like(y), y)
    direct = large_y * torch.atan(large_y) - torch.log(torch.hypot(large_y, torch.ones_like(y)))
    return _positive_infinity_at_infinity(y, torch.where(small, series, direct))


def _abs_signed(fn_positive, t: torch.Tensor) -> torch.Tensor:
    """Evaluate the odd extension sign(t)·f(|t|) of f with f(0) = 0, with the right slope at 0.

    Writing it as a ``where`` of f(t) and −f(−t), each on a clamped argument,
    keeps autograd's derivative at 0 equal to f'(0) (sign(t)·f(|t|) would give 0).
    """
    positive = fn_positive(t.clamp_min(0.0))
    negative = -fn_positive((-t).clamp_min(0.0))
    return torch.where(t >= 0, positive, negative)


@REGISTRY.register("euclidean")
class Euclidean(Legendre):
    """φ(t) = t²/2 on ℝ: the identity activation ρ(y) = y."""

    name = "euclidean"
    strong_convexity = 1.0

    def value(self, x: torch.Tensor) -> torch.Tensor:
        return 0.5 * x * x

    def grad(self, x: torch.Tensor) -> torch.Tensor:
        return x.clone()

    def hessian(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ones_like(x)

    def grad_conjugate(self, y: torch.Tensor) -> torch.Tensor:
        return y.clone()

    def conjugate(self, y: torch.Tensor) -> torch.Tensor:
        return 0.5 * y * y


@REGISTRY.register("isru")
class ISRU(Legendre):
    """Inverse square root unit with scale λ > 0.

    φ(t) = −√(λ² − t²) on [−λ, λ], ∇φ(t) = t/√(λ² − t²),
    φ''(t) = λ²/(λ² − t²)^{3/2} ≥ 1/λ, ρ(y) = λ·y/√(1 + y²) and
    φ*(y) = λ·√(1 + y²).

    Args:
        scale: λ, the bound of the activation's range (−λ, λ).
    """

    name = "isru"

    def __init__(self, scale: float = 1.0) -> None:
        scale = float(scale)
        if not (scale > 0.0 and math.isfinite(scale)):
            raise ValueError(f"isru scale must be a positive finite number, got {scale}")
        self.scale = scale
        self.domain = (-scale, scale)
        self.strong_convexity = 1.0 / scale

    def _slack(self, x: torch.Tensor) -> torch.Tensor:
        # λ² − t² as a product, accurate near the ends.
        return (self.scale - x) * (self.scale + x)

    def value(self, x: torch.Tensor) -> torch.Tensor:
        return -torch.sqrt(self._slack(x))

    def grad(self, x: torch.Tensor) -> torch.Tensor:
        return _with_derivative(lambda t: t / torch.sqrt(self._slack(t)), self._second, x)

    def hessian(self, x: torch.Tensor) -> torch.Tensor:
        return self._second(x)

    def _second(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale**2 / self._slack(x) ** 1.5

    def grad_conjugate(self, y: torch.Tensor) -> torch.Tensor:
        # hypot avoids the overflow of 1 + y² for large |y|, and sign(y)/hypot(1, 1/y)
        # the inf/inf at y = ±inf.
        large = y.abs() > 1
        small_y = torch.where(large, torch.zeros_like(y), y)
        large_y = torch.where(large, y, torch.ones_like(y))
        small_value = small_y / torch.hypot(small_y, torch.ones_like(y))
        large_value = torch.sign(large_y) / torch.hypot(torch.ones_like(y), large_y.reciprocal())
        return self.scale * torch.where(large, large_value, small_value)

    def conjugate(self, y: torch.Tensor) -> torch.Tensor:
        return self.scale * torch.hypot(y, torch.ones_like(y))

    def extra_repr(self) -> str:
        return f"scale={self.scale:g}"


@REGISTRY.register("sigmoid")
class Sigmoid(Legendre):
    """Fermi–Dirac entropy φ(t) = t·log t + (1 − t)·log(1 − t) on [0, 1].

    ∇φ = logit, φ''(t) = 1/(t(1 − t)) ≥ 4, ρ = sigmoid, φ*(y) = log(1 + eʸ).
    """

    name = "sigmoid"
    domain = (0.0, 1.0)
    strong_convexity = 4.0

    def value(self, x: torch.Tensor) -> torch.Tensor:
        return torch.xlogy(x, x) + torch.special.xlog1py(1.0 - x, -x)

    def grad(self, x: torch.Tensor) -> torch.Tensor:
        return torch.log(x) - torch.log1p(-x)

    def hessian(self, x: torch.Tensor) -> torch.Tensor:
        return 1.0 / (x * (1.0 - x))

    def grad_conjugate(self, y: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(y)

    def conjugate(self, y: torch.Tensor) -> torch.Tensor:
        return torch.logaddexp(y, torch.zeros_like(y))


@REGISTRY.register("softplus")
class Softplus(Legendre):
    """SoftPlus: φ(t) = t²/2 − π²/6 + Li₂(e⁻ᵗ) on [0, ∞).

    ∇φ(t) = log(eᵗ − 1), φ''(t) = 1/(1 − e⁻ᵗ) ≥ 1, ρ(y) = log(1 + eʸ) and
    φ*(y) = −Li₂(−eʸ) = Li₂(σ(y)) + log(1 + eʸ)²/2 with σ the sigmoid
    (Landen's identity keeps the dilogarithm's argument in [0, 1]).
    φ(0) = 0 because Li₂(1) = π²/6.
    """

    name = "softplus"
    domain = (0.0, math.inf)
    strong_convexity = 1.0

    def value(self, x: torch.Tensor) -> torch.Tensor:
        # With a = 1 − e⁻ˣ, Euler's reflection gives φ(x) = x²/2 + x·log a − Li₂(a).
        # That form sums the series at a ≤ 1/2 for x ≤ log 2 and keeps φ's
        # relative accuracy near 0, where the other form cancels against π²/6.
        small = x <= math.log(2.0)
        a = -torch.expm1(-torch.where(small, x, torch.zeros_like(x)))
        near_zero = 0.5 * x * x + torch.xlogy(x, a) - dilog_unit(a, 1.0 - a, torch.log(a), torch.log1p(-a))
        w = torch.exp(-torch.where(small, torch.ones_like(x), x))
        far = 0.5 * x * x - math.pi**2 / 6.0 + dilog_unit(w, 1.0 - w, torch.log(w), torch.log1p(-w))
        return torch.where(small, near_zero, far)

    def grad(self, x: torch.Tensor) -> torch.Tensor:
        # log(eᵗ − 1) = t + log(1 − e⁻ᵗ), finite for large t and accurate near 0.
        return x + torch.log(-torch.expm1(-x))

    def hessian(self, x: torch.Tensor) -> torch.Tensor:
        return -1.0 / torch.expm1(-x)

    def grad_conjugate(self, y: torch.Tensor) -> torch.Tensor:
        return torch.logaddexp(y, torch.zeros_like(y))

    def conjugate(self, y: torch.Tensor) -> torch.Tensor:
        zeros = torch.zeros_like(y)
        softplus_pos = torch.logaddexp(y, zeros)
        softplus_neg = torch.logaddexp(-y, zeros)
        dilog = dilog_unit(torch.sigmoid(y), torch.sigmoid(-y), -softplus_neg, -softplus_pos)
        return dilog + 0.5 * softplus_pos * softplus_pos


@REGISTRY.register("arctan")
class Arctan(Legendre):
    """φ(t) = −log cos t on [−π/2, π/2].

    ∇φ = tan, φ'' = 1 + tan² ≥ 1, ρ = arctan, φ*(y) = y·arctan y − log √(1 + y²).
    """

    name = "arctan"
    domain = (-math.pi / 2, math.pi / 2)
    strong_convexity = 1.0

    def _end_gap(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        near_end = x.abs() > math.pi / 4
        gap = torch.where(near_end, half_pi_minus(x.abs()), torch.ones_like(x))
        return near_end, gap

    def value(self, x: torch.Tensor) -> torch.Tensor:
        near_end, gap = self._end_gap(x)
        centre = torch.where(near_end, torch.zeros_like(x), x)
        # −log cos x = −log(1 − sin²x)/2 keeps relative accuracy for small x.
        centre_value = -0.5 * torch.log1p(-torch.sin(centre) ** 2)
        return torch.where(near_end, -torch.log(torch.sin(gap)), centre_value)

    def _tan(self, x: torch.Tensor) -> torch.Tensor:
        # Near ±π/2, tan x = ±1/tan(π/2 − |x|) with π/2 − |x| carried to full precision.
        near_end, gap = self._end_gap(x)
        centre = torch.where(near_end, torch.zeros_like(x), x)
        return torch.where(near_end, torch.sign(x) / torch.tan(gap), torch.tan(centre))

    def _second(self, x: torch.Tensor) -> torch.Tensor:
        slope = self._tan(x)
        return 1.0 + slope * slope

    def grad(self, x: torch.Tensor) -> torch.Tensor:
        return _with_derivative(self._tan, self._second, x)

    def hessian(self, x: torch.Tensor) -> torch.Tensor:
        return self._second(x)

    def grad_conjugate(self, y: torch.Tensor) -> torch.Tensor:
        return torch.atan(y)

    def conjugate(self, y: torch.Tensor) -> torch.Tensor:
        return _arctan_conjugate(y)


@REGISTRY.register("tanh")
class Tanh(Legendre):
    """φ(t) = ((1 + t)·log(1 + t) + (1 − t)·log(1 − t))/2 on [−1, 1].

    This equals the printed t·artanh t + log(1 − t²)/2 and is finite at ±1
    (φ(±1) = log 2). ∇φ = artanh, φ''(t) = 1/(1 − t²) ≥ 1, ρ = tanh,
    φ*(y) = log cosh y.
    """

    name = "tanh"
    domain = (-1.0, 1.0)
    strong_convexity = 1.0

    def value(self, x: torch.Tensor) -> torch.Tensor:
        # ((1 + x)·log(1 + x) − x) + ((1 − x)·log(1 − x) + x), each accurate near 0.
        return 0.5 * (xlog1p_minus(x) + xlog1p_minus(-x))

    def grad(self, x: torch.Tensor) -> torch.Tensor:
        return 0.5 * (torch.log1p(x) - torch.log1p(-x))

    def hessian(self, x: torch.Tensor) -> torch.Tensor:
        return 1.0 / ((1.0 - x) * (1.0 + x))

    def grad_conjugate(self, y: torch.Tensor) -> torch.Tensor:
        return torch.tanh(y)

    def conjugate(self, y: torch.Tensor) -> torch.Tensor:
        # log cosh y = |y| + log(1 + e^{−2|y|}) − log 2, without overflow; for
        # |y| ≤ 1, log cosh y = log(1 + 2 sinh²(y/2)) avoids the cancellation.
        magnitude = y.abs()
        small = magnitude <= 1
        small_y = torch.where(small, magnitude, torch.zeros_like(y))
        small_value = torch.log1p(2.0 * torch.sinh(0.5 * small_y).square())
        large_value = magnitude + torch.log1p(torch.exp(-2.0 * magnitude)) - math.log(2.0)
        return torch.where(small, small_value, large_value)


@REGISTRY.register("sin")
class Sin(Legendre):
    """φ(t) = √(1 − t²) + t·arcsin t on [−1, 1], which is not essentially smooth.

    ∇φ = arcsin maps [−1, 1] onto [−π/2, π/2] only, so the Bregman projection
    argmin_{|x| ≤ 1} φ(x) − x·y is ρ(y) = sin(y) for |y| ≤ π/2 and sign(y)
    beyond, and φ*(y) = −cos y for |y| ≤ π/2 and |y| − π/2 beyond.
    φ''(t) = 1/√(1 − t²) ≥ 1.
    """

    name = "sin"
    domain = (-1.0, 1.0)
    strong_convexity = 1.0
    essentially_smooth = False

    def value(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sqrt((1.0 - x) * (1.0 + x)) + x * torch.asin(x)

    def grad(self, x: torch.Tensor) -> torch.Tensor:
        return torch.asin(x)

    def hessian(self, x: torch.Tensor) -> torch.Tensor:
        return 1.0 / torch.sqrt((1.0 - x) * (1.0 + x))

    def grad_conjugate(self, y: torch.Tensor) -> torch.Tensor:
        return torch.sin(y.clamp(-math.pi / 2, math.pi / 2))

    def conjugate(self, y: torch.Tensor) -> torch.Tensor:
        inside = y.abs() <= math.pi / 2
        return torch.where(inside, -torch.cos(y), y.abs() - math.pi / 2)


@REGISTRY.register("arcsinh")
class Arcsinh(Legendre):
    """φ = cosh on ℝ: ∇φ = sinh, φ'' = cosh ≥ 1, ρ = arsinh, φ*(y) = y·arsinh y − √(1 + y²)."""

    name = "arcsinh"
    strong_convexity = 1.0

    def value(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cosh(x)

    def grad(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sinh(x)

    def hessian(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cosh(x)

    def grad_conjugate(self, y: torch.Tensor) -> torch.Tensor:
        return torch.asinh(y)

    def conjugate(self, y: torch.Tensor) -> torch.Tensor:
        return _positive_infinity_at_infinity(y, y * torch.asinh(y) - torch.hypot(y, torch.ones_like(y)))


@REGISTRY.register("scaled_arctan")
class ScaledArctan(Legendre):
    """φ(t) = −(2/π)·log cos(πt/2) on [−1, 1]: the activation ρ(y) = (2/π)·arctan y.

    ∇φ(t) = tan(πt/2), φ''(t) = (π/2)(1 + tan²(πt/2)) ≥ π/2 and
    φ*(y) = (2/π)(y·arctan y − log √(1 + y²)).
    """

    name = "scaled_arctan"
    domain = (-1.0, 1.0)
    strong_convexity = math.pi / 2

    def value(self, x: torch.Tensor) -> torch.Tensor:
        return (2.0 / math.pi) * log_cos_half_pi_scaled(x)

    def grad(self, x: torch.Tensor) -> torch.Tensor:
        return tan_half_pi_scaled(x)

    def hessian(self, x: torch.Tensor) -> torch.Tensor:
        slope = tan_half_pi_scaled(x)
        return (math.pi / 2) * (1.0 + slope * slope)

    def grad_conjugate(self, y: torch.Tensor) -> torch.Tensor:
        return (2.0 / math.pi) * torch.atan(y)

    def conjugate(self, y: torch.Tensor) -> torch.Tensor:
        return (2.0 / math.pi) * _arctan_conjugate(y)


@REGISTRY.register("elliot")
class Elliot(Legendre):
    """φ(t) = −|t| − log(1 − |t|) on [−1, 1]: the Elliot activation ρ(y) = y/(1 + |y|).

    ∇φ(t) = t/(1 − |t|), φ''(t) = 1/(1 − |t|)² ≥ 1, φ*(y) = |y| − log(1 + |y|).
    """

    name = "elliot"
    domain = (-1.0, 1.0)
    strong_convexity = 1.0

    def value(self, x: torch.Tensor) -> torch.Tensor:
        return minus_log1p_minus(x.abs())

    def grad(self, x: torch.Tensor) -> torch.Tensor:
        return x / (1.0 - x.abs())

    def hessian(self, x: torch.Tensor) -> torch.Tensor:
        return 1.0 / (1.0 - x.abs()) ** 2

    def grad_conjugate(self, y: torch.Tensor) -> torch.Tensor:
        # sign(y)/(1/|y| + 1) for |y| > 1 gives ±1 at y = ±inf instead of inf/inf.
        large = y.abs() > 1
        small_y = torch.where(large, torch.zeros_like(y), y)
        large_y = torch.where(large, y, torch.ones_like(y))
        large_value = torch.sign(large_y) / (large_y.abs().reciprocal() + 1.0)
        return torch.where(large, large_value, small_y / (1.0 + small_y.abs()))

    def conjugate(self, y: torch.Tensor) -> torch.Tensor:
        return _positive_infinity_at_infinity(y, minus_log1p(y.abs()))


@REGISTRY.register("log")
class Log(Legendre):
    """φ(t) = e^{|t|} − 1 − |t| on ℝ: the activation ρ(y) = sign(y)·log(1 + |y|).

    ∇φ(t) = sign(t)(e^{|t|} − 1), φ''(t) = e^{|t|} ≥ 1 and
    φ*(y) = (1 + |y|)·log(1 + |y|) − |y|.
    """

    name = "log"
    strong_convexity = 1.0

    def value(self, x: torch.Tensor) -> torch.Tensor:
        return expm1_minus(x.abs())

    def grad(self, x: torch.Tensor) -> torch.Tensor:
        return _abs_signed(torch.expm1, x)

    def hessian(self, x: torch.Tensor) -> torch.Tensor:
        return torch.exp(x.abs())

    def grad_conjugate(self, y: torch.Tensor) -> torch.Tensor:
        return _abs_signed(torch.log1p, y)

    def conjugate(self, y: torch.Tensor) -> torch.Tensor:
        return _positive_infinity_at_infinity(y, xlog1p_minus(y.abs()))
