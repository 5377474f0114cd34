"""Linear and fixed-point solvers of the hypergradient package, against direct solves."""

from __future__ import annotations

import math

import pytest
import scipy.optimize
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mmbilevel.hypergrad import (
    LINEAR_SOLVERS,
    FixedPointError,
    anderson,
    conjugate_gradient,
    fixed_point_iteration,
    fixed_point_solve,
    neumann_series,
    normal_conjugate_gradient,
)

DTYPE = torch.float64


def _contraction(n: int, radius: float, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    matrix = torch.randn(n, n, dtype=DTYPE, generator=generator)
    return radius * matrix / torch.linalg.matrix_norm(matrix, ord=2)


def _adjoint_system(n: int = 6, radius: float = 0.8, seed: int = 0):
    jacobian = _contraction(n, radius, seed)
    operator = torch.eye(n, dtype=DTYPE) - jacobian.T
    b = torch.randn(3, n, dtype=DTYPE, generator=torch.Generator().manual_seed(seed + 1))
    expected = torch.linalg.solve(operator, b.T).T
    return operator, b, expected


@pytest.mark.parametrize("name", ["fixed_point", "neumann", "normal_cg", "anderson"])
def test_linear_solver_matches_direct_solve(name: str) -> None:
    operator, b, expected = _adjoint_system()
    solver = LINEAR_SOLVERS.get(name)
    result = solver(lambda v: v @ operator.T, b, tol=1e-12, maxiter=500, rmatvec=lambda u: u @ operator)
    assert result.converged
    assert result.residual <= 1e-12
    assert result.iterations >= 1
    torch.testing.assert_close(result.solution, expected, rtol=1e-10, atol=1e-10)


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(min_value=1, max_value=8),
    radius=st.floats(min_value=0.0, max_value=0.9),
    seed=st.integers(min_value=0, max_value=10_000),
    name=st.sampled_from(["fixed_point", "neumann", "normal_cg", "anderson"]),
)
def test_linear_solver_random_contractions(n: int, radius: float, seed: int, name: str) -> None:
    operator, b, expected = _adjoint_system(n=n, radius=radius, seed=seed)
    result = LINEAR_SOLVERS.get(name)(
        lambda v: v @ operator.T, b, tol=1e-11, maxiter=2000, rmatvec=lambda u: u @ operator
    )
    assert result.converged
    # ‖v − v*‖ ≤ ‖A⁻¹‖ ‖r‖ ≤ ‖r‖ / (1 − 0.9) for A = I − Jᵀ with ‖J‖ ≤ 0.9.
    torch.testing.assert_close(result.solution, expected, rtol=0, atol=1e-9 * (1 + float(b.norm())))


def test_conjugate_gradient_on_spd_system() -> None:
    factor = torch.randn(7, 7, dtype=DTYPE, generator=torch.Generator().manual_seed(3))
    operator = factor @ factor.T + 0.5 * torch.eye(7, dtype=DTYPE)
    b = torch.randn(7, dtype=DTYPE, generator=torch.Generator().manual_seed(4))
    result = conjugate_gradient(lambda v: operator @ v, b, tol=1e-12, maxiter=100)
    assert result.converged
    assert result.iterations <= 7 + 3
    torch.testing.assert_close(result.solution, torch.linalg.solve(operator, b), rtol=1e-9, atol=1e-9)


def test_normal_cg_solves_noncontractive_system() -> None:
    # The spectral radius of J is 1.5, so the fixed-point iteration diverges,
    # but I − Jᵀ is still invertible and CG on the normal equations solves it.
    jacobian = torch.diag(torch.tensor([1.5, 0.3, -0.7], dtype=DTYPE))
    operator = torch.eye(3, dtype=DTYPE) - jacobian.T
    b = torch.tensor([1.0, -2.0, 0.5], dtype=DTYPE)
    diverging = fixed_point_solve(lambda v: operator @ v, b, tol=1e-10, maxiter=50)
    solved = normal_conjugate_gradient(
        lambda v: operator @ v, b, tol=1e-10, maxiter=50, rmatvec=lambda u: operator.T @ u
    )
    assert not diverging.converged
    assert diverging.residual > 1.0
    assert solved.converged
    torch.testing.assert_close(solved.solution, torch.linalg.solve(operator, b))


def test_normal_cg_requires_rmatvec() -> None:
    with pytest.raises(ValueError, match="rmatvec"):
        normal_conjugate_gradient(lambda v: v, torch.ones(2, dtype=DTYPE))


@pytest.mark.parametrize("solver", [fixed_point_solve, neumann_series, conjugate_gradient])
def test_linear_solver_zero_rhs(solver) -> None:
    result = solver(lambda v: 2.0 * v, torch.zeros(4, dtype=DTYPE), tol=1e-8, maxiter=10)
    assert result.converged
    assert torch.count_nonzero(result.solution) == 0


def test_linear_solver_reports_iteration_cap() -> None:
    operator, b, _ = _adjoint_system(radius=0.99)
    result = fixed_point_solve(lambda v: v @ operator.T, b, tol=1e-14, maxiter=5)
    assert not result.converged
    assert result.iterations == 5
    assert result.residual > 1e-14


