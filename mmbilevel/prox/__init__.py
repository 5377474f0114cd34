"""Regularizers g, their Euclidean prox and the Bregman prox of a Legendre function.

See :mod:`mmbilevel.prox.regularizers` and :mod:`mmbilevel.prox.bregman`.
"""

from __future__ import annotations

from mmbilevel.prox.bregman import BregmanProxResult, bregman_prox
from mmbilevel.prox.regularizers import (
    L1,
    ArctanPenalty,
    ElasticNet,
    Indicator,
    ISRUPenalty,
    NonNegative,
    Regularizer,
    SquaredL2,
    Zero,
    check_step,
)

__all__ = [
    "Regularizer",
    "Zero",
    "Indicator",
    "NonNegative",
    "L1",
    "SquaredL2",
    "ElasticNet",
    "ISRUPenalty",
    "ArctanPenalty",
    "check_step",
    "BregmanProxResult",
    "bregman_prox",
]
