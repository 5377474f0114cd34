"""Bregman proximity operator of a separable regularizer.

For a separable Legendre function φ and a separable regularizer g, the Bregman
prox of "Bilevel Learning of Deep Representations" (Frecon, Salzo, Pontil,
2021, equation (16)) acts coordinatewise:

    prox^φ_{τg}(v) = argmin_u τ g(u) + φ(u) − ⟨u, v⟩.

Closed forms, each the minimizer of a strictly convex function of one
variable on the closed interval I = dom φ ∩ dom g:

- g = 0: u = ∇φ*(v), the Bregman projection onto dom φ.
- g = indicator of [a, b]: u = clip(∇φ*(v), max(a, inf dom φ), min(b, sup dom φ)).
  The function u ↦ φ(u) − uv is strictly convex, so on an interval its
  minimizer is the unconstrained minimizer ∇φ*(v) projected onto the interval.
- g = w|u|: the optimality condition v − φ′(u) ∈ τw ∂|u| gives u = 0 when
  |v − φ′(0)| ≤ τw and u = ∇φ*(v ∓ τw) otherwise, that is
  u = ∇φ*(φ′(0) + soft(v − φ′(0), τw)) when 0 is inside dom φ. When dom φ
  lies in [0, ∞), |u| = u there and u = ∇φ*(v − τw); when it lies in
  (−∞, 0], u = ∇φ*(v + τw).
- φ = ½u² (the Euclidean function): u = prox_{τg}(v), the Euclidean prox.

Every other convex g goes through the batched safeguarded scalar solver
:func:`mmbilevel.rootfind.solve_increasing` on φ′(u) + τ s′(u) = v ∓ τλ, where
s is the smooth part of g̃ and λ the weight of its ℓ1 part. The result reports
whether it converged and to which residual. A warning is logged when it did
not converge.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from mmbilevel.prox.regularizers import (
    L1,
    Indicator,
    Regularizer,
    Zero,
    _as_float_tensor,
    _first_order_only,
    check_step,
)
from mmbilevel.rootfind import solve_increasing

if TYPE_CHECKING:
    from mmbilevel.legendre import Legendre

__all__ = ["BregmanProxResult", "bregman_prox"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BregmanProxResult:
    """Result of :func:`bregman_prox`.

    Attributes:
        value: the prox, same shape as the input point.
        closed_form: whether a closed form gave the value (else the scalar solver).
        converged: whether the value is exact (closed form) or the solver met
            its tolerance.
        iterations: solver iterations (0 for a closed form).
        residual: maximum violation of the optimality condition (0.0 for a
            closed form).
    """

    value: Tensor
    closed_form: bool
    converged: bool
    iterations: int
    residual: float


def _closed(value: Tensor) -> BregmanProxResult:
    return BregmanProxResult(value=value, closed_form=True, converged=True, iterations=0, residual=0.0)


def _domain_bounds(phi: Legendre, like: Tensor) -> tuple[Tensor, Tensor]:
    lower = torch.full_like(like, float(phi.domain[0]))
    upper = torch.full_like(like, float(phi.domain[1]))
    return lower, upper


def _feasible_bounds(phi: Legendre, g: Regularizer, like: Tensor) -> tuple[Tensor, Tensor]:
    """Return I = dom φ ∩ dom g per coordinate, raising when it is empty."""
    phi_lower, phi_upper = _domain_bounds(phi, like)
    g_lower, g_upper = g.bounds(like)
    lower = torch.maximum(phi_lower, g_lower)
    upper = torch.minimum(phi_upper, g_upper)
    if bool(torch.any(lower > upper)):
        raise ValueError(
            f"the domain {phi.domain} of the Legendre function {phi.name!r} does not meet the "
            f"domain of {g!r}; pick a regularizer whose domain intersects dom φ"
        )
    return lower, upper


def _is_euclidean(phi: Legendre) -> bool:
    return getattr(phi, "name", "") == "euclidean" and tuple(phi.domain) == (-math.inf, math.inf)


def _l1_closed_form(phi: Legendre, weight: float, v: Tensor, tau: Tensor) -> Tensor:
    lower, upper = phi.domain
    threshold = tau * weight
    if lower >= 0:
        return phi.grad_conjugate(v - threshold)
    if upper <= 0:
        return phi.grad_conjugate(v + threshold)
    grad_at_zero = phi.grad(torch.zeros_like(v))
    return phi.grad_conjugate(grad_at_zero + _soft_threshold(v - grad_at_zero, threshold))


def _soft_threshold(v: Tensor, threshold: Tensor) -> Tensor:
    return torch.sign(v) * torch.clamp(v.abs() - threshold, min=0)


def bregman_prox(phi: Legendre, g: Regularizer, v: Tensor, tau: float | Tensor = 1.0) -> BregmanProxResult:
    """Compute the Bregman prox argmin_u τ g(u) + φ(u) − ⟨u, v⟩, coordinatewise.

    Args:
        phi: separable Legendre function (see :mod:`mmbilevel.legendre`).
        g: separable regularizer; convex unless a closed form applies.
        v: point of any shape, in the dual space (any real values).
        tau: step τ > 0, a float or a tensor broadcastable against ``v``.

    Returns:
        A :class:`BregmanProxResult`. Its ``value`` is differentiable with
        respect to ``v`` and ``tau`` by autograd. Without a closed form, the
        derivative comes from one Newton step at the solver's root and is
        first order only: differentiating it again raises a RuntimeError.

    Raises:
        ValueError: when τ ≤ 0, or dom φ does not meet dom g.
        NotImplementedError: when g is nonconvex or gives no derivatives and
            no closed form applies.
    """
    v = _as_float_tensor(v)
    tau_t = check_step(tau, v)

    if _is_euclidean(phi) and g.has_closed_form_prox(tau_t):
        return _closed(g.prox(v, tau_t))
    if type(g) is Zero:
        return _closed(phi.grad_conjugate(v))
    if isinstance(g, Indicator):
        lower, upper = _feasible_bounds(phi, g, v)
        return _closed(torch.minimum(torch.maximum(phi.grad_conjugate(v), lower), upper))
    if type(g) is L1:
        return _closed(_l1_closed_form(phi, g.weight, v, tau_t))
    return _solve(phi, g, v, tau_t)


def _solve(phi: Legendre, g: Regularizer, v: Tensor, tau: Tensor) -> BregmanProxResult:
    """Solve φ′(u) + τ s′(u) ∈ v − τλ ∂|u| on dom φ ∩ dom g by the scalar solver."""
    if not g.is_convex:
        raise NotImplementedError(
            f"the Bregman prox of the nonconvex {g!r} has no reliable solver; use a convex "
            "regularizer or the Euclidean function"
        )
    lower, upper = _feasible_bounds(phi, g, v)
    tau = tau.expand_as(v)
    tau_fixed = tau.detach()
    v_fixed = v.detach()
    weight = float(g.l1_weight)

    def equation(u: Tensor) -> Tensor:
        return phi.grad(u) + tau_fixed * g.smooth_derivative(u)

    def equation_grad(u: Tensor) -> Tensor:
        return phi.hessian(u) + tau_fixed * g.smooth_second_derivative(u)

    iterations, residual, converged = 0, 0.0, True
    if weight == 0.0:
        result = solve_increasing(equation, v_fixed, lower, upper, fn_grad=equation_grad)
        root = result.root
        iterations, residual, converged = result.iterations, result.residual, result.converged
    else:
        # With an ℓ1 part λ|u|, u > 0 solves φ′(u) + τ s′(u) = v − τλ on the
        # positive part of I, u < 0 solves it with v + τλ on the negative
        # part, and u = 0 where neither side has a root off 0.
        zero = torch.zeros_like(v_fixed)
        root = zero.clone()
        for sign in (1.0, -1.0):
            side_lower = torch.maximum(lower, zero) if sign > 0 else lower
            side_upper = upper if sign > 0 else torch.minimum(upper, zero)
            # A side reduced to a point or empty (dom φ on one side of 0)
            # has no root off 0. Its coordinates solve on the whole interval
            # instead, which keeps the solver's residual meaningful, and their
            # roots are discarded.
            empty = side_lower >= side_upper
            if bool(empty.all()):
                continue
            side_lower = torch.where(empty, lower, side_lower)
            side_upper = torch.where(empty, upper, side_upper)
            target = v_fixed - sign * tau_fixed * weight
            result = solve_increasing(equation, target, side_lower, side_upper, fn_grad=equation_grad)
            iterations = max(iterations, result.iterations)
            residual = max(residual, result.residual)
            converged = converged and result.converged
            on_side = ~empty & (sign * result.root > 0)
            root = torch.where(on_side, result.root, root)

    if not converged:
        logger.warning(
            "Bregman prox of %r with the Legendre function %r did not converge: residual %.3g "
            "after %d iterations",
            g, getattr(phi, "name", phi), residual, iterations,
        )
    value = _attach_implicit_gradient(phi, g, v, tau, root.detach(), lower, upper, weight)
    return BregmanProxResult(
        value=value, closed_form=False, converged=converged, iterations=iterations, residual=residual
    )


def _interior_point(lower: Tensor, upper: Tensor) -> Tensor:
    """Return a point strictly inside each interval [lower, upper] of positive length."""
    middle = 0.5 * (lower + upper)
    point = torch.where(torch.isfinite(middle), middle, torch.zeros_like(middle))
    point = torch.where(torch.isinf(upper) & torch.isfinite(lower), lower + 1, point)
    return torch.where(torch.isinf(lower) & torch.isfinite(upper), upper - 1, point)


def _attach_implicit_gradient(
    phi: Legendre,
    g: Regularizer,
    v: Tensor,
    tau: Tensor,
    root: Tensor,
    lower: Tensor,
    upper: Tensor,
    weight: float,
) -> Tensor:
    """Return ``root`` with the implicit derivative attached by one Newton step.

    At an interior root u ≠ 0 of φ′(u) + τ s′(u) + τλ sign(u) = v, the step
    u − (φ′(u) + τ s′(u) + τλ sign(u) − v) / (φ″(u) + τ s″(u)) keeps the value
    (the residual is at solver tolerance) and carries du/dv and du/dτ. Roots
    at an end of the interval, and u = 0 under an ℓ1 term, have zero derivative.
    """
    interior = (root > lower) & (root < upper)
    if weight > 0:
        interior = interior & (root != 0)
    if not (v.requires_grad or tau.requires_grad) or not bool(interior.any()):
        return root

    # Coordinates that keep their root get a harmless interior point, so the
    # unused branch of torch.where contains no inf or NaN for autograd.
    safe = torch.where(interior, root, _interior_point(lower, upper))
    sign = torch.sign(safe)
    residual = phi.grad(safe) + tau * (g.smooth_derivative(safe) + weight * sign) - v
    slope = phi.hessian(safe) + tau.detach() * g.smooth_second_derivative(safe)
    # Where the slope overflows the derivative is 0, as at an end.
    interior = interior & torch.isfinite(slope) & (slope > 0)
    slope = torch.where(interior, slope, torch.ones_like(slope))
    # The value part of the step cancels exactly, so the result equals the
    # solver's root even where its residual is large in absolute terms.
    step = (residual - residual.detach()) / slope
    value = torch.where(interior, root - step, root)
    return _first_order_only(value, f"the Bregman prox of {g!r} with {getattr(phi, 'name', phi)!r}")
