"""Verdicts of every row of Table 1 and Examples 3.1–3.2, as data and as text.

:func:`verify_table1` runs the checks of :mod:`mmbilevel.symbolic.checks` on
the printed formulas of "Bilevel Learning of Deep Representations" and on our
corrected rows, once per process (the results are cached).
:func:`format_table` renders the verdicts for people and
:meth:`RowReport.to_dict` for JSON.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

from mmbilevel.symbolic.checks import CheckResult, run_legendre_checks
from mmbilevel.symbolic.prox_checks import run_prox_checks
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
    "RowReport",
    "verify_row",
    "verify_table1",
    "verdict_mismatches",
    "format_table",
    "CHECK_LABELS",
]

logger = logging.getLogger(__name__)

# Column headings of the text table, one per check.
CHECK_LABELS: Mapping[str, str] = {
    "real_valued": "φ real",
    "gradient_is_inverse": "φ′=ρ⁻¹",
    "rho_of_rho_inverse": "ρ∘ρ⁻¹",
    "rho_inverse_of_rho": "ρ⁻¹∘ρ",
    "strictly_convex": "φ″>0",
    "strongly_convex": "strong",
    "essentially_smooth": "ess.sm.",
    "gradient_onto": "φ′ onto",
    "domain_matches_range": "I=ρ(ℝ)",
    "conjugate": "φ*′=ρ",
    "bregman_projection": "proj",
    "prox_identity": "prox_g=ρ",
    "stationarity": "stationary",
    "range_in_domain": "ρ(ℝ)⊆dom g",
    "g_nonconvex": "g nonconvex",
}


@dataclass(frozen=True)
class RowReport:
    """Verdicts of one row.

    Attributes:
        row: Catalogue name of the row, e.g. ``"sin"`` or ``"example_3_1_isru"``.
        source: Where the formulas are printed.
        kind: ``"legendre"`` for a row of Table 1, ``"prox_example"`` for an example.
        printed: The formulas as printed, in Unicode.
        checks: One result per property, in report order.
        expected: The stored expected verdicts of the printed formulas.
        corrections: Corrected formulas in Unicode; empty when the row holds.
        correction_note: Why the correction is needed.
        corrected_checks: Verdicts of the corrected row under the same checks,
            or None when there is no corrected row to check.
        corrected_expected: Stored expected verdicts of the corrected row.
    """

    row: str
    source: str
    kind: str
    printed: Mapping[str, str]
    checks: tuple[CheckResult, ...]
    expected: Mapping[str, bool]
    corrections: Mapping[str, str]
    correction_note: str
    corrected_checks: tuple[CheckResult, ...] | None
    corrected_expected: Mapping[str, bool] | None

    @property
    def holds(self) -> bool:
        """Whether every check passes for the printed formulas."""
        return all(check.holds for check in self.checks)

    @property
    def verdicts(self) -> dict[str, bool]:
        """Property name → verdict for the printed formulas."""
        return {check.name: check.holds for check in self.checks}

    @property
    def corrected_verdicts(self) -> dict[str, bool] | None:
        """Property name → verdict for the corrected row, or None."""
        if self.corrected_checks is None:
            return None
        return {check.name: check.holds for check in self.corrected_checks}

    def check(self, name: str) -> CheckResult:
        """Return the result of the named check of the printed formulas."""
        for check in self.checks:
            if check.name == name:
                return check
        raise KeyError(f"row {self.row!r} has no check {name!r}; it has {list(self.verdicts)}")

    def to_dict(self) -> dict[str, object]:
        """Return the report as JSON-ready data."""
        corrected = self.corrected_verdicts
        return {
            "row": self.row,
            "source": self.source,
            "kind": self.kind,
            "holds": self.holds,
            "checks": self.verdicts,
            "methods": {check.name: check.method for check in self.checks},
            "notes": {check.name: check.note for check in self.checks},
            "counterexamples": {
                check.name: dict(check.counterexample)
                for check in self.checks
                if check.counterexample is not None
            },
            "printed": dict(self.printed),
            "corrections": dict(self.corrections),
            "correction_note": self.correction_note,
            "corrected_holds": None if corrected is None else all(corrected.values()),
            "corrected_checks": corrected,
            "expected_checks": dict(self.expected),
        }


def verify_row(name: str) -> RowReport:
    """Run every check on the printed row ``name`` and on its correction, if any.

    The name is case-insensitive, and each row is verified once per process.

    Raises:
        ValueError: ``name`` is not a row of Table 1 or an example.
    """
    return _verify_row_cached(name.lower())


@lru_cache(maxsize=None)
def _verify_row_cached(key: str) -> RowReport:
    name = key
    legendre = {row.name: row for row in TABLE1_ROWS}
    examples = {example.name: example for example in PROX_EXAMPLES}
    if key not in legendre and key not in examples:
        raise ValueError(f"unknown row {name!r}; expected one of {', '.join(row_names())}")

    start = time.perf_counter()
    correction = CORRECTIONS.get(key)
    if key in legendre:
        row = legendre[key]
        kind, source, printed = "legendre", row.source, row.printed
        checks = run_legendre_checks(row)
    else:
        example = examples[key]
        kind, source, printed = "prox_example", example.source, example.printed
        checks = run_prox_checks(example)

    corrected_checks = None
    if correction is not None and correction.row is not None:
        corrected_checks = run_legendre_checks(correction.row)
    logger.debug("verified row %s in %.2f s", key, time.perf_counter() - start)

    return RowReport(
        row=key,
        source=source,
        kind=kind,
        printed=printed,
        checks=checks,
        expected=EXPECTED_VERDICTS[key],
        corrections=dict(correction.formulas) if correction else {},
        correction_note=correction.explanation if correction else "",
        corrected_checks=corrected_checks,
        corrected_expected=EXPECTED_CORRECTED_VERDICTS.get(key),
    )


def verify_table1(names: Sequence[str] | None = None) -> tuple[RowReport, ...]:
    """Verify the named rows (default: all of Table 1, then the examples), in order."""
    return tuple(verify_row(name) for name in (names or row_names()))


def verdict_mismatches(reports: Sequence[RowReport]) -> list[str]:
    """List every verdict that differs from the stored expected one, as sentences."""
    mismatches = []
    for report in reports:
        pairs = [("printed", report.verdicts, report.expected)]
        if report.corrected_expected is not None:
            pairs.append(("corrected", report.corrected_verdicts or {}, report.corrected_expected))
        for label, found, expected in pairs:
            for check, verdict in expected.items():
                if found.get(check) != verdict:
                    mismatches.append(
                        f"{report.row} ({label}): {check} is {found.get(check)}, expected {verdict}"
                    )
    return mismatches


def format_table(reports: Sequence[RowReport], unicode: bool = True) -> str:
    """Render the verdicts as text: a grid of ✓/✗ per row and check, then the failures.

    Args:
        reports: Row reports from :func:`verify_table1`.
        unicode: Mark verdicts with ✓ and ✗; with False, with ``yes`` and ``NO``.
    """
    mark = {True: "✓", False: "✗"} if unicode else {True: "yes", False: "NO"}
    sections = []
    for kind, columns, title in (
        ("legendre", LEGENDRE_CHECKS, "Table 1: Legendre functions as printed"),
        ("prox_example", PROX_CHECKS, "Examples 3.1 and 3.2: activations as Euclidean prox, τ = 1"),
    ):
        rows = [r for r in reports if r.kind == kind]
        if rows:
            sections.append(_grid(title, rows, columns, mark))
    details = [_row_details(report, mark) for report in reports if not report.holds]
    if details:
        sections.append("Failures and corrections\n\n" + "\n\n".join(details))
    return "\n\n".join(sections) + "\n"


def _grid(
    title: str, reports: Sequence[RowReport], columns: Sequence[str], mark: Mapping[bool, str]
) -> str:
    headers = ["row", *(CHECK_LABELS[c] for c in columns), "holds"]
    body = [
        [report.row, *(mark[report.verdicts[c]] for c in columns), mark[report.holds]]
        for report in reports
    ]
    widths = [max(len(line[i]) for line in [headers, *body]) for i in range(len(headers))]
    lines = [title, "  ".join(h.ljust(w) for h, w in zip(headers, widths))]
    lines += ["  ".join(cell.ljust(w) for cell, w in zip(line, widths)) for line in body]
    return "\n".join(line.rstrip() for line in lines)


def _row_details(report: RowReport, mark: Mapping[bool, str]) -> str:
    lines = [f"{report.row} ({report.source})"]
    for check in report.checks:
        if check.holds:
            continue
        where = ""
        if check.counterexample:
            point = ", ".join(f"{k} = {v:.6g}" for k, v in check.counterexample.items())
            where = f" [counter-example: {point}]"
        lines.append(f"  {mark[False]} {check.name} ({check.method}): {check.note}{where}")
    if report.corrections:
        lines.append(f"  correction: {report.correction_note}")
        lines += [f"    {part}: {formula}" for part, formula in report.corrections.items()]
    corrected = report.corrected_verdicts
    if corrected is not None:
        failing = [name for name, ok in corrected.items() if not ok]
        summary = "every check passes" if not failing else "still fails " + ", ".join(failing)
        lines.append(f"  corrected row: {summary}")
    return "\n".join(lines)
