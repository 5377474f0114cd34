"""Hypergradients through the MM solver against closed forms and finite differences."""

from __future__ import annotations

import pytest
import torch

from mmbilevel import legendre
from mmbilevel.hypergrad import (
    HypergradientError,
    anderson,
    differentiable_solve,
    fixed_point_iteration,
    hypergrad,
)
from mmbilevel.majorants import BregmanMajorant, QuadraticForm, QuadraticMajorant
from mmbilevel.mm import MMSolver
from mmbilevel.prox import Indicator, Zero

F64 = torch.float64


# ----------------------------------------------------------------------------- ridge regression


class Ridge:
    """Ridge regression z*(θ) = argmin ½‖Xz − y‖² + θ/2‖z‖², validated on (X_val, y_val).

    The closed forms are z* = (XᵀX + θI)⁻¹Xᵀy, dz*/dθ = −(XᵀX + θI)⁻¹z*, and for
    E(z) = ½‖X_val z − y_val‖² summed over the batch of starts, ∇θE = Σ ⟨X_valᵀ(X_val z* − y_val), dz*/dθ⟩.
    """

    def __init__(self, dtype: torch.dtype = F64, device: str | torch.device = "cpu", n: int = 5) -> None:
        generator = torch.Generator().manual_seed(0)
        self.X = torch.randn(20, n, dtype=F64, generator=generator).to(device, dtype)
        self.y = torch.randn(20, dtype=F64, generator=generator).to(device, dtype)
        self.X_val = torch.randn(10, n, dtype=F64, generator=generator).to(device, dtype)
        self.y_val = torch.randn(10, dtype=F64, generator=generator).to(device, dtype)
        self.n = n
        gram = self.X.T @ self.X
        self.gram = 0.5 * (gram + gram.T)

    def solver(self, theta: torch.Tensor, depth: int) -> MMSolver:
        eye = torch.eye(self.n, dtype=theta.dtype, device=theta.device)
        form = QuadraticForm(self.gram + theta * eye, torch.zeros_like(eye), -(self.X.T @ self.y))
        return MMSolver(QuadraticMajorant(form, step=1.0 / form.smoothness), Zero(), depth)

    def upper_loss(self, z: torch.Tensor) -> torch.Tensor:
        return 0.5 * (z @ self.X_val.T - self.y_val).square().sum()

    def exact(self, theta: float, starts: int = 1) -> float:
        gram = self.gram.double().cpu()
        system = gram + theta * torch.eye(self.n, dtype=F64)
        z_star = torch.linalg.solve(system, self.X.double().cpu().T @ self.y.double().cpu())
        dz = -torch.linalg.solve(system, z_star)
        residual = self.X_val.double().cpu().T @ (self.X_val.double().cpu() @ z_star - self.y_val.double().cpu())
        return starts * float(residual @ dz)


METHOD_CASES = [
    ("unrolled", {}),
    ("unrolled", {"checkpointing": True}),
    ("truncated", {"truncate": 300}),
    ("implicit", {}),
    ("implicit", {"forward_solver": "anderson", "linear_solver": "cg"}),
    ("implicit", {"linear_solver": "normal_cg"}),
    ("implicit", {"linear_solver": "neumann"}),
]


@pytest.mark.parametrize(("method", "options"), METHOD_CASES)
def test_ridge_hypergradient_closed_form(method: str, options: dict) -> None:
    problem = Ridge()
    theta = torch.tensor(0.7, dtype=F64, requires_grad=True)
    starts = torch.randn(4, problem.n, dtype=F64, generator=torch.Generator().manual_seed(1))
    result = hypergrad(problem.solver(theta, 600), starts, problem.upper_loss, [theta], method, **options)
    assert result.grads[0].shape == theta.shape
    assert abs(float(result.grads[0]) - problem.exact(0.7, starts=4)) < 1e-8


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("method", ["unrolled", "implicit"])
def test_ridge_hypergradient_device_dtype(device: torch.device, dtype: torch.dtype, method: str) -> None:
    problem = Ridge(dtype=dtype, device=device)
    theta = torch.tensor(0.7, dtype=dtype, device=device, requires_grad=True)
    starts = torch.zeros(3, problem.n, dtype=dtype, device=device)
    result = hypergrad(problem.solver(theta, 600), starts, problem.upper_loss, [theta], method)
    grad = result.grads[0]
    assert grad.dtype == dtype
    assert grad.device.type == device.type
    # float32 rounding of the iteration limits the agreement to about 1e-4 relative.
    tolerance = 1e-4 if dtype == torch.float32 else 1e-9
    expected = problem.exact(0.7, starts=3)
    assert abs(float(grad) - expected) <= tolerance * max(1.0, abs(expected))


