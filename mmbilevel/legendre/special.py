"""Special functions in torch for the Legendre catalogue.

- Small-argument forms (`expm1_minus` and its relatives) that keep full
  relative accuracy where the direct formula cancels.

- `dilog_unit`: the dilogarithm Li₂(w) = Σ_{k≥1} wᵏ/k² for w in [0, 1],
  from w and its complement 1 − w (both given accurately by the caller).
- `tan_half_pi_scaled` and `log_cos_half_pi_scaled`: tan and −log cos of
  (π/2)·s for s in [−1, 1], accurate up to the ends where cos vanishes.
"""

from __future__ import annotations

import math

import torch

__all__ = [
    "dilog_unit",
    "tan_half_pi_scaled",
    "log_cos_half_pi_scaled",
    "half_pi_minus",
    "expm1_minus",
    "minus_log1p_minus",
    "minus_log1p",
    "xlog1p_minus",
]

# Terms of the power series kept on [0, 1/2]: 2⁻⁵⁵/55² < 1e-20, below the
# float64 rounding of Li₂ on that interval (Li₂(w) ≥ w).
_SERIES_TERMS = 55
_PI2_6 = math.pi**2 / 6.0
# π/2 − float64(π/2), from the digits of π.
_HALF_PI_FLOAT64_ERROR = 6.123233995736766e-17


def _dilog_series(w: torch.Tensor) -> torch.Tensor:
    """Sum Σ_{k=1}^{55} wᵏ/k² by Horner's rule; accurate for 0 ≤ w ≤ 1/2."""
    total = torch.zeros_like(w)
    for k in range(_SERIES_TERMS, 0, -1):
        total = total * w + 1.0 / (k * k)
    return total * w


def dilog_unit(w: torch.Tensor, w_complement: torch.Tensor, log_w: torch.Tensor, log_complement: torch.Tensor) -> torch.Tensor:
    """Evaluate Li₂(w) for w in [0, 1].

    Uses the power series for w ≤ 1/2 and Euler's reflection
    Li₂(w) = π²/6 − log(w)·log(1 − w) − Li₂(1 − w) above, so each branch
    sums the series at a point in [0, 1/2]. The caller passes 1 − w, log w
    and log(1 − w) computed from its own variables so that no precision is
    lost near w = 1 or w = 0.

    Args:
        w: points in [0, 1].
        w_complement: 1 − w.
        log_w: log w (−inf allowed at w = 0).
        log_complement: log(1 − w) (−inf allowed at w = 1).
    """
    low = w <= 0.5
    series_low = _dilog_series(torch.where(low, w, torch.zeros_like(w)))
    series_high = _dilog_series(torch.where(low, torch.zeros_like(w), w_complement))

    # log(w)·log(1 − w) is 0 at both ends, where one factor is 0 and the other −inf.
    at_end = (log_w == 0) | (log_complement == 0)
    safe_log_w = torch.where(at_end, torch.zeros_like(log_w), log_w)
    safe_log_complement = torch.where(at_end, torch.zeros_like(log_complement), log_complement)
    reflected = _PI2_6 - safe_log_w * safe_log_complement - series_high
    return torch.where(low, series_low, reflected)


def half_pi_minus(a: torch.Tensor) -> torch.Tensor:
    """Return π/2 − a for a ≥ 0, clamped at 0, carrying the rounding error of π/2 in the dtype of ``a``.

    Near a = π/2, the difference is exact up to the dtype's rounding of the
    true π/2, which is added back as a second term (the two-term split of
    π/2 used in argument reduction).
    """
    high = float(torch.tensor(math.pi / 2, dtype=a.dtype))
    low = (math.pi / 2 - high) + _HALF_PI_FLOAT64_ERROR
    return ((high - a) + low).clamp_min(0.0)


