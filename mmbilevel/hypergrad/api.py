"""One entry point for hypergradients through an MM solver.

The lower level is the MM sequence z⁽ˡ⁺¹⁾ = T_l(z⁽ˡ⁾), z⁽⁰⁾ = x, of an object
with ``solver.step(z, iteration)`` (the map T_l) and ``solver.depth`` (L), such
as :class:`mmbilevel.mm.MMSolver`. The parameters θ are tensors that the
majorants read. For an upper loss E(z, θ), :func:`hypergrad` returns ∇θ E by
one of three methods:

- ``"unrolled"``: backpropagation through all L iterations, optionally with
  gradient checkpointing; exact for the truncated problem z⁽ᴸ⁾.
- ``"truncated"``: backpropagation through the last K iterations only.
- ``"implicit"``: the gradient at the limit z* = T(z*) of a stationary map
  (the same majorant at every iteration), from the adjoint system
  (I − ∂T/∂z)ᵀ v = ∂E/∂z; valid where the MM sequence converges, as in
  Theorem 5.1 of "Bilevel Learning of Deep Representations".
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from mmbilevel.hypergrad.fixed_point import FIXED_POINT_SOLVERS, FixedPointResult, anderson
from mmbilevel.hypergrad.implicit import HypergradientError, LinearSolver, implicit_vjp
from mmbilevel.hypergrad.linear_solvers import LinearSolveResult
from mmbilevel.hypergrad.truncated import truncated_solution
from mmbilevel.hypergrad.unrolled import unrolled_solution
from mmbilevel.registry import Registry

__all__ = [
    "HypergradOptions",
    "HypergradResult",
    "IterativeSolver",
    "METHODS",
    "default_tolerance",
    "hypergrad",
    "solve_fixed_point",
    "stationary_map",
]

logger = logging.getLogger(__name__)

METHODS: Registry[str] = Registry("hypergradient method")
for _name in ("unrolled", "truncated", "implicit"):
    METHODS.register(_name, _name)


class IterativeSolver(Protocol):
    """Interface of a lower-level solver: the map T_l and the depth L."""

    depth: int

    def step(self, z: torch.Tensor, iteration: int) -> torch.Tensor:
        """Apply the map T_l of iteration l."""
        ...


def default_tolerance(dtype: torch.dtype) -> float:
    """Return ε^¾ for the machine epsilon ε of ``dtype`` (about 2e-12 in float64, 6e-6 in float32)."""
    return float(torch.finfo(dtype).eps) ** 0.75


@dataclass(frozen=True)
class HypergradOptions:
    """Settings of a hypergradient computation; see :func:`hypergrad` for their meaning."""

    method: str = "implicit"
    depth: int | None = None
    truncate: int | None = None
    checkpointing: bool = False
    segments: int | None = None
    forward_solver: str = "iteration"
    forward_tol: float | None = None
    forward_maxiter: int = 1000
    forward_options: dict[str, Any] = field(default_factory=dict)
    linear_solver: str | LinearSolver = "fixed_point"
    tol: float | None = None
    maxiter: int = 1000
    on_failure: str = "raise"

    def __post_init__(self) -> None:
        object.__setattr__(self, "method", METHODS.get(self.method))
        if self.on_failure not in ("raise", "warn"):
            raise ValueError(
                f"on_failure must be 'raise' or 'warn', got {self.on_failure!r}; an unconverged "
                "solve gives an inexact hypergradient, which is never returned silently"
            )
        if self.method == "truncated" and self.truncate is None:
            raise ValueError("method='truncated' needs truncate=K, the number of final iterations")
        if self.segments is not None and not self.checkpointing:
            raise ValueError(
                f"segments={self.segments} has no effect without checkpointing; pass "
                "checkpointing=True as well, or drop segments"
            )

    def resolved_depth(self, solver: IterativeSolver) -> int:
        """Return the number L of iterations for the unrolled and truncated methods.

        Raises:
            ValueError: L < 1, or L exceeds the depth of a solver that defines
                only ``solver.depth`` maps T_0, …, T_{depth−1}.
        """
        solver_depth = getattr(solver, "depth", None)
        depth = self.depth if self.depth is not None else solver_depth
        if depth is None:
            raise ValueError("pass depth=L: the solver has no depth attribute")
        depth = int(depth)
        if depth < 1:
            source = f"solver.depth={depth}" if self.depth is None else f"depth={depth}"
            raise ValueError(
                f"{source}, but the {self.method} method needs depth ≥ 1 iterations to "
                "differentiate through; build the solver with depth ≥ 1 or pass depth=L ≥ 1"
            )
        if solver_depth is not None and depth > int(solver_depth):
            raise ValueError(
                f"depth={depth} exceeds solver.depth={int(solver_depth)}: the solver defines the "
                f"maps T_l only for l < {int(solver_depth)}; pass depth ≤ {int(solver_depth)} or "
                f"build the solver with depth={depth}"
            )
        return depth


@dataclass(frozen=True)
class HypergradResult:
    """Hypergradient with its diagnostics.

    Attributes:
        grads: ∇θ E, one tensor per parameter in the order given (zeros for a
            parameter that neither T nor E reads).
        loss: the upper loss E at the lower-level solution (detached).
        solution: the lower-level solution z⁽ᴸ⁾ or z* (detached).
        method: the method used.
        forward: diagnostics of the forward fixed-point solve (implicit only).
        adjoint: diagnostics of the adjoint linear solve (implicit only).
    """

    grads: tuple[torch.Tensor, ...]
    loss: torch.Tensor
    solution: torch.Tensor
    method: str
    forward: FixedPointResult | None = None
    adjoint: LinearSolveResult | None = None


def stationary_map(solver: IterativeSolver) -> Callable[[torch.Tensor], torch.Tensor]:
    """Return z ↦ T(z) for a solver that applies the same MM map at every iteration.

    Raises:
        ValueError: the solver has depth 0, or a different majorant per
            iteration, so it has no single fixed-point map to differentiate
            implicitly.
    """
    if getattr(solver, "depth", None) == 0:
        raise ValueError(
            "solver.depth=0, so the solver defines no MM map T to differentiate at its fixed "
            "point; build it with depth ≥ 1 (the implicit method uses T_0 whatever the depth)"
        )
    majorants = getattr(solver, "majorants", None)
    if isinstance(majorants, Sequence) and len({id(m) for m in majorants}) > 1:
        raise ValueError(
            "implicit differentiation needs the same majorant at every iteration, got "
            f"{len({id(m) for m in majorants})} different ones; build the MMSolver with one "
            "majorant, or use method='unrolled' or 'truncated'"
        )
    return lambda z: solver.step(z, 0)


def domain_check(solver: IterativeSolver) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """Return z ↦ (z inside the open domain of φ) for a solver with Bregman majorants, else None."""
    majorants = getattr(solver, "majorants", None) or []
    phi = getattr(majorants[0], "phi", None) if majorants else None
    if phi is None:
        return None
    lower, upper = (float(end) for end in phi.domain)
    return lambda z: (z > lower) & (z < upper)


def solve_fixed_point(
    step: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    options: HypergradOptions,
    solver: IterativeSolver | None = None,
) -> FixedPointResult:
    """Run the forward fixed-point solver of ``options`` from x, without autograd.

    With Anderson acceleration and Bregman majorants, an extrapolated iterate
    outside dom φ is replaced by the plain MM step, which stays inside.
    """
    fixed_point_solver = FIXED_POINT_SOLVERS.get(options.forward_solver)
    tol = options.forward_tol if options.forward_tol is not None else default_tolerance(x.dtype)
    failure = "raise" if options.on_failure == "raise" else "warn"
    extra = dict(options.forward_options)
    if fixed_point_solver is anderson and solver is not None and "in_domain" not in extra:
        check = domain_check(solver)
        if check is not None:
            extra["in_domain"] = check
    return fixed_point_solver(
        step,
        x.detach(),
        tol=tol,
        maxiter=options.forward_maxiter,
        on_failure=failure,
        **extra,
    )


def _check_params(params: Sequence[torch.Tensor]) -> None:
    """Raise ValueError for a parameter that does not require grad: no gradient can ever reach it."""
    for index, param in enumerate(params):
        if not isinstance(param, torch.Tensor):
            raise TypeError(f"parameter {index} must be a torch.Tensor, got {type(param).__name__}")
        if not param.requires_grad:
            raise ValueError(
                f"parameter {index} (shape {tuple(param.shape)}) does not require grad, so its "
                "hypergradient would always be zero; call requires_grad_() on it before the "
                "majorants are built from it (a majorant built earlier keeps a constant copy), "
                "or leave it out of params"
            )


def _gradients(
    output: torch.Tensor, inputs: Sequence[torch.Tensor], grad_output: torch.Tensor | None = None
) -> tuple[torch.Tensor | None, ...]:
    """Return ∂output/∂input (times grad_output) per input, None where the graph does not reach it."""
    differentiable = [t for t in inputs if t.requires_grad]
    found: Sequence[torch.Tensor | None] = ()
    if differentiable and output.requires_grad:
        # Keep the graph so that the parameters' own history (say A = XᵀX + θI built
        # once) survives for another hypergradient or backward call.
        found = torch.autograd.grad(
            output, differentiable, grad_output, retain_graph=True, allow_unused=True
        )
    lookup = {id(t): g for t, g in zip(differentiable, found)}
    return tuple(lookup.get(id(t)) for t in inputs)


def _zeros_for_none(
    grads: Sequence[torch.Tensor | None], inputs: Sequence[torch.Tensor]
) -> tuple[torch.Tensor, ...]:
    return tuple(torch.zeros_like(t) if g is None else g for g, t in zip(grads, inputs))


def _warn_if_unreached(connected: Sequence[bool], where: str) -> None:
    """Warn when not one of several parameters is connected to the graph of ``where``.

    A single unread parameter has the correct gradient 0. When none is read,
    the majorants were most likely built from detached copies of them.
    """
    if connected and not any(connected):
        warnings.warn(
            f"none of the {len(connected)} parameters reaches {where} in the autograd graph, "
            "so every hypergradient is zero; if the majorants were built from detached copies "
            "(theta.detach(), float(theta) or a tensor made before requires_grad_()), build "
            "them from the parameters themselves",
            UserWarning,
            stacklevel=3,
        )


def _check_finite(
    grads: Sequence[torch.Tensor], method: str, labels: Sequence[str] | None = None
) -> None:
    """Raise HypergradientError for the first non-finite gradient, named by ``labels``."""
    for index, grad in enumerate(grads):
        if not bool(torch.isfinite(grad).all()):
            label = labels[index] if labels is not None else f"parameter {index}"
            raise HypergradientError(
                f"the {method} hypergradient of {label} is not finite; the lower-level "
                "iteration overflowed or left the domain of its map",
                LinearSolveResult(grad, 0, math.nan, False),
            )


def _check_scalar_loss(loss: object) -> torch.Tensor:
    """Return the upper loss, or raise ValueError when it is not a one-element tensor."""
    if not isinstance(loss, torch.Tensor):
        raise TypeError(f"upper_loss must return a scalar tensor, got {type(loss).__name__}")
    if loss.numel() != 1:
        raise ValueError(
            f"upper_loss must return a scalar, got a tensor of shape {tuple(loss.shape)}; "
            "reduce it with .sum() or .mean()"
        )
    return loss


def _check_grad_z(grad_z: torch.Tensor) -> None:
    """Raise HypergradientError when ∂E/∂z is not finite, before any solver is blamed."""
    if not bool(torch.isfinite(grad_z).all()):
        raise HypergradientError(
            "the gradient ∂E/∂z of the upper loss is not finite at the lower-level solution; "
            "check upper_loss and the solution z",
            LinearSolveResult(grad_z, 0, math.nan, False),
        )


def _check_upper_loss(loss: torch.Tensor, grad_z: torch.Tensor | None = None) -> None:
    """Raise HypergradientError when E(z) or ∂E/∂z is not finite, before any solver is blamed."""
    if not bool(torch.isfinite(loss.detach()).all()):
        raise HypergradientError(
            f"the upper loss E(z) is not finite ({float(loss.detach().reshape(-1)[0])}) at the "
            "lower-level solution; check upper_loss and the solution z",
            LinearSolveResult(loss.detach(), 0, math.nan, False),
        )
    if grad_z is not None:
        _check_grad_z(grad_z)


def hypergrad(
    solver: IterativeSolver,
    x: torch.Tensor,
    upper_loss: Callable[[torch.Tensor], torch.Tensor],
    params: Sequence[torch.Tensor],
    method: str = "implicit",
    **options: Any,
) -> HypergradResult:
    """Compute the hypergradient ∇θ E(z(θ), θ) through the lower-level MM problem.

    Args:
        solver: an object with ``step(z, iteration)`` (the MM map T_l) and
            ``depth`` (L), such as :class:`mmbilevel.mm.MMSolver`.
        x: starting points z⁽⁰⁾, shaped ``(..., d)``; leading dimensions index
            independent lower-level problems.
        upper_loss: z ↦ E(z), a scalar tensor; it may read the parameters too,
            and their direct partial derivatives are included.
        params: tensors θ to differentiate with respect to (x may be one of them);
            each must require grad. A parameter that neither T nor E reads gets a
            zero gradient. When not one of them is reached (majorants built from
            detached copies, say), it warns with a ``UserWarning``.
        method: ``"unrolled"``, ``"truncated"`` or ``"implicit"``.
        **options: fields of :class:`HypergradOptions`:

            - ``depth``: L for unrolled and truncated (default ``solver.depth``).
            - ``truncate``: K for truncated.
            - ``checkpointing``, ``segments``: gradient checkpointing for unrolled.
            - ``forward_solver`` (``"iteration"`` or ``"anderson"``; Anderson may
              reach a different fixed point than the MM sequence when there are
              several, see :func:`mmbilevel.hypergrad.anderson`),
              ``forward_tol`` (absolute residual maxᵢ ‖T(z)ᵢ − zᵢ‖), ``forward_maxiter``,
              ``forward_options`` (for example Anderson's ``memory``): the implicit
              method's forward solve.
            - ``linear_solver`` (``"fixed_point"``, ``"neumann"``, ``"cg"``,
              ``"normal_cg"``, ``"anderson"`` or a callable), ``tol`` (relative residual),
              ``maxiter``: the implicit method's adjoint solve.
            - ``on_failure``: ``"raise"`` (default) or ``"warn"`` when a forward or
              adjoint solve stops above its tolerance. Default tolerances are
              :func:`default_tolerance` of x's dtype.

    Returns:
        HypergradResult with one gradient per parameter.

    Raises:
        ValueError: a parameter does not require grad (checked before solving),
            an option is invalid (``depth`` must lie in [1, ``solver.depth``],
            ``segments`` needs ``checkpointing=True``), or the upper loss is
            not a scalar.
        HypergradientError: the upper loss or its gradient is not finite, the
            adjoint solve failed (per ``on_failure``), or a gradient is not
            finite.
        FixedPointError: the forward solve of the implicit method failed
            (per ``on_failure``).
    """
    settings = HypergradOptions(method=method, **options)
    params = list(params)
    _check_params(params)

    if settings.method == "implicit":
        return _implicit_hypergrad(solver, x, upper_loss, params, settings)

    depth = settings.resolved_depth(solver)
    with torch.enable_grad():
        if settings.method == "unrolled":
            z = unrolled_solution(
                solver.step, x, depth, checkpointing=settings.checkpointing, segments=settings.segments
            )
        else:
            z = truncated_solution(solver.step, x, depth, settings.truncate)
        loss = _check_scalar_loss(upper_loss(z))
        _check_upper_loss(loss)
        # ∂E/∂z comes with the parameters' gradients, so that an infinite one is
        # reported as the loss's fault rather than as an overflow of the iteration.
        found = _gradients(loss, [z, *params])
    if found[0] is not None:
        _check_grad_z(found[0])
    found = found[1:]
    _warn_if_unreached([g is not None for g in found], "the lower-level map T or the upper loss")
    grads = _zeros_for_none(found, params)
    _check_finite(grads, settings.method)
    return HypergradResult(grads, loss.detach(), z.detach(), settings.method)


def _implicit_hypergrad(
    solver: IterativeSolver,
    x: torch.Tensor,
    upper_loss: Callable[[torch.Tensor], torch.Tensor],
    params: list[torch.Tensor],
    settings: HypergradOptions,
) -> HypergradResult:
    step = stationary_map(solver)
    forward = solve_fixed_point(step, x, settings, solver)

    z = forward.solution.detach().requires_grad_(True)
    with torch.enable_grad():
        loss = _check_scalar_loss(upper_loss(z))
        direct = _gradients(loss, [z, *params])
    grad_z = torch.zeros_like(z) if direct[0] is None else direct[0]
    _check_upper_loss(loss, grad_z)

    tol = settings.tol if settings.tol is not None else default_tolerance(x.dtype)
    adjoint = implicit_vjp(
        step,
        forward.solution,
        params,
        grad_z,
        linear_solver=settings.linear_solver,
        tol=tol,
        maxiter=settings.maxiter,
        on_failure=settings.on_failure,
    )
    connected = [d is not None or c for d, c in zip(direct[1:], adjoint.connected)]
    _warn_if_unreached(connected, "the lower-level map T or the upper loss")
    grads = tuple(a if d is None else d + a for d, a in zip(direct[1:], adjoint.grads))
    _check_finite(grads, "implicit")
    return HypergradResult(
        grads, loss.detach(), forward.solution, "implicit", forward, adjoint.linear_solve
    )
