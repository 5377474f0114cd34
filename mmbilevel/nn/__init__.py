"""Networks built from the MM layers of "Bilevel Learning of Deep Representations".

Layers: ``StandardLayer`` ρ(Wz + b), ``EuclideanLayer`` ρ(z + Wz + b) and
``BregmanLayer`` ρ(ρ⁻¹(z) + Wz + b), registered in ``VARIANTS``. Models:
``FFNN`` (hidden layers and a linear head) and ``ConvFFNN`` (a small CNN
followed by an FFNN head). ``to_domain`` maps data into an activation's domain.
"""

from mmbilevel.nn.conv import ConvFFNN
from mmbilevel.nn.layers import (
    INITS,
    VARIANTS,
    BregmanLayer,
    EuclideanLayer,
    FeedForwardLayer,
    StandardLayer,
)
from mmbilevel.nn.models import FFNN
from mmbilevel.nn.preprocess import DEFAULT_MARGIN, domain_target, resolve_activation, to_domain
from mmbilevel.nn.skip import SKIP_MODES, SkipMap, resampling_matrix

__all__ = [
    "DEFAULT_MARGIN",
    "INITS",
    "SKIP_MODES",
    "VARIANTS",
    "BregmanLayer",
    "ConvFFNN",
    "EuclideanLayer",
    "FFNN",
    "FeedForwardLayer",
    "SkipMap",
    "StandardLayer",
    "domain_target",
    "resampling_matrix",
    "resolve_activation",
    "to_domain",
]
