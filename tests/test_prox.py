"""Euclidean prox of the regularizers, against scipy, sympy and Moreau's identity."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
import sympy as sp
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import minimize_scalar

from mmbilevel.prox import (
    L1,
    ArctanPenalty,
    ElasticNet,
    Indicator,
    ISRUPenalty,
    NonNegative,
    SquaredL2,
    Zero,
)

# Scalar minimizations by scipy reach ~1e-9 in the argument (xatol 1e-12,
# Brent's method near the minimum); 1e-6 leaves room for flat minima.
SCIPY_ATOL = 1e-6

POINTS = torch.tensor([-3.0, -1.2, -0.4, 0.0, 0.3, 0.9, 2.5], dtype=torch.float64)


def scalar_minimize(objective: Callable[[float], float], bounds: tuple[float, float] | None) -> float:
    """Minimize a convex function of one variable by scipy (bounded or Brent)."""
    if bounds is not None:
        return minimize_scalar(objective, bounds=bounds, method="bounded", options={"xatol": 1e-12}).x
    return minimize_scalar(objective, method="brent", tol=1e-12).x


def scipy_prox(g_scalar: Callable[[float], float], v: float, tau: float, bounds=None) -> float:
    """Compute argmin_u τ g(u) + ½(u − v)² by scipy."""
    return scalar_minimize(lambda u: tau * g_scalar(u) + 0.5 * (u - v) ** 2, bounds)


def assert_moreau(prox, conjugate: Callable[[float], float], v: torch.Tensor, tau: float, bounds=None) -> None:
    """Check Moreau's decomposition v = prox_{τg}(v) + τ prox_{g*/τ}(v/τ) coordinatewise.

    ``prox`` is the tested Euclidean prox; the prox of the conjugate g* comes
    from a scipy minimization of the closed-form g*, the independent side.
    """
    primal = prox(v, tau)
    for i, vi in enumerate(v.tolist()):
        dual = scalar_minimize(lambda y: conjugate(y) / tau + 0.5 * (y - vi / tau) ** 2, bounds)
        assert primal[i].item() + tau * dual == pytest.approx(vi, abs=SCIPY_ATOL)


def scalar(g) -> Callable[[float], float]:
    return lambda u: g.elementwise(torch.tensor([u], dtype=torch.float64)).item()


CONVEX_CASES = [
    # (regularizer, closed-form conjugate g̃*, bounds of dom g̃* or None)
    (L1(0.7), lambda y: 0.0, (-0.7, 0.7)),
    (SquaredL2(2.0), lambda y: y * y / 4.0, None),
    (ElasticNet(0.5, 1.5), lambda y: max(abs(y) - 0.5, 0.0) ** 2 / 3.0, None),
    (Indicator(-0.5, 1.0), lambda y: max(-0.5 * y, 1.0 * y), None),
]


@pytest.mark.parametrize("g, conjugate, bounds", CONVEX_CASES, ids=lambda c: repr(c)[:20])
@pytest.mark.parametrize("tau", [0.3, 1.0, 2.5])
def test_moreau_decomposition(g, conjugate, bounds, tau):
    assert_moreau(g.prox, conjugate, POINTS, tau, bounds)


def test_moreau_nonnegative():
    # g* is the indicator of (−∞, 0]; the bounded search stands in for −∞.
    assert_moreau(NonNegative().prox, lambda y: 0.0, POINTS, 0.8, (-100.0, 0.0))


def test_moreau_zero():
    # g* is the indicator of {0}, so the conjugate part vanishes.
    assert torch.equal(Zero().prox(POINTS, 0.7), POINTS)


PROX_CASES = [
    (L1(0.7), None),
    (SquaredL2(2.0), None),
    (ElasticNet(0.5, 1.5), None),
    (Indicator(-0.5, 1.0), (-0.5, 1.0)),
    (NonNegative(), (0.0, 50.0)),
    (ISRUPenalty(), (-1.0, 1.0)),
    (ArctanPenalty(), (-1.0 + 1e-15, 1.0 - 1e-15)),
]


@pytest.mark.parametrize("g, bounds", PROX_CASES, ids=lambda c: repr(c)[:20])
@pytest.mark.parametrize("tau", [0.4, 1.0, 3.0])
def test_prox_matches_scipy(g, bounds, tau):
    got = g.prox(POINTS, tau)
    for i, vi in enumerate(POINTS.tolist()):
        assert got[i].item() == pytest.approx(scipy_prox(scalar(g), vi, tau, bounds), abs=SCIPY_ATOL)


@settings(max_examples=40, deadline=None)
@given(
    v=st.floats(-20, 20),
    tau=st.floats(0.01, 10),
    l1=st.floats(0, 3),
    l2=st.floats(0, 3),
)
def test_elastic_net_optimality(v, tau, l1, l2):
    # Optimality: v − u ∈ τ(l1 ∂|u| + l2 u), checked directly on the output.
    u = ElasticNet(l1, l2).prox(torch.tensor([v], dtype=torch.float64), tau).item()
    remainder = (v - u) / tau - l2 * u
    if u != 0:
        assert remainder == pytest.approx(l1 * math.copysign(1.0, u), abs=1e-9 * (1 + abs(v) / tau))
    else:
        assert abs(remainder) <= l1 + 1e-12


def _example_functions():
    t, u = sp.symbols("t u", real=True)
    isru_g = -u**2 / 2 - sp.sqrt(1 - u**2)
    arctan_g = -2 / sp.pi * sp.log(sp.cos(sp.pi * u / 2)) - u**2 / 2
    return t, u, [
        (isru_g, t / sp.sqrt(1 + t**2)),
        (arctan_g, 2 / sp.pi * sp.atan(t)),
    ]


@pytest.mark.parametrize("index", [0, 1], ids=["isru", "arctan"])
def test_example_prox_identity_sympy(index):
    # prox_g(t) = ρ(t) ⇔ ρ(t) + g′(ρ(t)) = t, for the convex g of Examples 3.1 and 3.2.
    t, u, cases = _example_functions()
    g, rho = cases[index]
    stationarity = (u + sp.diff(g, u)).subs(u, rho) - t
    assert sp.simplify(stationarity) == 0


@pytest.mark.parametrize("index", [0, 1], ids=["isru", "arctan"])
def test_example_penalty_convex(index):
    # The paper calls these functions nonconvex; g″ ≥ 0 on ]−1, 1[ shows they are convex.
    _, u, cases = _example_functions()
    second = sp.lambdify(u, sp.diff(cases[index][0], u, 2), "numpy")
    grid = np.linspace(-0.999, 0.999, 2001)
    assert np.min(second(grid)) >= 0


@pytest.mark.parametrize("g", [ISRUPenalty(), ArctanPenalty()], ids=["isru", "arctan"])
def test_example_derivatives_match_finite_differences(g):
    u = torch.linspace(-0.9, 0.9, 19, dtype=torch.float64)
    h = 1e-6
    value = lambda x: g.elementwise(x) + 0.5 * x.square()  # remove the −u²/2 that smooth parts keep
    first = (value(u + h) - value(u - h)) / (2 * h) - u
    assert torch.allclose(g.smooth_derivative(u), first, atol=1e-7)
    second = (g.smooth_derivative(u + h) - g.smooth_derivative(u - h)) / (2 * h)
    assert torch.allclose(g.smooth_second_derivative(u), second, atol=1e-5)


def test_activation_penalty_gradient():
    v = torch.tensor([-2.0, -0.1, 0.4, 3.0], dtype=torch.float64, requires_grad=True)
    tau = torch.tensor(0.6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: ISRUPenalty().prox(a, b), (v, tau))


def test_penalty_at_step_one_is_activation():
    v = torch.linspace(-5, 5, 11, dtype=torch.float64)
    assert torch.allclose(ISRUPenalty().prox(v, 1.0), v / torch.sqrt(1 + v * v))
    assert torch.allclose(ArctanPenalty().prox(v, 1.0), 2 / math.pi * torch.atan(v))


def test_value_sums_last_dimension():
    z = torch.tensor([[1.0, -2.0, 0.5], [0.0, 0.0, 3.0]], dtype=torch.float64)
    assert torch.equal(L1(2.0)(z), torch.tensor([7.0, 6.0], dtype=torch.float64))


def test_indicator_value_outside_is_inf():
    z = torch.tensor([[0.5, 1.5], [0.2, 0.3]], dtype=torch.float64)
    assert torch.equal(Indicator(0.0, 1.0)(z), torch.tensor([math.inf, 0.0], dtype=torch.float64))


def test_indicator_tensor_bounds_broadcast():
    g = Indicator(torch.tensor([0.0, -1.0]), torch.tensor([1.0, 0.0]))
    v = torch.tensor([[2.0, 2.0], [-2.0, -2.0]], dtype=torch.float64)
    expected = torch.tensor([[1.0, 0.0], [0.0, -1.0]], dtype=torch.float64)
    assert torch.equal(g.prox(v, 1.0), expected)


def test_prox_tensor_step(device):
    v = torch.tensor([[3.0, 3.0]], dtype=torch.float64, device=device)
    tau = torch.tensor([1.0, 2.0], dtype=torch.float64, device=device)
    assert torch.equal(L1(1.0).prox(v, tau), torch.tensor([[2.0, 1.0]], dtype=torch.float64, device=device))


@pytest.mark.parametrize("tau", [0.0, -1.0, math.nan, math.inf])
def test_prox_rejects_bad_step(tau):
    with pytest.raises(ValueError, match="step tau"):
        L1(1.0).prox(POINTS, tau)


def test_prox_rejects_step_shape():
    with pytest.raises(ValueError, match="broadcast"):
        L1(1.0).prox(POINTS, torch.ones(3, dtype=torch.float64))


def test_indicator_rejects_crossed_bounds():
    with pytest.raises(ValueError, match="lower bound"):
        Indicator(1.0, 0.0)


def test_indicator_rejects_crossed_tensor_bounds():
    with pytest.raises(ValueError, match="lower bound"):
        Indicator(torch.tensor([0.0, 2.0]), torch.tensor([1.0, 1.0]))


@pytest.mark.parametrize("factory", [lambda: L1(-1.0), lambda: SquaredL2(math.nan), lambda: ElasticNet(1.0, -2.0)])
def test_rejects_negative_weight(factory):
    with pytest.raises(ValueError, match=">= 0"):
        factory()


from scipy.optimize import brentq  # noqa: E402

EXTREME_INPUTS = [-math.inf, -3e38, -1e30, -1e10, -1e6, -3.0, -0.5, 0.0, 0.5, 3.0, 1e6, 1e10, 1e30, 3e38, math.inf]


def _isru_slope_part(w: float) -> float:
    """g̃′(1 − w) of ISRUPenalty, written in w = 1 − u to keep precision near u = 1."""
    return (1 - w) / math.sqrt(w * (2 - w)) - (1 - w)


def _arctan_slope_part(w: float) -> float:
    """g̃′(1 − w) of ArctanPenalty: tan(π(1 − w)/2) − (1 − w) = 1/tan(πw/2) − (1 − w)."""
    return 1 / math.tan(0.5 * math.pi * w) - (1 - w)


def _penalty_prox_reference(derivative: Callable[[float], float], v: float, tau: float) -> float:
    """Solve u + τ g̃′(u) = v in float64 by brentq on log w, w = 1 − |u|, using that g̃ is even."""
    if v == 0:
        return 0.0
    if math.isinf(v):
        return math.copysign(1.0, v)
    target = abs(v)
    # Solving in log w keeps brentq fast when w spans hundreds of orders of magnitude.
    log_w = brentq(lambda s: (1 - math.exp(s)) + tau * derivative(math.exp(s)) - target, -690.0, 0.0, xtol=1e-15)
    return math.copysign(1 - math.exp(log_w), v)


@pytest.mark.parametrize(
    ("g", "derivative"), [(ISRUPenalty(), _isru_slope_part), (ArctanPenalty(), _arctan_slope_part)], ids=["isru", "arctan"]
)
@pytest.mark.parametrize("tau", [0.5, 1.0, 3.0])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_penalty_prox_extreme_inputs(g, derivative, tau: float, dtype: torch.dtype) -> None:
    v = torch.tensor(EXTREME_INPUTS, dtype=dtype)
    u = g.prox(v, tau)
    reference = torch.tensor([_penalty_prox_reference(derivative, float(x), tau) for x in v], dtype=torch.float64)
    # The solver's tolerance is 4·eps relative; near ±1 the float grid is eps/2.
    atol = 8 * torch.finfo(dtype).eps
    assert bool(torch.isfinite(u).all())
    assert bool((u.abs() <= 1).all())
    assert bool((u[1:] >= u[:-1]).all())
    torch.testing.assert_close(u.double(), reference, rtol=0.0, atol=atol)


@pytest.mark.parametrize("g", [ISRUPenalty(), ArctanPenalty()], ids=["isru", "arctan"])
@pytest.mark.parametrize("tau", [0.5, 1.0])
def test_penalty_prox_gradient_extreme(g, tau: float) -> None:
    v = torch.tensor([-3e38, -1e30, 3.0, 1e30, 3e38], requires_grad=True)
    (grad,) = torch.autograd.grad(g.prox(v, tau).sum(), v)
    assert bool(torch.isfinite(grad).all())


def test_penalty_prox_float32_matches_float64() -> None:
    v = torch.tensor([-3.0, 0.0, 3.0])
    u32 = ArctanPenalty().prox(v, 0.5)
    u64 = ArctanPenalty().prox(v.double(), 0.5)
    torch.testing.assert_close(u32.double(), u64, rtol=0.0, atol=8 * torch.finfo(torch.float32).eps)


def test_penalty_prox_second_order_raises() -> None:
    v = torch.tensor([-1.0, 0.3, 2.0], dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(ArctanPenalty().prox(v, 0.5).sum(), v, create_graph=True)
    with pytest.raises(RuntimeError, match="differentiable once only"):
        torch.autograd.grad(grad.sum(), v)


@pytest.mark.parametrize("g", [NonNegative(), L1(0.5), ISRUPenalty()], ids=["nonnegative", "l1", "isru"])
def test_prox_integer_input(g) -> None:
    u = g.prox(torch.tensor([1, -2]), 0.5)
    expected = g.prox(torch.tensor([1.0, -2.0]), 0.5)
    torch.testing.assert_close(u, expected)


@pytest.mark.parametrize("tau", [0.5, 1.0])
def test_prox_empty_input(tau: float) -> None:
    assert ArctanPenalty().prox(torch.zeros(0, 3), tau).shape == (0, 3)
