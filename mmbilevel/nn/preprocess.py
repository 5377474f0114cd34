"""Map input data into the interior of an activation's domain.

A Bregman layer evaluates ρ⁻¹ = ∇φ at its input, which is only defined in the
interior of dom φ, so data must be moved there before the first layer.
"Bilevel Learning of Deep Representations" preprocesses images so that pixel
intensities lie in the open interval ]0, 1[. :func:`to_domain` generalizes
this rule to any Legendre function and any source range.
"""

from __future__ import annotations

import math

import torch

from mmbilevel.legendre import Legendre, get

__all__ = ["DEFAULT_MARGIN", "domain_target", "resolve_activation", "to_domain"]

DEFAULT_MARGIN = 1e-3


def resolve_activation(activation: str | Legendre) -> Legendre:
    """Return the Legendre function for a catalogue name or a ``Legendre`` object.

    Raises:
        ValueError: ``activation`` is an unknown name (the message lists the valid ones).
        TypeError: ``activation`` is neither a string nor a ``Legendre``.
    """
    if isinstance(activation, Legendre):
        return activation
    if isinstance(activation, str):
        return get(activation)
    raise TypeError(
        f"activation must be a catalogue name or a Legendre object, got {type(activation).__name__}"
    )


def domain_target(
    activation: str | Legendre,
    source: tuple[float, float] = (0.0, 1.0),
    margin: float = DEFAULT_MARGIN,
) -> tuple[float, float]:
    """Return the interval [a, b] inside int dom φ onto which ``source`` is mapped.

    The rule: take the source interval intersected with dom φ, then pull each
    end that is a finite end of dom φ inward by ``margin`` times the length of
    the interval. So data already inside the open domain is left unchanged,
    and pixels in [0, 1] go to [m, 1 − m] for the sigmoid (dom φ = [0, 1]), to
    [0, 1 − m] for tanh (dom φ = [−1, 1]) and stay in [0, 1] for arctan. When
    the source does not meet dom φ, the target is dom φ itself if bounded, or
    an interval of the source's length at the finite end otherwise.

    Raises:
        ValueError: ``source`` is not an increasing pair of finite numbers, or
            ``margin`` is not in [0, 0.5).
    """
    low, high = float(source[0]), float(source[1])
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise ValueError(f"source={source} must be finite with source[0] < source[1]")
    if not 0.0 <= margin < 0.5:
        raise ValueError(f"margin={margin} must lie in [0, 0.5)")

    phi = resolve_activation(activation)
    domain_low, domain_high = (float(v) for v in phi.domain)
    target_low, target_high = max(low, domain_low), min(high, domain_high)

    if target_low >= target_high:
        if math.isfinite(domain_low) and math.isfinite(domain_high):
            target_low, target_high = domain_low, domain_high
        elif math.isfinite(domain_low):
            target_low, target_high = domain_low, domain_low + (high - low)
        else:
            target_low, target_high = domain_high - (high - low), domain_high

    width = target_high - target_low
    if target_low == domain_low:
        target_low += margin * width
    if target_high == domain_high:
        target_high -= margin * width
    return target_low, target_high


def to_domain(
    x: torch.Tensor,
    activation: str | Legendre,
    *,
    source: tuple[float, float] = (0.0, 1.0),
    margin: float = DEFAULT_MARGIN,
) -> torch.Tensor:
    """Map data with values in ``source`` affinely into the interior of dom φ.

    Values are first clipped to ``source``, then mapped by the increasing
    affine map from ``source`` onto :func:`domain_target` (identity when that
    target equals the source). Every output is then a valid input of a
    Bregman layer with this activation.

    Args:
        x: data of any shape, floating point.
        activation: catalogue name or ``Legendre`` object.
        source: range of the data, [0, 1] for pixel intensities.
        margin: fraction of the target length kept free at each end of the
            interval that is also an end of dom φ.

    Returns:
        A tensor of the shape, dtype and device of ``x``.

    Example:
        >>> pixels = torch.tensor([0.0, 0.5, 1.0])
        >>> to_domain(pixels, "sigmoid", margin=0.01)
        tensor([0.0100, 0.5000, 0.9900])
    """
    low, high = float(source[0]), float(source[1])
    target_low, target_high = domain_target(activation, source, margin)
    clipped = x.clamp(low, high)
    if (target_low, target_high) == (low, high):
        return clipped
    scale = (target_high - target_low) / (high - low)
    return target_low + (clipped - low) * scale
