"""Reverse-mode differentiation through L iterations of an iterative map.

The iterates z⁽ˡ⁺¹⁾ = T_l(z⁽ˡ⁾) are recorded by autograd, so backpropagation
costs memory proportional to L. With checkpointing, only the iterate at the
start of each segment is kept, and a segment's iterations are recomputed
during the backward pass (``torch.utils.checkpoint``). This costs one extra
forward pass, and memory becomes proportional to the number of segments plus
the length of one segment.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch.utils.checkpoint import checkpoint

__all__ = ["Step", "run_iterations", "unrolled_solution"]

Step = Callable[[torch.Tensor, int], torch.Tensor]


def run_iterations(step: Step, z: torch.Tensor, start: int, stop: int) -> torch.Tensor:
    """Apply z ← T_l(z) for l = start, …, stop − 1 and return the last iterate."""
    for iteration in range(start, stop):
        z = step(z, iteration)
    return z


def _segment_length(depth: int, segments: int | None) -> int:
    if segments is None:
        segments = max(1, math.isqrt(depth))
    if segments < 1:
        raise ValueError(f"checkpoint segments must be at least 1, got {segments}")
    return max(1, math.ceil(depth / segments))


def unrolled_solution(
    step: Step,
    x: torch.Tensor,
    depth: int,
    *,
    checkpointing: bool = False,
    segments: int | None = None,
) -> torch.Tensor:
    """Return z⁽ᴸ⁾ from z⁽⁰⁾ = x with the whole computation recorded for backpropagation.

    Args:
        step: the MM map (z, l) ↦ T_l(z).
        x: starting point z⁽⁰⁾.
        depth: number of iterations L ≥ 1.
        checkpointing: recompute each segment during backward instead of
            storing its intermediate results.
        segments: number of checkpoint segments; ⌊√L⌋ by default, which makes
            the stored iterates and one segment's graph both O(√L).

    Returns:
        z⁽ᴸ⁾, attached to the graph of every tensor that ``step`` reads.
    """
    if depth < 1:
        raise ValueError(f"depth must be at least 1, got {depth}; an unrolled solve needs iterations")
    if not checkpointing:
        return run_iterations(step, x, 0, depth)

    length = _segment_length(depth, segments)
    z = x
    for start in range(0, depth, length):
        stop = min(start + length, depth)
        z = checkpoint(run_iterations, step, z, start, stop, use_reentrant=False)
    return z
