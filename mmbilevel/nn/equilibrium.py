r"""Infinite-depth Bregman networks: the limit of the MM sequence as a layer.

A Bregman feed-forward network with the same weights at every layer runs the
MM algorithm of "Bilevel Learning of Deep Representations" (Frecon, Salzo,
Pontil, 2021) with one majorant, z⁽ˡ⁺¹⁾ = T(z⁽ˡ⁾). Letting the depth go to
infinity gives Problem 2.1 of that paper: the representation is the limit
z* = T(z*) itself. :class:`BregmanEquilibrium` computes it with a fixed-point
solver and differentiates it implicitly, so training memory does not grow with
the number of iterations.

The map is

    T(z) = ρ(ρ⁻¹(z) + Wz + Ux + b),

with ρ = ∇φ* the activation of a Legendre function φ. With symmetric W and
τ = 1, T is the Bregman forward-backward step for

    f_x(z) = −½ zᵀWz − (Ux + b)ᵀz,   g = ι_{dom φ},

and the Bregman term majorizes f_x when ‖W‖₂ ≤ σ, the strong convexity
modulus of φ (Proposition 4.1 of the paper). Theorem 5.1 then makes the
sequence converge to a critical point of f_x + g.

What the limit depends on. Without input injection (U = 0, the input only
starts the iteration, z⁽⁰⁾ = x), T does not depend on x, so every limit lies in
the set Fix T = crit(f + g), the same set for every input. The input only picks
which critical point the iteration reaches, through the basin of attraction it
starts in: x ↦ z*(x) is locally constant, and its implicit derivative is zero.
When f + g is strongly convex (W ≺ 0), crit(f + g) is a single point and every
input gets the same representation. In general f is a quadratic on the box
dom φ, which has at most 3ᵈ critical points (each coordinate at its lower
end, its upper end or free, and at most one point per pattern when the free
block of W is nonsingular). So the representation takes at most 3ᵈ values.
With input injection, interior fixed points solve Wz + Ux + b = 0, and for
W ≺ 0 the limit is the box-constrained quadratic program's solution
z*(x) = argmin_{z ∈ dom φ} −½zᵀWz − (Ux + b)ᵀz, a continuous piecewise-affine
function of x. Interior points are reached at a linear rate; a limit on the
boundary of dom φ is reached only sublinearly, since ρ⁻¹(z) must grow without
bound.
"""

from __future__ import annotations

import logging
import math
import warnings
from typing import Any

import torch
from torch import nn
from torch.nn import functional

from mmbilevel.hypergrad.fixed_point import (
    FIXED_POINT_SOLVERS,
    FixedPointError,
    FixedPointResult,
    handle_failure,
)
from mmbilevel.hypergrad.api import default_tolerance
from mmbilevel.hypergrad.implicit import attach_implicit_gradient
from mmbilevel.legendre import Legendre
from mmbilevel.nn.preprocess import resolve_activation

__all__ = [
    "BregmanEquilibrium",
    "BregmanEquilibriumModel",
    "EquilibriumError",
    "WEIGHT_PARAMETRIZATIONS",
]

logger = logging.getLogger(__name__)

WEIGHT_PARAMETRIZATIONS = ("symmetric", "negative", "free")
STARTS = ("input", "zero")


class EquilibriumError(FixedPointError):
    """Raised when the forward fixed-point solve of an equilibrium layer fails.

    Attributes:
        result: the :class:`~mmbilevel.hypergrad.FixedPointResult` with the
            residual trace, the iterations and the status.
    """


