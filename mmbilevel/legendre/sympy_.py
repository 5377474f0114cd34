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
from mmbilevel.rootfind import _ImplicitRoot, solve_increasing

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
# spread over its range, in float64 and float32. The magnitudes reach far into
# the tails, where closed forms such as log(y + √(y² + 1)) cancel or overflow.
_CHECK_FRACTIONS = (1e-9, 1e-4, 0.02, 0.2, 0.45, 0.5, 0.55, 0.8, 0.98, 1 - 1e-4, 1 - 1e-9)
_CHECK_EXPONENTS = (-12, -8, -4, -1, 0, 1, 2, 4, 8, 16, 30, 100, 200)
# float32 reaches about 3.4e38, so its check stops below that.
_CHECK_EXPONENTS_FLOAT32 = (-8, -4, -1, 0, 1, 2, 4, 8, 16, 30)
_CHECK_RTOL = {torch.float64: 1e-8, torch.float32: 1e-4}
# Sample points of the interior for the convexity check: offsets 10ᵏ from a
# finite end or from 0, and fractions of a finite domain.
_CONVEXITY_EXPONENTS = (-9, -6, -3, -1, 0, 1, 3, 6, 12)


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
        self._check_convex()

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

    def _interior_samples(self) -> torch.Tensor:
        """Return float64 points of the open domain spread over orders of magnitude."""
        lower, upper = self.domain
        offsets = [10.0**k for k in _CONVEXITY_EXPONENTS]
        if math.isfinite(lower) and math.isfinite(upper):
            width = upper - lower
            points = [lower + f * width for f in _CHECK_FRACTIONS]
        elif math.isfinite(lower):
            points = [lower + d for d in offsets]
        elif math.isfinite(upper):
            points = [upper - d for d in offsets]
        else:
            points = [0.0] + offsets + [-d for d in offsets]
        tensor = torch.tensor(sorted(points), dtype=torch.float64)
        return tensor[(tensor > lower) & (tensor < upper)]

    def _check_convex(self) -> None:
        """Raise ValueError where φ'' < 0 at a sample point, or where φ'' = 0 at all of them."""
        points = self._interior_samples()
        with torch.no_grad():
            second = self._hessian_fn(points)
        # φ'' = 0 at some points is allowed: exp underflows far out and t⁴ has
        # φ''(0) = 0, both strictly convex. φ'' = 0 at every point means φ is affine.
        bad = second < 0
        if bool((second == 0).all()):
            bad = second == 0
        if bool(bad.any()):
            index = int(bad.nonzero()[0])
            raise ValueError(
                f"{self.name}: φ''({float(points[index]):.10g}) = {float(second[index]):.6g} ≤ 0, so φ is "
                f"not strictly convex on the domain {self._domain_text()} and is not a Legendre function; "
                "pass a strictly convex φ or a smaller domain"
            )

    def _find_grad_range(self) -> tuple[float | None, float | None]:
        lower, upper = self._domain_exprs
        low = _limit(self.grad_expr, self.symbol, lower, "+")
        high = _limit(self.grad_expr, self.symbol, upper, "-")
        return low, high

    def _is_essentially_smooth(self) -> bool:
        """Return whether |∇φ| → ∞ at each finite end (infinite ends need nothing)."""
        low, high = self.grad_range
        lower, upper = self.domain
        low_ok = not math.isfinite(lower) or low == -math.inf
        high_ok = not math.isfinite(upper) or high == math.inf
        return low_ok and high_ok

    def _sample_duals(self, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        low, high = self.grad_range
        exponents = _CHECK_EXPONENTS if dtype == torch.float64 else _CHECK_EXPONENTS_FLOAT32
        magnitudes = [0.0] + [10.0**k for k in exponents]
        if low is not None and high is not None and math.isfinite(low) and math.isfinite(high):
            points = [low + f * (high - low) for f in _CHECK_FRACTIONS]
        elif low is not None and math.isfinite(low):
            points = [low + m for m in magnitudes[1:]]
        elif high is not None and math.isfinite(high):
            points = [high - m for m in magnitudes[1:]]
        else:
            points = magnitudes + [-m for m in magnitudes[1:]]
        tensor = torch.tensor(points, dtype=dtype)
        # Keep the points strictly inside the range, where ∇φ* is an interior point.
        if low is not None:
            tensor = tensor[tensor > low]
        if high is not None:
            tensor = tensor[tensor < high]
        return tensor

    def _find_closed_forms(self) -> None:
        if None in self.grad_range:
            self._use_fallback("sympy could not find the limits of ∇φ at the domain ends")
            return
        try:
            candidates = sp.solve(sp.Eq(self.grad_expr, self._dual), self.symbol)
        except (NotImplementedError, ValueError, TypeError) as error:
            self._use_fallback(f"sympy.solve failed to invert ∇φ ({error})")
            return
        rejected: list[str] = []
        for original in candidates:
            for candidate in _stable_forms(original, self._dual):
                inverse = _to_torch(candidate, self._dual)
                problem = self._inverse_problem(inverse)
                if problem is None:
                    self.inverse_expr = candidate
                    self._inverse_fn = inverse
                    break
                rejected.append(f"{candidate}: {problem}")
            if self.inverse_expr is not None:
                break
        if self.inverse_expr is None:
            details = "; ".join(rejected) if rejected else "sympy.solve found no solution"
            self._use_fallback(
                f"none of the {len(candidates)} solutions of ∇φ(x) = y from sympy.solve inverts ∇φ "
                f"accurately over the range of ∇φ ({details})"
            )
            return

        conjugate = sp.simplify(self._dual * self.inverse_expr - self.expr.subs(self.symbol, self.inverse_expr))
        self.conjugate_expr = conjugate
        self._conjugate_fn = _to_torch(conjugate, self._dual)
        # φ* at the ends of the range of ∇φ, where the closed form may be singular (−1 − log(−y) at 0).
        low, high = self.grad_range
        self._conjugate_at_ends = (
            _limit(conjugate, self._dual, sp.Float(low), "+") if math.isfinite(low) else None,
            _limit(conjugate, self._dual, sp.Float(high), "-") if math.isfinite(high) else None,
        )

    def _inverse_problem(self, inverse: Callable[[torch.Tensor], torch.Tensor]) -> str | None:
        """Return why ``inverse`` fails to invert ∇φ on sample points, or None when it passes.

        The candidate is compared with the Newton-bisection root at points
        spread over orders of magnitude, in float64 and in float32: it must
        be finite, inside the domain and match the root to a relative 1e-8
        (float64) or 1e-4 (float32). Points whose root lies beyond the
        largest float are skipped.
        """
        lower, upper = self.domain
        for dtype in (torch.float64, torch.float32):
            duals = self._sample_duals(dtype)
            if duals.numel() == 0:
                continue
            finfo = torch.finfo(dtype)
            try:
                with torch.no_grad():
                    reference = solve_increasing(self._grad_fn, duals, lower, upper, fn_grad=self._hessian_fn).root
                    points = inverse(duals)
            except (NameError, TypeError, AttributeError, RuntimeError, ValueError) as error:
                return f"cannot be evaluated in {dtype} ({error})"
            if not isinstance(points, torch.Tensor) or points.is_complex() or points.shape != duals.shape:
                return f"does not give real tensors of the input shape in {dtype}"
            points = points.detach()
            representable = reference.abs() < finfo.max
            if not bool(representable.any()):
                continue
            duals, points, reference = duals[representable], points[representable], reference[representable]
            wrong = ~torch.isfinite(points) | (points < lower) | (points > upper)
            # The solver stops within a few multiples of the smallest normal
            # float from 0, where the true root may underflow.
            scale = torch.maximum(reference.abs(), points.abs())
            wrong = wrong | ((points - reference).abs() > _CHECK_RTOL[dtype] * scale + 16 * finfo.tiny)
            if bool(wrong.any()):
                index = int(wrong.nonzero()[0])
                return (
                    f"in {dtype} it gives {float(points[index]):.6g} at y = {float(duals[index]):.6g}, "
                    f"where the root of ∇φ(x) = y is {float(reference[index]):.6g}"
                )
        return None

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
        # At and beyond an end of the range of ∇φ the projection is the
        # matching domain end (+inf for −log t at y ≥ 0, for instance).
        low, high = self.grad_range
        lower, upper = self.domain
        below = y <= low
        above = y >= high
        inside = ~(below | above)
        with torch.no_grad():
            safe = torch.where(inside, y, self._dual_inside_range(y))
            value = self._inverse_fn(safe)
            value = torch.where(below, torch.full_like(value, lower), value)
            value = torch.where(above, torch.full_like(value, upper), value)
        if not y.requires_grad:
            return value
        # The derivative 1/φ''(x) by implicit differentiation, rather than
        # autograd through the formula, whose terms can overflow (inf/inf)
        # where the value itself is fine. It is differentiable again.
        bounds = torch.full_like(value, lower), torch.full_like(value, upper)
        return _ImplicitRoot.apply(y, value, self._hessian_fn, *bounds)

    def conjugate(self, y: torch.Tensor) -> torch.Tensor:
        if self.conjugate_expr is None:
            return Legendre.conjugate(self, y)
        # φ*(y) = φ*(y_c) + (y − y_c)·∇φ*(y_c) with y_c the clamp of y to the range of ∇φ.
        # Beyond the range at an infinite domain end φ* is +inf.
        low, high = self.grad_range
        lower, upper = self.domain
        clamped = self._clamp_dual(y)
        beyond = y != clamped
        # The linear term is skipped inside the range, where ∇φ*(y_c) may be infinite.
        linear = (y - clamped) * self._inverse_fn(torch.where(beyond, clamped, self._dual_inside_range(y)))
        value = self._conjugate_fn(clamped) + torch.where(beyond, linear, torch.zeros_like(linear))
        for end, limit in zip((low, high), self._conjugate_at_ends):
            if limit is not None:
                value = torch.where(y == end, torch.full_like(value, limit), value)
        unbounded = ((y > high) & math.isinf(upper)) | ((y < low) & math.isinf(lower))
        return torch.where(unbounded, torch.full_like(value, math.inf), value)

    def _dual_inside_range(self, like: torch.Tensor) -> torch.Tensor:
        """Return a tensor like ``like`` filled with a point strictly inside the range of ∇φ."""
        low, high = self.grad_range
        if math.isfinite(low) and math.isfinite(high):
            point = 0.5 * (low + high)
        elif math.isfinite(low):
            point = low + 1.0
        elif math.isfinite(high):
            point = high - 1.0
        else:
            point = 0.0
        return torch.full_like(like, point)

    def extra_repr(self) -> str:
        return f"expr={self.expr}, closed_form_conjugate={self.closed_form_conjugate}"


def _stable_forms(candidate: sp.Expr, dual: sp.Symbol) -> list[sp.Expr]:
    """Return forms of a candidate inverse to try, the numerically safer ones first.

    - log(a) becomes asinh((a − 1/a)/2) where that argument is free of
      square roots: sympy inverts sinh-like gradients as log(y + √(y² + 1)),
      which cancels to log 0 for large negative y and overflows in y² for
      large y.
    - Each exp(g) is then also tried as 1/exp(−g) with the fraction
      cancelled, which turns eʸ/(eʸ + 1) (inf/inf for large y) into
      1/(e⁻ʸ + 1).
    """
    replacements = {}
    for term in candidate.atoms(sp.log):
        argument = term.args[0]
        if not (_has_root(argument) and argument.has(dual)):
            continue
        inner = sp.simplify((argument - 1 / argument) / 2)
        if not _has_root(inner):
            replacements[term] = sp.asinh(inner)
    rewritten = candidate.xreplace(replacements) if replacements else candidate
    forms = [rewritten]

    exponentials = [term for term in rewritten.atoms(sp.exp) if term.has(dual)]
    if exponentials:
        placeholders = {term: sp.Dummy("u", positive=True) for term in exponentials}
        flipped = sp.cancel(rewritten.xreplace({term: 1 / u for term, u in placeholders.items()}))
        flipped = flipped.xreplace({u: sp.exp(-term.args[0]) for term, u in placeholders.items()})
        if flipped != rewritten:
            forms.append(flipped)
    return forms


def _has_root(expr: sp.Expr) -> bool:
    """Return whether ``expr`` contains a power with a non-integer rational exponent, such as √."""
    return any(power.exp.is_Rational and not power.exp.is_Integer for power in expr.atoms(sp.Pow))


def from_sympy(
    expr: Any,
    symbol: sp.Symbol,
    domain: tuple[Any, Any],
    name: str | None = None,
    strong_convexity: float = 0.0,
) -> SympyLegendre:
    """Build a Legendre function from φ given as a sympy expression.

    ∇φ and φ'' come from ``sympy.diff``; φ'' must be non-negative at sample
    points of the interior, and positive at one at least. sympy then tries to solve ∇φ(x) = y for x,
    rewritten into numerically safer forms where possible (asinh for
    log(y + √(y² + 1)), e⁻ʸ for eʸ in fractions). A solution is kept when it
    matches the Newton-bisection root at sample points of the range of ∇φ
    spanning orders of magnitude, to 1e-8 in float64 and 1e-4 in float32.
    φ* is then y·x − φ(x) simplified. Beyond the range of ∇φ, ∇φ* is the
    matching domain end (the Bregman projection, +inf at an infinite end)
    and φ* is +inf at an infinite end. The derivative of ∇φ* is 1/φ''(x).
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
        ValueError: the domain is empty, φ'' < 0 at a sample point or φ'' = 0
            at all of them (φ is not strictly convex), or φ, ∇φ or φ'' uses a function that has no
            torch counterpart in ``TORCH_FUNCTIONS``.

    Example:
        >>> import sympy, torch
        >>> t = sympy.Symbol("t", real=True)
        >>> phi = from_sympy(sympy.cosh(t), t, (-sympy.oo, sympy.oo))
        >>> phi.closed_form_conjugate
        True
    """
    return SympyLegendre(expr, symbol, domain, name=name, strong_convexity=strong_convexity)
