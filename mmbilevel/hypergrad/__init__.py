"""Hypergradients through the MM lower level: unrolled, truncated and implicit.

See :func:`hypergrad` for the gradients as tensors, :func:`differentiable_solve`
for a lower-level solution that supports ``loss.backward()``, and the
``fixed_point`` and ``linear_solvers`` modules for the solvers they use.
"""

from __future__ import annotations

from mmbilevel.hypergrad.api import (
    METHODS,
    HypergradOptions,
    HypergradResult,
    IterativeSolver,
    default_tolerance,
    hypergrad,
    stationary_map,
)
from mmbilevel.hypergrad.autograd import SolveDiagnostics, differentiable_solve
from mmbilevel.hypergrad.fixed_point import (
    FIXED_POINT_SOLVERS,
    FixedPointError,
    FixedPointResult,
    anderson,
    fixed_point_iteration,
)
from mmbilevel.hypergrad.implicit import (
    AdjointResult,
    HypergradientError,
    adjoint_solve,
    attach_implicit_gradient,
    implicit_vjp,
)
from mmbilevel.hypergrad.linear_solvers import (
    LINEAR_SOLVERS,
    LinearSolveResult,
    anderson_solve,
    conjugate_gradient,
    fixed_point_solve,
    neumann_series,
    normal_conjugate_gradient,
)
from mmbilevel.hypergrad.truncated import truncated_solution
from mmbilevel.hypergrad.unrolled import unrolled_solution

__all__ = [
    "AdjointResult",
    "FIXED_POINT_SOLVERS",
    "FixedPointError",
    "FixedPointResult",
    "HypergradOptions",
    "HypergradResult",
    "HypergradientError",
    "IterativeSolver",
    "LINEAR_SOLVERS",
    "LinearSolveResult",
    "METHODS",
    "SolveDiagnostics",
    "adjoint_solve",
    "anderson",
    "anderson_solve",
    "attach_implicit_gradient",
    "conjugate_gradient",
    "default_tolerance",
    "differentiable_solve",
    "fixed_point_iteration",
    "fixed_point_solve",
    "hypergrad",
    "implicit_vjp",
    "neumann_series",
    "normal_conjugate_gradient",
    "stationary_map",
    "truncated_solution",
    "unrolled_solution",
]
