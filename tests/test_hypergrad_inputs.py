"""Input checks of hypergrad and differentiable_solve: parameters that cannot get a gradient."""

from __future__ import annotations

import warnings

import pytest
import torch

from mmbilevel.hypergrad import differentiable_solve, hypergrad
from mmbilevel.majorants import QuadraticForm, QuadraticMajorant
from mmbilevel.mm import MMSolver
from mmbilevel.prox import Zero

F64 = torch.float64

# With K = L the truncated gradient is exact here.
METHODS = [("unrolled", {}), ("truncated", {"truncate": 60}), ("implicit", {})]


def _scaled_identity_solver(theta: torch.Tensor, depth: int = 60) -> MMSolver:
    """MM on f(z) = θ/2‖z‖² − Σz, z* = 1/θ per coordinate; for θ = 2 the step 0.4 contracts by 0.2."""
    form = QuadraticForm(torch.eye(3, dtype=F64) * theta, torch.zeros(3, 3, dtype=F64), -torch.ones(3, dtype=F64))
    return MMSolver(QuadraticMajorant(form, 0.4), Zero(), depth)


def _sum_loss(z: torch.Tensor) -> torch.Tensor:
    return z.sum()


@pytest.mark.parametrize(("method", "options"), METHODS)
def test_hypergrad_rejects_param_without_grad(method: str, options: dict) -> None:
    theta = torch.tensor(2.0, dtype=F64)
    solver = _scaled_identity_solver(theta)
    with pytest.raises(ValueError, match=r"parameter 0 .*requires_grad_\(\)"):
        hypergrad(solver, torch.zeros(2, 3, dtype=F64), _sum_loss, [theta], method, **options)


@pytest.mark.parametrize(("method", "options"), METHODS)
def test_hypergrad_names_second_param(method: str, options: dict) -> None:
    theta = torch.tensor(2.0, dtype=F64, requires_grad=True)
    frozen = torch.tensor(1.0, dtype=F64)
    solver = _scaled_identity_solver(theta)
    with pytest.raises(ValueError, match="parameter 1 "):
        hypergrad(solver, torch.zeros(2, 3, dtype=F64), _sum_loss, [theta, frozen], method, **options)


@pytest.mark.parametrize(("method", "options"), METHODS)
def test_solve_rejects_param_without_grad(method: str, options: dict) -> None:
    theta = torch.tensor(2.0, dtype=F64)
    solver = _scaled_identity_solver(theta)
    with pytest.raises(ValueError, match=r"parameter 0 .*requires_grad_\(\)"):
        differentiable_solve(solver, torch.zeros(2, 3, dtype=F64), [theta], method, **options)


@pytest.mark.parametrize(("method", "options"), METHODS)
def test_hypergrad_warns_detached_majorant(method: str, options: dict) -> None:
    # The majorant reads a constant copy of θ: no parameter reaches T or E.
    theta = torch.tensor(2.0, dtype=F64, requires_grad=True)
    solver = _scaled_identity_solver(theta.detach())
    with pytest.warns(UserWarning, match="none of the 1 parameters"):
        result = hypergrad(solver, torch.zeros(2, 3, dtype=F64), _sum_loss, [theta], method, **options)
    assert float(result.grads[0]) == 0.0


@pytest.mark.parametrize(("method", "options"), METHODS)
def test_solve_warns_detached_majorant(method: str, options: dict) -> None:
    theta = torch.tensor(2.0, dtype=F64, requires_grad=True)
    solver = _scaled_identity_solver(theta.detach())
    z = differentiable_solve(solver, torch.zeros(2, 3, dtype=F64), [theta], method, **options)
    with pytest.warns(UserWarning, match="none of the 1 parameters"):
        z.sum().backward()


@pytest.mark.parametrize(("method", "options"), METHODS)
def test_unread_param_zero_without_warning(method: str, options: dict) -> None:
    # A parameter that T and E do not read has the correct gradient 0, as long
    # as another parameter reaches the graph.
    theta = torch.tensor(2.0, dtype=F64, requires_grad=True)
    unread = torch.tensor(5.0, dtype=F64, requires_grad=True)
    solver = _scaled_identity_solver(theta)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = hypergrad(solver, torch.zeros(2, 3, dtype=F64), _sum_loss, [theta, unread], method, **options)
    assert float(result.grads[1]) == 0.0
    # E = Σ z* = 6/θ over 2 problems of 3 coordinates, so ∇θE = −6/θ² = −1.5.
    assert abs(float(result.grads[0]) + 1.5) < 1e-9