def tan_half_pi_scaled(s: torch.Tensor) -> torch.Tensor:
    """Evaluate tan(π·s/2) for s in [−1, 1], as ±inf at s = ±1.

    For |s| > 1/2 it uses tan(π·s/2) = sign(s)/tan(π·(1 − |s|)/2), where
    1 − |s| is exact (Sterbenz), so the result is accurate to the last ulps
    before the ends.
    """
    magnitude = s.abs()
    near_end = magnitude > 0.5
    centre = torch.where(near_end, torch.zeros_like(s), s)
    gap = torch.where(near_end, 1.0 - magnitude, torch.ones_like(s))
    centre_value = torch.tan(0.5 * math.pi * centre)
    end_value = torch.sign(s) / torch.tan(0.5 * math.pi * gap)
    return torch.where(near_end, end_value, centre_value)


def log_cos_half_pi_scaled(s: torch.Tensor) -> torch.Tensor:
    """Evaluate −log cos(π·s/2) for s in [−1, 1], +inf at s = ±1.

    For |s| > 1/2 it uses cos(π·s/2) = sin(π·(1 − |s|)/2) with 1 − |s| exact.
    """
    magnitude = s.abs()
    near_end = magnitude > 0.5
    centre = torch.where(near_end, torch.zeros_like(s), s)
    gap = torch.where(near_end, 1.0 - magnitude, torch.ones_like(s))
    # −log cos u = −log(1 − sin²u)/2 keeps relative accuracy for small u.
    centre_value = -0.5 * torch.log1p(-torch.sin(0.5 * math.pi * centre) ** 2)
    end_value = -torch.log(torch.sin(0.5 * math.pi * gap))
    return torch.where(near_end, end_value, centre_value)


# Below this argument the small-argument functions sum their Taylor series,
# whose terms then shrink at least like 2⁻ᵏ; above it the direct formula has
# no cancellation (its result is at least a tenth of its largest term).
_SERIES_CUTOFF = 0.5


def _taylor(a: torch.Tensor, coefficients: list[float]) -> torch.Tensor:
    """Sum Σ_k c_k·aᵏ by Horner's rule, coefficients from k = 0."""
    total = torch.zeros_like(a)
    for coefficient in reversed(coefficients):
        total = total * a + coefficient
    return total


def _small_or_direct(a: torch.Tensor, coefficients: list[float], direct) -> torch.Tensor:
    small = a.abs() <= _SERIES_CUTOFF
    series = _taylor(torch.where(small, a, torch.zeros_like(a)), coefficients)
    # 0.75 is a safe point for every direct formula here, so the unused branch
    # has finite values and gradients.
    large = direct(torch.where(small, torch.full_like(a, 0.75), a))
    return torch.where(small, series, large)


_EXPM1_MINUS = [0.0, 0.0] + [1.0 / math.factorial(k) for k in range(2, 22)]
_NEG_LOG1P_NEG = [0.0, 0.0] + [1.0 / k for k in range(2, _SERIES_TERMS + 2)]
_LOG1P_DIFF = [0.0, 0.0] + [(-1.0) ** k / k for k in range(2, _SERIES_TERMS + 2)]
_ENTROPY_LOG1P = [0.0, 0.0] + [(-1.0) ** k / (k * (k - 1)) for k in range(2, _SERIES_TERMS + 2)]


def expm1_minus(a: torch.Tensor) -> torch.Tensor:
    """Evaluate eᵃ − 1 − a for a ≥ 0, accurate relative to the result near 0."""
    return _small_or_direct(a, _EXPM1_MINUS, lambda t: torch.expm1(t) - t)


def minus_log1p_minus(a: torch.Tensor) -> torch.Tensor:
    """Evaluate −a − log(1 − a) for 0 ≤ a ≤ 1, accurate relative to the result near 0."""
    return _small_or_direct(a, _NEG_LOG1P_NEG, lambda t: -t - torch.log1p(-t))


def minus_log1p(a: torch.Tensor) -> torch.Tensor:
    """Evaluate a − log(1 + a) for a ≥ 0, accurate relative to the result near 0."""
    return _small_or_direct(a, _LOG1P_DIFF, lambda t: t - torch.log1p(t))


def xlog1p_minus(a: torch.Tensor) -> torch.Tensor:
    """Evaluate (1 + a)·log(1 + a) − a for a ≥ −1 (the limit 1 at a = −1), accurate relative to the result near 0."""
    return _small_or_direct(a, _ENTROPY_LOG1P, lambda t: torch.special.xlog1py(1.0 + t, t) - t)
