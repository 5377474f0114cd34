"""Property checks of the rows of Table 1, and the helpers shared with the example checks.

Each check states one property that the row needs for its claim in
"Bilevel Learning of Deep Representations" to hold, tries to decide it with
sympy, and decides it numerically (mpmath at 60 digits, scipy for global
minimizations) where sympy cannot. Identities and signs that sympy proves
are confirmed at the sample points too, and a disagreement fails the check.
Limits at the ends of I come from sympy, with a numeric estimate as fallback.
A failed check carries a counter-example point, and for a free parameter such
as the ISRU scale λ, the parameter values at which the identity holds.

A Legendre row (I, φ, ρ, ρ⁻¹) claims ρ = ∇φ* = prox^φ_I and ρ⁻¹ = ∇φ. Its checks:

- ``real_valued``: φ is real and finite on int I.
- ``gradient_is_inverse``: φ′ = ρ⁻¹ on int I.
- ``rho_of_rho_inverse``: ρ(ρ⁻¹(t)) = t on int I.
- ``rho_inverse_of_rho``: ρ⁻¹(ρ(y)) = y on ℝ (the note gives the set where it holds).
- ``strictly_convex``: φ″ > 0 on int I.
- ``strongly_convex``: inf φ″ > 0 on int I, as the Bregman majorant needs.
- ``essentially_smooth``: |φ′(t)| → ∞ at each finite end of I.
- ``gradient_onto``: φ′ maps int I onto ℝ.
- ``domain_matches_range``: the closure of I equals the closure of ρ(ℝ).
- ``conjugate``: (φ*)′ = ρ on ℝ, with φ* derived from φ.
- ``bregman_projection``: ρ(y) = argmin_{u ∈ cl I} φ(u) − u·y for every y, found by scipy.

Checks that only make sense for a real φ fail with a note when ``real_valued`` fails.

The checks of Examples 3.1 and 3.2 are in :mod:`mmbilevel.symbolic.prox_checks`.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property

import mpmath
import numpy as np
import sympy as sp
from scipy.special import spence
from sympy.calculus.util import function_range

from mmbilevel.symbolic import numeric
from mmbilevel.symbolic.numeric import MP_DPS, agree, evaluate, format_number, is_real_finite
from mmbilevel.symbolic.table1 import LegendreRow, Parameter

__all__ = [
    "CheckResult",
    "LegendreAnalysis",
    "LEGENDRE_CHECK_FUNCTIONS",
    "T",
    "Y",
    "parse_formula",
    "run_legendre_checks",
    "show",
    "show_interval",
]

logger = logging.getLogger(__name__)

T = sp.Symbol("t", real=True)
Y = sp.Symbol("y", real=True)

SYMBOLIC = "symbolic"
NUMERIC = "numeric"
NOT_APPLICABLE = "not applicable"


@dataclass(frozen=True)
class CheckResult:
    """Verdict of one property check.

    Attributes:
        name: Property name, e.g. ``"gradient_is_inverse"``.
        holds: Whether the property holds for the formulas as given.
        method: ``"symbolic"`` (sympy decided, numerics agreed), ``"numeric"``
            (sampled at many points) or ``"not applicable"`` (a property needing
            a real φ, when φ is not real).
        note: What was found, in a sentence or two.
        counterexample: A point where the property fails, e.g.
            ``{"y": 3.14, "lambda": 2.0}``; None when it holds.
    """

    name: str
    holds: bool
    method: str
    note: str = ""
    counterexample: Mapping[str, float] | None = None


def parse_formula(text: str, parameters: Sequence[Parameter] = ()) -> sp.Expr:
    """Parse a formula in the variable ``t`` with the given parameters, each assumed positive."""
    local = {"t": T, **{p.name: _parameter_symbol(p) for p in parameters}}
    return sp.parse_expr(text, local_dict=local)


def _parameter_symbol(parameter: Parameter) -> sp.Symbol:
    return sp.Symbol(_SYMBOL_NAMES.get(parameter.name, parameter.name), positive=True)


_SYMBOL_NAMES = {"lam": "lambda"}


def show(expr: object) -> str:
    """Format a sympy expression for a note, with λ and π as printed."""
    text = sp.sstr(expr)
    for old, new in (("lambda", "λ"), ("pi", "π"), ("**", "^"), ("oo", "∞"), ("sqrt", "√")):
        text = text.replace(old, new)
    return text


def show_interval(interval: sp.Set) -> str:
    """Format an interval as (a, b], [a, b) and so on."""
    if not isinstance(interval, sp.Interval):
        return show(interval)
    left = "(" if interval.left_open else "["
    right = ")" if interval.right_open else "]"
    return f"{left}{show(interval.inf)}, {show(interval.sup)}{right}"


def _shortest(*exprs: sp.Expr) -> sp.Expr:
    return min(exprs, key=sp.count_ops)


def _recognize_expr(value: object) -> sp.Expr:
    """Turn a real number into a short closed form in π when one fits to 1e-15, else a Float."""
    with mpmath.workdps(MP_DPS):
        value = mpmath.re(mpmath.mpmathify(value))
        if mpmath.isinf(value):
            return sp.oo if value > 0 else -sp.oo
        if abs(value) < mpmath.mpf("1e-15"):
            return sp.Integer(0)
        decimal = sp.Float(mpmath.nstr(value, 40), 40)
    guess = sp.nsimplify(decimal, [sp.pi], tolerance=1e-15)
    return guess if len(sp.sstr(guess)) <= 12 else decimal


def _recognize(value: object) -> str:
    """Format a number as a short closed form in π when one fits, else in decimals."""
    guess = _recognize_expr(value)
    return show(guess) if not isinstance(guess, sp.Float) else format_number(value)


def _simplify(expr: sp.Expr) -> sp.Expr:
    return sp.simplify(sp.expand_func(expr))


def _as_float(value: object) -> float:
    return float(mpmath.re(mpmath.mpmathify(value)))


def _polylog_numpy(order: object, argument: np.ndarray) -> np.ndarray:
    """Evaluate Li₂ for numpy through scipy: Li₂(z) = spence(1 − z)."""
    if order != 2:
        raise NotImplementedError(f"polylog of order {order} has no numpy form; only order 2 has")
    return spence(1 - np.asarray(argument, dtype=complex))


def _lambdify_numpy(expr: sp.Expr, symbols: Sequence[sp.Symbol]) -> Callable[..., np.ndarray]:
    return sp.lambdify(list(symbols), expr, modules=[{"polylog": _polylog_numpy}, "numpy"])


# Sample points of a check, as a function of the parameter sample (empty without parameters).
PointsFor = Callable[[tuple[sp.Rational, ...]], Sequence[mpmath.mpf]]


class _Analysis:
    """Shared set-up of a row: parameters, their sample values and numeric identities."""

    def __init__(self, parameters: Sequence[Parameter]) -> None:
        self.parameters = tuple(parameters)
        self.symbols = tuple(_parameter_symbol(p) for p in parameters)
        samples = [[sp.Rational(s) for s in p.samples] for p in parameters]
        self.parameter_values: list[tuple[sp.Rational, ...]] = list(itertools.product(*samples))

    def mp_values(self, values: Sequence[sp.Rational]) -> tuple[mpmath.mpf, ...]:
        return tuple(numeric.to_mpf(v) for v in values)

    def point(self, name: str, at: object, values: Sequence[sp.Rational] = ()) -> dict[str, float]:
        point = {name: _as_float(at)}
        point.update({str(s): float(v) for s, v in zip(self.symbols, values)})
        return point

    def describe_values(self, values: Sequence[sp.Rational]) -> str:
        return ", ".join(f"{show(s)} = {show(v)}" for s, v in zip(self.symbols, values))

    def subs_values(self, expr: sp.Expr, values: Sequence[sp.Rational]) -> sp.Expr:
        return expr.subs(dict(zip(self.symbols, values)))

    def find_mismatch(
        self,
        left: sp.Expr,
        right: sp.Expr,
        variable: sp.Symbol,
        points_for: PointsFor,
        parameter_values: Sequence[tuple[sp.Rational, ...]] | None = None,
    ) -> tuple[mpmath.mpf, tuple[sp.Rational, ...], object, object] | None:
        """Return the first (point, parameter values, left, right) where left ≠ right, or None."""
        left_fn = numeric.lambdify_mp(left, (variable, *self.symbols))
        right_fn = numeric.lambdify_mp(right, (variable, *self.symbols))
        for values in self.parameter_values if parameter_values is None else parameter_values:
            mp_values = self.mp_values(values)
            for x in points_for(values):
                lhs = evaluate(left_fn, x, *mp_values)
                rhs = evaluate(right_fn, x, *mp_values)
                if not agree(lhs, rhs):
                    return x, values, lhs, rhs
        return None

    def failing_values(
        self, left: sp.Expr, right: sp.Expr, variable: sp.Symbol, points_for: PointsFor
    ) -> list[tuple[sp.Rational, ...]]:
        """Return the parameter samples at which left = right fails somewhere."""
        return [
            values
            for values in self.parameter_values
            if self.find_mismatch(left, right, variable, points_for, [values]) is not None
        ]

    def parameter_note(self, failing: Sequence[tuple[sp.Rational, ...]]) -> str:
        if not self.symbols:
            return ""
        passing = [v for v in self.parameter_values if v not in failing]
        held = "; ".join(self.describe_values(v) for v in passing) or "no sampled value"
        return f" Of the sampled parameters it holds for {held} only."


class LegendreAnalysis(_Analysis):
    """Parsed formulas of a Legendre row with the derived quantities the checks share."""

    def __init__(self, row: LegendreRow) -> None:
        super().__init__(row.parameters)
        self.row = row
        self.lower = parse_formula(row.lower, row.parameters)
        self.upper = parse_formula(row.upper, row.parameters)
        self.phi = parse_formula(row.phi, row.parameters)
        self.rho = parse_formula(row.rho, row.parameters)
        self.rho_inverse = parse_formula(row.rho_inverse, row.parameters)
        self.phi_prime = sp.expand_func(sp.diff(self.phi, T))
        self.phi_second = sp.expand_func(sp.diff(self.phi, T, 2))
        self.results: dict[str, CheckResult] = {}

    def bounds(self, values: Sequence[sp.Rational]) -> tuple[mpmath.mpf, mpmath.mpf]:
        lower = self.subs_values(self.lower, values)
        upper = self.subs_values(self.upper, values)
        return numeric.to_mpf(lower), numeric.to_mpf(upper)

    def interior(self, values: tuple[sp.Rational, ...] = ()) -> list[mpmath.mpf]:
        """Sample points of int I at one parameter sample."""
        return numeric.interior_samples(*self.bounds(values))

    @cached_property
    def interior_point(self) -> sp.Expr:
        """A point of int I, for solving a parameter condition at one point."""
        lower, upper = self.lower, self.upper
        if lower.is_finite and upper.is_finite:
            return lower + (upper - lower) * sp.Rational(3, 4)
        if lower.is_finite:
            return lower + 1
        if upper.is_finite:
            return upper - 1
        return sp.Rational(1, 2)

    @cached_property
    def gradient(self) -> sp.Expr:
        """φ′, written as the printed ρ⁻¹ once the two are proved equal (simpler limits)."""
        if self.result("gradient_is_inverse").holds:
            return self.rho_inverse
        return self.phi_prime

    def result(self, name: str) -> CheckResult:
        """Run the named check once and keep its result."""
        if name not in self.results:
            self.results[name] = LEGENDRE_CHECK_FUNCTIONS[name](self)
        return self.results[name]

    @cached_property
    def gradient_limits(self) -> tuple[sp.Expr, sp.Expr]:
        """Limits of φ′ at the lower and the upper end of I, from inside."""
        return (
            _one_sided_limit(self, self.gradient, self.lower, "+"),
            _one_sided_limit(self, self.gradient, self.upper, "-"),
        )


def _one_sided_limit(
    analysis: _Analysis, expr: sp.Expr, end: sp.Expr, direction: str, symbolic: bool = True
) -> sp.Expr:
    """Take the limit of expr at an end of an interval, numerically if sympy fails.

    With ``symbolic=False`` only the numeric estimate runs, which is much faster.
    """
    value = None
    if symbolic:
        try:
            value = sp.limit(expr, T, end, direction)
        except (NotImplementedError, ValueError, TypeError):
            value = None
    # A complex infinity (zoo) carries no sign, so the numeric branch decides it.
    if value is not None and value != sp.zoo and not value.has(sp.Limit, sp.AccumBounds):
        return value

    # Evaluate at points closing in on the end. A growth of more than 1 per step of
    # eight decades marks a divergence, because even a logarithmic one grows by 18.
    function = numeric.lambdify_mp(expr, (T, *analysis.symbols))
    mp_values = analysis.mp_values(analysis.parameter_values[0])
    end_value = numeric.to_mpf(analysis.subs_values(end, analysis.parameter_values[0]))
    if mpmath.isfinite(end_value):
        sign = 1 if direction == "+" else -1
        points = [end_value + sign * mpmath.mpf(10) ** -k for k in (8, 16, 24)]
    else:
        points = [mpmath.sign(end_value) * mpmath.mpf(10) ** k for k in (2, 4, 8)]
    values = [evaluate(function, x, *mp_values) for x in points]
    magnitudes = [abs(v) for v in values]
    if magnitudes[2] - magnitudes[1] > 1 and magnitudes[1] - magnitudes[0] > 1:
        return sp.oo if mpmath.re(values[2]) > 0 else -sp.oo
    logger.debug("numeric limit of %s at %s: %s", expr, end, values[2])
    return sp.Float(mpmath.nstr(values[2], 30), 30)


# ---------------------------------------------------------------------------
# Legendre row checks
# ---------------------------------------------------------------------------


def _requires_real_phi(name: str, analysis: LegendreAnalysis) -> CheckResult | None:
    real = analysis.result("real_valued")
    if real.holds:
        return None
    return CheckResult(
        name,
        False,
        NOT_APPLICABLE,
        "φ takes non-real values on int I (see real_valued), so it is no Legendre function.",
        real.counterexample,
    )


def check_real_valued(analysis: LegendreAnalysis) -> CheckResult:
    """Check that φ is finite and real on int I."""
    name = "real_valued"
    phi = numeric.lambdify_mp(analysis.phi, (T, *analysis.symbols))
    count = 0
    for values in analysis.parameter_values:
        mp_values = analysis.mp_values(values)
        for x in analysis.interior(values):
            value = evaluate(phi, x, *mp_values)
            count += 1
            if not is_real_finite(value):
                note = f"φ({format_number(x)}) = {format_number(value)} is not a finite real number."
                return CheckResult(name, False, NUMERIC, note, analysis.point("t", x, values))
    return CheckResult(name, True, NUMERIC, f"φ is finite and real at {count} points of int I.")


def check_gradient_is_inverse(analysis: LegendreAnalysis) -> CheckResult:
    """Check φ′ = ρ⁻¹ on int I."""
    residual = _simplify(analysis.phi_prime - analysis.rho_inverse)
    return _identity_check(
        analysis,
        "gradient_is_inverse",
        analysis.phi_prime,
        analysis.rho_inverse,
        residual,
        T,
        analysis.interior,
        "φ′ − ρ⁻¹",
    )


def check_rho_of_rho_inverse(analysis: LegendreAnalysis) -> CheckResult:
    """Check ρ(ρ⁻¹(t)) = t on int I."""
    composed = analysis.rho.subs(T, analysis.rho_inverse)
    residual = _simplify(composed - T)
    return _identity_check(
        analysis,
        "rho_of_rho_inverse",
        composed,
        T,
        residual,
        T,
        analysis.interior,
        "ρ(ρ⁻¹(t)) − t",
    )


def check_rho_inverse_of_rho(analysis: LegendreAnalysis) -> CheckResult:
    """Check ρ⁻¹(ρ(y)) = y on ℝ and, when it fails, find the interval around 0 where it holds."""
    composed = analysis.rho_inverse.subs(T, analysis.rho)
    residual = _simplify(composed - T)
    result = _identity_check(
        analysis,
        "rho_inverse_of_rho",
        composed,
        T,
        residual,
        T,
        lambda _values: numeric.line_samples(),
        "ρ⁻¹(ρ(y)) − y",
        variable_name="y",
    )
    if result.holds:
        return result

    mismatch = analysis.find_mismatch(composed, T, T, lambda _values: numeric.line_samples())
    values = mismatch[1] if mismatch is not None else ()
    holding_set = _holding_interval(analysis, composed, values)
    return CheckResult(
        result.name, False, result.method, f"{result.note} {holding_set}", result.counterexample
    )


def _holding_interval(
    analysis: _Analysis, composed: sp.Expr, values: tuple[sp.Rational, ...]
) -> str:
    """Describe the largest interval around 0 on which composed(y) = y holds."""
    function = numeric.lambdify_mp(composed, (T, *analysis.symbols))
    mp_values = analysis.mp_values(values)

    def holds(y: mpmath.mpf) -> bool:
        return agree(evaluate(function, y, *mp_values), y)

    if not holds(mpmath.mpf(0)):
        return "It fails at y = 0 as well."
    samples = numeric.line_samples()
    ends = []
    for direction in (-1, 1):
        outward = sorted((y for y in samples if direction * y > 0), key=abs)
        inside = mpmath.mpf(0)
        for y in outward:
            if not holds(y):
                ends.append(numeric.bisect_boundary(holds, inside, y))
                break
            inside = y
        else:
            ends.append(direction * mpmath.inf)
    where = f" for {analysis.describe_values(values)}" if values else ""
    lower, upper = (_recognize(e) for e in ends)
    if lower == upper == "0":
        return f"It holds only at y = 0{where}."
    return f"It holds on [{lower}, {upper}] only{where}."


def _identity_check(
    analysis: _Analysis,
    name: str,
    left: sp.Expr,
    right: sp.Expr,
    residual: sp.Expr,
    variable: sp.Symbol,
    points_for: PointsFor,
    residual_text: str,
    variable_name: str = "t",
) -> CheckResult:
    """Decide left = right: symbolically when the residual simplifies to 0, else numerically."""
    mismatch = analysis.find_mismatch(left, right, variable, points_for)
    symbolic_zero = residual == 0

    if mismatch is None:
        if symbolic_zero:
            return CheckResult(name, True, SYMBOLIC, f"sympy simplifies {residual_text} to 0.")
        note = f"Holds at every sample point; sympy leaves {residual_text} = {show(residual)}."
        return CheckResult(name, True, NUMERIC, note)

    x, values, lhs, rhs = mismatch
    shown = residual.subs(T, Y) if variable_name == "y" else residual
    note = (
        f"At {variable_name} = {format_number(x)}"
        f"{', ' + analysis.describe_values(values) if values else ''}: "
        f"the left side is {format_number(lhs)} but the right side is {format_number(rhs)}; "
        f"{residual_text} = {show(shown)}."
    )
    if symbolic_zero:
        note += " sympy simplified the residual to 0, so sympy and the numerics disagree."
    if analysis.symbols:
        failing = analysis.failing_values(left, right, variable, points_for)
        note += analysis.parameter_note(failing)
        note += _parameter_condition(analysis, residual, variable_name)
    return CheckResult(name, False, NUMERIC, note, analysis.point(variable_name, x, values))


def _parameter_condition(analysis: _Analysis, residual: sp.Expr, variable: str) -> str:
    """Solve residual(t) = 0 for the parameters at one point, as a necessary condition."""
    at = getattr(analysis, "interior_point", sp.Rational(1, 2))
    try:
        solutions = sp.solve(residual.subs(T, at), list(analysis.symbols), dict=True)
    except NotImplementedError:
        return ""
    if not solutions:
        return " No parameter value makes it hold."
    options = " or ".join(
        ", ".join(f"{show(k)} = {show(v)}" for k, v in solution.items()) for solution in solutions
    )
    return f" Solving at {variable} = {show(at)}: it needs {options}."


def check_strictly_convex(analysis: LegendreAnalysis) -> CheckResult:
    """Check φ″ > 0 on int I."""
    name = "strictly_convex"
    not_real = _requires_real_phi(name, analysis)
    if not_real:
        return not_real
    return _positivity_check(analysis, name, analysis.phi_second, analysis.interior, "φ″")


def _positivity_check(
    analysis: _Analysis,
    name: str,
    expr: sp.Expr,
    points_for: PointsFor,
    label: str,
    strict: bool = True,
) -> CheckResult:
    """Decide expr > 0 (expr ≥ 0 unless strict) on int I: solveset finds no violation, and
    every sample agrees."""
    simplified = _simplify(expr)
    interval = sp.Interval.open(analysis.lower, analysis.upper)
    violation = simplified <= 0 if strict else simplified < 0
    relation = "≤" if strict else "<"
    try:
        violations = sp.solveset(violation, T, interval)
    except (NotImplementedError, TypeError, ValueError):
        violations = None

    function = numeric.lambdify_mp(simplified, (T, *analysis.symbols))
    for values in analysis.parameter_values:
        mp_values = analysis.mp_values(values)
        for x in points_for(values):
            value = evaluate(function, x, *mp_values)
            positive = mpmath.re(value) > 0 if strict else mpmath.re(value) >= 0
            if not (is_real_finite(value) and positive):
                note = f"{label}({format_number(x)}) = {format_number(value)} violates {label} {'>' if strict else '≥'} 0."
                return CheckResult(name, False, NUMERIC, note, analysis.point("t", x, values))

    if violations == sp.S.EmptySet:
        note = (
            f"solveset finds no point of int I with {label} {relation} 0; "
            f"{label}(t) = {show(simplified)}."
        )
        return CheckResult(name, True, SYMBOLIC, note)
    if isinstance(violations, (sp.Interval, sp.FiniteSet, sp.Union)):
        note = f"sympy finds {label} {relation} 0 on {show(violations)}, but no sample point shows it."
        point = violations.inf if violations.inf.is_finite else violations.sup
        return CheckResult(name, False, SYMBOLIC, note, {"t": float(point)})
    note = f"{label}(t) = {show(simplified)} has the required sign at every sample point."
    return CheckResult(name, True, NUMERIC, note)


def check_strongly_convex(analysis: LegendreAnalysis) -> CheckResult:
    """Check that φ″ ≥ σ > 0 on int I, and report σ = inf φ″."""
    name = "strongly_convex"
    not_real = _requires_real_phi(name, analysis)
    if not_real:
        return not_real
    modulus, where, at, values = _infimum(analysis, analysis.phi_second, analysis.interior)
    depends = analysis.phi_second.free_symbols & set(analysis.symbols)
    parameters = f" for {analysis.describe_values(values)}" if depends else ""
    if modulus > 0:
        note = f"φ″ ≥ σ = {_recognize(modulus)} on int I{parameters} (infimum {where})."
        return CheckResult(name, True, NUMERIC, note)
    note = f"inf φ″ = {_recognize(modulus)}, {where}{parameters}."
    return CheckResult(name, False, NUMERIC, note, analysis.point("t", at, values))


def _infimum(
    analysis: _Analysis,
    expr: sp.Expr,
    points_for: PointsFor,
) -> tuple[mpmath.mpf, str, mpmath.mpf, tuple[sp.Rational, ...]]:
    """Return (infimum, where, point, parameter values) of expr over int I and the parameters.

    The infimum is taken over the sample points and the one-sided limits at both ends.
    """
    simplified = _simplify(expr)
    function = numeric.lambdify_mp(simplified, (T, *analysis.symbols))
    best: tuple[mpmath.mpf, str, mpmath.mpf, tuple[sp.Rational, ...]] | None = None
    for values in analysis.parameter_values:
        mp_values = analysis.mp_values(values)
        for x in points_for(values):
            value = mpmath.re(evaluate(function, x, *mp_values))
            if best is None or value < best[0]:
                best = (value, f"attained at t = {_recognize(x)}", x, values)
        lower, upper = (analysis.subs_values(end, values) for end in (analysis.lower, analysis.upper))
        for end, direction in ((lower, "+"), (upper, "-")):
            limit = _one_sided_limit(
                analysis, analysis.subs_values(simplified, values), end, direction, symbolic=False
            )
            if limit.is_finite and numeric.to_mpf(limit) < best[0]:
                best = (numeric.to_mpf(limit), f"approached as t → {show(end)}", numeric.to_mpf(end), values)
    if best is None:
        raise ValueError(f"no sample points to take the infimum of {expr} over")
    return best


def check_essentially_smooth(analysis: LegendreAnalysis) -> CheckResult:
    """Check |φ′(t)| → ∞ at each finite end of I."""
    name = "essentially_smooth"
    not_real = _requires_real_phi(name, analysis)
    if not_real:
        return not_real

    ends = ((analysis.lower, "⁺"), (analysis.upper, "⁻"))
    finite = [(end, side, limit) for (end, side), limit in zip(ends, analysis.gradient_limits)
              if end.is_finite is not False]
    if not finite:
        return CheckResult(name, True, SYMBOLIC, "I = ℝ has no finite end.")
    for end, side, limit in finite:
        if limit.is_finite:
            note = f"φ′({show(end)}{side}) = {show(limit)} is finite, so φ is not Legendre."
            point = {"t": float(end.subs(dict(zip(analysis.symbols, [1] * len(analysis.symbols)))))}
            return CheckResult(name, False, SYMBOLIC, note, point)
    described = ", ".join(f"φ′({show(end)}{side}) = {show(limit)}" for end, side, limit in finite)
    return CheckResult(name, True, SYMBOLIC, f"{described}.")


def check_gradient_onto(analysis: LegendreAnalysis) -> CheckResult:
    """Check that φ′ maps int I onto ℝ: φ′ is increasing, so its end limits must be ∓∞."""
    name = "gradient_onto"
    not_real = _requires_real_phi(name, analysis)
    if not_real:
        return not_real
    lower, upper = analysis.gradient_limits
    image = f"({show(lower)}, {show(upper)})"
    if lower == -sp.oo and upper == sp.oo:
        return CheckResult(name, True, SYMBOLIC, f"φ′ maps int I onto {image}.")
    missing = 2 * upper if upper.is_finite else 2 * lower
    note = f"φ′ maps int I onto {image} only; y = {show(missing)} is not attained."
    return CheckResult(name, False, SYMBOLIC, note, {"y": float(missing)})


def check_domain_matches_range(analysis: LegendreAnalysis) -> CheckResult:
    """Check that the closure of I equals the closure of ρ(ℝ)."""
    name = "domain_matches_range"
    low, high, method = _range_closure(analysis, analysis.rho)
    end_notes = _domain_end_notes(analysis)
    image = f"the closure of ρ(ℝ) is [{show(low)}, {show(high)}]"
    differences = [
        sp.Integer(0) if found == end else _simplify(found - end)
        for found, end in ((low, analysis.lower), (high, analysis.upper))
    ]
    if all(d == 0 for d in differences):
        return CheckResult(name, True, method, f"{image} = cl I.{end_notes}")

    note = f"{image}, but cl I = [{show(analysis.lower)}, {show(analysis.upper)}].{end_notes}"
    point: dict[str, float] = {}
    nonzero = [d for d in differences if d != 0]
    if analysis.symbols and all(d.free_symbols <= set(analysis.symbols) for d in nonzero):
        solutions = sp.solve(nonzero, list(analysis.symbols), dict=True)
        if solutions:
            options = " or ".join(
                ", ".join(f"{show(k)} = {show(v)}" for k, v in s.items()) for s in solutions
            )
            note += f" They agree only for {options}."
        failing = next(v for v in analysis.parameter_values
                       if any(analysis.subs_values(d, v) != 0 for d in nonzero))
        point = {str(s): float(v) for s, v in zip(analysis.symbols, failing)}
    return CheckResult(name, False, method, note, point or None)


def _range_closure(analysis: _Analysis, rho: sp.Expr) -> tuple[sp.Expr, sp.Expr, str]:
    """Return the ends of the closure of ρ(ℝ), from sympy or from samples."""
    try:
        image = function_range(rho, T, sp.S.Reals)
    except (NotImplementedError, ValueError, TypeError):
        image = None
    if isinstance(image, sp.Interval):
        return image.inf, image.sup, SYMBOLIC

    # ρ is evaluated on a wide grid; the extreme values are recognized as closed forms.
    function = numeric.lambdify_mp(rho, (T, *analysis.symbols))
    mp_values = analysis.mp_values(analysis.parameter_values[0])
    samples = numeric.line_samples() + [mpmath.mpf(s) * 1000 for s in (-1, 1)]
    values = [mpmath.re(evaluate(function, y, *mp_values)) for y in samples]
    return _recognize_expr(min(values)), _recognize_expr(max(values)), NUMERIC


def _domain_end_notes(analysis: LegendreAnalysis) -> str:
    """Say where the printed openness of an end of I disagrees with φ."""
    if not analysis.result("real_valued").holds:
        return ""
    notes = []
    for end, closed, direction in ((analysis.lower, analysis.row.lower_closed, "+"),
                                   (analysis.upper, analysis.row.upper_closed, "-")):
        if end.is_finite is False:
            continue
        limit = _one_sided_limit(analysis, analysis.phi, end, direction, symbolic=False)
        if closed and not limit.is_finite:
            notes.append(f"φ → {show(limit)} at {show(end)}, so dom φ is open there and I is its closure.")
        elif not closed and limit.is_finite:
            notes.append(f"φ tends to {show(limit)} at {show(end)}, so dom φ includes that end.")
    return "".join(" " + n for n in notes)


def check_conjugate(analysis: LegendreAnalysis) -> CheckResult:
    """Derive φ* = sup_t t·y − φ(t) and check (φ*)′ = ρ on ℝ."""
    name = "conjugate"
    not_real = _requires_real_phi(name, analysis)
    if not_real:
        return not_real

    inverse, method = _gradient_inverse(analysis)
    lower_limit, upper_limit = analysis.gradient_limits
    conjugate = Y * inverse - analysis.phi.subs(T, inverse) if inverse is not None else None
    conjugate_prime = sp.diff(conjugate, Y) if conjugate is not None else None
    reference = (
        parse_formula(analysis.row.conjugate_reference, analysis.parameters).subs(T, Y)
        if analysis.row.conjugate_reference
        else None
    )

    for values in analysis.parameter_values:
        mp_values = analysis.mp_values(values)
        evaluator = _ConjugateEvaluator(analysis, values, inverse, conjugate, conjugate_prime)
        rho = numeric.lambdify_mp(analysis.rho, (T, *analysis.symbols))
        reference_fn = numeric.lambdify_mp(reference, (Y, *analysis.symbols)) if reference else None
        for y in numeric.line_samples():
            slope = evaluator.derivative(y, lower_limit, upper_limit)
            expected = evaluate(rho, y, *mp_values)
            if not agree(slope, expected):
                note = (
                    f"(φ*)′({format_number(y)}) = {format_number(slope)} but "
                    f"ρ({format_number(y)}) = {format_number(expected)}"
                    f"{' for ' + analysis.describe_values(values) if values else ''}."
                )
                return CheckResult(name, False, method, note, analysis.point("y", y, values))
            if reference_fn is not None:
                value = evaluator.value(y, lower_limit, upper_limit)
                if not agree(value, evaluate(reference_fn, y, *mp_values)):
                    note = (
                        f"The derived φ*({format_number(y)}) = {format_number(value)} differs "
                        f"from the stored closed form {show(reference)}."
                    )
                    return CheckResult(name, False, method, note, analysis.point("y", y, values))

    closed_form = f"φ*(y) = {show(reference)}" if reference is not None else "φ* derived"
    derivation = (
        f"(∇φ)⁻¹(y) = {show(inverse)} by sympy" if inverse is not None
        else "(∇φ)⁻¹ by bisection"
    )
    note = f"{closed_form}; {derivation}; (φ*)′ = ρ at every sample of ℝ."
    return CheckResult(name, True, method, note)


def _gradient_inverse(analysis: LegendreAnalysis) -> tuple[sp.Expr | None, str]:
    """Solve φ′(t) = y for t with sympy, picking the branch that maps back into int I."""
    equations = [analysis.phi_prime]
    if analysis.result("gradient_is_inverse").holds:
        equations.append(analysis.rho_inverse)

    # An elementary function of t has a known inverse (tan → atan), which sympy's
    # solve would write in a form singular at y = 0.
    candidates: list[sp.Expr] = []
    for gradient in equations:
        if isinstance(gradient, sp.Function) and gradient.args == (T,):
            try:
                candidates.append(gradient.inverse()(Y))
            except (AttributeError, TypeError):
                pass
    gradient_fn = numeric.lambdify_mp(analysis.phi_prime, (T, *analysis.symbols))
    for candidate in candidates:
        if _inverts_gradient(analysis, gradient_fn, numeric.lambdify_mp(candidate, (Y, *analysis.symbols))):
            return candidate, SYMBOLIC

    for gradient in equations:
        try:
            solutions = sp.solve(sp.Eq(gradient, Y), T)
        except NotImplementedError:
            continue
        for candidate in solutions:
            candidate_fn = numeric.lambdify_mp(candidate, (Y, *analysis.symbols))
            if _inverts_gradient(analysis, gradient_fn, candidate_fn):
                return candidate, SYMBOLIC
    return None, NUMERIC


def _inverts_gradient(analysis: LegendreAnalysis, gradient_fn: Callable, candidate_fn: Callable) -> bool:
    for values in analysis.parameter_values:
        mp_values = analysis.mp_values(values)
        samples = analysis.interior(values)
        for x in samples[:: max(1, len(samples) // 5)]:
            y = evaluate(gradient_fn, x, *mp_values)
            if not agree(evaluate(candidate_fn, y, *mp_values), x):
                return False
    return True


class _ConjugateEvaluator:
    """Evaluate φ* and (φ*)′ at one parameter sample: on the range of φ′ through (∇φ)⁻¹,
    beyond it as the affine function y·e − φ(e) of the end e that the supremum reaches."""

    def __init__(self, analysis: LegendreAnalysis, values, inverse, conjugate, conjugate_prime) -> None:
        self.analysis = analysis
        self.mp_values = analysis.mp_values(values)
        self.lower, self.upper = analysis.bounds(values)
        symbols = (Y, *analysis.symbols)
        self.inverse = numeric.lambdify_mp(inverse, symbols) if inverse is not None else None
        self.conjugate = numeric.lambdify_mp(conjugate, symbols) if conjugate is not None else None
        self.conjugate_prime = (
            numeric.lambdify_mp(conjugate_prime, symbols) if conjugate_prime is not None else None
        )
        self.phi = numeric.lambdify_mp(analysis.phi, (T, *analysis.symbols))
        self.gradient = numeric.lambdify_mp(analysis.phi_prime, (T, *analysis.symbols))

    def _beyond(self, y, lower_limit, upper_limit) -> mpmath.mpf | None:
        """Return the end of I where the supremum sits when y is outside the range of φ′."""
        if lower_limit.is_finite and y <= numeric.to_mpf(lower_limit):
            return self.lower
        if upper_limit.is_finite and y >= numeric.to_mpf(upper_limit):
            return self.upper
        return None

    def _end_value(self, end: mpmath.mpf) -> object:
        inward = 1 if end == self.lower else -1
        return evaluate(self.phi, end + inward * mpmath.mpf(10) ** -50, *self.mp_values)

    def derivative(self, y, lower_limit, upper_limit) -> object:
        end = self._beyond(y, lower_limit, upper_limit)
        if end is not None:
            return end
        if self.conjugate_prime is not None:
            return evaluate(self.conjugate_prime, y, *self.mp_values)
        return self._bisect(y)

    def value(self, y, lower_limit, upper_limit) -> object:
        end = self._beyond(y, lower_limit, upper_limit)
        with mpmath.workdps(MP_DPS):
            if end is not None:
                return y * end - self._end_value(end)
            if self.conjugate is not None:
                return evaluate(self.conjugate, y, *self.mp_values)
            t = self._bisect(y)
            return y * t - evaluate(self.phi, t, *self.mp_values)

    def _bisect(self, y) -> mpmath.mpf:
        """Solve φ′(t) = y on int I by bisection; φ′ is increasing there."""
        samples = numeric.interior_samples(self.lower, self.upper)
        with mpmath.workdps(MP_DPS):
            below = [x for x in samples if mpmath.re(evaluate(self.gradient, x, *self.mp_values)) < y]
            above = [x for x in samples if mpmath.re(evaluate(self.gradient, x, *self.mp_values)) >= y]
            low = max(below) if below else min(samples)
            high = min(above) if above else max(samples)
            for _ in range(200):
                middle = (low + high) / 2
                if mpmath.re(evaluate(self.gradient, middle, *self.mp_values)) < y:
                    low = middle
                else:
                    high = middle
            return (low + high) / 2


def check_bregman_projection(analysis: LegendreAnalysis) -> CheckResult:
    """Check ρ(y) = argmin_{u ∈ cl I} φ(u) − u·y by a global scipy search, in float64."""
    name = "bregman_projection"
    not_real = _requires_real_phi(name, analysis)
    if not_real:
        return not_real

    phi = _lambdify_numpy(analysis.phi, (T, *analysis.symbols))
    rho = numeric.lambdify_mp(analysis.rho, (T, *analysis.symbols))
    targets = sorted([*np.linspace(-6.0, 6.0, 25), -25.0, -12.0, 12.0, 25.0], key=lambda y: (abs(y), y))
    for values in analysis.parameter_values:
        floats = tuple(float(v) for v in values)
        lower, upper = (float(b) for b in analysis.bounds(values))
        for y in targets:
            def objective(u, y=y):
                with np.errstate(all="ignore"):
                    return np.real_if_close(phi(u, *floats) - u * y)

            minimizer = numeric.minimize_on_interval(objective, lower, upper)
            expected = _as_float(evaluate(rho, mpmath.mpf(y), *analysis.mp_values(values)))
            if not abs(minimizer - expected) <= numeric.PROJECTION_TOL:
                note = (
                    f"At y = {y:g}{', ' + analysis.describe_values(values) if values else ''}: "
                    f"argmin φ(u) − u·y over cl I is {minimizer:.9g} but ρ(y) = {expected:.9g}."
                )
                return CheckResult(name, False, NUMERIC, note, analysis.point("y", y, values))
    note = (
        f"The scipy minimizer of φ(u) − u·y over cl I matches ρ(y) within "
        f"{numeric.PROJECTION_TOL:g} at {len(targets)} values of y."
    )
    return CheckResult(name, True, NUMERIC, note)


LEGENDRE_CHECK_FUNCTIONS: Mapping[str, Callable[[LegendreAnalysis], CheckResult]] = {
    "real_valued": check_real_valued,
    "gradient_is_inverse": check_gradient_is_inverse,
    "rho_of_rho_inverse": check_rho_of_rho_inverse,
    "rho_inverse_of_rho": check_rho_inverse_of_rho,
    "strictly_convex": check_strictly_convex,
    "strongly_convex": check_strongly_convex,
    "essentially_smooth": check_essentially_smooth,
    "gradient_onto": check_gradient_onto,
    "domain_matches_range": check_domain_matches_range,
    "conjugate": check_conjugate,
    "bregman_projection": check_bregman_projection,
}


def run_legendre_checks(row: LegendreRow) -> tuple[CheckResult, ...]:
    """Run every check of a Legendre row, in the order of ``LEGENDRE_CHECK_FUNCTIONS``."""
    # Every mpmath operation of the checks, sample arithmetic included, runs at MP_DPS.
    with mpmath.workdps(MP_DPS):
        analysis = LegendreAnalysis(row)
        return tuple(analysis.result(name) for name in LEGENDRE_CHECK_FUNCTIONS)
