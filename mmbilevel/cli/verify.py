"""``mmbilevel verify-table1``: check the formulas of Table 1 and Examples 3.1–3.2.

Prints a table of verdicts (✓/✗ per row and property) with the failures,
their counter-examples and corrected formulas, or with ``--json`` a JSON list
with one object per row. The exit status is 0 when every verdict equals the
stored expected one, whether the printed formula passes or not, and 1 when a
verdict changed. With ``--strict`` it is also 1 when a printed row fails a check.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from mmbilevel.symbolic import format_table, row_names, verdict_mismatches, verify_table1

__all__ = ["add_arguments", "run"]

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``verify-table1`` to its parser."""
    parser.add_argument(
        "--json",
        action="store_true",
        help="print a JSON list with one object per row instead of the table",
    )
    parser.add_argument(
        "--row",
        action="append",
        choices=row_names(),
        metavar="NAME",
        help=f"verify only this row; repeat for several (choices: {', '.join(row_names())})",
    )
    parser.add_argument(
        "--strict",
        action="store_true",
        help="exit with status 1 when any printed row fails a check",
    )


def run(args: argparse.Namespace) -> int:
    """Verify the rows, print the result and return the exit status."""
    reports = verify_table1(args.row)

    if args.json:
        json.dump([report.to_dict() for report in reports], sys.stdout, indent=2, ensure_ascii=False)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(format_table(reports, unicode=_can_print_unicode()))

    mismatches = verdict_mismatches(reports)
    for mismatch in mismatches:
        logger.error("verdict differs from the stored expected one: %s", mismatch)
    if mismatches:
        return 1
    if args.strict and not all(report.holds for report in reports):
        return 1
    return 0


def _can_print_unicode() -> bool:
    encoding = getattr(sys.stdout, "encoding", None) or "ascii"
    try:
        "✓✗φ′ρ⁻¹".encode(encoding)
    except (UnicodeEncodeError, LookupError):
        return False
    return True
