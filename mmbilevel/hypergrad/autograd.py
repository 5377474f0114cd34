"""The lower-level solution as a differentiable function, for ``loss.backward()``.

:func:`differentiable_solve` returns z (z⁽ᴸ⁾ or the fixed point z*) from a
``torch.autograd.Function`` whose backward pass computes the hypergradient with
any method of :func:`mmbilevel.hypergrad.hypergrad`, so an ordinary training
loop (``loss = E(z); loss.backward(); optimizer.step()``) works unchanged.

The forward pass always runs without autograd. The backward pass of the
unrolled and truncated methods re-runs the iterations with autograd, one extra
forward pass like checkpointing the whole chain. The implicit method solves
the adjoint system at the stored fixed point. Nothing from the forward pass
other than x, z and the parameters is kept, so memory between forward and
backward does not grow with the number of iterations. Second-order gradients
are not supported: a backward pass with ``create_graph=True`` raises
RuntimeError.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch.autograd.function import once_differentiable

from mmbilevel.hypergrad.api import (
    HypergradOptions,
    IterativeSolver,
    _check_finite,
    _check_grad_z,
    _check_params,
    _gradients,
    _warn_if_unreached,
    _zeros_for_none,
    default_tolerance,
    solve_fixed_point,
    stationary_map,
)
from mmbilevel.hypergrad.implicit import implicit_vjp
from mmbilevel.hypergrad.truncated import truncated_solution
from mmbilevel.hypergrad.unrolled import run_iterations, unrolled_solution

__all__ = ["SolveDiagnostics", "differentiable_solve"]


class SolveDiagnostics:
    """Diagnostics written by :func:`differentiable_solve` as its passes run.

    Attributes:
        forward: the forward :class:`FixedPointResult` (implicit method), else None.
        adjoint: the :class:`LinearSolveResult` of the latest backward pass
            (implicit method), else None.
        backward_calls: number of backward passes run so far.
    """

    def __init__(self) -> None:
        self.forward = None
        self.adjoint = None
        self.backward_calls = 0

    def __repr__(self) -> str:
        return (
            f"SolveDiagnostics(forward={self.forward!r}, adjoint={self.adjoint!r}, "
            f"backward_calls={self.backward_calls})"
        )


class _Context:
    """Non-tensor state shared by the forward and backward passes."""

    def __init__(
        self,
        solver: IterativeSolver,
        options: HypergradOptions,
        diagnostics: SolveDiagnostics,
        params: list[torch.Tensor],
    ) -> None:
        self.solver = solver
        self.options = options
        self.diagnostics = diagnostics
        self.params = params


class _SolveFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, context: _Context, x: torch.Tensor, *params: torch.Tensor) -> torch.Tensor:
        options = context.options
        if options.method == "implicit":
            forward = solve_fixed_point(stationary_map(context.solver), x, options, context.solver)
            context.diagnostics.forward = forward
            z = forward.solution.clone()
        else:
            depth = options.resolved_depth(context.solver)
            z = run_iterations(context.solver.step, x.detach(), 0, depth)
        ctx.context = context
        ctx.x = x
        ctx.save_for_backward(z)
        return z

    @staticmethod
    def backward(ctx: Any, grad_z: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        # Autograd enables grad mode during backward only for create_graph=True.
        if torch.is_grad_enabled():
            raise RuntimeError(
                "second-order gradients through differentiable_solve are not supported: its "
                "backward pass is computed without a graph; call backward() or "
                "torch.autograd.grad without create_graph=True"
            )
        return _SolveFunction._first_order_backward(ctx, grad_z)

    @staticmethod
    @once_differentiable
    def _first_order_backward(ctx: Any, grad_z: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        context: _Context = ctx.context
        options = context.options
        (z,) = ctx.saved_tensors
        x: torch.Tensor = ctx.x
        context.diagnostics.backward_calls += 1
        _check_grad_z(grad_z)
        needs_x = ctx.needs_input_grad[1]
        wanted = [p for p, needed in zip(context.params, ctx.needs_input_grad[2:]) if needed]
        labels = ["the start x"] + [
            f"parameter {index}" for index, needed in enumerate(ctx.needs_input_grad[2:]) if needed
        ]

        if options.method == "implicit":
            tol = options.tol if options.tol is not None else default_tolerance(z.dtype)
            result = implicit_vjp(
                stationary_map(context.solver),
                z,
                [x, *wanted],
                grad_z,
                linear_solver=options.linear_solver,
                tol=tol,
                maxiter=options.maxiter,
                on_failure=options.on_failure,
            )
            context.diagnostics.adjoint = result.linear_solve
            grads = result.grads
            connected = result.connected[1:]
        else:
            found = _recompute_vjp(context, x, needs_x, wanted, grad_z)
            grads = _zeros_for_none(found, [x, *wanted])
            connected = tuple(g is not None for g in found[1:])
        _warn_if_unreached(connected, "the lower-level map T")
        _check_finite(grads, options.method, labels)

        grad_x = grads[0] if needs_x else None
        lookup = {id(p): g for p, g in zip(wanted, grads[1:])}
        grad_params = tuple(lookup.get(id(p)) for p in context.params)
        return (None, grad_x, *grad_params)


def _recompute_vjp(
    context: _Context,
    x: torch.Tensor,
    needs_x: bool,
    wanted: list[torch.Tensor],
    grad_z: torch.Tensor,
) -> tuple[torch.Tensor | None, ...]:
    options = context.options
    depth = options.resolved_depth(context.solver)
    start = x.detach().requires_grad_(needs_x)
    with torch.enable_grad():
        if options.method == "unrolled":
            z = unrolled_solution(
                context.solver.step,
                start,
                depth,
                checkpointing=options.checkpointing,
                segments=options.segments,
            )
        else:
            z = truncated_solution(context.solver.step, start, depth, options.truncate)
        return _gradients(z, [start, *wanted], grad_z)


def differentiable_solve(
    solver: IterativeSolver,
    x: torch.Tensor,
    params: Sequence[torch.Tensor],
    method: str = "implicit",
    *,
    diagnostics: SolveDiagnostics | None = None,
    **options: Any,
) -> torch.Tensor:
    """Solve the lower level and return z with a hypergradient backward pass.

    Args:
        solver: an object with ``step(z, iteration)`` and ``depth``, such as
            :class:`mmbilevel.mm.MMSolver`.
        x: starting points z⁽⁰⁾, shaped ``(..., d)``.
        params: every tensor that the solver's majorants read and that should
            receive a gradient; each must require grad. A tensor that the solver
            reads but that is not listed receives no gradient. When the backward
            pass finds that T reads none of them, it warns (``UserWarning``).
        method: ``"unrolled"``, ``"truncated"`` or ``"implicit"``.
        diagnostics: an optional :class:`SolveDiagnostics` that the forward and
            backward passes fill in.
        **options: the options of :func:`mmbilevel.hypergrad.hypergrad`.

    Returns:
        z, shaped like x, with ``requires_grad=True`` whenever x or a parameter
        requires grad.

    Raises:
        ValueError: a parameter does not require grad, or an option is invalid.

    Example:
        >>> z = differentiable_solve(solver, x, [theta], method="implicit")  # doctest: +SKIP
        >>> upper_loss(z).backward()  # doctest: +SKIP
    """
    settings = HypergradOptions(method=method, **options)
    params = list(params)
    _check_params(params)
    context = _Context(solver, settings, diagnostics or SolveDiagnostics(), params)
    return _SolveFunction.apply(context, x, *params)
