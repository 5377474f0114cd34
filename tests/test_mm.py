"""MM solver: monotone decrease, convergence to scipy minimizers, critical points, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import minimize

from mmbilevel import legendre
from mmbilevel.majorants import BregmanMajorant, QuadraticForm, QuadraticMajorant
from mmbilevel.mm import MMSolver
from mmbilevel.prox import L1, ElasticNet, Indicator

DT = torch.float64


def strongly_convex_form(seed: int = 0, n: int = 5) -> QuadraticForm:
    """Build f(z) = ½zᵀ(A + C)z + dᵀz with A + C ≻ 0 and a minimizer outside [0, 1]ⁿ."""
    gen = torch.Generator().manual_seed(seed)
    m = torch.randn(n, n, dtype=DT, generator=gen)
    A = m @ m.T / n + 0.5 * torch.eye(n, dtype=DT)
    C = -0.2 * torch.eye(n, dtype=DT)
    d = 2.0 * torch.randn(n, dtype=DT, generator=gen)
    return QuadraticForm(A, C, d)


def nonconvex_form(seed: int = 1, n: int = 4) -> QuadraticForm:
    """Build f with an indefinite Hessian A + C."""
    gen = torch.Generator().manual_seed(seed)
    m = torch.randn(n, n, dtype=DT, generator=gen)
    k = torch.randn(n, n, dtype=DT, generator=gen)
    A = m @ m.T / n + 0.1 * torch.eye(n, dtype=DT)
    C = -(k @ k.T) / n - 0.5 * torch.eye(n, dtype=DT)
    d = 0.3 * torch.randn(n, dtype=DT, generator=gen)
    return QuadraticForm(A, C, d)


def scipy_box_minimizer(form: QuadraticForm) -> np.ndarray:
    H, d = form.hessian.numpy(), form.d.numpy()
    result = minimize(
        lambda z: 0.5 * z @ H @ z + d @ z,
        np.full(form.dim, 0.5),
        jac=lambda z: H @ z + d,
        method="L-BFGS-B",
        bounds=[(0.0, 1.0)] * form.dim,
        options={"ftol": 1e-16, "gtol": 1e-12, "maxiter": 1000},
    )
    return result.x


def box_kkt_residual(form: QuadraticForm, z: torch.Tensor) -> torch.Tensor:
    """Projected-gradient residual ‖z − clip(z − ∇f(z), 0, 1)‖, zero exactly at critical points."""
    return torch.linalg.vector_norm(z - torch.clamp(z - form.gradient(z), 0.0, 1.0), dim=-1)


def test_depth_zero_returns_start():
    form = strongly_convex_form()
    x = torch.rand(3, 5, dtype=DT)
    result = MMSolver(QuadraticMajorant(form, 0.1), Indicator(0.0, 1.0), depth=0).solve(x)
    assert result.z is x
    assert result.iterations == 0
    assert result.step_norms.shape == (0, 3)


@pytest.mark.parametrize("depth", [-1, 2.5, "3"])
def test_rejects_bad_depth(depth):
    with pytest.raises(ValueError, match="depth"):
        MMSolver(QuadraticMajorant(strongly_convex_form(), 0.1), Indicator(), depth=depth)


def test_rejects_wrong_number_of_majorants():
    majorant = QuadraticMajorant(strongly_convex_form(), 0.1)
    with pytest.raises(ValueError, match="2 majorants for depth 3"):
        MMSolver([majorant, majorant], Indicator(), depth=3)


def test_rejects_negative_tol():
    with pytest.raises(ValueError, match="tol"):
        MMSolver(QuadraticMajorant(strongly_convex_form(), 0.1), Indicator(), depth=3, tol=-1.0)


def test_rejects_start_dimension():
    solver = MMSolver(QuadraticMajorant(strongly_convex_form(), 0.1), Indicator(), depth=3)
    with pytest.raises(ValueError, match="last dimension 5"):
        solver.solve(torch.zeros(2, 4, dtype=DT))


def test_rejects_step_iteration_out_of_range():
    solver = MMSolver(QuadraticMajorant(strongly_convex_form(), 0.1), Indicator(), depth=3)
    with pytest.raises(ValueError, match="iteration"):
        solver.step(torch.zeros(5, dtype=DT), 3)


@pytest.mark.parametrize("g", [L1(0.3), ElasticNet(0.2, 0.5), Indicator(0.0, 1.0)], ids=repr)
def test_quadratic_objective_decreases(g):
    form = strongly_convex_form()
    solver = MMSolver(QuadraticMajorant(form, 0.9 / form.smoothness), g, depth=40)
    result = solver.solve(torch.rand(8, 5, dtype=DT, generator=torch.Generator().manual_seed(3)))
    increments = result.objective[1:] - result.objective[:-1]
    assert bool(torch.all(increments <= 1e-12))


def test_quadratic_converges_to_scipy(device):
    form = strongly_convex_form()
    on_device = QuadraticForm(form.A.to(device), form.C.to(device), form.d.to(device))
    solver = MMSolver(QuadraticMajorant(on_device, 0.9 / form.smoothness), Indicator(0.0, 1.0), depth=3000, tol=1e-12)
    z = solver.solve(torch.full((2, 5), 0.5, dtype=DT, device=device)).z
    # The strongly convex problem has a unique minimizer; both solvers stop
    # within ~1e-9 of it, so 1e-6 is a loose bound.
    assert z.device.type == device.type
    assert np.allclose(z.cpu().numpy(), scipy_box_minimizer(form)[None], atol=1e-6)


def test_tol_stops_early():
    form = strongly_convex_form()
    solver = MMSolver(QuadraticMajorant(form, 0.9 / form.smoothness), Indicator(0.0, 1.0), depth=5000, tol=1e-8)
    result = solver.solve(torch.full((2, 5), 0.5, dtype=DT))
    assert result.converged
    assert result.iterations < 5000
    assert bool(torch.all(result.step_norms[-1] < 1e-8))


def test_trajectory_holds_every_iterate():
    form = strongly_convex_form()
    solver = MMSolver(QuadraticMajorant(form, 0.5 / form.smoothness), L1(0.1), depth=4)
    x = torch.rand(3, 5, dtype=DT)
    result = solver.solve(x, return_trajectory=True)
    assert result.trajectory.shape == (5, 3, 5)
    assert torch.equal(result.trajectory[1], solver.step(x, 0))
    assert torch.allclose(result.step_norms[0], (result.trajectory[1] - x).norm(dim=-1))


def test_sequence_of_majorants_used_in_order():
    form = strongly_convex_form()
    majorants = [QuadraticMajorant(form, s / form.smoothness) for s in (0.2, 0.9)]
    solver = MMSolver(majorants, L1(0.1), depth=2)
    x = torch.rand(5, dtype=DT)
    expected = majorants[1].minimize(majorants[0].minimize(x, L1(0.1)), L1(0.1))
    assert torch.equal(solver.solve(x).z, expected)


def test_quadratic_step_gradcheck():
    form = strongly_convex_form()
    g = ElasticNet(0.1, 0.2)

    def one_step(x, tau, d):
        f = QuadraticForm(form.A, form.C, d)
        return MMSolver(QuadraticMajorant(f, tau), g, depth=1).step(x, 0)

    x = torch.rand(2, 5, dtype=DT, requires_grad=True)
    tau = torch.tensor(0.3, dtype=DT, requires_grad=True)
    d = form.d.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(one_step, (x, tau, d))


def test_solve_differentiable_with_callable_f():
    # f(z) = Σ wⱼ cos(zⱼ): the gradient of z⁽ᴸ⁾ with respect to w passes
    # through the autograd gradient of f at every step.
    def run(w, x):
        f = lambda z: (w * torch.cos(z)).sum(-1)
        return MMSolver(QuadraticMajorant(f, 0.4), L1(0.05), depth=3).solve(x).z

    w = torch.tensor([0.5, 1.0, 1.5], dtype=DT, requires_grad=True)
    x = torch.tensor([[0.3, -0.7, 1.1]], dtype=DT, requires_grad=True)
    assert torch.autograd.gradcheck(run, (w, x))


# Bregman MM.


def sigmoid():
    return legendre.get("sigmoid")


def test_bregman_objective_decreases():
    form = strongly_convex_form()
    phi = sigmoid()
    solver = MMSolver(BregmanMajorant(form, phi, 0.9 / form.smoothness), Indicator(0.0, 1.0), depth=40)
    result = solver.solve(torch.rand(8, 5, dtype=DT, generator=torch.Generator().manual_seed(4)) * 0.9 + 0.05)
    increments = result.objective[1:] - result.objective[:-1]
    assert bool(torch.all(increments <= 1e-12))


def test_bregman_converges_to_scipy():
    form = strongly_convex_form()
    phi = sigmoid()
    solver = MMSolver(BregmanMajorant(form, phi, 0.9 / form.smoothness), Indicator(0.0, 1.0), depth=4000, tol=1e-13)
    z = solver.solve(torch.full((1, 5), 0.5, dtype=DT)).z
    # Bregman iterates approach an active bound only geometrically in the
    # dual space, so coordinates at 0 or 1 get within ~1e-7 after this depth.
    assert np.allclose(z.numpy(), scipy_box_minimizer(form)[None], atol=1e-5)


def test_bregman_nonconvex_reaches_critical_point():
    # Setting of Theorem 5.1: g is the indicator of dom φ = [0, 1]ⁿ.
    form = nonconvex_form()
    phi = sigmoid()
    solver = MMSolver(BregmanMajorant(form, phi, 0.9 / form.smoothness), Indicator(0.0, 1.0), depth=3000)
    x = torch.rand(6, 4, dtype=DT, generator=torch.Generator().manual_seed(5)) * 0.9 + 0.05
    result = solver.solve(x)
    assert float(box_kkt_residual(form, result.z).max()) < 1e-5
    increments = result.objective[1:] - result.objective[:-1]
    assert bool(torch.all(increments <= 1e-12))


def test_bregman_step_gradcheck():
    form = strongly_convex_form()
    phi = sigmoid()

    def one_step(x, tau):
        return MMSolver(BregmanMajorant(form, phi, tau), Indicator(0.0, 1.0), depth=1).step(x, 0)

    x = (torch.rand(2, 5, dtype=DT) * 0.8 + 0.1).requires_grad_(True)
    tau = torch.tensor(0.2, dtype=DT, requires_grad=True)
    assert torch.autograd.gradcheck(one_step, (x, tau))


@pytest.mark.parametrize("bad", [1.5, -0.2, 0.0], ids=["above", "below", "boundary"])
def test_bregman_rejects_start_outside_domain(bad):
    form = strongly_convex_form()
    solver = MMSolver(BregmanMajorant(form, sigmoid(), 0.1), Indicator(0.0, 1.0), depth=2)
    x = torch.full((5,), 0.5, dtype=DT)
    x[2] = bad
    with pytest.raises(ValueError):
        solver.solve(x)


def test_docstring_example_runs():
    import doctest

    import mmbilevel.mm

    assert doctest.testmod(mmbilevel.mm).failed == 0


def test_float32_matches_float64():
    form = strongly_convex_form()
    form32 = QuadraticForm(form.A.float(), form.C.float(), form.d.float())
    phi = sigmoid()
    x = torch.full((2, 5), 0.5, dtype=DT)
    z64 = MMSolver(BregmanMajorant(form, phi, 0.5 / form.smoothness), Indicator(0.0, 1.0), depth=30).solve(x).z
    z32 = MMSolver(BregmanMajorant(form32, phi, 0.5 / form.smoothness), Indicator(0.0, 1.0), depth=30).solve(x.float()).z
    assert z32.dtype == torch.float32
    # 30 contractive steps in float32 accumulate rounding of order 1e-6.
    assert torch.allclose(z32.double(), z64, atol=1e-4)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_solve_rejects_nonfinite_start(bad: float) -> None:
    form = strongly_convex_form()
    solver = MMSolver(QuadraticMajorant(form, 0.1), L1(0.1), depth=3)
    x = torch.zeros(2, form.dim, dtype=DT)
    x[1, 0] = bad
    with pytest.raises(ValueError, match="non-finite"):
        solver.solve(x)


def test_solve_rejects_dtype_mismatch() -> None:
    form = strongly_convex_form()
    solver = MMSolver(QuadraticMajorant(form, 0.1), L1(0.1), depth=3)
    with pytest.raises(ValueError, match="dtype"):
        solver.solve(torch.zeros(2, form.dim, dtype=torch.float32))
