"""Numeric side of the symbolic checks: sample points, mpmath evaluation, scipy minimization.

The checks in :mod:`mmbilevel.symbolic.checks` decide an identity symbolically
when sympy can and fall back to the functions here when it cannot. Values are
computed by mpmath with ``MP_DPS`` significant digits. The samples come no
closer than 10⁻²⁴ to a finite end of an interval, so at least 36 digits
survive the cancellation near the ends, and an identity counts as holding at
a point when both sides agree to the relative tolerance ``RTOL`` = 10⁻²⁰.
A false identity of the printed table misses by far more than that.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import mpmath
import numpy as np
import sympy as sp
from scipy.optimize import minimize_scalar

__all__ = [
    "MP_DPS",
    "RTOL",
    "PROJECTION_TOL",
    "to_mpf",
    "lambdify_mp",
    "evaluate",
    "is_real_finite",
    "agree",
    "interior_samples",
    "line_samples",
    "search_grid",
    "minimize_on_interval",
    "bisect_boundary",
    "format_number",
]

MP_DPS = 60
RTOL = mpmath.mpf("1e-20")
# Accuracy of a minimizer found by bounded Brent in float64. The objectives
# have curvature at least 1 near their minimizers, so a float64 value error
# of 1e-16·|f| moves the minimizer by about 1e-8·√|f|, well below this.
PROJECTION_TOL = 1e-6

_END_OFFSETS = tuple(mpmath.mpf(10) ** -k for k in (24, 16, 12, 8, 6, 4, 3, 2))
_FAR_POINTS = tuple(mpmath.mpf(10) ** k for k in (-1, 0, 1, 2))


def to_mpf(value: sp.Expr) -> mpmath.mpf:
    """Convert a real sympy number (±oo allowed) to an mpmath float at ``MP_DPS`` digits."""
    if value == sp.oo:
        return mpmath.inf
    if value == -sp.oo:
        return -mpmath.inf
    with mpmath.workdps(MP_DPS):
        return mpmath.mpf(str(sp.N(value, MP_DPS + 10)))


def lambdify_mp(expr: sp.Expr, symbols: Sequence[sp.Symbol]) -> Callable[..., object]:
    """Compile a sympy expression into an mpmath function of ``symbols``."""
    return sp.lambdify(list(symbols), expr, modules="mpmath")


def evaluate(function: Callable[..., object], *args: object) -> mpmath.mpc | mpmath.mpf:
    """Evaluate an mpmath function at ``MP_DPS`` digits; a failed evaluation gives nan."""
    with mpmath.workdps(MP_DPS):
        try:
            value = function(*args)
        except (ZeroDivisionError, ValueError, OverflowError):
            return mpmath.nan
        if isinstance(value, (int, float, sp.Basic)):
            value = mpmath.mpmathify(float(value) if isinstance(value, sp.Basic) else value)
        return value


def is_real_finite(value: object, rtol: mpmath.mpf = RTOL) -> bool:
    """Tell whether ``value`` is finite with an imaginary part negligible against ``rtol``."""
    with mpmath.workdps(MP_DPS):
        value = mpmath.mpmathify(value)
        if not mpmath.isfinite(value):
            return False
        return abs(mpmath.im(value)) <= rtol * (1 + abs(value))


def agree(left: object, right: object, rtol: mpmath.mpf = RTOL) -> bool:
    """Tell whether two finite numbers agree: |left − right| ≤ rtol·(1 + |right|)."""
    with mpmath.workdps(MP_DPS):
        left = mpmath.mpmathify(left)
        right = mpmath.mpmathify(right)
        if not (mpmath.isfinite(left) and mpmath.isfinite(right)):
            return False
        return abs(left - right) <= rtol * (1 + abs(right))


def interior_samples(lower: mpmath.mpf, upper: mpmath.mpf, count: int = 41) -> list[mpmath.mpf]:
    """Return points of the open interval (lower, upper), dense near finite ends.

    Finite ends get points at distances 10⁻²⁴ to 10⁻²; infinite ends get points up to
    distance 100 from the other end (or from 0 on ℝ). Points at a readable distance
    from the ends come first, so the first failing point makes a readable
    counter-example.
    """
    with mpmath.workdps(MP_DPS):
        points: set[mpmath.mpf] = set()
        finite_lower = mpmath.isfinite(lower)
        finite_upper = mpmath.isfinite(upper)

        if finite_lower and finite_upper:
            width = upper - lower
            points.update(lower + width * k / (count + 1) for k in range(1, count + 1))
            for offset in _END_OFFSETS:
                points.update((lower + width * offset, upper - width * offset))
        elif finite_lower:
            points.update(lower + offset for offset in _END_OFFSETS)
            points.update(lower + mpmath.mpf(k) / 4 for k in range(1, count + 1))
            points.update(lower + far for far in _FAR_POINTS)
        elif finite_upper:
            points.update(upper - offset for offset in _END_OFFSETS)
            points.update(upper - mpmath.mpf(k) / 4 for k in range(1, count + 1))
            points.update(upper - far for far in _FAR_POINTS)
        else:
            points.update(line_samples())
            points.update(sign * mpmath.mpf(100) for sign in (-1, 1))
        return _readable_first(points, lower, upper)


def line_samples() -> list[mpmath.mpf]:
    """Return points of ℝ: a grid on [−40, 40], dense on [−4, 4], and points near 0.

    Points are ordered by distance from 0 with those within 0.1 of 0 last, so the
    first failing point makes a readable counter-example. Beyond ±40, e⁻ʸ drops
    below 10⁻¹⁷ and the saturating activations would need more digits than
    ``MP_DPS`` to round-trip, so the grid stops there.
    """
    with mpmath.workdps(MP_DPS):
        points = {mpmath.mpf(k) for k in range(-40, 41)}
        points.update(mpmath.mpf(k) / 8 for k in range(-32, 33))
        for k in (12, 6, 3):
            tiny = mpmath.mpf(10) ** -k
            points.update((tiny, -tiny))
        return sorted(points, key=lambda y: (abs(y) < mpmath.mpf("0.1"), abs(y), y))


def _readable_first(
    points: set[mpmath.mpf], lower: mpmath.mpf, upper: mpmath.mpf
) -> list[mpmath.mpf]:
    """Sort points, those within 10⁻² of a finite end (relative to the width) last."""
    width = upper - lower if mpmath.isfinite(upper - lower) else mpmath.mpf(1)
    margin = width / 100

    def near_end(x: mpmath.mpf) -> bool:
        return bool(x - lower < margin or upper - x < margin)

    return sorted(points, key=lambda x: (near_end(x), x))


def search_grid(lower: float, upper: float) -> np.ndarray:
    """Return a sorted float64 grid of the open interval (lower, upper) for a global search."""
    if math.isfinite(lower) and math.isfinite(upper):
        width = upper - lower
        unit = np.concatenate([np.linspace(0.0, 1.0, 801)[1:-1], np.geomspace(1e-12, 1e-3, 10)])
        grid = np.concatenate([lower + width * unit, upper - width * unit])
    elif math.isfinite(lower):
        grid = lower + np.concatenate([np.geomspace(1e-12, 1e3, 600), np.linspace(0.01, 60, 600)])
    elif math.isfinite(upper):
        grid = upper - np.concatenate([np.geomspace(1e-12, 1e3, 600), np.linspace(0.01, 60, 600)])
    else:
        half = np.concatenate([np.geomspace(1e-6, 1e3, 300), np.linspace(0.01, 60, 600)])
        grid = np.concatenate([-half, [0.0], half])
    grid = np.sort(grid[(grid > lower) & (grid < upper)])
    # Drop near-duplicates from the overlapping pieces, so each cell has positive width.
    scale = max(1.0, float(np.max(np.abs(grid))))
    keep = np.concatenate([[True], np.diff(grid) > 1e-14 * scale])
    return grid[keep]


def minimize_on_interval(
    objective: Callable[[np.ndarray], np.ndarray], lower: float, upper: float
) -> float:
    """Return the global minimizer of a vectorized ``objective`` over [lower, upper].

    A grid search over :func:`search_grid` locates the best cell, then scipy's bounded
    Brent method refines inside it, so an end of the interval is reached to within
    1e-13 when the objective decreases towards it. Non-finite or non-real values
    count as +∞.
    """
    grid = search_grid(lower, upper)
    values = _finite_or_inf(objective(grid))
    best = int(np.argmin(values))

    # The cell around the best grid point; at the last grid point it reaches the end.
    if best > 0:
        left = grid[best - 1]
    else:
        left = lower if math.isfinite(lower) else grid[0]
    if best < len(grid) - 1:
        right = grid[best + 1]
    else:
        right = upper if math.isfinite(upper) else grid[-1]
    result = minimize_scalar(
        lambda u: float(_finite_or_inf(objective(np.array([u])))[0]),
        bounds=(float(left), float(right)),
        method="bounded",
        options={"xatol": 1e-13, "maxiter": 500},
    )
    return float(result.x)


def bisect_boundary(
    holds: Callable[[mpmath.mpf], bool], inside: mpmath.mpf, outside: mpmath.mpf, steps: int = 80
) -> mpmath.mpf:
    """Locate where ``holds`` switches from True at ``inside`` to False at ``outside``."""
    with mpmath.workdps(MP_DPS):
        for _ in range(steps):
            middle = (inside + outside) / 2
            if holds(middle):
                inside = middle
            else:
                outside = middle
        return (inside + outside) / 2


def format_number(value: object, digits: int = 6) -> str:
    """Format an mpmath or sympy number for a note, complex parts included."""
    with mpmath.workdps(MP_DPS):
        value = mpmath.mpmathify(value)
        if isinstance(value, mpmath.mpc) and value.imag != 0:
            sign = "+" if value.imag >= 0 else "−"
            real = mpmath.nstr(value.real, digits)
            imag = mpmath.nstr(abs(value.imag), digits)
            return f"{real} {sign} {imag}i"
        return mpmath.nstr(mpmath.re(value), digits)


def _finite_or_inf(values: object) -> np.ndarray:
    with np.errstate(all="ignore"):
        array = np.asarray(values, dtype=complex)
    bad = ~np.isfinite(array) | (array.imag != 0)
    return np.where(bad, np.inf, array.real)
