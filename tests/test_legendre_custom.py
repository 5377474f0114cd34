"""Tests for user-defined Legendre functions: subclasses and `Legendre.from_sympy`."""

from __future__ import annotations

import logging
import math

import pytest
import sympy
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import optimize

from mmbilevel import legendre
from mmbilevel.legendre import Legendre

DTYPES = [torch.float32, torch.float64]


class Entropy(Legendre):
    """Boltzmann–Shannon entropy x·log x − x on [0, ∞), whose activation is exp."""

    name = "entropy"
    domain = (0.0, math.inf)

    def value(self, x: torch.Tensor) -> torch.Tensor:
        return torch.xlogy(x, x) - x

    def grad(self, x: torch.Tensor) -> torch.Tensor:
        return torch.log(x)


class FermiDirac(Legendre):
    """t·log t + (1 − t)·log(1 − t) on [0, 1] without a conjugate: the fallback must give the sigmoid."""

    name = "fermi_dirac"
    domain = (0.0, 1.0)

    def value(self, x: torch.Tensor) -> torch.Tensor:
        return torch.xlogy(x, x) + torch.special.xlog1py(1.0 - x, -x)

    def grad(self, x: torch.Tensor) -> torch.Tensor:
        return torch.log(x) - torch.log1p(-x)


class BoxQuadratic(Legendre):
    """x²/2 on [−1, 1]: ∇φ is bounded, so the projection is the clip to [−1, 1]."""

    name = "box_quadratic"
    domain = (-1.0, 1.0)
    essentially_smooth = False

    def value(self, x: torch.Tensor) -> torch.Tensor:
        return 0.5 * x * x

    def grad(self, x: torch.Tensor) -> torch.Tensor:
        return x.clone()


class Quartic(Legendre):
    """x⁴/4 + x²/2 on ℝ, whose activation has no elementary closed form that we use."""

    name = "quartic"

    def value(self, x: torch.Tensor) -> torch.Tensor:
        return x**4 / 4 + x**2 / 2

    def grad(self, x: torch.Tensor) -> torch.Tensor:
        return x**3 + x


# ------------------------------------------------------------- subclass fallback


@pytest.mark.parametrize("dtype", DTYPES)
def test_fallback_matches_exp(dtype: torch.dtype) -> None:
    phi = Entropy()
    y = torch.tensor([-30.0, -2.0, 0.0, 1.5, 20.0], dtype=dtype)
    # The solver stops at 4·eps relative, and log(x) is rounded to eps·|y| which moves x by that relative amount.
    eps = torch.finfo(dtype).eps
    relative_error = (phi.grad_conjugate(y) - torch.exp(y)).abs() / torch.exp(y)
    assert bool((relative_error <= 8 * eps * (1 + y.abs())).all()), relative_error


def test_fallback_records_solve() -> None:
    phi = Entropy()
    assert phi.last_solve is None
    phi.grad_conjugate(torch.tensor([0.5, 2.0], dtype=torch.float64))
    assert phi.last_solve is not None
    assert phi.last_solve.converged


def test_fallback_logs_info(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="mmbilevel"):
        Entropy().grad_conjugate(torch.tensor([0.5]))
    assert any("Newton-bisection" in record.getMessage() for record in caplog.records)


def test_fallback_not_closed_form() -> None:
    assert not Entropy().has_closed_form_conjugate


def test_fallback_conjugate_fenchel_young() -> None:
    phi = Entropy()
    y = torch.tensor([-3.0, 0.0, 2.5], dtype=torch.float64)
    # φ*(y) = eʸ for the entropy; Fenchel–Young is exact up to the 4·eps root.
    torch.testing.assert_close(phi.conjugate(y), torch.exp(y), rtol=1e-14, atol=1e-15)


def test_fallback_hessian_by_autograd() -> None:
    x = torch.tensor([0.1, 1.0, 7.0], dtype=torch.float64)
    torch.testing.assert_close(Entropy().hessian(x), 1.0 / x)


