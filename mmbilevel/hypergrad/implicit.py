"""Implicit differentiation of a fixed point z* = T(z*, θ).

If z* = T(z*, θ) and I − ∂T/∂z is invertible at z*, the implicit function
theorem gives dz*/dθ = (I − ∂T/∂z)⁻¹ ∂T/∂θ, so for an upper loss E(z*(θ), θ)

    ∇θ E = ∂E/∂θ + (∂T/∂θ)ᵀ v,   where   (I − ∂T/∂z)ᵀ v = ∂E/∂z.

This module solves the adjoint system for v with vector-Jacobian products
(``torch.autograd.grad``) and a pluggable linear solver, and never forms a
Jacobian. It uses only the map T, given as a callable ``z ↦ T(z)`` that closes
over its parameters, so it serves the MM solver and equilibrium layers alike.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from mmbilevel.hypergrad.fixed_point import handle_failure
from mmbilevel.hypergrad.linear_solvers import LINEAR_SOLVERS, LinearSolveResult

__all__ = [
    "AdjointResult",
    "HypergradientError",
    "adjoint_solve",
    "attach_implicit_gradient",
    "implicit_vjp",
]

logger = logging.getLogger(__name__)

Map = Callable[[torch.Tensor], torch.Tensor]
LinearSolver = Callable[..., LinearSolveResult]

ADJOINT_FAILURE_CHOICES = ("raise", "warn")


class HypergradientError(RuntimeError):
    """Raised when the adjoint linear system is not solved to its tolerance.

    Attributes:
        result: the :class:`LinearSolveResult` of the failed solve.
    """

    def __init__(self, message: str, result: LinearSolveResult) -> None:
        super().__init__(message)
        self.result = result


@dataclass(frozen=True)
class AdjointResult:
    """Gradients from one adjoint solve, with the solve's diagnostics.

    Attributes:
        grads: (∂T/∂θ)ᵀ v for each requested input θ, zeros where T does not
            depend on θ.
        linear_solve: diagnostics of the solve of (I − ∂T/∂z)ᵀ v = b.
        connected: for each input, whether the autograd graph of T(z) reaches
            it; False marks a zero gradient that comes from T not reading θ.
    """

    grads: tuple[torch.Tensor, ...]
    linear_solve: LinearSolveResult
    connected: tuple[bool, ...] = ()


def _resolve_solver(linear_solver: str | LinearSolver) -> tuple[str, LinearSolver]:
    if isinstance(linear_solver, str):
        return linear_solver, LINEAR_SOLVERS.get(linear_solver)
    return getattr(linear_solver, "__name__", "custom linear solver"), linear_solver


def adjoint_solve(
    output: torch.Tensor,
    z: torch.Tensor,
    b: torch.Tensor,
    *,
    linear_solver: str | LinearSolver = "fixed_point",
    tol: float = 1e-8,
    maxiter: int = 1000,
    on_failure: str = "raise",
) -> LinearSolveResult:
    """Solve (I − Jᵀ) v = b, where J = ∂output/∂z, by vector-Jacobian products.

    Args:
        output: T(z), computed from ``z`` with autograd recording; its graph is
            kept (``retain_graph=True``) so that the caller can reuse it.
        z: the point, a tensor with ``requires_grad=True``.
        b: right-hand side ∂E/∂z, shaped like ``z``.
        linear_solver: a name in ``LINEAR_SOLVERS`` (``"fixed_point"``,
            ``"neumann"``, ``"cg"``, ``"normal_cg"``, ``"anderson"``) or a callable with the
            signature ``(matvec, b, *, tol, maxiter, rmatvec)``.
        tol: relative residual ‖b − (I − Jᵀ) v‖ / ‖b‖ at which to stop.
        maxiter: iteration cap of the linear solver.
        on_failure: ``"raise"`` a :class:`HypergradientError` or ``"warn"`` when
            the residual stays above ``tol``.

    Returns:
        LinearSolveResult with v and its residual.

    Raises:
        HypergradientError: the solution is not finite (always), or the solve did
            not reach ``tol`` and ``on_failure="raise"``.
    """
    if on_failure not in ADJOINT_FAILURE_CHOICES:
        raise ValueError(
            f"on_failure must be one of {ADJOINT_FAILURE_CHOICES} for the adjoint solve, "
            f"got {on_failure!r}; an unsolved adjoint system gives a wrong gradient"
        )
    name, solver = _resolve_solver(linear_solver)

    def matvec(v: torch.Tensor) -> torch.Tensor:
        (vjp,) = torch.autograd.grad(output, z, v, retain_graph=True, allow_unused=True)
        return v if vjp is None else v - vjp

    rmatvec = _jacobian_vector_product(output, z) if name == "normal_cg" else None
    with torch.enable_grad():
        result = solver(matvec, b.detach(), tol=tol, maxiter=maxiter, rmatvec=rmatvec)
    solution = result.solution.detach()
    result = LinearSolveResult(solution, result.iterations, result.residual, result.converged)

    if not bool(torch.isfinite(solution).all()) or not math.isfinite(result.residual):
        message = (
            f"adjoint solve with {name} produced a non-finite solution after "
            f"{result.iterations} iterations (residual {result.residual}); the fixed point is "
            "probably not attracting (spectral radius of ∂T/∂z ≥ 1): use normal_cg or check the map"
        )
        raise HypergradientError(message, result)
    if not result.converged:
        message = (
            f"adjoint solve with {name} stopped after {result.iterations} iterations with "
            f"relative residual {result.residual:.3e} > tol={tol:.1e}; the hypergradient is "
            "inexact: raise maxiter, loosen tol, or use normal_cg"
        )
        handle_failure(message, on_failure, HypergradientError(message, result))
    logger.debug(
        "adjoint solve with %s: %d iterations, residual %.3e", name, result.iterations, result.residual
    )
    return result


def _jacobian_vector_product(output: torch.Tensor, z: torch.Tensor) -> Map:
    """Return u ↦ (I − J) u, the transpose of the adjoint operator, by double backward."""
    dummy = torch.zeros_like(output, requires_grad=True)
    with torch.enable_grad():
        (transposed,) = torch.autograd.grad(output, z, dummy, create_graph=True, retain_graph=True)

    def rmatvec(u: torch.Tensor) -> torch.Tensor:
        # Jᵀ w is linear in w, so its vector-Jacobian product with u is J u.
        (jvp,) = torch.autograd.grad(transposed, dummy, u, retain_graph=True, allow_unused=True)
        return u if jvp is None else u - jvp

    return rmatvec


def implicit_vjp(
    step: Map,
    z_star: torch.Tensor,
    inputs: Sequence[torch.Tensor],
    grad_z: torch.Tensor,
    *,
    linear_solver: str | LinearSolver = "fixed_point",
    tol: float = 1e-8,
    maxiter: int = 1000,
    on_failure: str = "raise",
) -> AdjointResult:
    """Return (∂T/∂θ)ᵀ (I − ∂T/∂z)⁻ᵀ grad_z at a fixed point z* of T, for each θ in ``inputs``.

    This is the implicit-function-theorem part of the hypergradient: adding the
    direct partial derivative ∂E/∂θ gives ∇θ E.

    Args:
        step: the map z ↦ T(z), which reads the tensors in ``inputs``.
        z_star: a fixed point of ``step`` (detached inside).
        inputs: tensors θ to differentiate with respect to.
        grad_z: ∂E/∂z at z*.
        linear_solver, tol, maxiter, on_failure: as in :func:`adjoint_solve`.

    Returns:
        AdjointResult with one gradient per input.
    """
    z = z_star.detach().requires_grad_(True)
    with torch.enable_grad():
        output = step(z)
    solve = adjoint_solve(
        output,
        z,
        grad_z,
        linear_solver=linear_solver,
        tol=tol,
        maxiter=maxiter,
        on_failure=on_failure,
    )

    differentiable = [t for t in inputs if t.requires_grad]
    grads_found: Sequence[torch.Tensor | None] = ()
    if differentiable and output.requires_grad:
        # Keep the graph: the parameters may be computed from tensors (say W = f(θ))
        # whose graph a later backward pass still needs.
        grads_found = torch.autograd.grad(
            output, differentiable, solve.solution, retain_graph=True, allow_unused=True
        )
    lookup = {id(t): g for t, g in zip(differentiable, grads_found)}
    grads = tuple(
        torch.zeros_like(t) if lookup.get(id(t)) is None else lookup[id(t)] for t in inputs
    )
    connected = tuple(lookup.get(id(t)) is not None for t in inputs)
    return AdjointResult(grads, solve, connected)


def attach_implicit_gradient(
    step: Map,
    z_star: torch.Tensor,
    *,
    linear_solver: str | LinearSolver = "fixed_point",
    tol: float = 1e-8,
    maxiter: int = 1000,
    on_failure: str = "raise",
) -> torch.Tensor:
    """Return T(z*) with a graph to T's parameters whose backward is the implicit gradient.

    The forward solve is assumed to have run without autograd. This function
    records one application of T at the detached fixed point, so memory does
    not grow with the number of forward iterations, and registers a hook that
    replaces the incoming gradient g = ∂E/∂z by v solving (I − ∂T/∂z)ᵀ v = g.
    Backpropagating v through the recorded step then yields (∂T/∂θ)ᵀ v, the
    implicit hypergradient (as in deep equilibrium models).

    The Jacobian ∂T/∂z is rebuilt at backward time from the parameters as they
    are then, so a second backward call (with ``retain_graph=True``) gives the
    same gradient again. Second-order gradients are not supported.

    Args:
        step: the map z ↦ T(z), closing over its parameters.
        z_star: the fixed point found by a forward solver.
        linear_solver, tol, maxiter, on_failure: as in :func:`adjoint_solve`.

    Returns:
        T(z*), numerically z* up to the forward residual, carrying ``requires_grad``
        whenever T depends on a tensor that requires grad.
    """
    fixed_point = z_star.detach()
    with torch.enable_grad():
        output = step(fixed_point)
    if not output.requires_grad:
        return output

    def solve_adjoint(grad: torch.Tensor | None) -> torch.Tensor | None:
        # Autograd passes None when no gradient reaches the output (gradcheck does this).
        if grad is None:
            return None
        z = fixed_point.clone().requires_grad_(True)
        with torch.enable_grad():
            inner = step(z)
        result = adjoint_solve(
            inner,
            z,
            grad,
            linear_solver=linear_solver,
            tol=tol,
            maxiter=maxiter,
            on_failure=on_failure,
        )
        return result.solution

    output.register_hook(solve_adjoint)
    return output
