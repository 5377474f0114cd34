"""Majorants of a smooth function f for the MM algorithm, and a numerical check.

The majorants are those of "Bilevel Learning of Deep Representations"
(Frecon, Salzo, Pontil, 2021), anchored at a point a:

- quadratic (Proposition 3.1): F(z; a) = f(a) + ⟨∇f(a), z − a⟩ + ‖z − a‖²/(2τ),
  minimized with g by the forward-backward step prox_{τg}(a − τ∇f(a));
- Bregman (Proposition 4.1): F(z; a) = f(a) + ⟨∇f(a), z − a⟩ + D_φ(z, a)/τ,
  minimized with g by the Bregman step prox^φ_{τg}(∇φ(a) − τ∇f(a)).

Step sizes. Let μ be a Lipschitz constant of ∇f. The descent lemma gives
f(z) ≤ f(a) + ⟨∇f(a), z − a⟩ + (μ/2)‖z − a‖², so the quadratic F majorizes f
for τ ≤ 1/μ. The paper states τ < 2/μ. That bound is the step limit under
which forward-backward decreases f + g, not a majorization bound: for
f(z) = (μ/2)‖z‖² and 1/μ < τ < 2/μ, F(z; a) − f(z) = (1/(2τ) − μ/2)‖z − a‖²
is negative for every z ≠ a. Hence τ ≥ 2/μ raises ValueError and
1/μ < τ < 2/μ logs a warning that F is not a global majorant.
For the Bregman majorant, D_φ(z, a) ≥ (σ/2)‖z − a‖² with σ the strong
convexity modulus of φ, so F majorizes f for τ ≤ σ/μ. The paper states
τ < 1/μ, which is enough only when σ ≥ 1. Hence τ ≥ min(1, σ)/μ raises.

Quadratic forms (Definition 3.1 of the paper). Q(z; a) = ½zᵀAz + ½aᵀBa +
aᵀCz + dᵀz + eᵀa + δ with f(z) = Q(z; z). Tangency ∇₁Q(z; z) = ∇f(z) for
all z means ∇₂Q(z; z) = (sym B + C)z + e = 0, so e = 0 and C = −sym B, which
forces C to be symmetric. Then f(z) = ½zᵀ(A + C)z + dᵀz + δ and
Q(z; a) − f(z) = −½(z − a)ᵀC(z − a), so Q majorizes f only when C ⪯ 0.
The data (A, C, d) therefore determine f, and W = I − τ(A + C)ᵀ in
equation (10) of the paper is symmetric: it does not range over all d×d
matrices as the paper states.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Union

import torch
from torch import Tensor

from mmbilevel.prox import Regularizer, bregman_prox
from mmbilevel.prox.bregman import BregmanProxResult

if TYPE_CHECKING:
    from mmbilevel.legendre import Legendre

__all__ = [
    "QuadraticForm",
    "Majorant",
    "QuadraticMajorant",
    "BregmanMajorant",
    "SurrogateReport",
    "check_surrogate",
]

logger = logging.getLogger(__name__)


class QuadraticForm:
    """Quadratic f(z) = ½zᵀ(A + C)z + dᵀz given by the data of Definition 3.1.

    The majorant of Definition 3.1 ("Bilevel Learning of Deep Representations")
    is Q(z; a) = ½zᵀAz − ½aᵀCa + aᵀCz + dᵀz, the choice B = −C, e = 0, δ = 0
    that makes Q touch and be tangent to f (see the module docstring).

    Args:
        A: symmetric positive definite matrix of shape (n, n).
        C: symmetric negative semidefinite matrix of shape (n, n).
        d: vector of shape (n,).
        atol: tolerance of the symmetry and definiteness checks, relative to
            the largest entry; 100 machine epsilons of the dtype of A by default.

    Raises:
        ValueError: when shapes do not match, A is not symmetric positive
            definite, or C is not symmetric negative semidefinite.
    """

    def __init__(self, A: Tensor, C: Tensor, d: Tensor, *, atol: float | None = None) -> None:
        if A.ndim != 2 or A.shape[0] != A.shape[1]:
            raise ValueError(f"A must be a square matrix, got shape {tuple(A.shape)}")
        n = A.shape[0]
        if tuple(C.shape) != (n, n):
            raise ValueError(f"C must have the shape {(n, n)} of A, got {tuple(C.shape)}")
        if tuple(d.shape) != (n,):
            raise ValueError(f"d must have shape {(n,)}, got {tuple(d.shape)}")
        dtypes = {A.dtype, C.dtype, d.dtype}
        if len(dtypes) > 1 or not A.is_floating_point():
            raise ValueError(
                f"A, C and d must share one floating dtype, got {A.dtype}, {C.dtype} and {d.dtype}; "
                "convert them with .to(dtype)"
            )
        for label, tensor in (("A", A), ("C", C), ("d", d)):
            if not bool(torch.isfinite(tensor).all()):
                raise ValueError(f"{label} contains NaN or inf entries; pass finite data")

        if atol is None:
            atol = 100 * torch.finfo(A.dtype).eps
        scale = max(float(A.detach().abs().max()), float(C.detach().abs().max()), 1.0)
        tol = atol * scale
        if float((A - A.T).detach().abs().max()) > tol:
            raise ValueError("A must be symmetric; pass (A + A.T) / 2")
        if float((C - C.T).detach().abs().max()) > tol:
            raise ValueError(
                "C must be symmetric, because tangency ∇₁Q(z; z) = ∇f(z) forces C = Cᵀ; "
                "pass (C + C.T) / 2"
            )

        eig_a = torch.linalg.eigvalsh(A.detach())
        if float(eig_a.min()) <= tol:
            raise ValueError(
                f"A must be positive definite, got smallest eigenvalue {float(eig_a.min()):.3g}"
            )
        eig_c = torch.linalg.eigvalsh(C.detach())
        if float(eig_c.max()) > tol:
            raise ValueError(
                f"C must be negative semidefinite for Q to majorize f, got largest eigenvalue "
                f"{float(eig_c.max()):.3g}"
            )

        self.A = A
        self.C = C
        self.d = d

    @property
    def dim(self) -> int:
        """Dimension n of the points."""
        return self.A.shape[0]

    @property
    def hessian(self) -> Tensor:
        """Hessian A + C of f."""
        return self.A + self.C

    @property
    def smoothness(self) -> float:
        """Smoothness constant μ = ‖A‖₂ of Q(·; a), as the paper takes it.

        It bounds the largest eigenvalue of A + C because C ⪯ 0, which is
        what the majorization bounds on τ use.
        """
        return float(torch.linalg.matrix_norm(self.A.detach(), ord=2))

    def check_point(self, z: Tensor) -> None:
        """Raise ValueError unless the last dimension of ``z`` is n and its dtype is that of A."""
        if z.ndim == 0 or z.shape[-1] != self.dim:
            raise ValueError(
                f"points must have last dimension {self.dim}, got shape {tuple(z.shape)}"
            )
        if z.dtype != self.A.dtype:
            raise ValueError(
                f"points have dtype {z.dtype} but the quadratic form has dtype {self.A.dtype}; "
                f"convert the points with .to({self.A.dtype}) or build the form in {z.dtype}"
            )

    def __call__(self, z: Tensor) -> Tensor:
        """Evaluate f(z) = Q(z; z), shape ``z.shape[:-1]``."""
        self.check_point(z)
        return 0.5 * ((z @ self.hessian) * z).sum(-1) + z @ self.d

    def gradient(self, z: Tensor) -> Tensor:
        """Evaluate ∇f(z) = ∇₁Q(z; z) = (A + C)z + d (row-vector batches)."""
        self.check_point(z)
        return z @ self.hessian.T + self.d

    def surrogate(self, z: Tensor, anchor: Tensor) -> Tensor:
        """Evaluate Q(z; a) = ½zᵀAz − ½aᵀCa + aᵀCz + dᵀz."""
        self.check_point(z)
        self.check_point(anchor)
        return (
            0.5 * ((z @ self.A) * z).sum(-1)
            - 0.5 * ((anchor @ self.C) * anchor).sum(-1)
            + ((anchor @ self.C) * z).sum(-1)
            + z @ self.d
        )


Objective = Union[QuadraticForm, Callable[[Tensor], Tensor]]


def _gradient(f: Objective, z: Tensor) -> Tensor:
    """Compute ∇f(z), by autograd for a callable, keeping the graph when grad is on."""
    if isinstance(f, QuadraticForm):
        return f.gradient(z)
    keep_graph = torch.is_grad_enabled()
    with torch.enable_grad():
        point = z if (keep_graph and z.requires_grad) else z.detach().requires_grad_(True)
        value = f(point)
        if value.shape != point.shape[:-1]:
            raise ValueError(
                f"f must map points of shape {tuple(point.shape)} to values of shape "
                f"{tuple(point.shape[:-1])}, got {tuple(value.shape)}"
            )
        (grad,) = torch.autograd.grad(value.sum(), point, create_graph=keep_graph)
    return grad


def _validate_step(step: float | Tensor) -> float | Tensor:
    value = step.detach() if torch.is_tensor(step) else torch.as_tensor(step)
    if value.numel() != 1:
        raise ValueError(f"step must be a scalar, got shape {tuple(value.shape)}")
    if not (math.isfinite(float(value)) and float(value) > 0):
        raise ValueError(f"step tau must be finite and > 0, got {float(value)!r}; pass a positive step")
    return step


class Majorant:
    """Common part of the quadratic and Bregman majorants F(z; a).

    Args:
        f: the function to majorize: a :class:`QuadraticForm` or a torch
            callable mapping points (..., n) to values (...), differentiated by
            autograd.
        step: step size τ > 0, a float or a scalar tensor (which may be a
            learnable parameter). NOTE: the admissibility bounds on τ are
            checked once, at construction, so a learned step can leave them.
        smoothness: a Lipschitz constant μ of ∇f, used to reject steps that
            are not admissible; taken as ‖A‖₂ for a QuadraticForm when omitted.
    """

    def __init__(self, f: Objective, step: float | Tensor, smoothness: float | None = None) -> None:
        self.f = f
        self.step = _validate_step(step)
        if smoothness is None and isinstance(f, QuadraticForm):
            smoothness = f.smoothness
        if smoothness is not None and not (math.isfinite(smoothness) and smoothness >= 0):
            raise ValueError(f"smoothness must be finite and >= 0, got {smoothness!r}")
        self.smoothness = smoothness

    @property
    def tau(self) -> float:
        """Step τ as a float."""
        return float(self.step.detach()) if torch.is_tensor(self.step) else float(self.step)

    def _check_point(self, z: Tensor) -> None:
        if isinstance(self.f, QuadraticForm):
            self.f.check_point(z)
        elif z.ndim == 0:
            raise ValueError("points must have a feature dimension, got a 0-dimensional tensor")

    def objective(self, z: Tensor) -> Tensor:
        """Evaluate f(z), shape ``z.shape[:-1]``."""
        self._check_point(z)
        return self.f(z)

    def gradient(self, z: Tensor) -> Tensor:
        """Evaluate ∇f(z)."""
        self._check_point(z)
        return _gradient(self.f, z)

    def value(self, z: Tensor, anchor: Tensor) -> Tensor:
        """Evaluate F(z; a) = f(a) + ⟨∇f(a), z − a⟩ + distance(z, a)/τ, shape ``z.shape[:-1]``."""
        self._check_point(z)
        self._check_point(anchor)
        if z.shape[-1] != anchor.shape[-1]:
            raise ValueError(
                f"z of shape {tuple(z.shape)} and anchor of shape {tuple(anchor.shape)} differ "
                "in the last dimension"
            )
        linear = self.f(anchor) + (self.gradient(anchor) * (z - anchor)).sum(-1)
        return linear + self.distance(z, anchor) / self.step

    def distance(self, z: Tensor, anchor: Tensor) -> Tensor:
        """Evaluate the proximity term: ½‖z − a‖² or D_φ(z, a), summed over the last dimension."""
        raise NotImplementedError

    def minimize(self, anchor: Tensor, regularizer: Regularizer) -> Tensor:
        """Compute argmin_z F(z; a) + g(z), the MM update from the anchor a."""
        raise NotImplementedError

    def weight_bias(self) -> tuple[Tensor, Tensor]:
        """Return the layer weights (W, b) of the MM update when f is a QuadraticForm."""
        raise NotImplementedError


class QuadraticMajorant(Majorant):
    """Quadratic majorant of Proposition 3.1 in "Bilevel Learning of Deep Representations".

    F(z; a) = f(a) + ⟨∇f(a), z − a⟩ + ‖z − a‖²/(2τ); it majorizes f when
    τ ≤ 1/μ, with μ a Lipschitz constant of ∇f. The MM update is the
    forward-backward step z⁺ = prox_{τg}(a − τ∇f(a)).

    Raises:
        ValueError: when τ ≤ 0, or μ is known and τ ≥ 2/μ. A warning is
            logged when 1/μ < τ < 2/μ, where F is not a global majorant.
    """

    def __init__(self, f: Objective, step: float | Tensor, smoothness: float | None = None) -> None:
        super().__init__(f, step, smoothness)
        mu = self.smoothness
        if mu is not None and mu > 0:
            if self.tau >= 2 / mu:
                raise ValueError(
                    f"step tau = {self.tau:.6g} is not admissible for the quadratic majorant: "
                    f"it must be < 2/μ = {2 / mu:.6g} (μ = {mu:.6g}); pass a smaller step"
                )
            if self.tau > 1 / mu:
                logger.warning(
                    "step tau = %.6g exceeds 1/μ = %.6g: the quadratic F is not a global "
                    "majorant of f, although forward-backward still decreases f + g for convex g",
                    self.tau, 1 / mu,
                )

    def distance(self, z: Tensor, anchor: Tensor) -> Tensor:
        return 0.5 * (z - anchor).square().sum(-1)

    def minimize(self, anchor: Tensor, regularizer: Regularizer) -> Tensor:
        self._check_point(anchor)
        return regularizer.prox(anchor - self.step * self.gradient(anchor), self.step)

    def weight_bias(self) -> tuple[Tensor, Tensor]:
        """Return (W, b) = (I − τ(A + C)ᵀ, −τd), so the update is prox_{τg}(Wa + b).

        For row-vector batches the update reads prox_{τg}(a @ W.T + b).
        """
        if not isinstance(self.f, QuadraticForm):
            raise ValueError("weight_bias needs f to be a QuadraticForm")
        eye = torch.eye(self.f.dim, dtype=self.f.A.dtype, device=self.f.A.device)
        return eye - self.step * self.f.hessian.T, -self.step * self.f.d


class BregmanMajorant(Majorant):
    """Bregman majorant of Proposition 4.1 in "Bilevel Learning of Deep Representations".

    F(z; a) = f(a) + ⟨∇f(a), z − a⟩ + D_φ(z, a)/τ on dom φ; it majorizes f
    when τ ≤ σ/μ, with σ the strong convexity modulus of φ and μ a
    Lipschitz constant of ∇f. The MM update is the Bregman forward-backward
    step z⁺ = prox^φ_{τg}(∇φ(a) − τ∇f(a)).

    Args:
        f: function to majorize (see :class:`Majorant`).
        phi: separable Legendre function.
        step: step size τ > 0.
        smoothness: Lipschitz constant μ of ∇f, when known.

    Raises:
        ValueError: when τ ≤ 0, or μ is known and τ ≥ min(1, σ)/μ (also when
            σ = 0, since then no step gives a majorant).
    """

    def __init__(
        self, f: Objective, phi: Legendre, step: float | Tensor, smoothness: float | None = None
    ) -> None:
        super().__init__(f, step, smoothness)
        self.phi = phi
        self.last_prox: BregmanProxResult | None = None
        sigma = float(getattr(phi, "strong_convexity", 0.0))
        mu = self.smoothness
        if mu is not None and mu > 0:
            bound = min(1.0, sigma) / mu
            if self.tau >= bound:
                raise ValueError(
                    f"step tau = {self.tau:.6g} is not admissible for the Bregman majorant with "
                    f"{phi.name!r}: it must be < min(1, σ)/μ = {bound:.6g} (σ = {sigma:.6g}, "
                    f"μ = {mu:.6g}); pass a smaller step or a strongly convex Legendre function"
                )
        elif sigma <= 0:
            logger.warning(
                "the Legendre function %r is not strongly convex, so the Bregman F may not "
                "majorize f for any step", phi.name,
            )

    def check_domain(self, z: Tensor) -> None:
        """Raise ValueError unless every entry of ``z`` lies where ∇φ is finite."""
        grad = self.phi.grad(z)
        if not bool(torch.all(torch.isfinite(grad))):
            raise ValueError(
                f"points must lie inside the domain {self.phi.domain} of {self.phi.name!r}, where "
                "∇φ is finite; got a point on its boundary. Start from an interior point"
            )

    def distance(self, z: Tensor, anchor: Tensor) -> Tensor:
        return self.phi.divergence(z, anchor).sum(-1)

    def minimize(self, anchor: Tensor, regularizer: Regularizer) -> Tensor:
        self._check_point(anchor)
        dual = self.phi.grad(anchor) - self.step * self.gradient(anchor)
        result = bregman_prox(self.phi, regularizer, dual, self.step)
        self.last_prox = result
        return result.value

    def weight_bias(self) -> tuple[Tensor, Tensor]:
        """Return (W, b) = (−τ(A + C)ᵀ, −τd), so the update is prox^φ_{τg}(∇φ(a) + Wa + b).

        For row-vector batches the update reads prox^φ_{τg}(∇φ(a) + a @ W.T + b),
        the Bregman layer ρ(ρ⁻¹(a) + Wa + b) when g is the indicator of dom φ.
        """
        if not isinstance(self.f, QuadraticForm):
            raise ValueError("weight_bias needs f to be a QuadraticForm")
        return -self.step * self.f.hessian.T, -self.step * self.f.d


@dataclass(frozen=True)
class SurrogateReport:
    """Result of :func:`check_surrogate`: the conditions of Definition 2.1, checked on samples.

    Attributes:
        touching: max |F(a; a) − f(a)| ≤ tol.
        tangency: max |∇₁F(a; a) − ∇f(a)| ≤ tol.
        majorization: F(z; a) ≥ f(z) − tol at every sampled z.
        strong_convexity: the estimated modulus of F(·; a) is > tol.
        touching_error: max |F(a; a) − f(a)|.
        tangency_error: max |∇₁F(a; a) − ∇f(a)|.
        majorization_violation: max over samples of f(z) − F(z; a), clipped at 0.
        convexity_modulus: min over sample pairs of
            ⟨∇₁F(z₁; a) − ∇₁F(z₂; a), z₁ − z₂⟩ / ‖z₁ − z₂‖².
        tol: the tolerance used.
    """

    touching: bool
    tangency: bool
    majorization: bool
    strong_convexity: bool
    touching_error: float
    tangency_error: float
    majorization_violation: float
    convexity_modulus: float
    tol: float

    @property
    def ok(self) -> bool:
        """Whether every condition holds."""
        return self.touching and self.tangency and self.majorization and self.strong_convexity


def _surrogate_gradient(majorant: Majorant, z: Tensor, anchor: Tensor) -> Tensor:
    with torch.enable_grad():
        point = z.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(majorant.value(point, anchor).sum(), point)
    return grad


def _sample_around(majorant: Majorant, anchor: Tensor, samples: int, radius: float, generator) -> Tensor:
    """Sample points around each anchor: Gaussian steps, taken in the dual space for Bregman."""
    noise = torch.randn(
        (samples, *anchor.shape), dtype=anchor.dtype, device=anchor.device, generator=generator
    )
    if isinstance(majorant, BregmanMajorant):
        # ∇φ* maps every dual point into dom φ, so the samples stay in the domain.
        return majorant.phi.grad_conjugate(majorant.phi.grad(anchor) + radius * noise)
    return anchor + radius * noise


def check_surrogate(
    majorant: Majorant,
    f: Objective,
    points: Tensor,
    *,
    samples: int = 64,
    radius: float = 1.0,
    tol: float = 1e-8,
    seed: int = 0,
) -> SurrogateReport:
    """Check the conditions of Definition 2.1 for F = ``majorant`` against ``f`` at ``points``.

    Definition 2.1 of "Bilevel Learning of Deep Representations" prints the
    majorization as F(z; a) ≥ f(a). MM needs F(z; a) ≥ f(z) for every z,
    which is the condition checked here.

    Args:
        majorant: the surrogate F.
        f: the function it should majorize (a QuadraticForm or torch callable).
        points: anchors a, shape (..., n); inside dom φ for a Bregman majorant.
        samples: number of points z sampled around each anchor.
        radius: standard deviation of the sampling steps (in the dual space
            ∇φ(a) + radius·ξ for a Bregman majorant).
        tol: absolute tolerance of each condition, scaled by 1 + |f(a)| for values.
        seed: seed of the sampling generator.

    Returns:
        A :class:`SurrogateReport`.
    """
    if points.numel() == 0:
        raise ValueError(f"points of shape {tuple(points.shape)} contain no anchor; pass at least one point")
    anchor = points.detach()
    generator = torch.Generator(device=anchor.device).manual_seed(seed)
    with torch.no_grad():
        f_anchor = f(anchor)
        value_tol = tol * (1 + float(f_anchor.abs().max()))
        touching_error = float((majorant.value(anchor, anchor) - f_anchor).abs().max())

    f_gradient = _gradient(f, anchor).detach()
    tangency_error = float((_surrogate_gradient(majorant, anchor, anchor) - f_gradient).abs().max())

    z = _sample_around(majorant, anchor, samples, radius, generator)
    with torch.no_grad():
        gap = majorant.value(z, anchor.expand_as(z)) - f(z)
    violation = float(torch.clamp(-gap, min=0).max())

    # Secant estimate of the strong convexity modulus from consecutive sample pairs.
    grad_z = _surrogate_gradient(majorant, z, anchor.expand_as(z))
    dz = z[1:] - z[:-1]
    dg = grad_z[1:] - grad_z[:-1]
    norms = dz.square().sum(-1)
    ratios = (dg * dz).sum(-1) / norms.clamp_min(torch.finfo(z.dtype).tiny)
    modulus = float(ratios[norms > 0].min()) if bool((norms > 0).any()) else float("nan")

    return SurrogateReport(
        touching=touching_error <= value_tol,
        tangency=tangency_error <= tol * (1 + float(f_gradient.abs().max())),
        majorization=violation <= value_tol,
        strong_convexity=modulus > tol,
        touching_error=touching_error,
        tangency_error=tangency_error,
        majorization_violation=violation,
        convexity_modulus=modulus,
        tol=tol,
    )
