r"""Fast elementwise operations behind the layers: unchecked ρ, ρ⁻¹ and a fused Bregman step.

The checked methods of :class:`~mmbilevel.legendre.Legendre` test every
input for NaN or for membership in dom φ. Each test is an extra pass over
the tensor and a host synchronization, and it fails under ``torch.vmap``.
Inside a network most of these tests are redundant, because an activation
output lies in the closed domain by construction. This module gives the
layers unchecked versions and checks only where data enters a network:

- :func:`activation` evaluates ρ = ∇φ* without the NaN test.
- :func:`inverse_activation` evaluates ρ⁻¹ = ∇φ on the closed domain without
  the domain test. An input on a finite end of dom φ, where ρ⁻¹ is infinite,
  is first moved to the nearest representable point inside the domain.
  Saturated float32 activations round onto the end, and the move keeps ρ⁻¹,
  later outputs and gradients finite.
- :func:`check_domain` raises the ``ValueError`` of ``phi.grad`` for a
  point outside the closed domain, with one reduction over the tensor.
- :func:`bregman_step` is the Bregman layer update fused into one autograd
  node. Its backward pass follows from ρ'(u) = 1/φ''(ρ(u)) and (ρ⁻¹)' = φ''.
- :func:`inverts_activation` returns whether ρ⁻¹(ρ(u)) = u for every real u,
  which lets a network pass a layer's pre-activation to the next layer in
  place of ρ⁻¹ of its output.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from mmbilevel.legendre import Legendre
from mmbilevel.legendre.catalogue import (
    ISRU,
    Arcsinh,
    Arctan,
    Elliot,
    Euclidean,
    Log,
    ScaledArctan,
    Sigmoid,
    Sin,
    Softplus,
    Tanh,
)

__all__ = [
    "activation",
    "bregman_step",
    "bregman_update",
    "check_domain",
    "interior_bounds",
    "inverse_activation",
    "inverts_activation",
]

Tensor = torch.Tensor


_UNCHECKED_CACHE: dict[tuple[type, str], Callable[..., Tensor]] = {}


def _unchecked(phi: Legendre, method_name: str) -> Callable[..., Tensor]:
    """Return the subclass's own ``method_name`` without the input check added by the base class."""
    key = (type(phi), method_name)
    method = _UNCHECKED_CACHE.get(key)
    if method is None:
        method = getattr(type(phi), method_name)
        method = _UNCHECKED_CACHE[key] = getattr(method, "__wrapped__", method)
    return method


def activation(phi: Legendre, y: Tensor) -> Tensor:
    """Evaluate ρ(y) = ∇φ*(y) without checking ``y`` for NaN."""
    return _unchecked(phi, "grad_conjugate")(phi, y)


# --------------------------------------------------------------- the domain

_BOUNDS_CACHE: dict[tuple[Any, Any, torch.dtype], tuple[float | None, float | None]] = {}


def interior_bounds(phi: Legendre, dtype: torch.dtype) -> tuple[float | None, float | None]:
    """Return the nearest points of ``dtype`` strictly inside each finite end of dom φ.

    An infinite end gives None. The points are exact in ``dtype``, so
    ``torch.clamp`` with them moves only inputs on an end or beyond it, and
    next to an end at 0 the subnormal inputs too.
    For arctan in float32 the upper point is 1.5707962513, one ulp below
    float32(π/2) = 1.5707963705, which lies above π/2. Next to an end at 0
    the point is the smallest normal number of ``dtype``, not a subnormal
    one, so that φ'' there, of order 1/s for the sigmoid and SoftPlus,
    stays finite.
    """
    key = (*phi.domain, dtype)
    bounds = _BOUNDS_CACHE.get(key)
    if bounds is None:
        lower, upper = (float(end) for end in phi.domain)
        bounds = _BOUNDS_CACHE[key] = (_inner_point(lower, math.inf, dtype), _inner_point(upper, -math.inf, dtype))
    return bounds


def _inner_point(end: float, inward: float, dtype: torch.dtype) -> float | None:
    if not math.isfinite(end):
        return None
    if end == 0.0:
        return math.copysign(torch.finfo(dtype).tiny, inward)
    value = torch.tensor(end, dtype=dtype)
    outside = float(value) <= end if inward > 0 else float(value) >= end
    if outside:
        value = torch.nextafter(value, torch.tensor(inward, dtype=dtype))
    return float(value)