@pytest.mark.parametrize("method", ["unrolled", "truncated", "implicit"])
def test_ridge_backward_matches_hypergrad(method: str) -> None:
    problem = Ridge()
    theta = torch.tensor(0.4, dtype=F64, requires_grad=True)
    options = {"truncate": 300} if method == "truncated" else {}
    z = differentiable_solve(problem.solver(theta, 600), torch.zeros(2, problem.n, dtype=F64), [theta], method, **options)
    problem.upper_loss(z).backward()
    assert abs(float(theta.grad) - problem.exact(0.4, starts=2)) < 1e-8


def test_unrolled_error_decreases_with_depth() -> None:
    problem = Ridge()
    exact = problem.exact(0.7)
    errors = []
    for depth in (10, 50, 200):
        theta = torch.tensor(0.7, dtype=F64, requires_grad=True)
        result = hypergrad(problem.solver(theta, depth), torch.zeros(problem.n, dtype=F64), problem.upper_loss, [theta], "unrolled")
        errors.append(abs(float(result.grads[0]) - exact))
    assert errors[1] < errors[0] / 10
    assert errors[2] < errors[1] / 10


def test_truncated_error_decreases_with_k() -> None:
    problem = Ridge()
    exact = problem.exact(0.7)
    errors = []
    for truncate in (5, 50, 200):
        theta = torch.tensor(0.7, dtype=F64, requires_grad=True)
        result = hypergrad(problem.solver(theta, 400), torch.zeros(problem.n, dtype=F64), problem.upper_loss, [theta], "truncated", truncate=truncate)
        errors.append(abs(float(result.grads[0]) - exact))
    assert errors[1] < errors[0] / 10
    assert errors[2] < errors[1] / 10


def test_checkpointing_equals_unrolled() -> None:
    problem = Ridge()
    theta = torch.tensor(0.7, dtype=F64, requires_grad=True)
    solver = problem.solver(theta, 37)
    start = torch.zeros(2, problem.n, dtype=F64)
    plain = hypergrad(solver, start, problem.upper_loss, [theta], "unrolled")
    for segments in (1, 3, 37):
        checkpointed = hypergrad(solver, start, problem.upper_loss, [theta], "unrolled", checkpointing=True, segments=segments)
        torch.testing.assert_close(checkpointed.grads[0], plain.grads[0], rtol=1e-13, atol=0)


# ----------------------------------------------------------------------------- box-constrained quadratic


def _box_problem():
    """Strongly convex f(z) = ½zᵀQz − θᵀz on [0, 1]⁶ with a prescribed active set.

    θ = Qz_t − s makes z_t the minimizer: s is ∇f(z_t), zero on the free
    coordinates, positive where z_t sits at 0 and negative where it sits at 1,
    so strict complementarity holds and the active set is stable under small
    changes of θ. On the free set I, z_I = Q_II⁻¹(θ_I − Q_IA z_A), so
    ∇θE = Q_II⁻¹(z − t)_I on I and 0 on the active set A, for E = ½‖z − t‖².
    """
    generator = torch.Generator().manual_seed(2)
    factor = torch.randn(6, 6, dtype=F64, generator=generator)
    Q = factor.T @ factor / 6 + torch.eye(6, dtype=F64)
    z_target = torch.tensor([0.0, 0.3, 1.0, 0.6, 0.0, 0.8], dtype=F64)
    slope = torch.tensor([1.0, 0.0, -1.0, 0.0, 0.5, 0.0], dtype=F64)
    theta = Q @ z_target - slope
    t = torch.tensor([0.2, 0.1, 0.5, 0.9, 0.4, 0.3], dtype=F64)
    free = slope == 0
    expected = torch.zeros(6, dtype=F64)
    expected[free] = torch.linalg.solve(Q[free][:, free], (z_target - t)[free])
    return Q, theta, t, z_target, expected


