"""Batched scalar root finding for increasing functions.

`solve_increasing` solves fn(t) = target elementwise by safeguarded
Newton-bisection on a bracket [lower, upper] whose ends may be infinite.
When fn is continuous and increasing, the returned point minimizes the convex
primitive F(t) − target·t over the closed bracket (F' = fn): it is the root
when target lies in the range of fn, and the nearer bracket end otherwise.
This is exactly the Bregman projection ∇φ*(y) of a separable Legendre
function φ with fn = ∇φ, which is what `mmbilevel.legendre` uses it for.

The root is differentiable with respect to ``target`` by implicit
differentiation: d root / d target = 1 / fn'(root) at interior roots and 0
where the root is a bracket end. The backward pass is itself differentiable
when ``fn_grad`` is, so second derivatives (d² root / d target² =
−fn''(root) / fn'(root)³) are available too.

Finite bracket ends are first moved inwards by a few ulps where the dtype
rounded them outwards: float32(π/2) lies beyond π/2, where tan is already
negative. An fn that still decreases across the bracket is rejected.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

__all__ = ["RootResult", "solve_increasing", "default_tol"]

logger = logging.getLogger(__name__)

TensorFn = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class RootResult:
    """Result of `solve_increasing`.

    Attributes:
        root: the solution, same shape as the broadcast of target and bounds;
            differentiable with respect to ``target`` when it requires grad.
        iterations: the number of Newton-bisection iterations run (the
            maximum over elements), not counting bracket expansion.
        residual: the maximum over elements of the optimality violation:
            |fn(root) − target| at interior roots; at a bracket end, how far
            fn(end) lies on the wrong side of target (0 when the end is the
            exact constrained minimizer).
        converged: whether every element met the tolerance; False also when
            an infinite bound had to be cut at the largest float because fn
            never crossed target (as for exp(t) = −1 on ℝ).
    """

    root: torch.Tensor
    iterations: int
    residual: float
    converged: bool


def default_tol(dtype: torch.dtype) -> float:
    """Return the default relative tolerance on the root: 4·eps of ``dtype``."""
    return 4.0 * torch.finfo(dtype).eps


def solve_increasing(
    fn: TensorFn,
    target: torch.Tensor | float,
    lower: torch.Tensor | float,
    upper: torch.Tensor | float,
    *,
    fn_grad: TensorFn | None = None,
    tol: float | None = None,
    maxiter: int = 100,
) -> RootResult:
    """Solve fn(t) = target elementwise for an increasing fn on [lower, upper].

    The method is Newton's iteration kept inside a bracket that shrinks at
    every step. A bisection step replaces any Newton step that leaves the
    bracket or follows a Newton step that did not halve it. Bisection is geometric when the
    bracket spans orders of magnitude, so infinite or huge brackets shrink in
    a few dozen steps. Infinite bounds are first replaced by finite ones by
    stepping outwards until fn crosses target.

    Where target is outside the range of fn on the closed bracket, the root
    is the bracket end minimizing F(t) − target·t with F' = fn, for instance
    ``upper`` when fn(upper) < target.

    Args:
        fn: elementwise increasing torch function; it must accept tensors of
            the broadcast shape.
        target: right-hand side, tensor or float.
        lower: lower bound, tensor or float, may be −inf.
        upper: upper bound, tensor or float, may be +inf.
        fn_grad: derivative fn'; computed by autograd when omitted.
        tol: relative tolerance on the root; default ``default_tol(dtype)``.
        maxiter: maximum number of Newton-bisection iterations.

    Returns:
        A `RootResult`. Its ``root`` is differentiable with respect to
        ``target`` through implicit differentiation.

    Raises:
        ValueError: ``lower > upper`` somewhere, NaN in the inputs,
            ``maxiter`` < 1, or fn(lower) > fn(upper) (fn not increasing).
    """
    if maxiter < 1:
        raise ValueError(f"maxiter must be at least 1, got {maxiter}")
    target_t = torch.as_tensor(target)
    if not target_t.is_floating_point():
        target_t = target_t.to(torch.get_default_dtype())
    dtype, device = target_t.dtype, target_t.device
    lower_t = torch.as_tensor(lower, dtype=dtype, device=device)
    upper_t = torch.as_tensor(upper, dtype=dtype, device=device)
    shape = torch.broadcast_shapes(target_t.shape, lower_t.shape, upper_t.shape)
    if torch.isnan(target_t).any():
        raise ValueError("target contains NaN; pass finite or infinite values only")
    if (lower_t > upper_t).any():
        raise ValueError("lower must not exceed upper; got a bracket with lower > upper")
    tol = default_tol(dtype) if tol is None else float(tol)
    grad_fn = fn_grad if fn_grad is not None else _autograd_derivative(fn)

    with torch.no_grad():
        result, lower_used, upper_used = _solve(
            fn,
            grad_fn,
            target_t.detach().expand(shape),
            lower_t.expand(shape),
            upper_t.expand(shape),
            tol,
            maxiter,
        )
    root = result.root
    if target_t.requires_grad:
        root = _ImplicitRoot.apply(target_t.expand(shape), root, grad_fn, lower_used, upper_used)
    if not result.converged:
        logger.warning(
            "solve_increasing did not converge in %d iterations (residual %.3g, tol %.3g)",
            result.iterations,
            result.residual,
            tol,
        )
    return RootResult(root=root, iterations=result.iterations, residual=result.residual, converged=result.converged)


def _autograd_derivative(fn: TensorFn) -> TensorFn:
    def derivative(t: torch.Tensor) -> torch.Tensor:
        # Keep the graph when the caller differentiates the result (double backward).
        if torch.is_grad_enabled() and t.requires_grad:
            (d,) = torch.autograd.grad(fn(t).sum(), t, create_graph=True)
            return d
        with torch.enable_grad():
            t = t.detach().requires_grad_(True)
            (d,) = torch.autograd.grad(fn(t).sum(), t)
        return d

    return derivative


# Maximum number of ulps by which a finite bracket end is moved inwards.
_MAX_INWARD_ULPS = 8


def _round_inward(fn: TensorFn, lower: torch.Tensor, upper: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Move finite bracket ends inwards, one ulp at a time, while fn misbehaves there.

    An end is moved while fn is NaN there, or while fn at the next float
    inwards is smaller (at ``lower``) or larger (at ``upper``) than at the end.
    This happens when rounding to the dtype put the end outside the true
    domain. Each end moves at most `_MAX_INWARD_ULPS` ulps and never past the
    other end.
    """
    a, b = lower.clone(), upper.clone()
    for _ in range(_MAX_INWARD_ULPS):
        a_next = torch.nextafter(a, b)
        b_next = torch.nextafter(b, a)
        fa, fa_next = fn(a), fn(a_next)
        fb, fb_next = fn(b), fn(b_next)
        move_a = torch.isfinite(a) & (a_next < b) & (torch.isnan(fa) | (fa > fa_next))
        move_b = torch.isfinite(b) & (b_next > a) & (torch.isnan(fb) | (fb < fb_next))
        if not (bool(move_a.any()) or bool(move_b.any())):
            break
        a = torch.where(move_a, a_next, a)
        b = torch.where(move_b, b_next, b)
    return a, b


