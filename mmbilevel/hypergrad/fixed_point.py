"""Forward fixed-point solvers: plain iteration and Anderson acceleration.

Both solve z = T(z) for a map T given as a callable on tensors shaped
``(..., d)``. Leading dimensions index independent problems, so Anderson
acceleration mixes each problem's own history and the convergence test is the
worst problem's residual

    residual(z) = maxᵢ ‖T(z)ᵢ − zᵢ‖₂   (absolute, Euclidean norm over the last dimension).

The iterations run under ``torch.no_grad()``: these solvers locate the fixed
point, and gradients are attached afterwards by implicit differentiation.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from mmbilevel.registry import Registry

__all__ = [
    "FixedPointError",
    "FixedPointResult",
    "FIXED_POINT_SOLVERS",
    "ON_FAILURE_CHOICES",
    "anderson",
    "fixed_point_iteration",
    "handle_failure",
]

logger = logging.getLogger(__name__)

Map = Callable[[torch.Tensor], torch.Tensor]

ON_FAILURE_CHOICES = ("raise", "warn", "ignore")


@dataclass(frozen=True)
class FixedPointResult:
    """Outcome of a fixed-point solve with its diagnostics.

    Attributes:
        solution: the last iterate z, shaped like the starting point.
        iterations: number of evaluations of T.
        residual: maxᵢ ‖T(z)ᵢ − zᵢ‖₂ at ``solution``.
        residual_trace: the residual after each evaluation of T.
        converged: whether ``residual <= tol``.
        status: ``"converged"``, ``"max_iterations"`` (the cap was reached
            first, which includes a stalled iteration) or ``"diverged"`` (a
            non-finite value appeared).
    """

    solution: torch.Tensor
    iterations: int
    residual: float
    residual_trace: list[float] = field(repr=False)
    converged: bool
    status: str


class FixedPointError(RuntimeError):
    """Raised when a fixed-point solve diverges or stops before its tolerance.

    Attributes:
        result: the :class:`FixedPointResult` with the diagnostics of the run.
    """

    def __init__(self, message: str, result: FixedPointResult) -> None:
        super().__init__(message)
        self.result = result


def handle_failure(message: str, on_failure: str, error: Exception) -> None:
    """Raise ``error``, warn with ``message`` or do nothing, as ``on_failure`` requests."""
    if on_failure == "raise":
        raise error
    if on_failure == "warn":
        warnings.warn(message, RuntimeWarning, stacklevel=3)
        logger.warning(message)
    elif on_failure != "ignore":
        raise ValueError(f"on_failure must be one of {ON_FAILURE_CHOICES}, got {on_failure!r}")


def _check_options(tol: float, maxiter: int, on_failure: str) -> None:
    if tol < 0:
        raise ValueError(f"tol must be non-negative, got {tol}; pass a tolerance such as 1e-6")
    if maxiter < 1:
        raise ValueError(f"maxiter must be at least 1, got {maxiter}; pass the iteration cap")
    if on_failure not in ON_FAILURE_CHOICES:
        raise ValueError(f"on_failure must be one of {ON_FAILURE_CHOICES}, got {on_failure!r}")


def _as_problems(z: torch.Tensor) -> torch.Tensor:
    """View z as (problems, d): a scalar is one problem in ℝ¹."""
    if z.dim() == 0:
        return z.reshape(1, 1)
    return z.reshape(-1, z.shape[-1])


def _residual(fz: torch.Tensor, z: torch.Tensor | float) -> float:
    difference = _as_problems(fz - z)
    return float(torch.linalg.vector_norm(difference, dim=-1).max())


def _finish(
    name: str,
    z: torch.Tensor,
    iterations: int,
    trace: list[float],
    tol: float,
    on_failure: str,
) -> FixedPointResult:
    residual = trace[-1]
    if not math.isfinite(residual):
        status = "diverged"
    elif residual <= tol:
        status = "converged"
    else:
        status = "max_iterations"
    result = FixedPointResult(z, iterations, residual, trace, status == "converged", status)

    if status != "converged":
        if status == "diverged":
            message = (
                f"{name} diverged after {iterations} evaluations: the residual is {residual}; "
                "check that the map is a contraction near the start (smaller weights or step), "
                "or use a damped or projected iteration"
            )
        else:
            hint = "or use Anderson acceleration" if name == "fixed-point iteration" else "or use the plain iteration"
            message = (
                f"{name} stopped at maxiter={iterations} with residual {residual:.3e} > tol={tol:.1e}; "
                f"raise maxiter, loosen tol, {hint}"
            )
        handle_failure(message, on_failure, FixedPointError(message, result))
    else:
        logger.debug("%s converged in %d evaluations, residual %.3e", name, iterations, residual)
    return result


def fixed_point_iteration(
    fn: Map,
    z0: torch.Tensor,
    *,
    tol: float = 1e-6,
    maxiter: int = 500,
    on_failure: str = "raise",
    project: Map | None = None,
    residual_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> FixedPointResult:
    """Solve z = T(z) by the plain iteration z ← T(z).

    Args:
        fn: the map T, batched over leading dimensions.
        z0: starting point, shaped ``(..., d)`` (a scalar is one problem in ℝ¹).
        tol: absolute residual maxᵢ ‖T(z)ᵢ − zᵢ‖₂ at which to stop.
        maxiter: maximum number of evaluations of T.
        on_failure: what to do when the run diverges or reaches ``maxiter``
            first: ``"raise"`` a :class:`FixedPointError`, ``"warn"``, or
            ``"ignore"``; the result reports the status in every case.
        project: optional map applied to every new iterate, for example a clamp
            into the domain of T.
        residual_fn: optional (z, T(z)) ↦ elementwise residual shaped like z,
            replacing T(z) − z. The reported residual is its largest Euclidean
            norm over the problems. Use it when T(z) − z is not a faithful
            optimality measure, for example in coordinates where the map saturates.

    Returns:
        FixedPointResult whose ``solution`` is the last iterate z at which the
        residual was measured.
    """
    _check_options(tol, maxiter, on_failure)
    trace: list[float] = []
    with torch.no_grad():
        z = z0.detach()
        iterations = 0
        for iterations in range(1, maxiter + 1):
            fz = fn(z)
            residual = _residual(fz, z) if residual_fn is None else _residual(residual_fn(z, fz), 0.0)
            trace.append(residual)
            if residual <= tol or not math.isfinite(residual):
                break
            if iterations < maxiter:
                z = fz if project is None else project(fz)
    return _finish("fixed-point iteration", z, iterations, trace, tol, on_failure)


def anderson(
    fn: Map,
    z0: torch.Tensor,
    *,
    tol: float = 1e-6,
    maxiter: int = 500,
    on_failure: str = "raise",
    project: Map | None = None,
    residual_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    in_domain: Callable[[torch.Tensor], torch.Tensor] | None = None,
    memory: int = 5,
    mixing: float = 1.0,
    regularization: float = 1e-10,
    restart_factor: float = 100.0,
) -> FixedPointResult:
    """Solve z = T(z) by Anderson acceleration (type II) on each problem.

    With the last m iterates zₖ and residuals gₖ = T(zₖ) − zₖ of one problem,
    the weights α solve min ‖Σₖ αₖ gₖ‖² subject to Σₖ αₖ = 1 (with a small
    Tikhonov term), and the next iterate is

        z ← β Σₖ αₖ T(zₖ) + (1 − β) Σₖ αₖ zₖ.

    When the small bordered system is singular or its solution is not finite
    for a problem, that problem takes the plain step z ← T(z) instead, so the
    linear algebra never raises. A problem whose residual jumps far above its
    best value restarts (see ``restart_factor``).

    NOTE: like any root finder, Anderson acceleration can converge to a fixed
    point that the plain iteration would not reach, such as an unstable one (a
    saddle of the MM objective), or stall next to the end of a domain where T
    saturates. For a lower level with several critical points, the plain
    iteration follows the MM sequence and is the safer choice.

    Args:
        fn: the map T, batched over leading dimensions.
        z0: starting point, shaped ``(..., d)``.
        tol: absolute residual maxᵢ ‖T(z)ᵢ − zᵢ‖₂ at which to stop.
        maxiter: maximum number of evaluations of T.
        on_failure: ``"raise"``, ``"warn"`` or ``"ignore"``, as in
            :func:`fixed_point_iteration`.
        project: optional map applied to every extrapolated iterate; needed when
            T is defined on a set (for example the domain of an inverse activation)
            that the extrapolation could leave.
        residual_fn: optional elementwise residual (z, T(z)) ↦ r, as in
            :func:`fixed_point_iteration`.
        in_domain: optional z ↦ elementwise boolean mask of the points where T
            is defined. A problem whose extrapolated iterate leaves that set
            takes the plain step z ← T(z) instead, which stays in the set when T
            maps into it (as an MM step does).
        memory: number m of past iterates mixed.
        mixing: damping β ∈ (0, 1].
        regularization: Tikhonov weight λ added to the Gram matrix, relative to its
            largest diagonal entry.
        restart_factor: a problem whose residual exceeds this factor times its
            best residual so far restarts from the plain step of its best
            iterate with a cleared history, which undoes a bad extrapolation.

    Returns:
        FixedPointResult whose ``solution`` is the iterate at which the last
        residual was measured.
    """
    _check_options(tol, maxiter, on_failure)
    if memory < 1:
        raise ValueError(f"memory must be at least 1, got {memory}")
    if not 0.0 < mixing <= 1.0:
        raise ValueError(f"mixing must lie in (0, 1], got {mixing}")
    if not restart_factor > 1.0:
        raise ValueError(f"restart_factor must be > 1, got {restart_factor}")

    trace: list[float] = []
    with torch.no_grad():
        z = z0.detach()
        shape = z.shape
        x = _as_problems(z)
        problems, dim = x.shape
        past_x = torch.zeros(problems, memory, dim, dtype=x.dtype, device=x.device)
        past_f = torch.zeros_like(past_x)

        best_residual = torch.full((problems,), math.inf, dtype=x.dtype, device=x.device)
        best_x = x.clone()
        best_f = x.clone()

        iterations = 0
        for iterations in range(1, maxiter + 1):
            fx = _as_problems(fn(x.reshape(shape)))
            slot = (iterations - 1) % memory
            past_x[:, slot] = x
            past_f[:, slot] = fx
            if residual_fn is None:
                difference = fx - x
            else:
                difference = _as_problems(residual_fn(x.reshape(shape), fx.reshape(shape)))
            residuals = torch.linalg.vector_norm(difference, dim=-1)
            residual = float(residuals.max())
            trace.append(residual)
            if residual <= tol or not math.isfinite(residual) or iterations == maxiter:
                break

            improved = residuals < best_residual
            best_residual = torch.where(improved, residuals, best_residual)
            best_x = torch.where(improved[:, None], x, best_x)
            best_f = torch.where(improved[:, None], fx, best_f)

            used = min(iterations, memory)
            x = _anderson_mix(past_x[:, :used], past_f[:, :used], fx, mixing, regularization)

            # Restart a problem whose residual grew far beyond its best: take the
            # plain step from its best iterate and forget its history.
            restart = residuals > restart_factor * best_residual
            if bool(restart.any()):
                x = torch.where(restart[:, None], best_f, x)
                past_x[restart] = best_x[restart][:, None, :]
                past_f[restart] = best_f[restart][:, None, :]
            if in_domain is not None:
                inside = _as_problems(in_domain(x.reshape(shape))).all(dim=-1)
                x = torch.where(inside[:, None], x, fx)
            if project is not None:
                x = _as_problems(project(x.reshape(shape)))
    return _finish("Anderson acceleration", x.reshape(shape), iterations, trace, tol, on_failure)


def _anderson_mix(
    past_x: torch.Tensor,
    past_f: torch.Tensor,
    fx: torch.Tensor,
    mixing: float,
    regularization: float,
) -> torch.Tensor:
    """Return the Anderson update for every problem, with the plain step as fallback."""
    problems, used, _ = past_x.shape
    g = past_f - past_x
    gram = g @ g.transpose(1, 2)
    scale = gram.diagonal(dim1=1, dim2=2).amax(dim=1).clamp_min(torch.finfo(g.dtype).tiny)
    eye = torch.eye(used, dtype=g.dtype, device=g.device)
    gram = gram + regularization * scale[:, None, None] * eye

    # Bordered system [[0, 1ᵀ], [1, G]] [ν, α] = [1, 0] for the constrained least squares.
    bordered = torch.zeros(problems, used + 1, used + 1, dtype=g.dtype, device=g.device)
    bordered[:, 0, 1:] = 1.0
    bordered[:, 1:, 0] = 1.0
    bordered[:, 1:, 1:] = gram
    rhs = torch.zeros(problems, used + 1, dtype=g.dtype, device=g.device)
    rhs[:, 0] = 1.0
    solution, info = torch.linalg.solve_ex(bordered, rhs)
    alpha = solution[:, 1:]

    mixed_f = torch.einsum("pk,pkd->pd", alpha, past_f)
    mixed_x = torch.einsum("pk,pkd->pd", alpha, past_x)
    update = mixing * mixed_f + (1.0 - mixing) * mixed_x

    usable = (info == 0) & torch.isfinite(update).all(dim=-1)
    return torch.where(usable[:, None], update, fx)


FIXED_POINT_SOLVERS: Registry[Callable[..., FixedPointResult]] = Registry("fixed-point solver")
FIXED_POINT_SOLVERS.register("iteration", fixed_point_iteration)
FIXED_POINT_SOLVERS.register("anderson", anderson)