@pytest.mark.parametrize("method", ["unrolled", "implicit"])
def test_box_quadratic_closed_form(method: str) -> None:
    Q, theta_value, t, z_target, expected = _box_problem()
    theta = theta_value.clone().requires_grad_(True)
    form = QuadraticForm(Q, torch.zeros_like(Q), -theta)
    solver = MMSolver(QuadraticMajorant(form, step=1.0 / form.smoothness), Indicator(0.0, 1.0), 500)

    def upper_loss(z: torch.Tensor) -> torch.Tensor:
        return 0.5 * (z - t).square().sum()

    result = hypergrad(solver, torch.full((6,), 0.5, dtype=F64), upper_loss, [theta], method)
    torch.testing.assert_close(result.solution, z_target, rtol=0, atol=1e-10)
    torch.testing.assert_close(result.grads[0], expected, rtol=0, atol=1e-9)


# ----------------------------------------------------------------------------- nonconvex Bregman lower level


class DoubleWell:
    """Nonconvex f_θ(z) = Σᵢ (zᵢ² − ¼)² + ½zᵀBz + θᵀz with the Bregman majorant of tanh.

    On [−1, 1], f'' ≤ 12 − 1 + ‖B‖, so μ = 11 + ‖B‖₂ and τ = 0.9/μ give a
    majorant (σ = 1 for the tanh Legendre function).
    """

    def __init__(self) -> None:
        self.B = torch.tensor([[0.0, 0.3, -0.2], [0.3, 0.0, 0.1], [-0.2, 0.1, 0.0]], dtype=F64)
        self.phi = legendre.get("tanh")
        self.smoothness = 11.0 + float(torch.linalg.matrix_norm(self.B, ord=2))
        self.target = torch.tensor([0.4, -0.2, 0.1], dtype=F64)

    def solver(self, theta: torch.Tensor, depth: int) -> MMSolver:
        def f(z: torch.Tensor) -> torch.Tensor:
            wells = (z.square() - 0.25).square().sum(-1)
            return wells + 0.5 * ((z @ self.B) * z).sum(-1) + z @ theta

        majorant = BregmanMajorant(f, self.phi, step=0.9 / self.smoothness, smoothness=self.smoothness)
        return MMSolver(majorant, Zero(), depth)

    def upper_loss(self, z: torch.Tensor) -> torch.Tensor:
        return 0.5 * (z - self.target).square().sum()

    def loss_at(self, theta: torch.Tensor, start: torch.Tensor) -> float:
        solver = self.solver(theta, 1)
        result = fixed_point_iteration(lambda z: solver.step(z, 0), start, tol=1e-15, maxiter=5000)
        return float(self.upper_loss(result.solution))


def test_bregman_nonconvex_finite_differences() -> None:
    problem = DoubleWell()
    theta_value = torch.tensor([0.05, -0.1, 0.02], dtype=F64)
    start = torch.tensor([0.3, -0.4, 0.6], dtype=F64)

    # Central differences; with h = 1e-5 the truncation error is O(h²) ≈ 1e-10
    # and the solve error 1e-15/h ≈ 1e-10.
    step = 1e-5
    expected = torch.zeros(3, dtype=F64)
    for index in range(3):
        shift = torch.zeros(3, dtype=F64)
        shift[index] = step
        expected[index] = (problem.loss_at(theta_value + shift, start) - problem.loss_at(theta_value - shift, start)) / (2 * step)

    for method in ("implicit", "unrolled"):
        theta = theta_value.clone().requires_grad_(True)
        result = hypergrad(problem.solver(theta, 600), start, problem.upper_loss, [theta], method)
        torch.testing.assert_close(result.grads[0], expected, rtol=1e-6, atol=1e-8)


