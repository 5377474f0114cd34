"""Bregman prox: closed forms and the scalar solver against scipy, gradients, errors."""

from __future__ import annotations

import math

import pytest
import torch
from scipy.optimize import minimize_scalar

from mmbilevel import legendre
from mmbilevel.prox import (
    L1,
    ArctanPenalty,
    ElasticNet,
    Indicator,
    ISRUPenalty,
    Regularizer,
    SquaredL2,
    Zero,
    bregman_prox,
)

DT = torch.float64
POINTS = torch.tensor([-4.0, -1.5, -0.3, 0.0, 0.2, 1.1, 3.5], dtype=DT)

# Bounded scalar minimization by scipy reaches ~1e-9 in the argument; 1e-6
# leaves room for flat minima near the domain ends.
SCIPY_ATOL = 1e-6
# Search window standing in for an infinite end of a domain.
WINDOW = 30.0


def scipy_bregman_prox(phi, g: Regularizer, v: float, tau: float) -> float:
    """Minimize τ g(u) + φ(u) − uv over dom φ ∩ dom g by scipy's bounded method."""
    lower = max(phi.domain[0], g.domain[0], -WINDOW)
    upper = min(phi.domain[1], g.domain[1], WINDOW)

    def objective(u: float) -> float:
        point = torch.tensor([u], dtype=DT)
        return (tau * g.elementwise(point) + phi(point) - u * v).item()

    result = minimize_scalar(objective, bounds=(lower, upper), method="bounded", options={"xatol": 1e-12})
    # The bounded method never evaluates the ends, so compare with them too.
    candidates = [result.x] + [end for end in (lower, upper) if math.isfinite(objective(end))]
    return min(candidates, key=objective)


CASES = [
    # (Legendre name, regularizer, expect a closed form)
    ("sigmoid", Zero(), True),
    ("tanh", Zero(), True),
    ("sin", Zero(), True),
    ("arcsinh", Zero(), True),
    ("softplus", Zero(), True),
    ("tanh", Indicator(-0.5, 0.3), True),
    ("sigmoid", Indicator(0.2, 2.0), True),
    ("arcsinh", Indicator(-1.0, 0.5), True),
    ("tanh", L1(0.4), True),
    ("sigmoid", L1(0.4), True),
    ("arcsinh", L1(0.7), True),
    ("sin", L1(0.4), True),
    ("euclidean", L1(0.7), True),
    ("euclidean", ElasticNet(0.3, 0.8), True),
    ("sigmoid", SquaredL2(1.5), False),
    ("tanh", ElasticNet(0.3, 0.8), False),
    ("arcsinh", ElasticNet(0.5, 2.0), False),
    ("sigmoid", ElasticNet(0.5, 2.0), False),
    ("tanh", ISRUPenalty(), False),
    ("sigmoid", ArctanPenalty(), False),
    ("euclidean", ISRUPenalty(), False),
]


@pytest.mark.parametrize("name, g, closed", CASES, ids=lambda c: repr(c)[:24])
@pytest.mark.parametrize("tau", [0.5, 2.0])
def test_bregman_prox_matches_scipy(name, g, closed, tau):
    phi = legendre.get(name)
    result = bregman_prox(phi, g, POINTS, tau)
    for i, vi in enumerate(POINTS.tolist()):
        assert result.value[i].item() == pytest.approx(scipy_bregman_prox(phi, g, vi, tau), abs=SCIPY_ATOL)


@pytest.mark.parametrize("name, g, closed", CASES, ids=lambda c: repr(c)[:24])
def test_bregman_prox_reports_method(name, g, closed):
    result = bregman_prox(legendre.get(name), g, POINTS, 0.5)
    assert result.closed_form is closed
    assert result.converged
    assert result.residual < 1e-8


def test_zero_is_bregman_projection():
    phi = legendre.get("sigmoid")
    assert torch.equal(bregman_prox(phi, Zero(), POINTS, 1.0).value, phi.grad_conjugate(POINTS))


def test_euclidean_phi_gives_euclidean_prox():
    g = ElasticNet(0.3, 0.8)
    result = bregman_prox(legendre.get("euclidean"), g, POINTS, 0.7)
    assert torch.allclose(result.value, g.prox(POINTS, 0.7), atol=1e-15)


def test_indicator_tensor_bounds():
    phi = legendre.get("tanh")
    g = Indicator(torch.tensor([-0.2, 0.1], dtype=DT), torch.tensor([0.2, 0.9], dtype=DT))
    v = torch.tensor([[3.0, -3.0], [-3.0, 3.0]], dtype=DT)
    expected = torch.tensor([[0.2, 0.1], [-0.2, 0.9]], dtype=DT)
    assert torch.allclose(bregman_prox(phi, g, v, 1.0).value, expected, atol=1e-15)


