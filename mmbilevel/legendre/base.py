"""Abstract separable Legendre function on an interval.

In "Bilevel Learning of Deep Representations" (Frecon, Salzo, Pontil, 2021),
an activation ρ is the Bregman projection onto an interval I for a Legendre
function φ with dom φ = I, so that ρ = ∇φ* and ρ⁻¹ = ∇φ. This module contains
the base class: domain checks, clamping, the Bregman divergence and the
generic fallbacks used when a subclass gives only φ and ∇φ.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable
from typing import Any

import torch

from mmbilevel.rootfind import RootResult, solve_increasing

__all__ = ["Legendre", "as_float_tensor"]

logger = logging.getLogger(__name__)

# Methods whose argument must lie in the closed domain; subclasses that define
# them get the domain check (and the ``clamp`` keyword) added automatically.
_PRIMAL_METHODS = ("value", "grad", "hessian")
# Methods defined for every real input; subclasses get input conversion only.
_DUAL_METHODS = ("grad_conjugate", "conjugate")

#: Default clamping margin, in units of eps·max(1, |end|) of the input dtype.
DEFAULT_MARGIN_ULPS = 4.0


def as_float_tensor(x: Any) -> torch.Tensor:
    """Convert ``x`` to a floating-point tensor, keeping its dtype and device if it has them."""
    tensor = torch.as_tensor(x)
    if not tensor.is_floating_point():
        tensor = tensor.to(torch.get_default_dtype())
    return tensor


def _checked_primal(method: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    @functools.wraps(method)
    def wrapper(self: Legendre, x: Any, *, clamp: bool = False) -> torch.Tensor:
        return method(self, self._prepare(x, clamp))

    wrapper._legendre_wrapped = True  # type: ignore[attr-defined]
    return wrapper


def _checked_dual(method: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    @functools.wraps(method)
    def wrapper(self: Legendre, y: Any) -> torch.Tensor:
        y = as_float_tensor(y)
        if torch.isnan(y).any():
            raise ValueError(f"{self.name}: input contains NaN; ∇φ* and φ* need real numbers")
        return method(self, y)

    wrapper._legendre_wrapped = True  # type: ignore[attr-defined]
    return wrapper


class Legendre:
    r"""Separable Legendre function φ on an interval, applied elementwise.

    A subclass sets ``name`` and ``domain`` and defines at least
    ``value(x)`` (φ) and ``grad(x)`` (∇φ = ρ⁻¹) as torch expressions. It may
    also define ``hessian(x)`` (φ''), ``grad_conjugate(y)`` (∇φ* = ρ) and
    ``conjugate(y)`` (φ*); where it does not:

    - ``grad_conjugate`` solves ∇φ(x) = y on the closed domain with
      `mmbilevel.rootfind.solve_increasing` (differentiable by implicit
      differentiation). The first use is logged at INFO level and the last
      solve's `RootResult` is kept in ``last_solve``.
    - ``conjugate`` uses the Fenchel–Young equality φ*(y) = y·x − φ(x) with
      x = ∇φ*(y).
    - ``hessian`` differentiates ``grad`` by autograd.

    The base class adds the domain check to ``value``, ``grad`` and
    ``hessian`` of every subclass: a point outside the closed domain raises
    ``ValueError`` unless the call passes ``clamp=True``, which first maps
    points into the interior with `clamp`.

    ∇φ* is the Bregman projection argmin_{x ∈ closed domain} φ(x) − x·y. It
    is defined for every real y, also when ∇φ does not map the interior onto
    all of ℝ (then φ is not essentially smooth, ``essentially_smooth`` is
    False and ∇φ* is constant beyond the range of ∇φ).

    Attributes:
        name: the catalogue name.
        domain: the closed domain (lower, upper) of φ, ±inf allowed.
        strong_convexity: a modulus σ ≥ 0 with φ'' ≥ σ on the domain
            (0.0 when φ is not strongly convex or σ is unknown).
        essentially_smooth: whether |∇φ| tends to infinity at each finite end.
        last_solve: the `RootResult` of the latest iterative ∇φ* solve, or
            None when ∇φ* has a closed form or was not called yet.
    """

    name: str = "legendre"
    domain: tuple[float, float] = (-math.inf, math.inf)
    strong_convexity: float = 0.0
    essentially_smooth: bool = True
    last_solve: RootResult | None = None

    def __new__(cls, *args: Any, **kwargs: Any) -> Legendre:
        missing = [name for name in ("value", "grad") if getattr(cls, name) is getattr(Legendre, name)]
        if missing:
            raise TypeError(
                f"{cls.__name__} does not define {' and '.join(missing)}; a Legendre subclass must "
                "define value(x) (φ) and grad(x) (∇φ)"
            )
        return super().__new__(cls)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for method_name in _PRIMAL_METHODS:
            method = cls.__dict__.get(method_name)
            if method is not None and not getattr(method, "_legendre_wrapped", False):
                setattr(cls, method_name, _checked_primal(method))
        for method_name in _DUAL_METHODS:
            method = cls.__dict__.get(method_name)
            if method is not None and not getattr(method, "_legendre_wrapped", False):
                setattr(cls, method_name, _checked_dual(method))

    @staticmethod
    def from_sympy(expr: Any, symbol: Any, domain: tuple[float, float], name: str | None = None, **kwargs: Any) -> Legendre:
        """Build a Legendre function from a sympy expression; see `mmbilevel.legendre.sympy_.from_sympy`."""
        from mmbilevel.legendre.sympy_ import from_sympy

        return from_sympy(expr, symbol, domain, name=name, **kwargs)

    # ------------------------------------------------------------------ primal

    def __call__(self, x: Any, *, clamp: bool = False) -> torch.Tensor:
        """Evaluate φ(x) elementwise."""
        return self.value(x, clamp=clamp)

    def value(self, x: torch.Tensor) -> torch.Tensor:
        """Evaluate φ(x) elementwise; subclasses must define it."""
        raise NotImplementedError(f"{type(self).__name__} must define value(x)")

    def grad(self, x: torch.Tensor) -> torch.Tensor:
        """Evaluate ∇φ(x) = ρ⁻¹(x) elementwise; subclasses must define it."""
        raise NotImplementedError(f"{type(self).__name__} must define grad(x)")

    def hessian(self, x: torch.Tensor) -> torch.Tensor:
        """Evaluate φ''(x) elementwise by differentiating ``grad`` with autograd."""
        with torch.enable_grad():
            if x.requires_grad:
                point = x
            else:
                point = x.detach().requires_grad_(True)
            (second,) = torch.autograd.grad(self.grad(point).sum(), point, create_graph=x.requires_grad)
        return second

    def inverse_activation(self, x: Any, *, clamp: bool = False) -> torch.Tensor:
        """Evaluate the inverse activation ρ⁻¹(x) = ∇φ(x); an alias of `grad`."""
        return self.grad(x, clamp=clamp)

    # -------------------------------------------------------------------- dual

    @property
    def has_closed_form_conjugate(self) -> bool:
        """Whether ``grad_conjugate`` is a closed form rather than the iterative solve."""
        return type(self).grad_conjugate is not Legendre.grad_conjugate

    def grad_conjugate(self, y: torch.Tensor) -> torch.Tensor:
        """Evaluate ∇φ*(y) = ρ(y) by solving ∇φ(x) = y on the closed domain.

        Returns the minimizer of φ(x) − x·y over the closed domain: the root
        of ∇φ(x) = y when y is in the range of ∇φ, else the nearer domain end.
        """
        if self.last_solve is None:
            logger.info(
                "%s: no closed form for ∇φ*; solving ∇φ(x) = y by Newton-bisection (see last_solve)",
                self.name,
            )
        lower, upper = self.domain
        if not lower < upper:
            raise ValueError(
                f"{self.name}: the domain {self._domain_text()} of {type(self).__name__} is empty or "
                "reversed; set domain = (lower, upper) with lower < upper"
            )
        try:
            result = solve_increasing(
                lambda t: self.grad(t),
                y,
                lower,
                upper,
                fn_grad=lambda t: self.hessian(t),
            )
        except ValueError as error:
            if "not increasing" not in str(error):
                raise
            raise ValueError(
                f"{self.name}: ∇φ decreases across the domain {self._domain_text()}, so φ is not convex "
                f"and has no Legendre conjugate ({error})"
            ) from error
        self.last_solve = result
        return result.root

    def activation(self, y: Any) -> torch.Tensor:
        """Evaluate the activation ρ(y) = ∇φ*(y); an alias of `grad_conjugate`."""
        return self.grad_conjugate(y)

    def conjugate(self, y: torch.Tensor) -> torch.Tensor:
        """Evaluate φ*(y) = y·x − φ(x) with x = ∇φ*(y) (Fenchel–Young equality)."""
        x = self.grad_conjugate(y)
        return y * x - self.value(x)

    # ------------------------------------------------------------ divergence

    def divergence(self, u: Any, v: Any) -> torch.Tensor:
        """Evaluate the Bregman divergence D_φ(u, v) = φ(u) − φ(v) − ∇φ(v)·(u − v) elementwise.

        Both points must lie in the closed domain. D_φ(u, u) is 0, also at
        an end where ∇φ is infinite; D_φ(u, v) is +inf when u ≠ v and ∇φ(v)
        is infinite.
        """
        u = self._prepare(u, clamp=False)
        v = self._prepare(v, clamp=False)
        u, v = torch.broadcast_tensors(u, v)
        same = u == v
        v_safe = torch.where(same, self._interior_point(v), v)
        u_safe = torch.where(same, v_safe, u)
        # NOTE: rounding can leave a gap of a few ulps of φ below 0 when u and v are close.
        gap = self.value(u_safe) - self.value(v_safe) - self.grad(v_safe) * (u_safe - v_safe)
        return torch.where(same, torch.zeros_like(gap), gap)

    # ------------------------------------------------------------ the domain

    def clamp(self, x: Any, margin: float | None = None) -> torch.Tensor:
        """Map ``x`` into the interior of the domain.

        Points are clamped to [lower + m, upper − m] at each finite end, with
        m = ``margin`` if given, else 4·eps·max(1, |end|) in the dtype of
        ``x``, a few ulps inside so that ∇φ stays finite. Infinite ends are
        left open. The clamp passes gradients to points already inside.

        Raises:
            ValueError: ``margin`` is negative, not finite, or at least half
                the domain length (the interval would be empty or reversed).
        """
        x = as_float_tensor(x)
        lower, upper = self.domain
        if margin is not None:
            margin = float(margin)
            half_length = 0.5 * (upper - lower)
            if not (math.isfinite(margin) and 0.0 <= margin < half_length):
                raise ValueError(
                    f"{self.name}: clamp margin {margin!r} is invalid for the domain {self._domain_text()}; "
                    f"pass a finite margin >= 0 and < {half_length:g} (half the domain length), or None "
                    "for the default of a few ulps"
                )
        eps = torch.finfo(x.dtype).eps
        if math.isfinite(lower):
            lower_margin = DEFAULT_MARGIN_ULPS * eps * max(1.0, abs(lower)) if margin is None else margin
            x = torch.clamp(x, min=lower + lower_margin)
        if math.isfinite(upper):
            upper_margin = DEFAULT_MARGIN_ULPS * eps * max(1.0, abs(upper)) if margin is None else margin
            x = torch.clamp(x, max=upper - upper_margin)
        return x

    def _prepare(self, x: Any, clamp: bool) -> torch.Tensor:
        x = as_float_tensor(x)
        if clamp:
            return self.clamp(x)
        lower, upper = self.domain
        outside = torch.isnan(x) | (x < lower) | (x > upper)
        if outside.any():
            bad = float(x[outside].flatten()[0])
            raise ValueError(
                f"{self.name}: value {bad} is outside the domain {self._domain_text()} of the "
                "Legendre function; pass points inside it, or clamp=True (or phi.clamp(x)) "
                "to move them into the interior"
            )
        return x

    def _interior_point(self, like: torch.Tensor) -> torch.Tensor:
        """Return a tensor like ``like`` filled with a point inside the open domain."""
        lower, upper = self.domain
        if math.isfinite(lower) and math.isfinite(upper):
            point = 0.5 * (lower + upper)
        elif math.isfinite(lower):
            point = lower + 1.0
        elif math.isfinite(upper):
            point = upper - 1.0
        else:
            point = 0.0
        return torch.full_like(like, point)

    def _domain_text(self) -> str:
        lower, upper = self.domain
        return f"[{lower:g}, {upper:g}]"

    def extra_repr(self) -> str:
        """Return the constructor settings shown by ``repr``; empty by default."""
        return ""

    def __repr__(self) -> str:
        settings = self.extra_repr()
        settings = f", {settings}" if settings else ""
        return f"{type(self).__name__}(name={self.name!r}, domain={self._domain_text()}{settings})"


# The base class's own methods need the same checks as those of subclasses.
for _name in _PRIMAL_METHODS:
    setattr(Legendre, _name, _checked_primal(Legendre.__dict__[_name]))
for _name in _DUAL_METHODS:
    setattr(Legendre, _name, _checked_dual(Legendre.__dict__[_name]))