def test_bregman_nonconvex_gradcheck() -> None:
    problem = DoubleWell()
    start = torch.tensor([[0.3, -0.4, 0.6], [-0.5, 0.2, -0.1]], dtype=F64)

    def loss(theta: torch.Tensor) -> torch.Tensor:
        z = differentiable_solve(problem.solver(theta, 1), start, [theta], "implicit", forward_tol=1e-14, forward_maxiter=5000)
        return problem.upper_loss(z)

    theta = torch.tensor([0.05, -0.1, 0.02], dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(loss, (theta,), eps=1e-6, atol=1e-6, rtol=1e-5)


def test_bregman_limit_is_critical_point() -> None:
    problem = DoubleWell()
    theta = torch.tensor([0.05, -0.1, 0.02], dtype=F64, requires_grad=True)
    result = hypergrad(problem.solver(theta, 1), torch.tensor([0.3, -0.4, 0.6], dtype=F64), problem.upper_loss, [theta], "implicit")
    z = result.solution.clone().requires_grad_(True)
    solver = problem.solver(theta.detach(), 1)
    (gradient,) = torch.autograd.grad(solver.majorants[0].objective(z), z)
    assert result.forward.converged
    assert float(gradient.abs().max()) < 1e-9


# ----------------------------------------------------------------------------- failures


def test_implicit_rejects_varying_majorants() -> None:
    problem = Ridge()
    theta = torch.tensor(0.7, dtype=F64, requires_grad=True)
    first, second = problem.solver(theta, 1).majorants[0], problem.solver(theta + 0.1, 1).majorants[0]
    solver = MMSolver([first, second], Zero(), 2)
    with pytest.raises(ValueError, match="same majorant"):
        hypergrad(solver, torch.zeros(problem.n, dtype=F64), problem.upper_loss, [theta], "implicit")


def test_implicit_adjoint_cap_raises() -> None:
    problem = Ridge()
    theta = torch.tensor(0.7, dtype=F64, requires_grad=True)
    with pytest.raises(HypergradientError, match="residual") as caught:
        hypergrad(problem.solver(theta, 1), torch.zeros(problem.n, dtype=F64), problem.upper_loss, [theta], "implicit", maxiter=3)
    assert caught.value.result.iterations == 3
    assert not caught.value.result.converged


def test_implicit_adjoint_cap_warns() -> None:
    problem = Ridge()
    theta = torch.tensor(0.7, dtype=F64, requires_grad=True)
    with pytest.warns(RuntimeWarning, match="relative residual"):
        result = hypergrad(problem.solver(theta, 1), torch.zeros(problem.n, dtype=F64), problem.upper_loss, [theta], "implicit", maxiter=3, on_failure="warn")
    assert not result.adjoint.converged
    assert result.adjoint.residual > 1e-12


def test_implicit_rejects_silent_failure_mode() -> None:
    problem = Ridge()
    theta = torch.tensor(0.7, dtype=F64, requires_grad=True)
    with pytest.raises(ValueError, match="on_failure"):
        hypergrad(problem.solver(theta, 1), torch.zeros(problem.n, dtype=F64), problem.upper_loss, [theta], "implicit", on_failure="ignore")


def test_unknown_method_lists_names() -> None:
    problem = Ridge()
    theta = torch.tensor(0.7, dtype=F64, requires_grad=True)
    with pytest.raises(ValueError, match="implicit, truncated, unrolled"):
        hypergrad(problem.solver(theta, 1), torch.zeros(problem.n, dtype=F64), problem.upper_loss, [theta], "reverse")


def test_anderson_forward_stays_in_domain() -> None:
    # Starts next to the ends of dom φ = [−1, 1] make the extrapolation overshoot. The
    # Bregman step needs ∇φ inside the domain, so those problems fall back to the MM step.
    problem = DoubleWell()
    solver = problem.solver(torch.tensor([0.05, -0.1, 0.02], dtype=F64), 1)
    start = torch.tensor([[0.95, -0.99, 0.9]], dtype=F64)
    result = anderson(
        lambda z: solver.step(z, 0), start, tol=1e-12, maxiter=100, on_failure="ignore", in_domain=lambda z: z.abs() < 1
    )
    assert bool((result.solution.abs() < 1).all())


def test_anderson_spurious_fixed_point_reported() -> None:
    # From that start Anderson stalls next to the ends of dom φ, where ∂T/∂z has
    # eigenvalues above 1: the adjoint solve must raise instead of returning a gradient.
    problem = DoubleWell()
    theta = torch.tensor([0.05, -0.1, 0.02], dtype=F64, requires_grad=True)
    start = torch.tensor([[0.95, -0.99, 0.9]], dtype=F64)
    with pytest.raises(HypergradientError, match="not attracting"):
        with pytest.warns(RuntimeWarning, match="Anderson"):
            hypergrad(problem.solver(theta, 1), start, problem.upper_loss, [theta], "implicit", forward_solver="anderson", forward_maxiter=200, on_failure="warn")
