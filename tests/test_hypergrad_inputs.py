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


def _zero_coordinate_solver(theta: torch.Tensor, depth: int) -> MMSolver:
    """MM on f(z) = θ/2‖z‖² + (−1, 0, 1)·z: from z⁽⁰⁾ = 0 the middle coordinate stays exactly 0."""
    form = QuadraticForm(torch.eye(3, dtype=F64) * theta, torch.zeros(3, 3, dtype=F64), torch.tensor([-1.0, 0.0, 1.0], dtype=F64))
    return MMSolver(QuadraticMajorant(form, 0.5), Zero(), depth)


def _square_root_loss(z: torch.Tensor) -> torch.Tensor:
    # E = Σ√|z| has an infinite derivative at the zero coordinate.
    return z.abs().sqrt().sum()


@pytest.mark.parametrize(("method", "options"), METHODS)
def test_solve_blames_infinite_loss_gradient(method: str, options: dict) -> None:
    from mmbilevel.hypergrad import HypergradientError

    theta = torch.tensor(1.0, dtype=F64, requires_grad=True)
    z = differentiable_solve(_zero_coordinate_solver(theta, 60), torch.zeros(1, 3, dtype=F64), [theta], method, **options)
    with pytest.raises(HypergradientError, match="∂E/∂z"):
        _square_root_loss(z).backward()


@pytest.mark.parametrize(("method", "options"), METHODS)
def test_hypergrad_blames_infinite_loss_gradient(method: str, options: dict) -> None:
    from mmbilevel.hypergrad import HypergradientError

    theta = torch.tensor(1.0, dtype=F64, requires_grad=True)
    solver = _zero_coordinate_solver(theta, 60)
    with pytest.raises(HypergradientError, match="∂E/∂z"):
        hypergrad(solver, torch.zeros(1, 3, dtype=F64), _square_root_loss, [theta], method, **options)


def test_solve_names_param_index() -> None:
    # The start x is the first input of the backward pass, and must not shift
    # the index of the parameter that overflows.
    from mmbilevel.hypergrad import HypergradientError

    theta = torch.tensor(1.0, dtype=F64, requires_grad=True)
    blown = torch.tensor(1.0, dtype=F64, requires_grad=True)
    form = QuadraticForm(torch.eye(3, dtype=F64) * theta, torch.zeros(3, 3, dtype=F64), -torch.ones(3, dtype=F64) * blown * 1e308)
    solver = MMSolver(QuadraticMajorant(form, 0.5), Zero(), 3)
    z = differentiable_solve(solver, torch.zeros(1, 3, dtype=F64), [theta, blown], "unrolled")
    with pytest.raises(HypergradientError, match="parameter 0 is not finite"):
        (z * 1e10).sum().backward()


@pytest.mark.parametrize("call", ["hypergrad", "solve"])
def test_depth_above_solver_depth_rejected(call: str) -> None:
    theta = torch.tensor(1.0, dtype=F64, requires_grad=True)
    solver = _zero_coordinate_solver(theta, 7)
    with pytest.raises(ValueError, match=r"depth=10 .*solver\.depth=7"):
        if call == "hypergrad":
            hypergrad(solver, torch.zeros(1, 3, dtype=F64), _sum_loss, [theta], "unrolled", depth=10)
        else:
            differentiable_solve(solver, torch.zeros(1, 3, dtype=F64), [theta], "unrolled", depth=10)


@pytest.mark.parametrize(("method", "options"), METHODS)
def test_zero_depth_solver_rejected(method: str, options: dict) -> None:
    theta = torch.tensor(1.0, dtype=F64, requires_grad=True)
    solver = _zero_coordinate_solver(theta, 0)
    with pytest.raises(ValueError, match=r"solver\.depth=0.*depth ≥ 1"):
        hypergrad(solver, torch.zeros(1, 3, dtype=F64), _sum_loss, [theta], method, **options)


def test_segments_without_checkpointing_rejected() -> None:
    theta = torch.tensor(1.0, dtype=F64, requires_grad=True)
    solver = _zero_coordinate_solver(theta, 7)
    with pytest.raises(ValueError, match="checkpointing=True"):
        hypergrad(solver, torch.zeros(1, 3, dtype=F64), _sum_loss, [theta], "unrolled", segments=3)


@pytest.mark.parametrize(("method", "options"), METHODS)
def test_non_scalar_loss_rejected(method: str, options: dict) -> None:
    theta = torch.tensor(1.0, dtype=F64, requires_grad=True)
    solver = _zero_coordinate_solver(theta, 60)
    with pytest.raises(ValueError, match=r"scalar.*shape \(1, 3\)"):
        hypergrad(solver, torch.zeros(1, 3, dtype=F64), lambda z: z.square(), [theta], method, **options)


@pytest.mark.parametrize(("method", "options"), METHODS)
def test_solve_rejects_create_graph(method: str, options: dict) -> None:
    theta = torch.tensor(2.0, dtype=F64, requires_grad=True)
    z = differentiable_solve(_scaled_identity_solver(theta), torch.zeros(2, 3, dtype=F64), [theta], method, **options)
    with pytest.raises(RuntimeError, match="second-order"):
        torch.autograd.grad(z.square().sum(), theta, create_graph=True)