def test_linear_solver_rejects_bad_options() -> None:
    with pytest.raises(ValueError, match="maxiter"):
        fixed_point_solve(lambda v: v, torch.ones(2, dtype=DTYPE), maxiter=0)
    with pytest.raises(ValueError, match="tol"):
        fixed_point_solve(lambda v: v, torch.ones(2, dtype=DTYPE), tol=-1.0)


def _cosine_fixed_points(starts: torch.Tensor) -> torch.Tensor:
    # Independent side: scipy's fixed-point routine on z = cos(z), per coordinate.
    values = [float(scipy.optimize.fixed_point(math.cos, float(s), xtol=1e-14)) for s in starts.flatten()]
    return torch.tensor(values, dtype=DTYPE).reshape(starts.shape)


@pytest.mark.parametrize("solver", [fixed_point_iteration, anderson])
def test_fixed_point_solver_cosine(solver) -> None:
    starts = torch.linspace(-1.0, 2.0, 8, dtype=DTYPE).reshape(4, 2)
    result = solver(torch.cos, starts, tol=1e-12, maxiter=500)
    assert result.converged
    assert result.status == "converged"
    assert len(result.residual_trace) == result.iterations
    assert result.residual_trace[-1] == result.residual
    torch.testing.assert_close(result.solution, _cosine_fixed_points(starts), rtol=0, atol=1e-11)


def test_anderson_needs_fewer_iterations() -> None:
    # A symmetric map with eigenvalues up to 0.98: the plain iteration needs
    # about log(1e-10)/log(0.98) ≈ 1100 steps, Anderson far fewer.
    generator = torch.Generator().manual_seed(5)
    basis, _ = torch.linalg.qr(torch.randn(20, 20, dtype=DTYPE, generator=generator))
    matrix = basis @ torch.diag(torch.linspace(-0.5, 0.98, 20, dtype=DTYPE)) @ basis.T
    shift = torch.randn(20, dtype=DTYPE, generator=generator)

    def affine(z: torch.Tensor) -> torch.Tensor:
        return z @ matrix.T + shift

    start = torch.zeros(3, 20, dtype=DTYPE)
    plain = fixed_point_iteration(affine, start, tol=1e-10, maxiter=5000)
    accelerated = anderson(affine, start, tol=1e-10, maxiter=5000, memory=8)
    expected = torch.linalg.solve(torch.eye(20, dtype=DTYPE) - matrix, shift).expand(3, 20)
    assert plain.converged
    assert accelerated.converged
    assert accelerated.iterations < plain.iterations / 10
    # ‖z − z*‖ ≤ ‖T(z) − z‖ / (1 − 0.98) = 50 · tol.
    torch.testing.assert_close(accelerated.solution, expected, rtol=0, atol=1e-8)


def test_fixed_point_divergence_raises() -> None:
    with pytest.raises(FixedPointError, match="diverged") as caught:
        fixed_point_iteration(lambda z: z * z + 1.0, torch.ones(2, dtype=DTYPE), maxiter=100)
    assert caught.value.result.status == "diverged"
    assert not caught.value.result.converged


def test_fixed_point_cap_returns_diagnostics() -> None:
    result = fixed_point_iteration(
        lambda z: 0.999 * z + 1.0, torch.zeros(1, dtype=DTYPE), tol=1e-12, maxiter=7, on_failure="ignore"
    )
    assert result.status == "max_iterations"
    assert result.iterations == 7
    assert len(result.residual_trace) == 7


def test_fixed_point_cap_warns() -> None:
    with pytest.warns(RuntimeWarning, match="maxiter=3"):
        fixed_point_iteration(
            lambda z: 0.5 * z + 1.0, torch.zeros(2, dtype=DTYPE), tol=1e-12, maxiter=3, on_failure="warn"
        )


def test_anderson_without_fixed_point_stays_finite() -> None:
    # T(z) = z + 1 has no fixed point and makes every Gram matrix singular;
    # the solve must fall back to plain steps instead of raising.
    result = anderson(lambda z: z + 1.0, torch.zeros(2, 3, dtype=DTYPE), maxiter=20, on_failure="ignore")
    assert result.status == "max_iterations"
    assert bool(torch.isfinite(result.solution).all())


def test_anderson_projection_keeps_domain() -> None:
    # z ↦ tanh(artanh(z) + 0.5(0.9 − z)) has its fixed point at 0.9, near the end of (−1, 1).
    def step(z: torch.Tensor) -> torch.Tensor:
        return torch.tanh(torch.atanh(z) + 0.5 * (0.9 - z))

    result = anderson(
        step,
        torch.zeros(4, 1, dtype=DTYPE),
        tol=1e-12,
        maxiter=300,
        project=lambda z: z.clamp(-1 + 1e-12, 1 - 1e-12),
    )
    assert result.converged
    torch.testing.assert_close(result.solution, torch.full((4, 1), 0.9, dtype=DTYPE))


def test_fixed_point_scalar_problem() -> None:
    result = fixed_point_iteration(torch.cos, torch.tensor(1.0, dtype=DTYPE), tol=1e-12, maxiter=200)
    assert result.solution.shape == ()
    assert result.iterations >= 1
    assert abs(float(result.solution) - 0.7390851332151607) < 1e-11
