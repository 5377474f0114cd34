r"""Skip maps S for Euclidean and Bregman layers that change the width.

A Euclidean layer ρ(z + Wz + b) and a Bregman layer ρ(ρ⁻¹(z) + Wz + b) add
their input z to the pre-activation, which needs in_features = out_features.
When the widths differ, the skip term uses S z with S an
out_features × in_features matrix whose rows lie on the probability simplex
(Sᵢⱼ ≥ 0, Σⱼ Sᵢⱼ = 1). Each entry of S z is then a convex combination of
entries of z, so S z stays in the interval dom φ whenever z does, and
ρ⁻¹(S z) is defined.

Two maps are available:

- ``"fixed"`` (the default): the area-resampling matrix. Split [0, 1] into
  in_features equal input cells Jⱼ and out_features equal output cells Iᵢ;
  Sᵢⱼ = |Iᵢ ∩ Jⱼ| / |Iᵢ|. Narrowing averages neighbouring units, widening
  repeats them, and equal widths give the identity. It is a buffer, not
  learned.
- ``"learned"``: S = softmax(L) row by row, with L an unconstrained
  ``Parameter``, so S stays row-stochastic under any optimizer step without
  a projection. L starts at log((1 − ε)S_fixed + ε/in_features) with
  ε = 0.05: the learned map starts near the fixed one, and no entry starts
  at zero, where softmax gradients vanish.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["SKIP_MODES", "SkipMap", "resampling_matrix"]

SKIP_MODES = ("fixed", "learned")
LEARNED_MIXING = 0.05


def resampling_matrix(
    out_features: int,
    in_features: int,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Return the out_features × in_features area-resampling matrix, row-stochastic.

    Sᵢⱼ = |Iᵢ ∩ Jⱼ| / |Iᵢ| with Iᵢ = [i/out, (i+1)/out] and Jⱼ = [j/in, (j+1)/in].
    The overlaps are computed in integers (cells scaled by out·in), so the
    rows sum to 1 up to one rounding of the final division.
    """
    rows = torch.arange(out_features, device=device).unsqueeze(1)
    cols = torch.arange(in_features, device=device).unsqueeze(0)
    start = torch.maximum(rows * in_features, cols * out_features)
    stop = torch.minimum((rows + 1) * in_features, (cols + 1) * out_features)
    overlap = (stop - start).clamp_min(0)
    return overlap.to(dtype or torch.get_default_dtype()) / in_features


class SkipMap(nn.Module):
    r"""Row-stochastic map z ↦ S z from in_features to out_features units.

    Args:
        in_features: width of the input z.
        out_features: width of the output S z.
        mode: ``"fixed"`` (area resampling, a buffer) or ``"learned"``
            (row-wise softmax of a Parameter); see the module docstring.
        device: device of the buffer or parameter.
        dtype: floating dtype of the buffer or parameter.

    Shape:
        - Input: (*, in_features).
        - Output: (*, out_features).

    Attributes:
        logits: the Parameter L with S = softmax(L) (``"learned"`` only).

    Example:
        >>> skip = SkipMap(4, 2)
        >>> skip(torch.tensor([0.1, 0.3, 0.5, 0.7]))
        tensor([0.2000, 0.6000])
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        mode: str = "fixed",
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if mode not in SKIP_MODES:
            raise ValueError(f"unknown skip mode {mode!r}; expected one of {list(SKIP_MODES)}")
        self.in_features = in_features
        self.out_features = out_features
        self.mode = mode
        fixed = resampling_matrix(out_features, in_features, device=device, dtype=dtype)
        if mode == "fixed":
            self.register_buffer("fixed_matrix", fixed)
            self.logits = None
        else:
            self.logits = nn.Parameter(torch.empty_like(fixed))
            self.reset_parameters()

    def reset_parameters(self) -> None:
        """Set the learned logits to log((1 − ε)S_fixed + ε/in_features); no-op when fixed."""
        if self.logits is None:
            return
        with torch.no_grad():
            fixed = resampling_matrix(
                self.out_features, self.in_features, device=self.logits.device, dtype=self.logits.dtype
            )
            mixed = (1.0 - LEARNED_MIXING) * fixed + LEARNED_MIXING / self.in_features
            self.logits.copy_(mixed.log())

    @property
    def matrix(self) -> torch.Tensor:
        """The current matrix S, of shape (out_features, in_features)."""
        if self.logits is None:
            return self.fixed_matrix
        return torch.softmax(self.logits, dim=-1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.linear(z, self.matrix)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, mode={self.mode!r}"

