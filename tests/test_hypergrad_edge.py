"""Edge cases of hypergradients: repeated backward passes, tiny problems, memory."""

from __future__ import annotations

import gc
import weakref

import pytest
import torch

from mmbilevel.hypergrad import SolveDiagnostics, differentiable_solve, hypergrad
from mmbilevel.majorants import QuadraticMajorant
from mmbilevel.mm import MMSolver
from mmbilevel.prox import Zero

F64 = torch.float64


def _ridge_solver(theta: torch.Tensor, target: torch.Tensor, depth: int) -> MMSolver:
    """MM on f(z) = ½‖z − target‖² + θ/2‖z‖², read at call time, with z* = target/(1 + θ)."""

    def f(z: torch.Tensor) -> torch.Tensor:
        return 0.5 * (z - target).square().sum(-1) + 0.5 * theta * z.square().sum(-1)

    return MMSolver(QuadraticMajorant(f, step=0.5, smoothness=1.0 + float(theta.detach())), Zero(), depth)


def _upper_loss(z: torch.Tensor) -> torch.Tensor:
    return 0.5 * (z - 1.0).square().sum()


def _exact_gradient(theta: float, target: torch.Tensor) -> float:
    # E = ½‖target/(1 + θ) − 1‖², dz*/dθ = −target/(1 + θ)².
    z = target / (1 + theta)
    return float(((z - 1.0) * (-target / (1 + theta) ** 2)).sum())


METHODS = [("unrolled", {}), ("truncated", {"truncate": 60}), ("implicit", {})]


@pytest.mark.parametrize(("method", "options"), METHODS)
def test_second_backward_accumulates(method: str, options: dict) -> None:
    target = torch.tensor([0.5, 2.0], dtype=F64)
    theta = torch.tensor(0.3, dtype=F64, requires_grad=True)
    z = differentiable_solve(_ridge_solver(theta, target, 200), torch.zeros(2, dtype=F64), [theta], method, **options)
    loss = _upper_loss(z)
    loss.backward(retain_graph=True)
    first = float(theta.grad)
    loss.backward()
    assert abs(first - _exact_gradient(0.3, target)) < 1e-9
    assert abs(float(theta.grad) - 2 * first) < 1e-12


@pytest.mark.parametrize(("method", "options"), METHODS)
def test_second_outer_step_not_stale(method: str, options: dict) -> None:
    target = torch.tensor([0.5, 2.0], dtype=F64)
    theta = torch.tensor(0.3, dtype=F64, requires_grad=True)
    optimizer = torch.optim.SGD([theta], lr=0.5)
    solver = _ridge_solver(theta, target, 200)
    for _ in range(2):
        optimizer.zero_grad()
        z = differentiable_solve(solver, torch.zeros(2, dtype=F64), [theta], method, **options)
        _upper_loss(z).backward()
        expected = _exact_gradient(float(theta.detach()), target)
        assert abs(float(theta.grad) - expected) < 1e-9
        optimizer.step()


@pytest.mark.parametrize(("method", "options"), METHODS)
def test_solution_carries_requires_grad(method: str, options: dict) -> None:
    target = torch.tensor([0.5, 2.0], dtype=F64)
    theta = torch.tensor(0.3, dtype=F64, requires_grad=True)
    z = differentiable_solve(_ridge_solver(theta, target, 200), torch.zeros(2, dtype=F64), [theta], method, **options)
    assert z.requires_grad
    assert z.grad_fn is not None
    _upper_loss(z).backward()
    assert theta.grad is not None
    assert float(theta.grad.abs()) > 1e-3


@pytest.mark.parametrize(("method", "options"), METHODS)
def test_one_dimensional_problem(method: str, options: dict) -> None:
    target = torch.tensor([2.0], dtype=F64)
    theta = torch.tensor(0.3, dtype=F64, requires_grad=True)
    result = hypergrad(_ridge_solver(theta, target, 200), torch.zeros(1, dtype=F64), _upper_loss, [theta], method, **options)
    assert result.solution.shape == (1,)
    assert abs(float(result.grads[0]) - _exact_gradient(0.3, target)) < 1e-9