def _move_inside(phi: Legendre, x: Tensor) -> Tensor:
    lower, upper = interior_bounds(phi, x.dtype)
    if lower is None and upper is None:
        return x
    return torch.clamp(x, min=lower, max=upper)


def _is_vmapped(x: Tensor) -> bool:
    # NOTE: this is a private functorch query. Values of a tensor batched by
    # vmap cannot steer Python control flow, so the check is skipped there.
    return torch._C._functorch.is_batchedtensor(x)


def check_domain(phi: Legendre, x: Tensor) -> None:
    """Raise ``ValueError`` when ``x`` has NaN or a point outside the closed domain of φ.

    One ``aminmax`` reduction tests the whole tensor. The error is the one
    of ``phi.grad``, naming the function, its domain and a bad value.
    Inside ``torch.vmap`` the values cannot be tested and the check is
    skipped, so validate batched data before the transform.
    """
    if x.numel() == 0 or _is_vmapped(x):
        return
    smallest, largest = torch.aminmax(x.detach() if x.requires_grad else x)
    lower, upper = phi.domain
    # NaN fails both comparisons, so it takes the raising path too. That path
    # lets phi.grad decide, which compares in the dtype of x: float32(π/2) lies
    # above π/2 but is the end of the arctan domain in float32, and passes.
    if not (float(smallest) >= lower and float(largest) <= upper):
        phi.grad(x)


# ------------------------------------------------------------ closed forms

def _logit(phi: Legendre, x: Tensor) -> Tensor:
    return torch.logit(x)


def _atanh(phi: Legendre, x: Tensor) -> Tensor:
    return torch.atanh(x)


def _tan(phi: Legendre, x: Tensor) -> Tensor:
    return torch.tan(x)


# One-operation forms of ρ⁻¹ on the open domain, as accurate as the catalogue's
# own forms there (checked by the tests); other functions use their ``grad``.
_FAST_INVERSES: dict[type, Callable[[Legendre, Tensor], Tensor]] = {
    Sigmoid: _logit,
    Tanh: _atanh,
    Arctan: _tan,
}


def inverse_activation(phi: Legendre, x: Tensor) -> Tensor:
    """Evaluate ρ⁻¹(x) = ∇φ(x) for x in the closed domain, without checking it.

    Points on a finite end of dom φ, and beyond it, are first moved to the
    nearest representable interior point (see :func:`interior_bounds`), so
    the result is finite. The gradient of that move is zero at the moved
    points. Validate untrusted input with :func:`check_domain` first.
    """
    if type(phi) is Sin:
        # arcsin is finite on all of [−1, 1], so only rounding beyond ±1 needs clamping.
        return torch.asin(torch.clamp(x, -1.0, 1.0))
    inside = _move_inside(phi, x)
    fast = _FAST_INVERSES.get(type(phi))
    if fast is not None:
        return fast(phi, inside)
    return _unchecked(phi, "grad")(phi, inside)


# The catalogue functions whose activation ρ maps ℝ onto the interior of dom φ,
# so that ρ⁻¹(ρ(u)) = u. Sin is left out: ρ(u) = ±1 for |u| ≥ π/2.
_INVERTIBLE = (Euclidean, ISRU, Sigmoid, Softplus, Arctan, Tanh, Arcsinh, ScaledArctan, Elliot, Log)


def inverts_activation(phi: Legendre) -> bool:
    """Return whether ρ⁻¹(ρ(u)) = u for every real u, known for the catalogue functions except sin.

    Custom Legendre functions return False, because their ``essentially_smooth``
    attribute is not verified.
    """
    return type(phi) in _INVERTIBLE


# ---------------------------------------------------------- derivatives
#
# Each entry gives the activation slope ρ'(u) from u and y = ρ(u), and the
# inverse slope (ρ⁻¹)'(s) = φ''(s) from s and t = ρ⁻¹(s), where s lies
# strictly inside the domain (the fused step moves it there first, so that
# the slope is finite even where φ'' is infinite at an end). Since ρ = (∇φ)⁻¹,
# ρ'(u) = 1/φ''(ρ(u)); each form below is that quotient simplified, for
# example 1/φ''(arctan u) = 1/(1 + u²) for arctan. Written through u, y and t,
# the slopes stay finite where φ'' is infinite at a saturated output.

Slope = Callable[[Legendre, Tensor, Tensor], Tensor]


def _one(phi: Legendre, first: Tensor, second: Tensor) -> Tensor:
    return torch.ones_like(first)


