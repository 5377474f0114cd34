"""Tests for the batched safeguarded Newton-bisection solver."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import optimize

from mmbilevel.rootfind import RootResult, default_tol, solve_increasing


def _logit(x: torch.Tensor) -> torch.Tensor:
    return torch.log(x) - torch.log1p(-x)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_logit_matches_sigmoid(dtype: torch.dtype) -> None:
    target = torch.tensor([-30.0, -3.0, 0.0, 0.5, 3.0, 30.0], dtype=dtype)
    result = solve_increasing(_logit, target, 0.0, 1.0)
    assert result.converged
    # logit(x) is rounded to about eps·|logit(x)| absolute, which moves x by the
    # same amount relative; allow 4·eps·(1 + |target|) plus the solver's 4·eps.
    eps = torch.finfo(dtype).eps
    relative_error = (result.root - torch.sigmoid(target)).abs() / torch.sigmoid(target)
    assert bool((relative_error <= 4 * eps * (2 + target.abs())).all())


def test_result_is_frozen() -> None:
    result = solve_increasing(torch.sinh, torch.tensor([1.0]), -math.inf, math.inf)
    assert isinstance(result, RootResult)
    with pytest.raises(AttributeError):
        result.iterations = 3  # type: ignore[misc]


def test_infinite_bracket_sinh() -> None:
    target = torch.tensor([-1e300, -3.0, 0.0, 1e-300, 2.0, 1e300], dtype=torch.float64)
    result = solve_increasing(torch.sinh, target, -math.inf, math.inf)
    assert result.converged
    torch.testing.assert_close(result.root, torch.asinh(target), rtol=1e-14, atol=0.0)


def test_half_infinite_bracket() -> None:
    target = torch.tensor([-5.0, 0.0, 7.0], dtype=torch.float64)
    result = solve_increasing(lambda t: torch.log(torch.expm1(t)), target, 0.0, math.inf)
    torch.testing.assert_close(result.root, torch.nn.functional.softplus(target), rtol=1e-14, atol=0.0)


def test_tensor_bounds_broadcast() -> None:
    target = torch.zeros(3, 1, dtype=torch.float64)
    lower = torch.tensor([-1.0, 0.5], dtype=torch.float64)
    result = solve_increasing(lambda t: t, target, lower, 2.0)
    assert result.root.shape == (3, 2)
    torch.testing.assert_close(result.root[0], torch.tensor([0.0, 0.5], dtype=torch.float64))


def test_out_of_range_target_gives_end() -> None:
    target = torch.tensor([-3.0, 0.3, 2.0], dtype=torch.float64)
    result = solve_increasing(torch.asin, target, -1.0, 1.0)
    expected = torch.tensor([-1.0, math.sin(0.3), 1.0], dtype=torch.float64)
    torch.testing.assert_close(result.root, expected)
    assert result.residual == pytest.approx(0.0, abs=1e-15)


def test_residual_reports_inexact_root() -> None:
    result = solve_increasing(torch.sinh, torch.tensor([5.0], dtype=torch.float64), -10.0, 10.0, maxiter=1)
    assert not result.converged
    assert result.residual > 1e-6


def test_no_root_not_converged() -> None:
    # exp never reaches −1, so the infinite lower bound cannot be bracketed.
    result = solve_increasing(torch.exp, torch.tensor([-1.0, 2.0], dtype=torch.float64), -math.inf, math.inf)
    assert not result.converged
    assert float(result.root[1]) == pytest.approx(math.log(2.0), rel=1e-15)


def test_newton_converges_fast() -> None:
    # Safeguarded Newton is quadratic near the root: a cubic over six decades needs few iterations.
    target = torch.logspace(-3, 3, 50, dtype=torch.float64)
    result = solve_increasing(lambda t: t**3 + t, target, -math.inf, math.inf)
    assert result.iterations <= 15


def test_zero_slope_in_batch() -> None:
    # t³ has slope 0 at the first split point 0, so Newton steps are inf or NaN there.
    target = torch.tensor([0.0, 8.0, -1.0, 1e-9], dtype=torch.float64)
    result = solve_increasing(lambda t: t**3, target, -math.inf, math.inf)
    expected = torch.sign(target) * target.abs() ** (1 / 3)
    assert result.converged
    torch.testing.assert_close(result.root, expected, rtol=1e-14, atol=0.0)


def test_default_tol_follows_dtype() -> None:
    assert default_tol(torch.float32) > default_tol(torch.float64)


@settings(max_examples=40, deadline=None)
@given(st.floats(-50.0, 50.0), st.floats(0.1, 10.0))
def test_cubic_against_brentq(target: float, scale: float) -> None:
    def fn(t):
        return scale * t**3 + t

    result = solve_increasing(fn, torch.tensor([target], dtype=torch.float64), -math.inf, math.inf)
    reference = optimize.brentq(lambda t: scale * t**3 + t - target, -100.0, 100.0, xtol=1e-15, rtol=1e-15)
    # brentq stops at xtol 1e-15 plus 1e-15 relative, so allow a few 1e-15.
    assert abs(float(result.root) - reference) <= 4e-15 * max(1.0, abs(reference))


def test_gradient_implicit() -> None:
    target = torch.tensor([0.3, 1.5, -2.0], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda y: solve_increasing(torch.sinh, y, -math.inf, math.inf).root, (target,))


def test_gradient_explicit_derivative() -> None:
    target = torch.tensor([-2.0, 0.1, 4.0], dtype=torch.float64, requires_grad=True)
    result = solve_increasing(_logit, target, 0.0, 1.0, fn_grad=lambda t: 1.0 / (t * (1.0 - t)))
    (grad,) = torch.autograd.grad(result.root.sum(), target)
    sig = torch.sigmoid(target.detach())
    torch.testing.assert_close(grad, sig * (1 - sig))


def test_gradient_zero_at_clamped_end() -> None:
    target = torch.tensor([3.0], dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(solve_increasing(torch.asin, target, -1.0, 1.0).root.sum(), target)
    assert float(grad) == 0.0


def test_rejects_inverted_bracket() -> None:
    with pytest.raises(ValueError, match="lower"):
        solve_increasing(torch.sinh, torch.tensor([0.0]), 1.0, -1.0)


def test_rejects_nan_target() -> None:
    with pytest.raises(ValueError, match="NaN"):
        solve_increasing(torch.sinh, torch.tensor([math.nan]), -1.0, 1.0)


def test_batch_matches_loop() -> None:
    rng = np.random.default_rng(0)
    target = torch.tensor(rng.normal(size=(4, 5)) * 10.0)
    batched = solve_increasing(torch.sinh, target, -math.inf, math.inf).root
    single = torch.stack([solve_increasing(torch.sinh, t, -math.inf, math.inf).root for t in target.flatten()])
    torch.testing.assert_close(batched.flatten(), single, rtol=1e-15, atol=0.0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_tan_end_rounded_outwards(dtype: torch.dtype) -> None:
    # float32(π/2) exceeds π/2, so tan at the rounded end is about −2.3e7.
    target = torch.tensor([-3.0, -0.5, 0.0, 0.5, 3.0, 1e6], dtype=dtype)
    result = solve_increasing(torch.tan, target, -math.pi / 2, math.pi / 2)
    reference = torch.atan(target.double())
    eps = torch.finfo(dtype).eps
    assert result.converged
    torch.testing.assert_close(result.root.double(), reference, rtol=8 * eps, atol=8 * eps)


def test_tan_end_projection_stays_inside() -> None:
    # Beyond the range of tan on the float32 bracket, the root is an end inside [−π/2, π/2].
    result = solve_increasing(torch.tan, torch.tensor([-1e30, 1e30]), -math.pi / 2, math.pi / 2)
    assert bool((result.root.double().abs() <= math.pi / 2).all())


def test_tan_end_projection_sign() -> None:
    result = solve_increasing(torch.tan, torch.tensor([-1e30, 1e30]), -math.pi / 2, math.pi / 2)
    assert result.root.tolist()[0] < 0 < result.root.tolist()[1]


def test_rejects_decreasing_fn() -> None:
    with pytest.raises(ValueError, match="not increasing"):
        solve_increasing(torch.neg, torch.tensor([-0.5, 0.5]), -1.0, 1.0)


@pytest.mark.parametrize("explicit", [False, True])
def test_second_derivative(explicit: bool) -> None:
    target = torch.tensor([-3.0, 0.2, 4.0], dtype=torch.float64, requires_grad=True)
    fn_grad = torch.cosh if explicit else None
    assert torch.autograd.gradgradcheck(
        lambda y: solve_increasing(torch.sinh, y, -math.inf, math.inf, fn_grad=fn_grad).root, (target,)
    )


def test_second_derivative_closed_form() -> None:
    # root = asinh(y), so d²root/dy² = −y / (1 + y²)^(3/2).
    target = torch.tensor([-3.0, 0.2, 4.0], dtype=torch.float64, requires_grad=True)
    root = solve_increasing(torch.sinh, target, -math.inf, math.inf).root
    (first,) = torch.autograd.grad(root.sum(), target, create_graph=True)
    (second,) = torch.autograd.grad(first.sum(), target)
    y = target.detach()
    torch.testing.assert_close(second, -y / (1 + y * y) ** 1.5)


def test_overflowing_slope_no_stall() -> None:
    # fn'(t) = 1/t² overflows near the root 1e-200, so a Newton step is 0 there.
    target = torch.tensor([-1e200], dtype=torch.float64)
    result = solve_increasing(lambda t: -1 / t, target, 0.0, math.inf, fn_grad=lambda t: t**-2)
    assert result.converged
    assert math.isclose(float(result.root), 1e-200, rel_tol=1e-14)


def test_rejects_non_monotone_equal_ends() -> None:
    # 3t² has equal values at ±1 but dips in between.
    with pytest.raises(ValueError, match="not increasing"):
        solve_increasing(lambda t: 3 * t * t, torch.tensor([1.0], dtype=torch.float64), -1.0, 1.0)


def test_infinite_target_at_end_exact() -> None:
    # fn(1) = +inf = target is met exactly, so the residual is 0, not inf − inf.
    result = solve_increasing(lambda t: t / torch.sqrt(1 - t * t), torch.tensor([math.inf], dtype=torch.float64), -1.0, 1.0)
    assert result.residual == 0.0