def test_start_at_fixed_point_still_differentiates() -> None:
    # The forward solve stops after its first evaluation of T, but the gradient
    # must come from the adjoint system, not from an empty iteration.
    target = torch.tensor([2.0], dtype=F64)
    theta = torch.tensor(0.3, dtype=F64, requires_grad=True)
    start = target / 1.3
    diagnostics = SolveDiagnostics()
    z = differentiable_solve(_ridge_solver(theta, target, 1), start, [theta], "implicit", diagnostics=diagnostics)
    _upper_loss(z).backward()
    assert diagnostics.forward.iterations == 1
    assert diagnostics.adjoint.iterations >= 1
    assert abs(float(theta.grad) - _exact_gradient(0.3, target)) < 1e-9


def test_batched_problems_independent() -> None:
    target = torch.tensor([0.5, 2.0], dtype=F64)
    theta = torch.tensor(0.3, dtype=F64, requires_grad=True)
    solver = _ridge_solver(theta, target, 200)
    starts = torch.tensor([[0.0, 0.0], [3.0, -1.0], [1.0, 1.0]], dtype=F64)
    batched = hypergrad(solver, starts, _upper_loss, [theta], "implicit")
    assert abs(float(batched.grads[0]) - 3 * _exact_gradient(0.3, target)) < 1e-9


def test_gradient_with_respect_to_start() -> None:
    # The limit does not depend on the start, so its implicit gradient is zero,
    # and the unrolled one decays like (1 − τ(1 + θ))ᴸ.
    target = torch.tensor([0.5, 2.0], dtype=F64)
    theta = torch.tensor(0.3, dtype=F64, requires_grad=True)
    start = torch.tensor([1.0, -1.0], dtype=F64, requires_grad=True)
    solver = _ridge_solver(theta, target, 20)
    implicit = hypergrad(solver, start, _upper_loss, [theta, start], "implicit")
    unrolled = hypergrad(solver, start, _upper_loss, [theta, start], "unrolled")
    contraction = (1 - 0.5 * 1.3) ** 20
    assert float(implicit.grads[1].abs().max()) == 0.0
    assert float(unrolled.grads[1].abs().max()) < 2 * contraction


@pytest.mark.parametrize(("method", "options"), METHODS)
def test_outer_steps_release_graphs(method: str, options: dict) -> None:
    # With the cyclic garbage collector off, a reference cycle through a graph
    # (for example ctx → output → grad_fn → ctx) would keep every step's
    # solution alive. Plain reference counting must free them all.
    target = torch.tensor([0.5, 2.0], dtype=F64)
    theta = torch.nn.Parameter(torch.tensor(0.3, dtype=F64))
    optimizer = torch.optim.Adam([theta], lr=1e-2)
    solver = _ridge_solver(theta, target, 100)
    references = []
    gc.collect()
    gc.disable()
    try:
        for _ in range(20):
            optimizer.zero_grad()
            z = differentiable_solve(solver, torch.zeros(4, 2, dtype=F64), [theta], method, **options)
            loss = _upper_loss(z)
            loss.backward()
            optimizer.step()
            references.append(weakref.ref(z))
            del z, loss
        alive = sum(reference() is not None for reference in references)
    finally:
        gc.enable()
    assert alive == 0


def test_zero_depth_rejected() -> None:
    # Zero iterations would give z = x and a silently zero hypergradient.
    target = torch.tensor([2.0], dtype=F64)
    theta = torch.tensor(0.3, dtype=F64, requires_grad=True)
    solver = _ridge_solver(theta, target, 0)
    with pytest.raises(ValueError, match="depth"):
        hypergrad(solver, torch.zeros(1, dtype=F64), _upper_loss, [theta], "unrolled")


@pytest.mark.parametrize(("method", "options"), METHODS)
def test_nan_upper_loss_reported(method: str, options: dict) -> None:
    from mmbilevel.hypergrad import HypergradientError

    theta = torch.tensor(0.5, dtype=F64, requires_grad=True)
    target = torch.tensor([[1.0, -2.0]], dtype=F64)
    solver = _ridge_solver(theta, target, 60)
    with pytest.raises(HypergradientError, match="upper loss E\\(z\\) is not finite"):
        hypergrad(solver, torch.zeros_like(target), lambda z: z.sum() * float("nan"), [theta], method=method, **options)
