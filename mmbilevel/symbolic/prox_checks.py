"""Property checks of Examples 3.1 and 3.2: activations written as a Euclidean prox.

An example (g, ρ) of "Bilevel Learning of Deep Representations" claims
ρ = prox_g, that is ρ(t) = argmin_u g(u) + ½(u − t)² with step size τ = 1.
Its checks:

- ``prox_identity``: the global minimizer, found by scipy, equals ρ(t).
- ``stationarity``: ρ(t) − t + g′(ρ(t)) = 0.
- ``range_in_domain``: ρ(ℝ) ⊆ dom g.
- ``g_nonconvex``: the claim of Sections 3.2 and 5 of that paper that g is
  nonconvex, which is true iff g″ < 0 somewhere on int dom g.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import mpmath
import numpy as np
import sympy as sp
from sympy.calculus.util import function_range

from mmbilevel.symbolic import numeric
from mmbilevel.symbolic.checks import (
    NUMERIC,
    SYMBOLIC,
    CheckResult,
    T,
    _Analysis,
    _as_float,
    _identity_check,
    _infimum,
    _lambdify_numpy,
    _positivity_check,
    _range_closure,
    _recognize,
    _shortest,
    _simplify,
    parse_formula,
    show,
    show_interval,
)
from mmbilevel.symbolic.numeric import MP_DPS, evaluate
from mmbilevel.symbolic.table1 import ProxExample

__all__ = ["ProxAnalysis", "PROX_CHECK_FUNCTIONS", "run_prox_checks"]


class ProxAnalysis(_Analysis):
    """Parsed formulas of a prox example: g on dom g and the activation ρ."""

    def __init__(self, example: ProxExample) -> None:
        super().__init__(())
        self.example = example
        self.lower = parse_formula(example.lower)
        self.upper = parse_formula(example.upper)
        self.g = parse_formula(example.g)
        self.rho = parse_formula(example.rho)
        self.g_prime = sp.expand_func(sp.diff(self.g, T))
        self.g_second = sp.expand_func(sp.diff(self.g, T, 2))

    def interior(self, _values: tuple[sp.Rational, ...] = ()) -> list[mpmath.mpf]:
        return numeric.interior_samples(numeric.to_mpf(self.lower), numeric.to_mpf(self.upper))


def check_prox_identity(analysis: ProxAnalysis) -> CheckResult:
    """Check ρ(t) = argmin_u g(u) + ½(u − t)² by a global scipy search over dom g."""
    name = "prox_identity"
    g = _lambdify_numpy(analysis.g, (T,))
    rho = numeric.lambdify_mp(analysis.rho, (T,))
    lower, upper = float(numeric.to_mpf(analysis.lower)), float(numeric.to_mpf(analysis.upper))
    targets = sorted([*np.linspace(-6.0, 6.0, 49), -30.0, -15.0, 15.0, 30.0], key=lambda t: (abs(t), t))
    for t in targets:
        def objective(u, t=t):
            with np.errstate(all="ignore"):
                return np.real_if_close(g(u) + 0.5 * (u - t) ** 2)

        minimizer = numeric.minimize_on_interval(objective, lower, upper)
        expected = _as_float(evaluate(rho, mpmath.mpf(t)))
        if not abs(minimizer - expected) <= numeric.PROJECTION_TOL:
            note = f"At t = {t:g}: argmin g(u) + ½(u − t)² is {minimizer:.9g} but ρ(t) = {expected:.9g}."
            return CheckResult(name, False, NUMERIC, note, {"t": t})
    note = (
        f"The global scipy minimizer of g(u) + ½(u − t)² matches ρ(t) within "
        f"{numeric.PROJECTION_TOL:g} at {len(targets)} values of t."
    )
    return CheckResult(name, True, NUMERIC, note)


def check_stationarity(analysis: ProxAnalysis) -> CheckResult:
    """Check the optimality condition u − t + g′(u) = 0 at u = ρ(t)."""
    at_rho = analysis.rho - T + analysis.g_prime.subs(T, analysis.rho)
    return _identity_check(
        analysis,
        "stationarity",
        at_rho,
        sp.Integer(0),
        _simplify(at_rho),
        T,
        lambda _values: numeric.line_samples(),
        "ρ(t) − t + g′(ρ(t))",
    )


def check_range_in_domain(analysis: ProxAnalysis) -> CheckResult:
    """Check ρ(ℝ) ⊆ dom g."""
    name = "range_in_domain"
    example = analysis.example
    domain = sp.Interval(
        analysis.lower, analysis.upper, not example.lower_closed, not example.upper_closed
    )
    try:
        image = function_range(analysis.rho, T, sp.S.Reals)
    except (NotImplementedError, ValueError, TypeError):
        image = None
    if image is None:
        low, high, _ = _range_closure(analysis, analysis.rho)
        image = sp.Interval(low, high)
        method = NUMERIC
    else:
        method = SYMBOLIC
    inside = bool(image.is_subset(domain))
    relation = "⊆" if inside else "⊈"
    note = f"ρ(ℝ) = {show_interval(image)} {relation} dom g = {show_interval(domain)}."
    return CheckResult(name, inside, method, note, None if inside else {"t": 0.0})


def check_g_nonconvex(analysis: ProxAnalysis) -> CheckResult:
    """Check the claim of Sections 3.2 and 5 that g is nonconvex, true iff g″ < 0 somewhere."""
    name = "g_nonconvex"
    convex = _positivity_check(analysis, name, analysis.g_second, analysis.interior, "g″", strict=False)
    claim = analysis.example.convexity_claim
    if not convex.holds:
        return CheckResult(name, True, convex.method, f"{claim}, and {convex.note}", convex.counterexample)
    modulus, where, _, _ = _infimum(analysis, analysis.g_second, analysis.interior)
    strength = (
        f"strongly convex with modulus {_recognize(modulus)}" if modulus > 1e-15
        else "convex but not strongly convex"
    )
    note = (
        f"{claim}, but g″(t) = {show(_shortest(analysis.g_second, _simplify(analysis.g_second)))} "
        f"≥ 0 on int dom g, so g is "
        f"{strength} (inf g″ {where})."
    )
    return CheckResult(name, False, convex.method, note, {"t": 0.0})


PROX_CHECK_FUNCTIONS: Mapping[str, Callable[[ProxAnalysis], CheckResult]] = {
    "prox_identity": check_prox_identity,
    "stationarity": check_stationarity,
    "range_in_domain": check_range_in_domain,
    "g_nonconvex": check_g_nonconvex,
}


def run_prox_checks(example: ProxExample) -> tuple[CheckResult, ...]:
    """Run every check of a prox example, in the order of ``PROX_CHECK_FUNCTIONS``."""
    with mpmath.workdps(MP_DPS):
        analysis = ProxAnalysis(example)
        return tuple(check(analysis) for check in PROX_CHECK_FUNCTIONS.values())