class BregmanEquilibrium(nn.Module):
    r"""Bregman equilibrium layer z* = ρ(ρ⁻¹(z*) + Wz* + Ux + b).

    Args:
        features: width d of the representation z.
        activation: catalogue name of a Legendre function or a ``Legendre``
            object; the layer applies ρ = ∇φ*.
        in_features: width of the input x; defaults to ``features``.
        injection: add the input term Ux inside the map. Without it the input
            only starts the iteration, which needs ``in_features == features``.
        weight: ``"negative"`` (default) or ``"symmetric"`` keep T an MM map;
            ``"symmetric"``: W = κσ·S / max(1, ‖S‖₂) with S = (V + Vᵀ)/2,
            so ‖W‖₂ ≤ κσ and T is an MM map with a valid Bregman majorant
            (convergence by Theorem 5.1 of the paper); ``"negative"``:
            W = −κσ·VᵀV / max(1, ‖VᵀV‖₂) ≼ 0, so f is convex as well and, when
            W ≺ 0, the limit is unique and continuous in x (the default, since
            on the two spirals only this variant learned a useful limit);
            ``"free"``: W = V, an
            unconstrained equilibrium layer whose iteration may not converge.
        weight_bound: κ ∈ (0, 1), the fraction of σ allowed for ‖W‖₂ with
            symmetric weights.
        bias: whether to learn b.
        start: ``"input"`` (z⁽⁰⁾ = x, moved into the interior of dom φ) or
            ``"zero"`` (z⁽⁰⁾ = ρ(0)); defaults to ``"input"`` when the widths
            match.
        solver: forward solver, ``"iteration"`` (default) or ``"anderson"``.
            Both run in dual coordinates u = ρ⁻¹(z) (see ``_solve_dual``).
            NOTE: Anderson extrapolation can jump deep into a saturated region
            of ρ at the wrong end of dom φ, from where the iteration barely
            moves. The residual then stays large and the solve is reported as
            failed, so prefer ``"iteration"`` when limits lie on the boundary.
            With inputs of unit scale, most coordinates of the limit of a
            default layer can lie there (7/8 of them for a 4 → 6 tanh model
            with standard normal inputs, seed 0), so Anderson often fails on default
            models. It can also fail on nonconvex problems (``"symmetric"``
            or ``"free"`` weights).
        tol: absolute forward residual maxᵢ ‖T(z)ᵢ − zᵢ‖₂ at which to stop.
        maxiter: forward iteration cap.
        solver_options: extra options of the forward solver (for Anderson:
            ``memory``, ``mixing``, ``regularization``).
        linear_solver, adjoint_tol, adjoint_maxiter: the backward adjoint solve
            (see :func:`mmbilevel.hypergrad.adjoint_solve`); ``adjoint_tol``
            defaults to :func:`mmbilevel.hypergrad.default_tolerance` of the
            input's dtype.
        on_failure: ``"raise"`` an :class:`EquilibriumError` (default),
            ``"warn"`` or ``"ignore"`` when the forward solve diverges or stops
            at ``maxiter``. ``last_result`` contains the diagnostics in every case.
            After such a failure the backward pass warns (``RuntimeWarning``,
            with the residual, for ``"ignore"`` too) and returns the implicit
            gradient at the last iterate, which is not a fixed point, so the
            gradient is inexact. No coordinate is frozen then, since the
            boundary test below holds only at a limit. Adjoint failures raise
            or warn (``"ignore"`` warns).
        active_tol: a coordinate of a converged limit with |(Wz* + Ux + b)ᵢ|
            above this value is treated as resting on the boundary of dom φ (an
            active constraint) and gets derivative 0; see ``forward``.
        device, dtype: of the parameters.

    Shape:
        - Input: (*, in_features).
        - Output: (*, features), inside dom φ.

    NOTE: the layer does not run under ``torch.vmap`` (the forward solve
    stops on a data-dependent test) or ``torch.func.grad`` (the implicit
    gradient calls ``requires_grad_()`` and registers hooks). Pass the batch
    as leading dimensions instead, and use ``loss.backward()``.
    ``torch.func.functional_call`` works.

    Attributes:
        weight_raw: the Parameter V, shape (features, features).
        injection_weight: the Parameter U, shape (features, in_features), or None.
        bias: the Parameter b, shape (features,), or None.
        last_result: the :class:`FixedPointResult` of the latest forward solve.
        last_active: boolean mask of the coordinates treated as active
            constraints in the latest forward pass with autograd (all False
            when that solve did not converge), or None.

    Example:
        >>> layer = BregmanEquilibrium(4, "arctan", in_features=2, injection=True)
        >>> layer(torch.zeros(3, 2)).shape
        torch.Size([3, 4])
    """

    def __init__(
        self,
        features: int,
        activation: str | Legendre,
        *,
        in_features: int | None = None,
        injection: bool = True,
        weight: str = "negative",
        weight_bound: float = 0.95,
        bias: bool = True,
        start: str | None = None,
        solver: str = "iteration",
        tol: float = 1e-4,
        maxiter: int = 1000,
        solver_options: dict[str, Any] | None = None,
        linear_solver: str = "anderson",
        adjoint_tol: float | None = None,
        adjoint_maxiter: int = 500,
        on_failure: str = "raise",
        active_tol: float = 1e-3,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        in_features = features if in_features is None else in_features
        self._check_settings(features, in_features, injection, weight, weight_bound, start, on_failure)
        factory = {"device": device, "dtype": dtype}
        self.features = features
        self.in_features = in_features
        self.injection = injection
        self.phi = resolve_activation(activation)
        self.weight_mode = weight
        self.weight_bound = weight_bound
        self.start = start or ("input" if in_features == features else "zero")
        if self.start == "input" and in_features != features:
            raise ValueError(
                f"start='input' needs in_features == features, got {in_features} and {features}; "
                "use start='zero'"
            )
        self.solver_name = solver
        self.solve = FIXED_POINT_SOLVERS.get(solver)
        self.tol = tol
        self.maxiter = maxiter
        self.solver_options = dict(solver_options or {})
        self.linear_solver = linear_solver
        self.adjoint_tol = adjoint_tol
        self.adjoint_maxiter = adjoint_maxiter
        self.on_failure = on_failure
        self.active_tol = active_tol
        self.last_result: FixedPointResult | None = None
        self.last_active: torch.Tensor | None = None

        self.weight_raw = nn.Parameter(torch.empty(features, features, **factory))
        if injection:
            self.injection_weight = nn.Parameter(torch.empty(features, in_features, **factory))
        else:
            self.register_parameter("injection_weight", None)
        if bias:
            self.bias = nn.Parameter(torch.empty(features, **factory))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    @staticmethod
    def _check_settings(
        features: int,
        in_features: int,
        injection: bool,
        weight: str,
        weight_bound: float,
        start: str | None,
        on_failure: str,
    ) -> None:
        for name, value in (("features", features), ("in_features", in_features)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r} must be a positive integer")
        if not injection and in_features != features:
            raise ValueError(
                f"without injection the input is the starting point, so in_features ({in_features}) "
                f"must equal features ({features}); pass injection=True or matching widths"
            )
        if weight not in WEIGHT_PARAMETRIZATIONS:
            raise ValueError(f"unknown weight parametrization {weight!r}; expected one of {WEIGHT_PARAMETRIZATIONS}")
        if not 0.0 < weight_bound < 1.0:
            raise ValueError(f"weight_bound must lie in (0, 1), got {weight_bound}")
        if start is not None and start not in STARTS:
            raise ValueError(f"unknown start {start!r}; expected one of {STARTS}")
        if on_failure not in ("raise", "warn", "ignore"):
            raise ValueError(f"on_failure must be 'raise', 'warn' or 'ignore', got {on_failure!r}")

    def reset_parameters(self) -> None:
        """Initialise V, U and b like ``torch.nn.Linear`` (uniform in ±1/√fan_in)."""
        with torch.no_grad():
            nn.init.kaiming_uniform_(self.weight_raw, a=math.sqrt(5))
            if self.injection_weight is not None:
                nn.init.kaiming_uniform_(self.injection_weight, a=math.sqrt(5))
            if self.bias is not None:
                bound = 1.0 / math.sqrt(self.in_features)
                nn.init.uniform_(self.bias, -bound, bound)

    @property
    def strong_convexity(self) -> float:
        """Modulus σ of φ used to bound ‖W‖₂ (1.0 when φ is not strongly convex)."""
        sigma = float(getattr(self.phi, "strong_convexity", 0.0))
        return sigma if sigma > 0 else 1.0

    def weight(self) -> torch.Tensor:
        """Return the weight W used in the map, from the raw parameter V."""
        if self.weight_mode == "free":
            return self.weight_raw
        if self.weight_mode == "negative":
            gram = self.weight_raw.T @ self.weight_raw
            norm = torch.linalg.eigvalsh(gram).max()
            return -self.weight_bound * self.strong_convexity * gram / torch.clamp(norm, min=1.0)
        symmetric = 0.5 * (self.weight_raw + self.weight_raw.T)
        norm = torch.linalg.eigvalsh(symmetric).abs().max()
        scale = self.weight_bound * self.strong_convexity / torch.clamp(norm, min=1.0)
        return scale * symmetric

    def shift(self, x: torch.Tensor) -> torch.Tensor:
        """Return the constant part Ux + b of the pre-activation (zeros without either)."""
        if self.injection_weight is not None:
            shift = functional.linear(x, self.injection_weight, self.bias)
        elif self.bias is not None:
            shift = self.bias.expand(*x.shape[:-1], self.features)
        else:
            shift = x.new_zeros(*x.shape[:-1], self.features)
        return shift

    def step(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Apply the map T(z) = ρ(ρ⁻¹(z) + Wz + Ux + b) once."""
        return self._map(self.weight(), self.shift(x))(z)

    def _map(self, weight: torch.Tensor, shift: torch.Tensor):
        phi = self.phi

        def apply(z: torch.Tensor) -> torch.Tensor:
            return phi.grad_conjugate(phi.grad(z, clamp=True) + z @ weight.T + shift)

        return apply

    def initial_point(self, x: torch.Tensor) -> torch.Tensor:
        """Return the starting point z⁽⁰⁾: x moved into the interior of dom φ, or ρ(0)."""
        if self.start == "input":
            return self.phi.clamp(x.detach())
        zeros = x.new_zeros(*x.shape[:-1], self.features)
        return self.phi.grad_conjugate(zeros)

    def _solve_dual(self, weight: torch.Tensor, shift: torch.Tensor, start: torch.Tensor) -> FixedPointResult:
        """Find the limit by iterating in dual coordinates u = ρ⁻¹(z).

        In these coordinates the map is u ↦ u + d(u) with the drift
        d = Wρ(u) + Ux + b = −∇f(z), defined for every real u, so extrapolation
        (Anderson) can never leave dom φ, and a limit on the boundary of dom φ is
        approached as u → ±∞ instead of being reached by rounding and stuck there.

        The residual of each coordinate is |ρ(u + d) − ρ(u)|, the step in z, plus
        the part of |d| that points away from the nearer end of dom φ. The
        second term matters where ρ saturates: there the step in z is tiny for
        any drift, and only an outward drift (∇f pushing against the end, the
        optimality condition at a boundary point) may count as converged.
        """
        phi = self.phi
        weight, shift = weight.detach(), shift.detach()

        def dual_step(u: torch.Tensor) -> torch.Tensor:
            return u + phi.grad_conjugate(u) @ weight.T + shift

        def residual(u: torch.Tensor, stepped: torch.Tensor) -> torch.Tensor:
            # The drift is recomputed: for large |u|, stepped − u rounds to 0.
            z = phi.grad_conjugate(u)
            drift = z @ weight.T + shift
            inward = torch.clamp(-drift * self._end_side(z), min=0.0)
            return (phi.grad_conjugate(stepped) - z).abs() + inward

        dual = self.solve(
            dual_step,
            phi.grad(start, clamp=True),
            tol=self.tol,
            maxiter=self.maxiter,
            on_failure="ignore",
            residual_fn=residual,
            **self.solver_options,
        )
        return FixedPointResult(
            phi.grad_conjugate(dual.solution),
            dual.iterations,
            dual.residual,
            dual.residual_trace,
            dual.converged,
            dual.status,
        )

    def _end_side(self, z: torch.Tensor) -> torch.Tensor:
        """Return +1 where the nearer finite end of dom φ is the upper one, −1 for the lower, 0 for none."""
        lower, upper = (float(end) for end in self.phi.domain)
        if math.isfinite(lower) and math.isfinite(upper):
            return torch.where(z > 0.5 * (lower + upper), 1.0, -1.0).to(z.dtype)
        if math.isfinite(upper):
            return torch.ones_like(z)
        if math.isfinite(lower):
            return -torch.ones_like(z)
        return torch.zeros_like(z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the limit z*(x), with an implicit-gradient backward pass.

        The forward solve runs without autograd. With autograd on, one step of
        T is recorded at the detached limit and the backward pass solves the
        adjoint system (I − ∂T/∂z)ᵀ v = ∂E/∂z there, so memory does not depend
        on the number of iterations. A coordinate at the boundary of dom φ is
        recognised by a nonzero gradient of f there, because the optimality
        condition Wz + Ux + b = 0 is met only at interior limits, and it is held
        constant. When the forward solve failed (``on_failure`` ``"warn"`` or
        ``"ignore"``), nothing is held constant and the backward pass warns.

        Raises:
            EquilibriumError: the forward solve failed and ``on_failure="raise"``.
            HypergradientError: during backward, the adjoint solve failed.
        """
        if x.shape[-1] != self.in_features:
            raise ValueError(f"input must have last dimension {self.in_features}, got shape {tuple(x.shape)}")
        weight = self.weight()
        shift = self.shift(x)
        step = self._map(weight, shift)
        result = self._solve_dual(weight, shift, self.initial_point(x))
        self.last_result = result
        if not result.converged:
            message = (
                f"equilibrium forward solve ({self.solver_name}) ended with status {result.status!r} "
                f"after {result.iterations} iterations, residual {result.residual:.3e} > tol={self.tol:.1e}; "
                + self._failure_advice(result)
            )
            handle_failure(message, self.on_failure, EquilibriumError(message, result))

        if not torch.is_grad_enabled():
            return step(result.solution)

        # Coordinates whose gradient Wz + Ux + b is not zero can only be limits
        # on the boundary of dom φ. There ∂T/∂z has eigenvalues near 1 and the
        # adjoint system degenerates, but the limit stays on the boundary under
        # small parameter changes, so its derivative is 0: freeze them. An
        # unconverged iterate is no limit, and there a nonzero gradient does not
        # mark a boundary coordinate, so nothing is frozen.
        fixed_point = result.solution
        if result.converged:
            with torch.no_grad():
                active = (fixed_point @ weight.T + shift).abs() > self.active_tol
        else:
            active = torch.zeros_like(fixed_point, dtype=torch.bool)
        self.last_active = active
        differentiated = step
        if bool(active.any()):

            def differentiated(z: torch.Tensor) -> torch.Tensor:
                return torch.where(active, fixed_point, step(z))

        output = attach_implicit_gradient(
            differentiated,
            fixed_point,
            linear_solver=self.linear_solver,
            tol=self.adjoint_tol if self.adjoint_tol is not None else default_tolerance(x.dtype),
            maxiter=self.adjoint_maxiter,
            on_failure="raise" if self.on_failure == "raise" else "warn",
        )
        if result.converged or not output.requires_grad:
            return output
        return self._warn_in_backward(output, result)

    def _failure_advice(self, result: FixedPointResult) -> str:
        """Return the remedies that apply to this layer's settings after a failed forward solve."""
        if self.solver_name == "anderson":
            return (
                "use solver='iteration': Anderson extrapolation often stalls when limits lie on "
                "the boundary of dom φ, and it can fail on nonconvex problems"
            )
        if self.weight_mode == "free":
            return (
                f"use weight='negative' or 'symmetric', which keep T an MM map, or raise "
                f"maxiter={self.maxiter}"
            )
        if result.status == "diverged":
            return "check the input and the parameters for non-finite values"
        return (
            f"raise maxiter={self.maxiter} or loosen tol={self.tol:.1e}: limits on the boundary of "
            "dom φ are approached only sublinearly"
        )

    def _warn_in_backward(self, output: torch.Tensor, result: FixedPointResult) -> torch.Tensor:
        """Return a view of ``output`` whose backward pass warns that the forward solve failed.

        The hook sits on a view, so it runs before the adjoint solve of
        ``output``, and the warning comes first even when that solve then raises.
        """
        message = (
            f"backward through an equilibrium forward solve ({self.solver_name}) that did not converge (status "
            f"{result.status!r}, residual {result.residual:.3e} > tol={self.tol:.1e} after "
            f"{result.iterations} iterations): the gradient is the implicit one at the last "
            "iterate, which is not a fixed point, so it is inexact"
        )

        def warn(grad: torch.Tensor) -> None:
            warnings.warn(message, RuntimeWarning, stacklevel=2)
            logger.warning(message)

        view = output.view_as(output)
        view.register_hook(warn)
        return view

    def extra_repr(self) -> str:
        return (
            f"features={self.features}, in_features={self.in_features}, activation={self.phi.name!r}, "
            f"injection={self.injection}, weight={self.weight_mode!r}, start={self.start!r}, "
            f"solver={self.solver_name!r}, tol={self.tol}, maxiter={self.maxiter}"
        )


class BregmanEquilibriumModel(nn.Module):
    """Classifier: a :class:`BregmanEquilibrium` representation followed by a linear head.

    Args:
        in_features: width of the input.
        features: width of the representation.
        out_features: number of outputs (logits).
        activation: Legendre function name or object.
        **layer_options: options of :class:`BregmanEquilibrium` (``injection``,
            ``weight``, ``solver``, ``tol``, ``maxiter``, ...).

    Example:
        >>> model = BregmanEquilibriumModel(2, 2, 2, "arctan", injection=False)
        >>> model(torch.zeros(5, 2)).shape
        torch.Size([5, 2])
    """

    def __init__(
        self,
        in_features: int,
        features: int,
        out_features: int,
        activation: str | Legendre,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        **layer_options: Any,
    ) -> None:
        super().__init__()
        self.equilibrium = BregmanEquilibrium(
            features, activation, in_features=in_features, device=device, dtype=dtype, **layer_options
        )
        self.head = nn.Linear(features, out_features, device=device, dtype=dtype)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Return the equilibrium representation z*(x)."""
        return self.equilibrium(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.equilibrium(x))
