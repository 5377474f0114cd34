"""Legendre functions φ whose Bregman projections are activation functions.

For a separable Legendre function φ on an interval I, the activation is the
Bregman projection ρ = ∇φ* onto I and its inverse is ρ⁻¹ = ∇φ ("Bilevel
Learning of Deep Representations", Frecon, Salzo, Pontil, 2021, Table 1 and
Proposition 4.3).

Example:
    >>> import torch
    >>> from mmbilevel import legendre
    >>> phi = legendre.get("sigmoid")
    >>> y = torch.tensor([-2.0, 0.0, 3.0], dtype=torch.float64)
    >>> torch.allclose(phi.grad(phi.grad_conjugate(y)), y)
    True
"""

from __future__ import annotations

from mmbilevel.legendre.base import Legendre
from mmbilevel.legendre.catalogue import (
    ISRU,
    Arcsinh,
    Arctan,
    Elliot,
    Euclidean,
    Log,
    ScaledArctan,
    Sigmoid,
    Sin,
    Softplus,
    Tanh,
    available,
    get,
)
from mmbilevel.legendre.sympy_ import SympyLegendre, from_sympy

__all__ = [
    "Legendre",
    "SympyLegendre",
    "get",
    "available",
    "from_sympy",
    "Euclidean",
    "ISRU",
    "Sigmoid",
    "Softplus",
    "Arctan",
    "Tanh",
    "Sin",
    "Arcsinh",
    "ScaledArctan",
    "Elliot",
    "Log",
]
