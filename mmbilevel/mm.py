"""The MM algorithm of Definition 2.2, truncated after a fixed depth.

From a start x, "Bilevel Learning of Deep Representations" (Frecon, Salzo,
Pontil, 2021) iterates

    z⁽⁰⁾ = x,    z⁽ˡ⁺¹⁾ = argmin_z F_l(z; z⁽ˡ⁾) + g(z),

with majorants F_l of f. Truncated after L iterations, z⁽ᴸ⁾ is the output of
an L-layer network. The solver keeps every step differentiable by autograd,
so the parameters of the majorants can be learned.
"""

from __future__ import annotations

import logging
import operator
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from mmbilevel.majorants import BregmanMajorant, Majorant
from mmbilevel.prox import Regularizer

__all__ = ["MMResult", "MMSolver"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class MMResult:
    """Result of :meth:`MMSolver.solve`.

    Attributes:
        z: final iterate, shape of the start; differentiable by autograd.
        iterations: number of MM steps run.
        step_norms: ‖z⁽ˡ⁺¹⁾ − z⁽ˡ⁾‖ per step and batch element, shape
            (iterations, *batch); detached.
        objective: f + g at z⁽⁰⁾, …, z⁽ⁱᵗᵉʳᵃᵗⁱᵒⁿˢ⁾, shape (iterations + 1, *batch),
            with the f of the first majorant; detached. None when f or g
            cannot be evaluated at some iterate.
        trajectory: iterates z⁽⁰⁾, …, z⁽ⁱᵗᵉʳᵃᵗⁱᵒⁿˢ⁾ stacked on a new first
            dimension, or None unless requested.
        converged: whether every step norm of the last step fell below a
            positive ``tol`` (always False when ``tol`` is 0).
    """

    z: Tensor
    iterations: int
    step_norms: Tensor
    objective: Tensor | None
    trajectory: Tensor | None
    converged: bool


class MMSolver:
    """Run Definition 2.2 of "Bilevel Learning of Deep Representations" for a fixed depth.

    Args:
        majorant: one majorant used at every iteration, or a sequence of
            ``depth`` majorants, the l-th used at iteration l.
        regularizer: the regularizer g.
        depth: maximum number of MM steps L ≥ 0; depth 0 returns the start.
        tol: stop once the step norm of every batch element is below ``tol``;
            0 runs all ``depth`` steps.

    Raises:
        ValueError: when depth is not a non-negative integer, tol < 0, or a
            sequence of majorants does not have length ``depth``.

    Example:
        >>> import torch
        >>> from mmbilevel.majorants import QuadraticForm, QuadraticMajorant
        >>> from mmbilevel.prox import Indicator
        >>> f = QuadraticForm(torch.eye(2, dtype=torch.float64), torch.zeros(2, 2, dtype=torch.float64),
        ...                   torch.tensor([-0.5, 2.0], dtype=torch.float64))
        >>> solver = MMSolver(QuadraticMajorant(f, step=0.5), Indicator(0.0, 1.0), depth=60)
        >>> solver.solve(torch.zeros(1, 2, dtype=torch.float64)).z
        tensor([[0.5000, 0.0000]], dtype=torch.float64)
    """

    def __init__(
        self,
        majorant: Majorant | Sequence[Majorant],
        regularizer: Regularizer,
        depth: int,
        tol: float = 0.0,
    ) -> None:
        try:
            depth = operator.index(depth)
        except TypeError as error:
            raise ValueError(f"depth must be a non-negative integer, got {depth!r}") from error
        if depth < 0:
            raise ValueError(f"depth must be a non-negative integer, got {depth}")
        if not tol >= 0:
            raise ValueError(f"tol must be >= 0, got {tol!r}; pass 0 to run every step")
        if isinstance(majorant, Majorant):
            majorants = [majorant] * depth
        else:
            majorants = list(majorant)
            if len(majorants) != depth:
                raise ValueError(
                    f"got {len(majorants)} majorants for depth {depth}; pass one majorant "
                    "or exactly one per iteration"
                )
            if not majorants:
                raise ValueError("an empty sequence of majorants gives no f; pass one majorant")
        self.majorants = majorants
        self.objective_majorant = majorant if isinstance(majorant, Majorant) else majorants[0]
        self.regularizer = regularizer
        self.depth = depth
        self.tol = float(tol)

    def step(self, z: Tensor, iteration: int) -> Tensor:
        """Compute one MM update T_l(z) = argmin_u F_l(u; z) + g(u) with l = ``iteration``."""
        if not 0 <= iteration < self.depth:
            raise ValueError(f"iteration must be in [0, {self.depth}), got {iteration}")
        return self.majorants[iteration].minimize(z, self.regularizer)

    def _objective(self, z: Tensor) -> Tensor | None:
        with torch.no_grad():
            try:
                return self.objective_majorant.objective(z) + self.regularizer(z)
            except (ValueError, RuntimeError) as error:
                logger.debug("objective not computable: %s", error)
                return None

    def _check_start(self, x: Tensor) -> None:
        if x.ndim == 0:
            raise ValueError("the start x must have a feature dimension, got a 0-dimensional tensor")
        if not bool(torch.isfinite(x).all()):
            bad = float(x[~torch.isfinite(x)].flatten()[0])
            raise ValueError(f"the start x contains the non-finite value {bad}; pass a finite start")
        self.objective_majorant._check_point(x)
        for majorant in {id(m): m for m in self.majorants}.values():
            if isinstance(majorant, BregmanMajorant):
                majorant.check_domain(x)

    def solve(self, x: Tensor, return_trajectory: bool = False) -> MMResult:
        """Run up to ``depth`` MM steps from the start ``x`` (batch over leading dimensions).

        Raises:
            ValueError: when ``x`` does not fit the majorant's dimension or
                dtype, contains NaN or inf, or lies outside the domain of a
                Bregman majorant's φ.
        """
        self._check_start(x)
        z = x
        iterates = [x]
        norms: list[Tensor] = []
        objectives = [self._objective(x)]
        converged = False

        for iteration in range(self.depth):
            z_next = self.step(z, iteration)
            norm = torch.linalg.vector_norm((z_next - z).detach(), dim=-1)
            norms.append(norm)
            z = z_next
            objectives.append(self._objective(z))
            if return_trajectory:
                iterates.append(z)
            if self.tol > 0 and bool(torch.all(norm < self.tol)):
                converged = True
                break

        if norms:
            step_norms = torch.stack(norms)
        else:
            step_norms = x.new_zeros((0, *x.shape[:-1]))
        objective = None if any(o is None for o in objectives) else torch.stack(objectives)
        return MMResult(
            z=z,
            iterations=len(norms),
            step_norms=step_norms,
            objective=objective,
            trajectory=torch.stack(iterates) if return_trajectory else None,
            converged=converged,
        )
