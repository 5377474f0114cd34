"""Independent symbolic and numeric verification of Table 1 and Examples 3.1–3.2.

The formulas of "Bilevel Learning of Deep Representations" (Frecon, Salzo,
Pontil, 2021) are stored as printed (:mod:`~mmbilevel.symbolic.table1`),
checked property by property with sympy, mpmath and scipy
(:mod:`~mmbilevel.symbolic.checks`), and reported with counter-examples and
corrected formulas (:mod:`~mmbilevel.symbolic.report`). This package uses no
torch and does not import :mod:`mmbilevel.legendre`, so it checks the printed
formulas independently of the implementation.

Example:
    >>> from mmbilevel.symbolic import verify_row
    >>> verify_row("sigmoid").holds
    True
"""

from __future__ import annotations

from mmbilevel.symbolic.checks import CheckResult
from mmbilevel.symbolic.report import (
    RowReport,
    format_table,
    verdict_mismatches,
    verify_row,
    verify_table1,
)
from mmbilevel.symbolic.table1 import (
    CORRECTIONS,
    EXPECTED_CORRECTED_VERDICTS,
    EXPECTED_VERDICTS,
    LEGENDRE_CHECKS,
    PROX_CHECKS,
    PROX_EXAMPLES,
    TABLE1_ROWS,
    row_names,
)

__all__ = [
    "CheckResult",
    "RowReport",
    "format_table",
    "verdict_mismatches",
    "verify_row",
    "verify_table1",
    "CORRECTIONS",
    "EXPECTED_CORRECTED_VERDICTS",
    "EXPECTED_VERDICTS",
    "LEGENDRE_CHECKS",
    "PROX_CHECKS",
    "PROX_EXAMPLES",
    "TABLE1_ROWS",
    "row_names",
]
