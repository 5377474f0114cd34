"""Matrix-free linear solvers for the adjoint system of implicit differentiation.

Every solver has the signature ``solver(matvec, b, *, tol, maxiter, rmatvec=None)``
and returns a :class:`LinearSolveResult`. ``matvec(v)`` applies an operator A to a
tensor shaped like ``b``; ``rmatvec(u)`` applies Aᵀ and is needed only by the
normal-equation solver. Inner products run over the whole tensor, so a batch of
independent systems is solved as one block-diagonal system.

Convergence is measured by the relative residual ‖b − A v‖ / ‖b‖ ≤ ``tol``, and
the reported ``residual`` is that relative value. A right-hand side equal to zero
has the exact solution zero, which is returned after one residual check.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from mmbilevel.hypergrad.fixed_point import anderson
from mmbilevel.registry import Registry

__all__ = [
    "LinearSolveResult",
    "LINEAR_SOLVERS",
    "anderson_solve",
    "conjugate_gradient",
    "fixed_point_solve",
    "neumann_series",
    "normal_conjugate_gradient",
]

Matvec = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class LinearSolveResult:
    """Solution of A v = b with its diagnostics.

    Attributes:
        solution: the approximate solution v, shaped like b.
        iterations: number of matrix-vector products with A (or A and Aᵀ) spent.
        residual: relative residual ‖b − A v‖ / ‖b‖ of the returned solution
            (0.0 when b = 0).
        converged: whether ``residual <= tol``.
    """

    solution: torch.Tensor
    iterations: int
    residual: float
    converged: bool


def _norm(t: torch.Tensor) -> float:
    return float(torch.linalg.vector_norm(t))


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.sum(a * b)


def _check_arguments(b: torch.Tensor, tol: float, maxiter: int) -> None:
    if tol < 0:
        raise ValueError(f"tol must be non-negative, got {tol}; pass a tolerance such as 1e-8")
    if maxiter < 1:
        raise ValueError(f"maxiter must be at least 1, got {maxiter}; pass the iteration cap")
    if not torch.is_floating_point(b):
        raise TypeError(f"b must be a floating-point tensor, got dtype {b.dtype}")


def _zero_rhs_result(b: torch.Tensor) -> LinearSolveResult:
    return LinearSolveResult(torch.zeros_like(b), 0, 0.0, True)


def fixed_point_solve(
    matvec: Matvec,
    b: torch.Tensor,
    *,
    tol: float = 1e-8,
    maxiter: int = 1000,
    rmatvec: Matvec | None = None,
) -> LinearSolveResult:
    """Solve A v = b by the Richardson fixed-point iteration v ← v + (b − A v).

    For the adjoint system A = I − Jᵀ this is v ← b + Jᵀ v, which converges
    linearly at the rate of the spectral radius of J whenever that radius is
    below one (a contraction). It needs one product with A per iteration.

    Args:
        matvec: v ↦ A v.
        b: right-hand side.
        tol: relative residual at which to stop.
        maxiter: maximum number of iterations.
        rmatvec: unused; accepted so that all solvers share one signature.

    Returns:
        LinearSolveResult with the last iterate.
    """
    del rmatvec
    _check_arguments(b, tol, maxiter)
    b_norm = _norm(b)
    if b_norm == 0.0:
        return _zero_rhs_result(b)

    v = torch.zeros_like(b)
    r = b.clone()
    residual = 1.0
    iterations = 0
    for iterations in range(1, maxiter + 1):
        v = v + r
        r = b - matvec(v)
        residual = _norm(r) / b_norm
        if residual <= tol or not math.isfinite(residual):
            break
    return LinearSolveResult(v, iterations, residual, residual <= tol)


def neumann_series(
    matvec: Matvec,
    b: torch.Tensor,
    *,
    tol: float = 1e-8,
    maxiter: int = 1000,
    rmatvec: Matvec | None = None,
) -> LinearSolveResult:
    """Solve A v = b with the truncated Neumann series v = Σₖ (I − A)ᵏ b.

    For A = I − Jᵀ the terms are (Jᵀ)ᵏ b. The sum stops when the relative norm
    of the newest term is below ``tol``. The reported residual is then computed
    with one more product with A. The series converges when the spectral radius
    of I − A is below one.

    Args:
        matvec: v ↦ A v.
        b: right-hand side.
        tol: relative size of the last term, and of the residual, at which to stop.
        maxiter: maximum number of terms after the first.
        rmatvec: unused; accepted so that all solvers share one signature.

    Returns:
        LinearSolveResult with the partial sum.
    """
    del rmatvec
    _check_arguments(b, tol, maxiter)
    b_norm = _norm(b)
    if b_norm == 0.0:
        return _zero_rhs_result(b)

    term = b
    total = b.clone()
    iterations = 0
    for iterations in range(1, maxiter + 1):
        term = term - matvec(term)
        total = total + term
        term_norm = _norm(term) / b_norm
        if term_norm <= tol or not math.isfinite(term_norm):
            break
    residual = _norm(b - matvec(total)) / b_norm
    return LinearSolveResult(total, iterations + 1, residual, residual <= tol)


def conjugate_gradient(
    matvec: Matvec,
    b: torch.Tensor,
    *,
    tol: float = 1e-8,
    maxiter: int = 1000,
    rmatvec: Matvec | None = None,
) -> LinearSolveResult:
    """Solve A v = b by conjugate gradient, for a symmetric positive-definite A.

    The result is wrong, and reported as not converged, when A is not symmetric
    positive definite; use :func:`normal_conjugate_gradient` in that case.

    Args:
        matvec: v ↦ A v, with A symmetric positive definite.
        b: right-hand side.
        tol: relative residual at which to stop.
        maxiter: maximum number of iterations.
        rmatvec: unused; accepted so that all solvers share one signature.

    Returns:
        LinearSolveResult with the last iterate.
    """
    del rmatvec
    _check_arguments(b, tol, maxiter)
    b_norm = _norm(b)
    if b_norm == 0.0:
        return _zero_rhs_result(b)
    return _cg_loop(matvec, b, b_norm, tol, maxiter)


def _cg_loop(
    matvec: Matvec, b: torch.Tensor, scale: float, tol: float, maxiter: int
) -> LinearSolveResult:
    v = torch.zeros_like(b)
    r = b.clone()
    p = r.clone()
    rr = _dot(r, r)
    residual = _norm(r) / scale
    iterations = 0
    for iterations in range(1, maxiter + 1):
        ap = matvec(p)
        curvature = _dot(p, ap)
        if not torch.isfinite(curvature) or curvature <= 0:
            # A is not positive definite along p: stop with what we have and let
            # the residual check report the failure.
            break
        alpha = rr / curvature
        v = v + alpha * p
        r = r - alpha * ap
        rr_new = _dot(r, r)
        residual = float(torch.sqrt(rr_new)) / scale
        if residual <= tol:
            break
        p = r + (rr_new / rr) * p
        rr = rr_new
    return LinearSolveResult(v, iterations, residual, residual <= tol)


def normal_conjugate_gradient(
    matvec: Matvec,
    b: torch.Tensor,
    *,
    tol: float = 1e-8,
    maxiter: int = 1000,
    rmatvec: Matvec | None = None,
) -> LinearSolveResult:
    """Solve A v = b by conjugate gradient on the normal equations AᵀA v = Aᵀb.

    This handles any nonsingular A, symmetric or not, at the price of squaring
    its condition number. Each iteration costs one product with A and one with
    Aᵀ. The stopping test and the reported residual use the original system:
    ‖b − A v‖ / ‖b‖ ≤ ``tol``.

    Args:
        matvec: v ↦ A v.
        b: right-hand side.
        tol: relative residual of A v = b at which to stop.
        maxiter: maximum number of iterations.
        rmatvec: u ↦ Aᵀ u (required).

    Returns:
        LinearSolveResult with the last iterate.

    Raises:
        ValueError: ``rmatvec`` is missing.
    """
    if rmatvec is None:
        raise ValueError(
            "normal_conjugate_gradient needs rmatvec (u ↦ Aᵀ u); pass it, or use a solver "
            "that needs only matvec such as fixed_point_solve"
        )
    _check_arguments(b, tol, maxiter)
    b_norm = _norm(b)
    if b_norm == 0.0:
        return _zero_rhs_result(b)

    # CGNR: conjugate gradient on AᵀA with residual r = b − A v tracked directly.
    v = torch.zeros_like(b)
    r = b.clone()
    s = rmatvec(r)
    p = s.clone()
    ss = _dot(s, s)
    residual = 1.0
    iterations = 0
    for iterations in range(1, maxiter + 1):
        q = matvec(p)
        qq = _dot(q, q)
        if not torch.isfinite(qq) or qq <= 0:
            break
        alpha = ss / qq
        v = v + alpha * p
        r = r - alpha * q
        residual = _norm(r) / b_norm
        if residual <= tol:
            break
        s = rmatvec(r)
        ss_new = _dot(s, s)
        if ss_new == 0:
            break
        p = s + (ss_new / ss) * p
        ss = ss_new
    return LinearSolveResult(v, iterations, residual, residual <= tol)


def anderson_solve(
    matvec: Matvec,
    b: torch.Tensor,
    *,
    tol: float = 1e-8,
    maxiter: int = 1000,
    rmatvec: Matvec | None = None,
    memory: int = 5,
) -> LinearSolveResult:
    """Solve A v = b by Anderson acceleration of the Richardson iteration v ← v + (b − A v).

    Each problem of a batch (leading dimensions of b, last dimension the
    unknowns) gets its own mixing weights, which helps when some problems
    contract slowly. The iteration stops when every row's residual ‖b − A v‖
    is below ``tol · ‖b‖ / √rows``. The reported residual is the relative residual of
    the whole system, recomputed with one more product with A.

    Args:
        matvec: v ↦ A v.
        b: right-hand side, shaped ``(..., n)``.
        tol: relative residual at which to stop.
        maxiter: maximum number of products with A in the iteration.
        rmatvec: unused; accepted so that all solvers share one signature.
        memory: number of past iterates mixed.

    Returns:
        LinearSolveResult with the last iterate.
    """
    del rmatvec
    _check_arguments(b, tol, maxiter)
    b_norm = _norm(b)
    if b_norm == 0.0:
        return _zero_rhs_result(b)

    # Rows below tol·‖b‖/√rows make the whole residual below tol·‖b‖.
    rows = 1 if b.dim() == 0 else b.numel() // b.shape[-1]
    run = anderson(
        lambda v: v + (b - matvec(v)),
        torch.zeros_like(b),
        tol=tol * b_norm / math.sqrt(rows),
        maxiter=maxiter,
        on_failure="ignore",
        memory=memory,
    )
    residual = _norm(b - matvec(run.solution)) / b_norm
    return LinearSolveResult(run.solution, run.iterations + 1, residual, residual <= tol)


LINEAR_SOLVERS: Registry[Callable[..., LinearSolveResult]] = Registry("linear solver")
LINEAR_SOLVERS.register("fixed_point", fixed_point_solve)
LINEAR_SOLVERS.register("neumann", neumann_series)
LINEAR_SOLVERS.register("cg", conjugate_gradient)
LINEAR_SOLVERS.register("normal_cg", normal_conjugate_gradient)
LINEAR_SOLVERS.register("anderson", anderson_solve)