def _isru_slope(phi: Any, u: Tensor, y: Tensor) -> Tensor:
    # λ/(1 + u²)^{3/2}, with hypot against overflow of u².
    reciprocal = 1.0 / torch.hypot(u, torch.ones_like(u))
    return phi.scale * reciprocal * reciprocal * reciprocal


def _isru_inverse_slope(phi: Any, s: Tensor, t: Tensor) -> Tensor:
    # λ²/(λ² − s²)^{3/2} = (1 + t²)^{3/2}/λ with t = s/√(λ² − s²).
    root = torch.hypot(t, torch.ones_like(t))
    return root * root * root / phi.scale


def _sigmoid_slope(phi: Legendre, u: Tensor, y: Tensor) -> Tensor:
    return y * (1.0 - y)


def _sigmoid_inverse_slope(phi: Legendre, s: Tensor, t: Tensor) -> Tensor:
    return 1.0 / (s * (1.0 - s))


def _softplus_slope(phi: Legendre, u: Tensor, y: Tensor) -> Tensor:
    return torch.sigmoid(u)


def _softplus_inverse_slope(phi: Legendre, s: Tensor, t: Tensor) -> Tensor:
    # 1/(1 − e⁻ˢ) = 1 + e⁻ᵗ with t = log(eˢ − 1).
    return 1.0 + torch.exp(-t)


def _arctan_slope(phi: Legendre, u: Tensor, y: Tensor) -> Tensor:
    return 1.0 / (1.0 + u * u)


def _arctan_inverse_slope(phi: Legendre, s: Tensor, t: Tensor) -> Tensor:
    return 1.0 + t * t


def _tanh_slope(phi: Legendre, u: Tensor, y: Tensor) -> Tensor:
    return (1.0 - y) * (1.0 + y)


def _tanh_inverse_slope(phi: Legendre, s: Tensor, t: Tensor) -> Tensor:
    return 1.0 / ((1.0 - s) * (1.0 + s))


def _sin_slope(phi: Legendre, u: Tensor, y: Tensor) -> Tensor:
    # ρ = sin on [−π/2, π/2] and constant beyond, where the slope is 0.
    return torch.where(u.abs() < math.pi / 2, torch.cos(u), torch.zeros_like(u))


def _sin_inverse_slope(phi: Legendre, s: Tensor, t: Tensor) -> Tensor:
    return 1.0 / torch.sqrt((1.0 - s) * (1.0 + s))


def _arcsinh_slope(phi: Legendre, u: Tensor, y: Tensor) -> Tensor:
    return 1.0 / torch.hypot(u, torch.ones_like(u))


def _arcsinh_inverse_slope(phi: Legendre, s: Tensor, t: Tensor) -> Tensor:
    return torch.cosh(s)


def _scaled_arctan_slope(phi: Legendre, u: Tensor, y: Tensor) -> Tensor:
    return (2.0 / math.pi) / (1.0 + u * u)


def _scaled_arctan_inverse_slope(phi: Legendre, s: Tensor, t: Tensor) -> Tensor:
    return (math.pi / 2) * (1.0 + t * t)


def _elliot_slope(phi: Legendre, u: Tensor, y: Tensor) -> Tensor:
    gap = 1.0 + u.abs()
    return 1.0 / (gap * gap)


def _elliot_inverse_slope(phi: Legendre, s: Tensor, t: Tensor) -> Tensor:
    # 1/(1 − |s|)² = (1 + |t|)² with t = s/(1 − |s|).
    gap = 1.0 + t.abs()
    return gap * gap


def _log_slope(phi: Legendre, u: Tensor, y: Tensor) -> Tensor:
    return 1.0 / (1.0 + u.abs())


def _log_inverse_slope(phi: Legendre, s: Tensor, t: Tensor) -> Tensor:
    # e^{|s|} = 1 + |t| with t = sign(s)(e^{|s|} − 1).
    return 1.0 + t.abs()


_SLOPES: dict[type, tuple[Slope, Slope]] = {
    Euclidean: (_one, _one),
    ISRU: (_isru_slope, _isru_inverse_slope),
    Sigmoid: (_sigmoid_slope, _sigmoid_inverse_slope),
    Softplus: (_softplus_slope, _softplus_inverse_slope),
    Arctan: (_arctan_slope, _arctan_inverse_slope),
    Tanh: (_tanh_slope, _tanh_inverse_slope),
    Sin: (_sin_slope, _sin_inverse_slope),
    Arcsinh: (_arcsinh_slope, _arcsinh_inverse_slope),
    ScaledArctan: (_scaled_arctan_slope, _scaled_arctan_inverse_slope),
    Elliot: (_elliot_slope, _elliot_inverse_slope),
    Log: (_log_slope, _log_inverse_slope),
}