def test_fallback_gradcheck() -> None:
    y = torch.tensor([-1.0, 0.2, 1.7], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(Quartic().grad_conjugate, (y,))


def test_fallback_conjugate_gradient() -> None:
    phi = Quartic()
    y = torch.tensor([-4.0, 0.3, 2.0], dtype=torch.float64, requires_grad=True)
    (derivative,) = torch.autograd.grad(phi.conjugate(y).sum(), y)
    # ∇φ* is the root itself; the implicit gradient makes autograd of φ* agree with it.
    torch.testing.assert_close(derivative, phi.grad_conjugate(y.detach()), rtol=1e-12, atol=1e-14)


def test_fallback_matches_brentq() -> None:
    phi = Quartic()
    for y in (-50.0, -1.0, 0.0, 0.4, 3.0, 1e3):
        expected = optimize.brentq(lambda x, y=y: x**3 + x - y, -100.0, 100.0, xtol=1e-15, rtol=1e-15)
        x = float(phi.grad_conjugate(torch.tensor(y, dtype=torch.float64)))
        assert abs(x - expected) <= 4e-15 * max(1.0, abs(expected))


def test_bounded_gradient_projection() -> None:
    phi = BoxQuadratic()
    y = torch.tensor([-5.0, -0.25, 0.0, 0.8, 3.0], dtype=torch.float64)
    torch.testing.assert_close(phi.grad_conjugate(y), y.clamp(-1.0, 1.0))


def test_bounded_gradient_conjugate() -> None:
    phi = BoxQuadratic()
    y = torch.tensor([-5.0, -0.25, 0.8, 3.0], dtype=torch.float64)
    # sup_{|x| ≤ 1} x·y − x²/2 is the Huber function: y²/2 inside, |y| − 1/2 beyond.
    expected = torch.where(y.abs() <= 1, 0.5 * y * y, y.abs() - 0.5)
    torch.testing.assert_close(phi.conjugate(y), expected)


def test_subclass_domain_checked() -> None:
    with pytest.raises(ValueError, match=r"entropy.*-1.*\[0, inf\]"):
        Entropy().grad(torch.tensor([-1.0]))


def test_subclass_clamp_keyword() -> None:
    out = Entropy().grad(torch.tensor([-1.0, 2.0], dtype=torch.float64), clamp=True)
    assert bool(torch.isfinite(out).all())


@pytest.mark.parametrize("dtype", DTYPES)
def test_fallback_round_trip(dtype: torch.dtype) -> None:
    phi = Quartic()
    width = 32 if dtype == torch.float32 else 64

    @settings(max_examples=30, deadline=None)
    @given(st.lists(st.floats(-1e3, 1e3, width=width), min_size=1, max_size=8))
    def check(values: list[float]) -> None:
        x = torch.tensor(values, dtype=dtype)
        back = phi.grad_conjugate(phi.grad(x))
        # x³ + x is rounded to eps relative, which the cube root divides by 3; the root adds 4·eps.
        assert bool(((back - x).abs() <= 8 * torch.finfo(dtype).eps * (x.abs() + 1e-30)).all()), (x, back)

    check()


@pytest.mark.parametrize("dtype", DTYPES)
def test_fallback_sigmoid_whole_line(dtype: torch.dtype) -> None:
    phi = FermiDirac()
    width = 32 if dtype == torch.float32 else 64
    # Beyond these bounds the sigmoid leaves the normal range of the dtype.
    bound = 80.0 if dtype == torch.float32 else 700.0

    @settings(max_examples=30, deadline=None)
    @given(st.lists(st.floats(-bound, bound, width=width), min_size=1, max_size=8))
    def check(values: list[float]) -> None:
        y = torch.tensor(values, dtype=dtype)
        x = phi.grad_conjugate(y)
        expected = torch.sigmoid(y)
        # logit(x) is rounded to eps·|y|, which moves x by that much relative; the solver adds 4·eps.
        tolerance = 8 * torch.finfo(dtype).eps * (1 + y.abs()) * expected
        assert phi.last_solve.converged
        assert bool(((x - expected).abs() <= tolerance).all()), (y, x, expected)

    check()


# ---------------------------------------------------------------- from_sympy

T = sympy.Symbol("t", real=True)


def test_sympy_entropy_closed_form() -> None:
    phi = Legendre.from_sympy(T * sympy.log(T) + (1 - T) * sympy.log(1 - T), T, (0, 1), name="fermi")
    y = torch.tensor([-4.0, 0.0, 2.5], dtype=torch.float64)
    assert phi.closed_form_conjugate
    torch.testing.assert_close(phi.grad_conjugate(y), torch.sigmoid(y))
    torch.testing.assert_close(phi.conjugate(y), torch.nn.functional.softplus(y))


def test_sympy_matches_catalogue_arcsinh() -> None:
    phi = legendre.from_sympy(sympy.cosh(T), T, (-sympy.oo, sympy.oo))
    reference = legendre.get("arcsinh")
    y = torch.linspace(-8.0, 8.0, 17, dtype=torch.float64)
    torch.testing.assert_close(phi.grad_conjugate(y), reference.grad_conjugate(y))
    torch.testing.assert_close(phi.conjugate(y), reference.conjugate(y))


def test_sympy_bounded_gradient_saturates() -> None:
    phi = legendre.from_sympy(sympy.sqrt(1 - T**2) + T * sympy.asin(T), T, (-1, 1))
    y = torch.tensor([-3.0, 0.5, 3.0], dtype=torch.float64)
    assert not phi.essentially_smooth
    torch.testing.assert_close(phi.grad_conjugate(y), torch.tensor([-1.0, math.sin(0.5), 1.0], dtype=torch.float64))
    torch.testing.assert_close(phi.conjugate(y), legendre.get("sin").conjugate(y))


def test_sympy_fallback_reports_reason(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="mmbilevel"):
        phi = legendre.from_sympy(sympy.exp(T) + T**4 / 4 + T**2, T, (-sympy.oo, sympy.oo), name="mixed")
    assert not phi.closed_form_conjugate
    assert phi.fallback_reason
    assert any("mixed" in record.getMessage() for record in caplog.records)


def test_sympy_fallback_solves() -> None:
    phi = legendre.from_sympy(sympy.exp(T) + T**4 / 4 + T**2, T, (-sympy.oo, sympy.oo))
    y = torch.tensor([-3.0, 0.5, 4.0], dtype=torch.float64)
    x = phi.grad_conjugate(y)
    expected = [optimize.brentq(lambda s, v=v: math.exp(s) + s**3 + 2 * s - v, -10.0, 10.0, xtol=1e-15) for v in y.tolist()]
    torch.testing.assert_close(x, torch.tensor(expected, dtype=torch.float64), rtol=1e-13, atol=1e-14)
    assert phi.last_solve is not None


def test_sympy_log_cos_exact_end() -> None:
    phi = legendre.from_sympy(-sympy.log(sympy.cos(T)), T, (-sympy.pi / 2, sympy.pi / 2))
    y = torch.tensor([-20.0, 0.3, 7.0], dtype=torch.float64)
    assert phi.essentially_smooth
    torch.testing.assert_close(phi.grad_conjugate(y), torch.atan(y))


def test_sympy_hessian_symbolic() -> None:
    phi = legendre.from_sympy(T**4 / 4 + T**2 / 2, T, (-sympy.oo, sympy.oo))
    x = torch.tensor([-2.0, 0.0, 1.5], dtype=torch.float64)
    torch.testing.assert_close(phi.hessian(x), 3 * x**2 + 1)


def test_sympy_unknown_function_raises() -> None:
    with pytest.raises(ValueError, match="torch"):
        legendre.from_sympy(sympy.gamma(T + 2), T, (0, 5))


def test_sympy_empty_domain_raises() -> None:
    with pytest.raises(ValueError, match="lower < upper"):
        legendre.from_sympy(T**2, T, (1, 1))


def test_sympy_domain_checked() -> None:
    phi = legendre.from_sympy(T * sympy.log(T) - T, T, (0, sympy.oo), name="entropy")
    with pytest.raises(ValueError, match="entropy"):
        phi(torch.tensor([-0.5]))


class LogCos(Legendre):
    """−log cos x on [−π/2, π/2], whose activation is arctan; float32(π/2) rounds outwards."""

    name = "logcos"
    domain = (-math.pi / 2, math.pi / 2)

    def value(self, x: torch.Tensor) -> torch.Tensor:
        return -torch.log(torch.cos(x))

    def grad(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tan(x)


class Concave(Legendre):
    """−x²/2 on [−1, 1]: concave, so not a Legendre function."""

    name = "concave"
    domain = (-1.0, 1.0)

    def value(self, x: torch.Tensor) -> torch.Tensor:
        return -0.5 * x * x

    def grad(self, x: torch.Tensor) -> torch.Tensor:
        return -x


@pytest.mark.parametrize("dtype", DTYPES)
def test_fallback_end_rounded_outwards(dtype: torch.dtype) -> None:
    y = torch.tensor([-3.0, 0.0, 0.5, 3.0], dtype=dtype)
    eps = torch.finfo(dtype).eps
    torch.testing.assert_close(LogCos().grad_conjugate(y).double(), torch.atan(y.double()), rtol=8 * eps, atol=8 * eps)


def test_fallback_rejects_concave() -> None:
    with pytest.raises(ValueError, match="concave.*not convex"):
        Concave().grad_conjugate(torch.tensor([-0.5, 0.5], dtype=torch.float64))


def test_fallback_second_derivative() -> None:
    y = torch.tensor([-3.0, 0.2, 4.0], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradgradcheck(LogCos().grad_conjugate, (y,))


@pytest.mark.parametrize("dtype", DTYPES)
def test_sympy_cosh_extreme_duals(dtype: torch.dtype) -> None:
    phi = legendre.from_sympy(sympy.cosh(T), T, (-sympy.oo, sympy.oo))
    y = torch.tensor([-1e30, -1e8, -1.0, 0.0, 1e8, 1e30], dtype=dtype)
    eps = torch.finfo(dtype).eps
    torch.testing.assert_close(phi.grad_conjugate(y).double(), torch.asinh(y.double()), rtol=4 * eps, atol=0.0)


def test_sympy_cosh_extreme_gradient() -> None:
    phi = legendre.from_sympy(sympy.cosh(T), T, (-sympy.oo, sympy.oo))
    y = torch.tensor([-1e8, 1e200], dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(phi.grad_conjugate(y).sum(), y)
    # d asinh(y)/dy = 1/√(1 + y²), written as 1/(|y|·√(1 + 1/y²)) so that y² does not overflow.
    magnitude = y.detach().abs()
    torch.testing.assert_close(grad, 1 / (magnitude * torch.sqrt(1 + magnitude**-2)), rtol=1e-12, atol=0.0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_sympy_quartic_extreme_duals(dtype: torch.dtype) -> None:
    # ∇φ(x) = x³ + x; the Cardano formula cancels for large y.
    phi = legendre.from_sympy(T**4 / 4 + T**2 / 2, T, (-sympy.oo, sympy.oo))
    y = torch.tensor([-1e10, -1e3, 1e-3, 1e3, 1e6, 1e10], dtype=dtype)
    reference = torch.tensor(
        [optimize.brentq(lambda x, v=v: x**3 + x - v, -3e3, 3e3, xtol=1e-300, rtol=1e-15) for v in y.double().tolist()],
        dtype=torch.float64,
    )
    eps = torch.finfo(dtype).eps
    torch.testing.assert_close(phi.grad_conjugate(y).double(), reference, rtol=8 * eps, atol=0.0)


def test_sympy_quartic_fallback_reason() -> None:
    phi = legendre.from_sympy(T**4 / 4 + T**2 / 2, T, (-sympy.oo, sympy.oo))
    assert phi.closed_form_conjugate or "root of ∇φ(x) = y" in phi.fallback_reason


@pytest.mark.parametrize(("expr", "domain"), [(T**3, (-1, 1)), (-(T**2) / 2, (-1, 1)), (sympy.sin(T), (0, 3))])
def test_sympy_rejects_nonconvex(expr, domain) -> None:
    with pytest.raises(ValueError, match="not strictly convex"):
        legendre.from_sympy(expr, T, domain, name="bad")


def test_sympy_rejects_nonconvex_names_function() -> None:
    with pytest.raises(ValueError, match=r"^cube: φ''\(-"):
        legendre.from_sympy(T**3, T, (-1, 1), name="cube")


def test_sympy_minus_log_essentially_smooth() -> None:
    phi = legendre.from_sympy(-sympy.log(T), T, (0, sympy.oo))
    assert phi.essentially_smooth


def test_sympy_minus_log_projection_in_domain() -> None:
    # For y ≥ 0, φ(x) − x·y decreases without bound, so ∇φ*(y) is the end +inf.
    phi = legendre.from_sympy(-sympy.log(T), T, (0, sympy.oo))
    x = phi.grad_conjugate(torch.tensor([-2.0, 0.0, 1.0], dtype=torch.float64))
    assert x.tolist() == [0.5, math.inf, math.inf]


def test_sympy_minus_log_conjugate_infinite() -> None:
    phi = legendre.from_sympy(-sympy.log(T), T, (0, sympy.oo))
    value = phi.conjugate(torch.tensor([-2.0, 0.0, 1.0], dtype=torch.float64))
    torch.testing.assert_close(value, torch.tensor([-1 - math.log(2.0), math.inf, math.inf], dtype=torch.float64))


def test_sympy_closed_form_second_derivative() -> None:
    phi = legendre.from_sympy(sympy.cosh(T), T, (-sympy.oo, sympy.oo))
    y = torch.tensor([-3.0, 0.2, 4.0], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradgradcheck(phi.grad_conjugate, (y,))


@pytest.mark.parametrize(("expr", "domain"), [(sympy.exp(T), (-sympy.oo, sympy.oo)), (T**4, (-sympy.oo, sympy.oo))])
def test_sympy_accepts_vanishing_curvature(expr, domain) -> None:
    # exp has φ'' underflowing to 0 far out and t⁴ has φ''(0) = 0; both are strictly convex.
    phi = legendre.from_sympy(expr, T, domain)
    assert phi.domain == (-math.inf, math.inf)


def test_sympy_rejects_affine() -> None:
    with pytest.raises(ValueError, match="not strictly convex"):
        legendre.from_sympy(2 * T + 1, T, (-1, 1), name="affine")


def test_sympy_exp_activation() -> None:
    phi = legendre.from_sympy(sympy.exp(T), T, (-sympy.oo, sympy.oo))
    y = torch.tensor([0.5, 1.0, 20.0], dtype=torch.float64)
    torch.testing.assert_close(phi.grad_conjugate(y), torch.log(y))


class Reversed(Legendre):
    """A subclass whose domain is given in the wrong order."""

    name = "reversed"
    domain = (1.0, -1.0)

    def value(self, x: torch.Tensor) -> torch.Tensor:
        return 0.5 * x * x

    def grad(self, x: torch.Tensor) -> torch.Tensor:
        return x


def test_fallback_reversed_domain_named() -> None:
    with pytest.raises(ValueError, match=r"reversed: the domain \[1, -1\] of Reversed"):
        Reversed().grad_conjugate(torch.tensor([0.5], dtype=torch.float64))


def test_subclass_without_grad_rejected() -> None:
    class ValueOnly(Legendre):
        domain = (0.0, 1.0)

        def value(self, x: torch.Tensor) -> torch.Tensor:
            return x * x

    with pytest.raises(TypeError, match="ValueOnly does not define grad"):
        ValueOnly()
