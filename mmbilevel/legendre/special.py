"""Special functions in torch for the Legendre catalogue.

- `dilog_unit`: the dilogarithm Li₂(w) = Σ_{k≥1} wᵏ/k² for w in [0, 1],
  from w and its complement 1 − w (both given accurately by the caller).
- `tan_half_pi_scaled` and `log_cos_half_pi_scaled`: tan and −log cos of
  (π/2)·s for s in [−1, 1], accurate up to the ends where cos vanishes.
"""

from __future__ import annotations

import math

import torch

__all__ = ["dilog_unit", "tan_half_pi_scaled", "log_cos_half_pi_scaled", "half_pi_minus"]

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
    centre_value = -torch.log(torch.cos(0.5 * math.pi * centre))
    end_value = -torch.log(torch.sin(0.5 * math.pi * gap))
    return torch.where(near_end, end_value, centre_value)
