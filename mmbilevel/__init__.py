"""mmbilevel: bilevel learning of deep representations by majorization-minimization.

The package follows the layers of the method in "Bilevel Learning of Deep
Representations" (Frecon, Salzo, Pontil, 2021):

- core math, which imports nothing from the network side: ``legendre`` (Legendre
  functions and activations), ``prox`` (regularizers and prox operators),
  ``majorants``, ``mm`` (the MM solver), ``hypergrad`` and ``symbolic``;
- networks built on the core: ``nn``;
- data, training and experiments: ``data``, ``train``, ``experiments``, ``cli``.
"""

import logging

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())
