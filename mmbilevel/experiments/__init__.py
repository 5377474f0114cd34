"""Reproductions of the experiments of "Bilevel Learning of Deep Representations".

- :mod:`mmbilevel.experiments.two_spiral`: Figures 4, 5 and 6 on the
  two-spiral set, all realizations and variants trained as one stacked batch.
- :mod:`mmbilevel.experiments.table2`: the rows of Table 2 (test accuracy of
  FFNN and CNN models on MNIST, Fashion-MNIST and CIFAR-10).
- :mod:`mmbilevel.experiments.plotting`: the matplotlib figures (PNG).
- :mod:`mmbilevel.experiments.errors`: :class:`OutputFileError`, raised when
  the output of an earlier run cannot be read back.

The command line front end is ``mmbilevel reproduce``.
"""

from __future__ import annotations

from mmbilevel.experiments.errors import OutputFileError
from mmbilevel.experiments.table2 import PAPER_TABLE2, Table2Settings, run_table2

__all__ = ["PAPER_TABLE2", "OutputFileError", "Table2Settings", "run_table2"]
