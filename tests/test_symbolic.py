"""Tests of the verification of Table 1 and Examples 3.1–3.2 (mmbilevel.symbolic).

The verdicts are recomputed by the checks and compared with the expected ones
stored in the package. Independently of the checks, the failures are confirmed
numerically at their counter-examples with plain mpmath, numpy and scipy, and
rows with planted errors show that each kind of check can fail.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace

import mpmath
import numpy as np
import pytest
from scipy.optimize import minimize_scalar

from mmbilevel.symbolic import (
    CORRECTIONS,
    EXPECTED_CORRECTED_VERDICTS,
    EXPECTED_VERDICTS,
    LEGENDRE_CHECKS,
    PROX_CHECKS,
    TABLE1_ROWS,
    format_table,
    row_names,
    verify_row,
    verify_table1,
)
from mmbilevel.symbolic.checks import run_legendre_checks

CATALOGUE_ROWS = ("isru", "sigmoid", "softplus", "arctan", "tanh", "sin", "arcsinh")
EXAMPLE_ROWS = ("example_3_1_isru", "example_3_2_arctan")

VERDICT_CASES = [
    (name, check) for name in CATALOGUE_ROWS for check in LEGENDRE_CHECKS
] + [(name, check) for name in EXAMPLE_ROWS for check in PROX_CHECKS]
CORRECTED_CASES = [
    (name, check) for name in EXPECTED_CORRECTED_VERDICTS for check in LEGENDRE_CHECKS
]


def bounded_argmin(objective, lower: float, upper: float) -> float:
    """Minimize a scalar function on [lower, upper]: dense grid, then bounded Brent."""
    grid = np.linspace(lower, upper, 20001)[1:-1]
    with np.errstate(all="ignore"):
        values = np.array([objective(u) for u in grid])
    best = int(np.nanargmin(values))
    left = grid[max(best - 1, 0)] if best > 0 else lower
    right = grid[min(best + 1, len(grid) - 1)] if best < len(grid) - 1 else upper
    result = minimize_scalar(objective, bounds=(left, right), method="bounded", options={"xatol": 1e-12})
    return float(result.x)


def test_row_names_are_catalogue_names() -> None:
    assert row_names() == CATALOGUE_ROWS + EXAMPLE_ROWS


def test_table1_has_seven_rows() -> None:
    assert len(TABLE1_ROWS) == 7


@pytest.mark.parametrize(("name", "check"), VERDICT_CASES)
def test_verdict_matches_expected(name: str, check: str) -> None:
    assert verify_row(name).verdicts[check] is EXPECTED_VERDICTS[name][check]


@pytest.mark.parametrize(("name", "check"), CORRECTED_CASES)
def test_corrected_verdict_matches_expected(name: str, check: str) -> None:
    assert verify_row(name).corrected_verdicts[check] is EXPECTED_CORRECTED_VERDICTS[name][check]


@pytest.mark.parametrize("name", CATALOGUE_ROWS + EXAMPLE_ROWS)
def test_expected_verdicts_cover_every_check(name: str) -> None:
    checks = PROX_CHECKS if name.startswith("example") else LEGENDRE_CHECKS
    assert set(EXPECTED_VERDICTS[name]) == set(checks)


@pytest.mark.parametrize("name", ["sigmoid", "arctan", "tanh", "arcsinh"])
def test_row_holds(name: str) -> None:
    assert verify_row(name).holds


@pytest.mark.parametrize("name", ["isru", "softplus", "sin", *EXAMPLE_ROWS])
def test_row_fails_with_correction(name: str) -> None:
    report = verify_row(name)
    assert not report.holds
    assert name in CORRECTIONS
    assert report.corrections


@pytest.mark.parametrize("name", CATALOGUE_ROWS + EXAMPLE_ROWS)
def test_failed_checks_have_counterexample(name: str) -> None:
    for check in verify_row(name).checks:
        if not check.holds:
            assert check.counterexample, f"{name}.{check.name} failed without a counter-example"


def test_verify_row_case_insensitive() -> None:
    assert verify_row("SIN").row == "sin"


def test_verify_row_unknown_name() -> None:
    with pytest.raises(ValueError, match="unknown row 'relu'.*sigmoid"):
        verify_row("relu")


def test_report_to_dict_is_json() -> None:
    data = json.loads(json.dumps([report.to_dict() for report in verify_table1()]))
    assert [entry["row"] for entry in data] == list(row_names())
    assert all(entry["holds"] == all(entry["checks"].values()) for entry in data)


def test_format_table_lists_rows() -> None:
    text = format_table(verify_table1())
    for name in row_names():
        assert name in text
    assert "✗" in text
    assert "✓" in text


def test_format_table_ascii_marks() -> None:
    text = format_table(verify_table1(), unicode=False)
    assert "✓" not in text
    assert " NO " in text


# Independent confirmation of the failures, without the package's checks.


def test_isru_counterexample_scale() -> None:
    check = verify_row("isru").check("rho_of_rho_inverse")
    t, lam = check.counterexample["t"], check.counterexample["lambda"]
    rho_inverse = t / math.sqrt(1 - t * t)
    composed = lam * rho_inverse / math.sqrt(1 + rho_inverse**2)
    assert lam != 1.0
    assert abs(composed - t) > 1e-3


def test_isru_projection_ignores_scale() -> None:
    # For λ = 2 the printed ρ(1) = √2 lies outside I = [−1, 1]; the projection is 1/√2.
    minimizer = bounded_argmin(lambda u: -math.sqrt(1 - u * u) - u * 1.0, -1.0, 1.0)
    assert minimizer == pytest.approx(1 / math.sqrt(2), abs=1e-6)
    assert abs(2.0 / math.sqrt(2.0) - minimizer) > 0.5


def test_softplus_printed_phi_not_real() -> None:
    t = verify_row("softplus").check("real_valued").counterexample["t"]
    with mpmath.workdps(30):
        value = t * mpmath.log((mpmath.exp(t) - 1) / (1 - mpmath.exp(-t))) - mpmath.polylog(2, mpmath.exp(t))
    assert abs(mpmath.im(value)) > 1e-3


def test_softplus_printed_real_part_gradient() -> None:
    # Even the real part of the printed φ has derivative 2t + log(eᵗ − 1), not log(eᵗ − 1).
    def real_phi(t):
        return mpmath.re(t * t - mpmath.polylog(2, mpmath.exp(t)))

    with mpmath.workdps(30):
        slope = mpmath.diff(real_phi, mpmath.mpf(1))
        assert float(slope) == pytest.approx(2 + math.log(math.e - 1), rel=1e-12)


@pytest.mark.parametrize("t", [1e-3, 0.5, 1.0, 4.0, 20.0])
def test_softplus_corrected_gradient(t: float) -> None:
    def phi(x):
        return x * x / 2 + mpmath.polylog(2, mpmath.exp(-x))

    with mpmath.workdps(40):
        slope = mpmath.diff(phi, mpmath.mpf(t))
        expected = mpmath.log(mpmath.expm1(mpmath.mpf(t)))
        assert abs(slope - expected) < mpmath.mpf("1e-25") * (1 + abs(expected))


@pytest.mark.parametrize("y", [-3.0, 0.0, 2.5])
def test_softplus_corrected_conjugate(y: float) -> None:
    # φ*(y) = sup_t t·y − φ(t) over t ≥ 0, by scipy, against −Li₂(−eʸ) − π²/6.
    def negative(t):
        return -(t * y - (t * t / 2 + float(mpmath.polylog(2, math.exp(-t)))))

    best = minimize_scalar(negative, bounds=(0.0, 40.0), method="bounded", options={"xatol": 1e-12})
    closed_form = float(-mpmath.polylog(2, -mpmath.exp(y)) - mpmath.pi**2 / 6)
    assert -best.fun == pytest.approx(closed_form, abs=1e-9)


def test_sin_projection_saturates() -> None:
    y = verify_row("sin").check("bregman_projection").counterexample["y"]

    def objective(u):
        return math.sqrt(max(1 - u * u, 0.0)) + u * math.asin(u) - u * y

    minimizer = bounded_argmin(objective, -1.0, 1.0)
    assert abs(y) > math.pi / 2
    assert minimizer == pytest.approx(math.copysign(1.0, y), abs=1e-6)
    assert abs(math.sin(y) - minimizer) > 1e-3


def test_sin_left_inverse_set() -> None:
    note = verify_row("sin").check("rho_inverse_of_rho").note
    assert "[-π/2, π/2]" in note
    assert math.asin(math.sin(1.5)) == pytest.approx(1.5, abs=1e-12)
    assert abs(math.asin(math.sin(1.6)) - 1.6) > 1e-3


def test_sin_gradient_bounded() -> None:
    assert math.asin(1.0) == pytest.approx(math.pi / 2)
    assert "finite" in verify_row("sin").check("essentially_smooth").note


@pytest.mark.parametrize("t", [-30.0, -2.0, 0.3, 5.0])
def test_example_isru_prox(t: float) -> None:
    def objective(u):
        return -u * u / 2 - math.sqrt(max(1 - u * u, 0.0)) + (u - t) ** 2 / 2

    minimizer = bounded_argmin(objective, -1.0, 1.0)
    assert minimizer == pytest.approx(t / math.sqrt(1 + t * t), abs=1e-6)


@pytest.mark.parametrize("t", [-30.0, -2.0, 0.3, 5.0])
def test_example_arctan_prox(t: float) -> None:
    def objective(u):
        return -(2 / math.pi) * math.log(math.cos(math.pi * u / 2)) - u * u / 2 + (u - t) ** 2 / 2

    minimizer = bounded_argmin(objective, -1.0 + 1e-15, 1.0 - 1e-15)
    assert minimizer == pytest.approx(2 / math.pi * math.atan(t), abs=1e-6)


@pytest.mark.parametrize(
    ("g", "modulus"),
    [
        (lambda u: -u * u / 2 - mpmath.sqrt(1 - u * u), 0.0),
        (lambda u: -(2 / mpmath.pi) * mpmath.log(mpmath.cos(mpmath.pi * u / 2)) - u * u / 2, math.pi / 2 - 1),
    ],
    ids=["isru", "arctan"],
)
def test_example_g_convex(g, modulus: float) -> None:
    with mpmath.workdps(30):
        curvatures = [mpmath.diff(g, mpmath.mpf(u), 2) for u in np.linspace(-0.99, 0.99, 45)]
    assert min(float(c) for c in curvatures) >= modulus - 1e-12
    assert float(mpmath.diff(g, mpmath.mpf(0), 2)) == pytest.approx(modulus, abs=1e-12)


# Planted errors: each kind of check must be able to fail.


def _row(name: str):
    return next(row for row in TABLE1_ROWS if row.name == name)


def test_wrong_inverse_fails_gradient_check() -> None:
    results = {r.name: r for r in run_legendre_checks(replace(_row("tanh"), rho_inverse="atan(t)"))}
    assert not results["gradient_is_inverse"].holds
    assert not results["rho_of_rho_inverse"].holds


def test_concave_phi_fails_convexity() -> None:
    results = {r.name: r for r in run_legendre_checks(replace(_row("arctan"), phi="log(cos(t))"))}
    assert not results["strictly_convex"].holds
    assert not results["conjugate"].holds or not results["bregman_projection"].holds


def test_wrong_activation_fails_projection() -> None:
    results = {r.name: r for r in run_legendre_checks(replace(_row("sigmoid"), rho="tanh(t)"))}
    assert not results["domain_matches_range"].holds
    assert not results["conjugate"].holds
    assert not results["bregman_projection"].holds
    assert results["gradient_is_inverse"].holds
