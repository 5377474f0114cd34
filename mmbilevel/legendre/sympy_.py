"""Legendre functions built from a sympy expression.

`from_sympy` differentiates φ symbolically, tries to invert ∇φ and to form
φ* in closed form, and turns every formula into a torch function. Where
sympy cannot invert ∇φ, the result falls back to the iterative solve of the
`Legendre` base class, logs that at INFO level and records why in
``fallback_reason``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

import sympy as sp
import torch

from mmbilevel.legendre.base import Legendre

__all__ = ["SympyLegendre", "from_sympy", "TORCH_FUNCTIONS"]

logger = logging.getLogger(__name__)


def _elementwise(torch_fn: Callable[..., torch.Tensor], math_fn: Callable[..., float]) -> Callable[..., Any]:
    """Apply ``torch_fn`` when an argument is a tensor, else ``math_fn`` (for constant subexpressions)."""

    def apply(*args: Any) -> Any:
        if any(isinstance(arg, torch.Tensor) for arg in args):
            return torch_fn(*args)
        return math_fn(*(float(arg) for arg in args))

    return apply


def _sign(value: float) -> float:
    return math.copysign(1.0, value) if value != 0 else 0.0


#: Names that ``sympy.lambdify`` prints, mapped to torch functions.
TORCH_FUNCTIONS: dict[str, Any] = {
    "exp": _elementwise(torch.exp, math.exp),
    "log": _elementwise(torch.log, math.log),
    "sqrt": _elementwise(torch.sqrt, math.sqrt),
    "sin": _elementwise(torch.sin, math.sin),
    "cos": _elementwise(torch.cos, math.cos),
    "tan": _elementwise(torch.tan, math.tan),
    "asin": _elementwise(torch.asin, math.asin),
    "acos": _elementwise(torch.acos, math.acos),
    "atan": _elementwise(torch.atan, math.atan),
    "atan2": _elementwise(torch.atan2, math.atan2),
    "sinh": _elementwise(torch.sinh, math.sinh),
    "cosh": _elementwise(torch.cosh, math.cosh),
    "tanh": _elementwise(torch.tanh, math.tanh),
    "asinh": _elementwise(torch.asinh, math.asinh),
    "acosh": _elementwise(torch.acosh, math.acosh),
    "atanh": _elementwise(torch.atanh, math.atanh),
    "Abs": _elementwise(torch.abs, abs),
    "sign": _elementwise(torch.sign, _sign),
    "pi": math.pi,
    "E": math.e,
}

# Sample points for the numerical check of a candidate inverse: values of ∇φ
# spread over its range, in float64.
_CHECK_FRACTIONS = (0.02, 0.2, 0.45, 0.5, 0.55, 0.8, 0.98)
_CHECK_UNBOUNDED = (-20.0, -3.0, -0.5, 0.0, 0.25, 2.0, 15.0)
_CHECK_RTOL = 1e-8


def _to_torch(expr: sp.Expr, symbol: sp.Symbol) -> Callable[[torch.Tensor], torch.Tensor]:
    """Turn ``expr`` in ``symbol`` into an elementwise torch function."""
    compiled = sp.lambdify(symbol, expr, modules=[TORCH_FUNCTIONS])

    def evaluate(x: torch.Tensor) -> torch.Tensor:
        out = compiled(x)
        if not isinstance(out, torch.Tensor):
            return torch.full_like(x, float(out))
        return out

    return evaluate


def _limit(expr: sp.Expr, symbol: sp.Symbol, end: sp.Expr, direction: str) -> float | None:
    """Return the one-sided limit of ``expr`` at ``end`` as a float, or None if sympy fails."""
    try:
        value = sp.limit(expr, symbol, end, direction)
    except (NotImplementedError, ValueError, TypeError):
        return None
    if value in (sp.oo, -sp.oo):
        return float(value)
    if value.is_real and value.is_finite:
        return float(value)
    return None


class SympyLegendre(Legendre):
    """Legendre function whose formulas come from a sympy expression.

    Built by `from_sympy`. ``grad_conjugate`` and ``conjugate`` are closed
    forms when sympy inverted ∇φ (``closed_form_conjugate`` is True), else the
    base class's Newton-bisection and Fenchel–Young fallbacks.

    Attributes:
        expr: φ as a sympy expression in ``symbol``.
        grad_expr, hessian_expr: ∇φ and φ''.
        inverse_expr, conjugate_expr: ∇φ* and φ* in a real symbol y, or None.
        grad_range: (∇φ(lower⁺), ∇φ(upper⁻)), the range of ∇φ on the interior.
        closed_form_conjugate: whether ∇φ* and φ* are closed forms.
        fallback_reason: why the iterative fallback is used, or None.
    """

    def __init__(
        self,
        expr: sp.Expr,
        symbol: sp.Symbol,
        domain: tuple[Any, Any],
        name: str | None = None,
        strong_convexity: float = 0.0,
    ) -> None:
        self.expr = sp.sympify(expr)
        self.symbol = symbol
        self.name = name if name is not None else f"sympy({self.expr})"
        self.strong_convexity = float(strong_convexity)
        self._domain_exprs = tuple(sp.sympify(end) for end in domain)
        self.domain = (float(self._domain_exprs[0]), float(self._domain_exprs[1]))
        if not self.domain[0] < self.domain[1]:
            raise ValueError(f"domain must satisfy lower < upper, got {domain}")

        self.grad_expr = sp.diff(self.expr, symbol)
        self.hessian_expr = sp.diff(self.grad_expr, symbol)
        self._value_fn = _to_torch(self.expr, symbol)
        self._grad_fn = _to_torch(self.grad_expr, symbol)
        self._hessian_fn = _to_torch(self.hessian_expr, symbol)
        self._check_compiles()

        self.grad_range = self._find_grad_range()
        self.essentially_smooth = self._is_essentially_smooth()
        self._dual = sp.Dummy("y", real=True)
        self.inverse_expr: sp.Expr | None = None
        self.conjugate_expr: sp.Expr | None = None
        self.fallback_reason: str | None = None
        self._find_closed_forms()

    # -------------------------------------------------------- construction

    def _check_compiles(self) -> None:
        lower, upper = self.domain
        point = self._interior_point(torch.zeros(1, dtype=torch.float64))
        for label, fn in (("φ", self._value_fn), ("∇φ", self._grad_fn), ("φ''", self._hessian_fn)):
            try:
                fn(point)
            except (NameError, TypeError, AttributeError) as error:
                raise ValueError(
                    f"{self.name}: cannot evaluate {label} with torch ({error}); use functions from "
                    f"mmbilevel.legendre.sympy_.TORCH_FUNCTIONS or subclass Legendre directly"
                ) from error

    def _find_grad_range(self) -> tuple[float | None, float | None]:
        lower, upper = self._domain_exprs
        low = _limit(self.grad_expr, self.symbol, lower, "+")
        high = _limit(self.grad_expr, self.symbol, upper, "-")
        return low, high

    def _is_essentially_smooth(self) -> bool:
        low, high = self.grad_range
        return low == -math.inf and high == math.inf

    def _sample_duals(self) -> torch.Tensor:
        low, high = self.grad_range
        if low is not None and high is not None and math.isfinite(low) and math.isfinite(high):
            points = [low + f * (high - low) for f in _CHECK_FRACTIONS]
        elif low is not None and math.isfinite(low):
            points = [low + abs(v) + 0.1 for v in _CHECK_UNBOUNDED]
        elif high is not None and math.isfinite(high):
            points = [high - abs(v) - 0.1 for v in _CHECK_UNBOUNDED]
        else:
            points = list(_CHECK_UNBOUNDED)
        return torch.tensor(points, dtype=torch.float64)

    def _find_closed_forms(self) -> None:
        if None in self.grad_range:
            self._use_fallback("sympy could not find the limits of ∇φ at the domain ends")
            return
        try:
            candidates = sp.solve(sp.Eq(self.grad_expr, self._dual), self.symbol)
        except (NotImplementedError, ValueError, TypeError) as error:
            self._use_fallback(f"sympy.solve failed to invert ∇φ ({error})")
            return
        duals = self._sample_duals()
        for candidate in candidates:
            inverse = _to_torch(candidate, self._dual)
            if self._inverse_matches(inverse, duals):
                self.inverse_expr = candidate
                self._inverse_fn = inverse
                break
        if self.inverse_expr is None:
            self._use_fallback(f"none of the {len(candidates)} solutions of ∇φ(x) = y from sympy.solve inverts ∇φ")
            return

        conjugate = sp.simplify(self._dual * self.inverse_expr - self.expr.subs(self.symbol, self.inverse_expr))
        self.conjugate_expr = conjugate
        self._conjugate_fn = _to_torch(conjugate, self._dual)

    def _inverse_matches(self, inverse: Callable[[torch.Tensor], torch.Tensor], duals: torch.Tensor) -> bool:
        try:
            with torch.no_grad():
                points = inverse(duals)
                lower, upper = self.domain
                if not bool(torch.isfinite(points).all()):
                    return False
                if bool(((points < lower) | (points > upper)).any()):
                    return False
                back = self._grad_fn(points)
        except (NameError, TypeError, AttributeError, RuntimeError):
            return False
        error = (back - duals).abs() / duals.abs().clamp_min(1.0)
        return bool((error <= _CHECK_RTOL).all())

    def _use_fallback(self, reason: str) -> None:
        self.fallback_reason = reason
        logger.info("%s: %s; ∇φ* will be computed by Newton-bisection and φ* by Fenchel–Young", self.name, reason)

    # ----------------------------------------------------------- evaluation

    @property
    def closed_form_conjugate(self) -> bool:
        """Whether ∇φ* and φ* are closed forms found by sympy."""
        return self.inverse_expr is not None

    @property
    def has_closed_form_conjugate(self) -> bool:
        """Whether ``grad_conjugate`` is a closed form rather than the iterative solve."""
        return self.closed_form_conjugate

    def value(self, x: torch.Tensor) -> torch.Tensor:
        return self._value_fn(x)

    def grad(self, x: torch.Tensor) -> torch.Tensor:
        return self._grad_fn(x)

    def hessian(self, x: torch.Tensor) -> torch.Tensor:
        return self._hessian_fn(x)

    def _clamp_dual(self, y: torch.Tensor) -> torch.Tensor:
        low, high = self.grad_range
        if math.isfinite(low):
            y = y.clamp(min=low)
        if math.isfinite(high):
            y = y.clamp(max=high)
        return y

    def grad_conjugate(self, y: torch.Tensor) -> torch.Tensor:
        if self.inverse_expr is None:
            return Legendre.grad_conjugate(self, y)
        # Beyond the range of ∇φ the projection is the nearer domain end, reached at the clamped y.
        return self._inverse_fn(self._clamp_dual(y))

    def conjugate(self, y: torch.Tensor) -> torch.Tensor:
        if self.conjugate_expr is None:
            return Legendre.conjugate(self, y)
        # φ*(y) = φ*(y_c) + (y − y_c)·∇φ*(y_c) with y_c the clamp of y to the range of ∇φ.
        clamped = self._clamp_dual(y)
        return self._conjugate_fn(clamped) + (y - clamped) * self._inverse_fn(clamped)

    def extra_repr(self) -> str:
        return f"expr={self.expr}, closed_form_conjugate={self.closed_form_conjugate}"


def from_sympy(
    expr: Any,
    symbol: sp.Symbol,
    domain: tuple[Any, Any],
    name: str | None = None,
    strong_convexity: float = 0.0,
) -> SympyLegendre:
    """Build a Legendre function from φ given as a sympy expression.

    ∇φ and φ'' come from ``sympy.diff``. sympy then tries to solve
    ∇φ(x) = y for x; a solution is kept when it maps sample points of the
    range of ∇φ back into the domain with ∇φ(x) = y to 1e-8. φ* is then
    y·x − φ(x) simplified. When ∇φ is bounded at an end, ∇φ* is taken
    constant beyond the range of ∇φ, which is the Bregman projection.
    Without a closed form the result uses the iterative solve, logs that at
    INFO level and stores the reason in ``fallback_reason``.

    Args:
        expr: φ as a sympy expression (or string) in ``symbol``.
        symbol: the variable of ``expr``.
        domain: the closed domain (lower, upper); sympy values such as
            ``sympy.pi / 2`` keep the end exact for the limits of ∇φ.
        name: the name shown in messages; defaults to the expression.
        strong_convexity: a known modulus σ with φ'' ≥ σ (0.0 if unknown).

    Returns:
        A `SympyLegendre`.

    Raises:
        ValueError: the domain is empty, or φ, ∇φ or φ'' uses a function
            that has no torch counterpart in ``TORCH_FUNCTIONS``.

    Example:
        >>> import sympy, torch
        >>> t = sympy.Symbol("t", real=True)
        >>> phi = from_sympy(sympy.cosh(t), t, (-sympy.oo, sympy.oo))
        >>> phi.closed_form_conjugate
        True
    """
    return SympyLegendre(expr, symbol, domain, name=name, strong_convexity=strong_convexity)