def _generic_slope(phi: Legendre, u: Tensor, y: Tensor) -> Tensor:
    # ρ'(u) = 1/φ''(ρ(u)), with y moved inside the domain so that φ'' is finite.
    return 1.0 / _unchecked(phi, "hessian")(phi, _move_inside(phi, y))


def _generic_inverse_slope(phi: Legendre, s: Tensor, t: Tensor) -> Tensor:
    return _unchecked(phi, "hessian")(phi, s)


def _slopes(phi: Legendre) -> tuple[Slope, Slope]:
    return _SLOPES.get(type(phi), (_generic_slope, _generic_inverse_slope))


# ------------------------------------------------------------ fused step

class _BregmanStep(torch.autograd.Function):
    """u = ρ⁻¹(s) + a and y = ρ(u) as one autograd node.

    Backward: with ḡ = g_y·ρ'(u) + g_u, the gradients are g_a = ḡ and
    g_s = ḡ·(ρ⁻¹)'(s). The first backward uses the saved t = ρ⁻¹(s), u and y.
    When the graph of the backward pass is recorded (``create_graph=True``),
    t, u and y are recomputed from the saved inputs s and a, so that second
    derivatives are exact too.
    """

    @staticmethod
    def forward(ctx: Any, s: Tensor, a: Tensor, phi: Legendre) -> tuple[Tensor, Tensor]:
        t = inverse_activation(phi, s)
        u = t + a
        y = activation(phi, u)
        ctx.phi = phi
        # Unused outputs then get None as gradient instead of a tensor of zeros.
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(s, a, y, u, t)
        return y, u

    @staticmethod
    def backward(ctx: Any, grad_y: Tensor | None, grad_u: Tensor | None):
        s, a, y, u, t = ctx.saved_tensors
        phi = ctx.phi
        if torch.is_grad_enabled():
            t = inverse_activation(phi, s)
            u = t + a
            y = activation(phi, u)
        activation_slope, inverse_slope = _slopes(phi)

        total = None
        if grad_y is not None:
            total = grad_y * activation_slope(phi, u, y)
        if grad_u is not None:
            total = grad_u if total is None else total + grad_u
        if total is None:
            return None, None, None

        grad_s = None
        if ctx.needs_input_grad[0]:
            grad_s = total * inverse_slope(phi, _move_inside(phi, s), t)
        grad_a = total if ctx.needs_input_grad[1] else None
        return grad_s, grad_a, None


def _fuses(s: Tensor) -> bool:
    # The fused node saves work only when s needs a gradient. For an input
    # without one, autograd records just the add and ρ, which is cheaper.
    # NOTE: torch.func transforms (vmap, grad) need a custom Function with
    # setup_context, which costs more per call; they take the composed path.
    return s.requires_grad and torch.is_grad_enabled() and not torch._C._are_functorch_transforms_active()


def bregman_step(phi: Legendre, s: Tensor, a: Tensor) -> tuple[Tensor, Tensor]:
    r"""Return (y, u) with u = ρ⁻¹(s) + a and y = ρ(u), fused into one autograd node.

    This is the Bregman layer update of "Bilevel Learning of Deep
    Representations" (Definition 4.3) with s = S z the skip input and
    a = Wz + b. Both outputs are differentiable; a following layer with the
    same width may use u as ρ⁻¹(y) when :func:`inverts_activation` holds.

    ``s`` is not checked: points on a finite end of dom φ are moved to the
    nearest interior point, as in :func:`inverse_activation`. When ``s``
    requires a gradient, the fused node's backward pass evaluates
    (ρ⁻¹)'(s) at that interior point, so saturated inputs get finite
    gradients. Otherwise, and inside ``torch.func`` transforms, the update
    is recorded as separate autograd operations, with the same values.
    The shapes of ``s`` and ``a`` must be equal.
    """
    if _fuses(s):
        return _BregmanStep.apply(s, a, phi)
    pre_activation = inverse_activation(phi, s) + a
    return activation(phi, pre_activation), pre_activation


def bregman_update(phi: Legendre, s: Tensor, a: Tensor) -> Tensor:
    """Return ρ(ρ⁻¹(s) + a), the first output of :func:`bregman_step`."""
    return bregman_step(phi, s, a)[0]