def _expand_bracket(
    fn: TensorFn, target: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Replace infinite bounds by finite ones bracketing the root (or the bound itself)."""
    finfo = torch.finfo(target.dtype)
    a, b = lower.clone(), upper.clone()
    both_inf = ~torch.isfinite(a) & ~torch.isfinite(b)
    a = torch.where(both_inf, torch.full_like(a, -1.0), a)
    b = torch.where(both_inf, torch.full_like(b, 1.0), b)
    a = torch.where(torch.isinf(a) & torch.isfinite(b), torch.minimum(b, torch.zeros_like(b)) - 1.0, a)
    b = torch.where(torch.isinf(b) & torch.isfinite(a), torch.maximum(a, torch.zeros_like(a)) + 1.0, b)

    # Step outwards, by a factor 16 each time, only where the original bound is
    # infinite and fn has not crossed target yet; 300 steps reach the largest float.
    grow_low = torch.isinf(lower)
    grow_up = torch.isinf(upper)
    for _ in range(300):
        need_low = grow_low & (fn(a) > target) & (a > -finfo.max)
        need_up = grow_up & (fn(b) < target) & (b < finfo.max)
        if not (need_low.any() or need_up.any()):
            break
        # The old ends stay valid opposite ends of the bracket.
        b = torch.where(need_low, a, b)
        a = torch.where(need_up, b, a)
        a = torch.where(need_low, (a * 16.0 - 1.0).clamp_min(-finfo.max), a)
        b = torch.where(need_up, (b * 16.0 + 1.0).clamp_max(finfo.max), b)
    return a, b


def _split_point(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Return a bisection point of [a, b]: geometric across magnitudes, else the midpoint.

    On a one-signed bracket whose ends differ by more than a factor 4, the
    point is the geometric mean of the ends, with the end nearer 0 raised to
    at least eps times the other one. A bracket [0, b] is thus split at
    √eps·b, and tiny or huge roots are reached in a few dozen steps.
    """
    finfo = torch.finfo(a.dtype)
    mid = a + 0.5 * (b - a)
    mid = torch.where(torch.isfinite(mid), mid, 0.5 * a + 0.5 * b)
    near_pos = torch.maximum(a, (finfo.eps * b).clamp_min(finfo.tiny))
    near_neg = torch.minimum(b, (finfo.eps * a).clamp_max(-finfo.tiny))
    positive = (a >= 0) & (b > 4.0 * near_pos)
    negative = (b <= 0) & (a < 4.0 * near_neg)
    geo_pos = torch.sqrt(near_pos.clamp_min(0.0)) * torch.sqrt(b.clamp_min(0.0))
    geo_neg = -torch.sqrt((-near_neg).clamp_min(0.0)) * torch.sqrt((-a).clamp_min(0.0))
    mid = torch.where(positive, geo_pos, mid)
    mid = torch.where(negative, geo_neg, mid)
    straddle = (a < 0) & (b > 0)
    return torch.where(straddle, torch.zeros_like(mid), mid)


def _split_towards_end(a: torch.Tensor, b: torch.Tensor, end: torch.Tensor, upper_end: bool) -> torch.Tensor:
    """Return a bisection point of [a, b] that is geometric in the distance to a finite ``end``.

    This is `_split_point` applied to the distances from ``end``, so roots
    within a few ulps of a finite bound (such as 1 − 1e-14 for a logit) are
    reached in a few dozen steps. Where ``end`` is infinite it falls back to
    `_split_point`.
    """
    finite = torch.isfinite(end)
    safe_end = torch.where(finite, end, torch.zeros_like(end))
    if upper_end:
        near, far = safe_end - b, safe_end - a
    else:
        near, far = a - safe_end, b - safe_end
    distance = _split_point(near.clamp_min(0.0), far.clamp_min(0.0))
    point = safe_end - distance if upper_end else safe_end + distance
    inside = finite & (point > a) & (point < b)
    return torch.where(inside, point, _split_point(a, b))


def _solve(
    fn: TensorFn,
    grad_fn: TensorFn,
    target: torch.Tensor,
    lower: torch.Tensor,
    upper: torch.Tensor,
    tol: float,
    maxiter: int,
) -> tuple[RootResult, torch.Tensor, torch.Tensor]:
    """Run the solve; return the result and the bracket ends after rounding inwards."""
    lower, upper = _round_inward(fn, lower, upper)
    a, b = _expand_bracket(fn, target, lower, upper)
    fa, fb = fn(a), fn(b)
    # An increasing fn has fn(a) ≤ fn(m) ≤ fn(b) at the first split point m too;
    # this catches fn = 3t² on [−1, 1], whose end values are equal.
    middle = _split_point(a, b)
    f_middle = fn(middle)
    decreasing = (fa > fb) | (fa > f_middle) | (f_middle > fb)
    if bool(decreasing.any()):
        index = tuple(decreasing.nonzero()[0].tolist())
        raise ValueError(
            f"fn is not increasing on the bracket: fn at {float(a[index]):.17g}, "
            f"{float(middle[index]):.17g} and {float(b[index]):.17g} is {float(fa[index]):.6g}, "
            f"{float(f_middle[index]):.6g} and {float(fb[index]):.6g}; pass an increasing fn "
            "(the derivative of a convex function)"
        )

    # Where an infinite bound could not be replaced by a finite one (fn has
    # not crossed target even at the largest float), no root is representable.
    unbounded = (torch.isinf(lower) & (fa > target)) | (torch.isinf(upper) & (fb < target))

    # Target outside the range on the bracket: the minimizer is an end.
    at_low = fa >= target
    at_up = fb <= target
    done = at_low | at_up | (a == b)
    x = torch.where(at_low, a, torch.where(at_up, b, _split_point(a, b)))

    tiny = torch.finfo(target.dtype).tiny
    last_step = b - a
    older_step = b - a
    iterations = 0
    while not bool(done.all()) and iterations < maxiter:
        iterations += 1
        fx = fn(x)
        exact = fx == target
        a = torch.where(~done & (fx < target), x, a)
        b = torch.where(~done & (fx > target), x, b)
        done = done | exact

        # Newton step, accepted inside the bracket when it is at most half the
        # step before last, so that the iteration converges at least linearly
        # (the rule of rtsafe in Numerical Recipes).
        slope = grad_fn(x)
        step = (fx - target) / slope
        newton = x - step
        ok = torch.isfinite(newton) & (newton >= a) & (newton <= b) & (step.abs() <= 0.5 * older_step.abs())
        # An overflowing slope gives a zero step away from the root, which would stall.
        ok = ok & torch.isfinite(slope) & (step != 0)
        # Bisection alternates between geometric splits towards the lower and
        # the upper bound, so roots near either finite end are found quickly.
        split = _split_towards_end(a, b, upper if iterations % 2 else lower, upper_end=bool(iterations % 2))
        x_new = torch.where(ok, newton, split)
        older_step = last_step
        last_step = x_new - x

        scale = torch.maximum(x_new.abs(), torch.full_like(x_new, tiny))
        # A small Newton step shows convergence only once fn changes sign just
        # beyond it: near a singular end Newton can crawl far from the root.
        # The probe point also tightens the bracket.
        small_step = ~done & ok & ((x_new - x).abs() <= tol * scale)
        if bool(small_step.any()):
            probe = x_new - torch.sign(step) * (2.0 * step.abs() + tol * scale)
            probe = torch.minimum(torch.maximum(probe, a), b)
            # Elsewhere the step may be infinite or NaN; probe at x_new, inside the bracket.
            probe = torch.where(small_step, probe, x_new)
            f_probe = fn(probe)
            crossed = (f_probe - target) * (fx - target) <= 0
            a = torch.where(small_step & (f_probe < target), torch.maximum(a, probe), a)
            b = torch.where(small_step & (f_probe > target), torch.minimum(b, probe), b)
            small_step = small_step & crossed
        # Brackets inside the subnormal range count as converged: their width
        # cannot shrink relative to the root any more.
        narrow = (b - a) <= torch.clamp_min(tol * x_new.abs(), 4.0 * tiny)
        x = torch.where(done, x, x_new)
        done = done | small_step | narrow

    # A bracket end can fit better than x once the bracket is a few ulps wide,
    # as next to an end where fn is infinite.
    interior = ~(at_low | at_up)
    fx, fa, fb = fn(x), fn(a), fn(b)
    gap_x, gap_a, gap_b = (fx - target).abs(), (fa - target).abs(), (fb - target).abs()
    use_a = interior & (gap_a < gap_x) & (gap_a <= gap_b)
    use_b = interior & ~use_a & (gap_b < gap_x)
    x = torch.where(use_a, a, torch.where(use_b, b, x))

    residual = _kkt_residual(fn(x), target, x, lower, upper)
    converged = bool(done.all()) and not bool(unbounded.any())
    return RootResult(root=x, iterations=iterations, residual=residual, converged=converged), lower, upper


def _kkt_residual(
    fx: torch.Tensor, target: torch.Tensor, x: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor
) -> float:
    """Return the max violation of the optimality condition of min F(t) − target·t on the bracket."""
    # fn(x) = target = ±inf at an end is exact, not inf − inf = NaN.
    gap = torch.where(fx == target, torch.zeros_like(fx), fx - target)
    violation = gap.abs()
    # At the upper end fn(upper) ≤ target is optimal, at the lower end fn(lower) ≥ target.
    violation = torch.where(x == upper, gap.clamp_min(0.0), violation)
    violation = torch.where(x == lower, (-gap).clamp_min(0.0), violation)
    violation = torch.where(torch.isnan(violation), torch.full_like(violation, math.inf), violation)
    if violation.numel() == 0:
        return 0.0
    return float(violation.max())


class _ImplicitRoot(torch.autograd.Function):
    """Attach d root / d target = 1 / fn'(root) to a root computed without grad.

    The backward pass evaluates fn' at the saved output, which autograd
    re-attaches to this node under ``create_graph=True``; with a
    differentiable ``grad_fn`` the backward is thus differentiable as well,
    giving d² root / d target² = −fn''(root) / fn'(root)³.
    """

    @staticmethod
    def forward(ctx, target, root, grad_fn, lower, upper):  # type: ignore[override]
        ctx.grad_fn = grad_fn
        out = root.clone()
        ctx.save_for_backward(out, lower, upper)
        return out

    @staticmethod
    def backward(ctx, grad_output):  # type: ignore[override]
        root, lower, upper = ctx.saved_tensors
        at_end = (root == lower) | (root == upper)
        # Evaluate fn' away from the ends, where it may be infinite or NaN.
        safe_root = torch.where(at_end, _inside_point(lower, upper), root)
        slope = ctx.grad_fn(safe_root)
        safe_slope = torch.where(at_end, torch.ones_like(slope), slope)
        grad_target = torch.where(at_end, torch.zeros_like(grad_output), grad_output / safe_slope)
        return grad_target, None, None, None, None


def _inside_point(lower: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
    """Return a point of [lower, upper] that is finite where the bracket has a finite end or is ℝ."""
    lower_safe = torch.where(torch.isfinite(lower), lower, upper - 1.0)
    upper_safe = torch.where(torch.isfinite(upper), upper, lower_safe + 1.0)
    lower_safe = torch.where(torch.isfinite(lower_safe), lower_safe, torch.zeros_like(lower_safe))
    upper_safe = torch.where(torch.isfinite(upper_safe), upper_safe, torch.zeros_like(upper_safe))
    return lower_safe + 0.5 * (upper_safe - lower_safe)
