"""Truncated backpropagation: differentiate through the last K of L iterations only.

The first L − K iterations run without autograd and their output is treated as
a constant, so the gradient is that of z⁽ᴸ⁾ = T_{L−1} ∘ … ∘ T_{L−K}(z⁽ᴸ⁻ᴷ⁾)
with z⁽ᴸ⁻ᴷ⁾ frozen. The dropped terms of the chain rule carry products of more
than K Jacobians ∂T/∂z, so for a contraction with constant q the error of this
gradient is O(qᴷ). Memory is proportional to K instead of L.
"""

from __future__ import annotations

import torch

from mmbilevel.hypergrad.unrolled import Step, run_iterations

__all__ = ["truncated_solution"]


def truncated_solution(step: Step, x: torch.Tensor, depth: int, truncate: int) -> torch.Tensor:
    """Return z⁽ᴸ⁾ with only the last ``truncate`` iterations recorded by autograd.

    Args:
        step: the MM map (z, l) ↦ T_l(z).
        x: starting point z⁽⁰⁾.
        depth: number of iterations L ≥ 1.
        truncate: number K of recorded iterations, 1 ≤ K ≤ L.

    Returns:
        z⁽ᴸ⁾, attached to the graph of the last K iterations only.
    """
    if depth < 1:
        raise ValueError(f"depth must be at least 1, got {depth}")
    if not 1 <= truncate <= depth:
        raise ValueError(
            f"truncate must lie in [1, depth={depth}], got {truncate}; pass the number of "
            "final iterations to differentiate through"
        )
    with torch.no_grad():
        z = run_iterations(step, x, 0, depth - truncate).detach()
    return run_iterations(step, z, depth - truncate, depth)
