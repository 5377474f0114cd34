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
    """Compute the interval [a, b] inside int dom φ onto which ``source`` is mapped.

    The rule: take the source interval intersected with dom φ, then pull each
    end that is a finite end of dom φ inward by ``margin`` times the length of
    the interval. So data already inside the open domain is left unchanged,
    and pixels in [0, 1] go to [m, 1 − m] for the sigmoid (dom φ = [0, 1]), to
    [0, 1 − m] for tanh (dom φ = [−1, 1]) and stay in [0, 1] for arctan. When
    the source does not meet dom φ, the target is dom φ itself if bounded, or
    an interval of the source's length at the finite end otherwise.

    Each pulled end is a float64 number strictly inside dom φ: when
    ``margin`` times the length is below the float64 spacing at that end, the
    end is the nearest float64 number inside dom φ.

    Raises:
        ValueError: ``source`` is not an increasing pair of finite numbers, or
            ``margin`` is not in the open interval (0, 0.5).
    """
    low, high = float(source[0]), float(source[1])
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise ValueError(f"source={source} must be finite with source[0] < source[1]")
    if not 0.0 < margin < 0.5:
        raise ValueError(
            f"margin={margin} is invalid: expected a fraction in the open interval (0, 0.5). "
            f"Pass a small positive margin such as the default {DEFAULT_MARGIN}."
        )

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
        target_low = max(target_low + margin * width, math.nextafter(domain_low, math.inf))
    if target_high == domain_high:
        target_high = min(target_high - margin * width, math.nextafter(domain_high, -math.inf))
    return target_low, target_high


def _interior_bounds(
    phi: Legendre, dtype: torch.dtype, device: torch.device
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Return the outermost ``dtype`` numbers strictly inside each finite end of dom φ.

    An end rounded to ``dtype`` may land on the end or outside it (π/2 in
    float32 is above π/2), so the bound is one ulp inward from the rounded
    end. It is then strictly inside dom φ both as an exact number and when
    compared with the end in ``dtype``. An infinite end gives ``None``.
    """
    bounds: list[torch.Tensor | None] = []
    for end, inward in ((float(phi.domain[0]), math.inf), (float(phi.domain[1]), -math.inf)):
        if not math.isfinite(end):
            bounds.append(None)
            continue
        rounded = torch.tensor(end, dtype=dtype, device=device)
        bounds.append(torch.nextafter(rounded, torch.tensor(inward, dtype=dtype, device=device)))
    return bounds[0], bounds[1]


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
    target equals the source). Rounding in the dtype of ``x`` can put a mapped
    value on a finite end of dom φ: for instance, 1 − 10⁻⁹ is 1.0 in float32.
    Such values are moved one ulp inward from that end rounded to the dtype.

    Guarantee: for floating-point ``x`` without NaN, every output ``y``
    satisfies a < y < b for dom φ = [a, b], both as an exact number and when
    compared in the dtype of ``x``. So ∇φ(y) = ρ⁻¹(y) is finite and ``y`` is a
    valid input of a Bregman layer with this activation. The map stays
    nondecreasing. It is affine except where the ulp nudge applies.

    Args:
        x: data of any shape, floating point.
        activation: catalogue name or ``Legendre`` object.
        source: range of the data, [0, 1] for pixel intensities.
        margin: fraction of the target length kept free at each end of the
            interval that is also an end of dom φ, in the open interval (0, 0.5).

    Returns:
        A tensor of the shape, dtype and device of ``x``.

    Raises:
        ValueError: ``margin`` or ``source`` is invalid (see :func:`domain_target`).

    Example:
        >>> pixels = torch.tensor([0.0, 0.5, 1.0])
        >>> to_domain(pixels, "sigmoid", margin=0.01)
        tensor([0.0100, 0.5000, 0.9900])
    """
    phi = resolve_activation(activation)
    low, high = float(source[0]), float(source[1])
    target_low, target_high = domain_target(phi, source, margin)

    clipped = x.clamp(low, high)
    if (target_low, target_high) == (low, high):
        mapped = clipped
    else:
        scale = (target_high - target_low) / (high - low)
        mapped = target_low + (clipped - low) * scale

    if not mapped.is_floating_point():
        return mapped
    lower, upper = _interior_bounds(phi, mapped.dtype, mapped.device)
    if lower is None and upper is None:
        return mapped
    return mapped.clamp(min=lower, max=upper)