@pytest.mark.parametrize(
    "name, g",
    [("tanh", L1(0.4)), ("sigmoid", Indicator(0.2, 0.8)), ("tanh", ElasticNet(0.3, 0.8)), ("arcsinh", SquaredL2(1.5)), ("tanh", ISRUPenalty())],
    ids=lambda c: repr(c)[:24],
)
def test_bregman_prox_gradcheck(name, g):
    phi = legendre.get(name)
    # Points away from the kinks of the ℓ1 threshold and the box ends.
    v = torch.tensor([-2.3, -0.9, 0.65, 1.7], dtype=DT, requires_grad=True)
    tau = torch.tensor(0.7, dtype=DT, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: bregman_prox(phi, g, a, b).value, (v, tau))


@pytest.mark.parametrize("tau", [0.0, -0.5, math.inf])
def test_rejects_bad_step(tau):
    with pytest.raises(ValueError, match="step tau"):
        bregman_prox(legendre.get("tanh"), L1(1.0), POINTS, tau)


def test_rejects_disjoint_domains():
    with pytest.raises(ValueError, match="does not meet"):
        bregman_prox(legendre.get("sigmoid"), Indicator(2.0, 3.0), POINTS, 1.0)


class Concave(Regularizer):
    is_convex = False

    def elementwise(self, z):
        return -z.square()

    def _prox(self, v, tau):
        raise NotImplementedError


class NoDerivative(Regularizer):
    def elementwise(self, z):
        return z.abs().sqrt()

    def _prox(self, v, tau):
        raise NotImplementedError


def test_rejects_nonconvex_regularizer():
    with pytest.raises(NotImplementedError, match="nonconvex"):
        bregman_prox(legendre.get("tanh"), Concave(), POINTS, 1.0)


def test_rejects_regularizer_without_derivative():
    with pytest.raises(NotImplementedError, match="smooth_derivative"):
        bregman_prox(legendre.get("tanh"), NoDerivative(), POINTS, 1.0)


def test_unconverged_solver_is_reported(monkeypatch, caplog):
    # A solver that stops early must show in the result and in the log.
    import mmbilevel.prox.bregman as bregman
    from mmbilevel.rootfind import RootResult, solve_increasing

    def stopped_early(*args, **kwargs):
        result = solve_increasing(*args, **kwargs)
        return RootResult(root=result.root, iterations=1, residual=0.5, converged=False)

    monkeypatch.setattr(bregman, "solve_increasing", stopped_early)
    with caplog.at_level("WARNING", logger="mmbilevel.prox.bregman"):
        result = bregman_prox(legendre.get("tanh"), SquaredL2(1.0), POINTS, 1.0)
    assert not result.converged
    assert result.residual == 0.5
    assert "did not converge" in caplog.text


def test_float32_solver_matches_float64():
    phi = legendre.get("tanh")
    g = ElasticNet(0.3, 0.8)
    value32 = bregman_prox(phi, g, POINTS.float(), 0.5).value
    value64 = bregman_prox(phi, g, POINTS, 0.5).value
    assert value32.dtype == torch.float32
    # float32 roots carry a relative error of a few ulp (~1e-7).
    assert torch.allclose(value32.double(), value64, atol=1e-5)


def test_solver_prox_second_order_raises() -> None:
    v = torch.tensor([-1.0, 0.3, 2.0], dtype=torch.float64, requires_grad=True)
    value = bregman_prox(legendre.get("tanh"), SquaredL2(1.0), v, 0.7).value
    (grad,) = torch.autograd.grad(value.sum(), v, create_graph=True)
    with pytest.raises(RuntimeError, match="differentiable once only"):
        torch.autograd.grad(grad.sum(), v)


def test_solver_prox_float32_arctan() -> None:
    # float32(π/2) lies beyond π/2, which used to send every root to −1.
    v = torch.tensor([-3.0, 0.0, 3.0])
    result = bregman_prox(legendre.get("arctan"), ArctanPenalty(), v, 0.5)
    reference = bregman_prox(legendre.get("arctan"), ArctanPenalty(), v.double(), 0.5).value
    torch.testing.assert_close(result.value.double(), reference, rtol=0.0, atol=1e-6)


def test_solver_prox_integer_input() -> None:
    phi = legendre.get("tanh")
    value = bregman_prox(phi, SquaredL2(1.0), torch.tensor([1, 2]), 0.5).value
    expected = bregman_prox(phi, SquaredL2(1.0), torch.tensor([1.0, 2.0]), 0.5).value
    torch.testing.assert_close(value, expected)
