"""Argument types shared by the subcommands: each parses one option value.

Each function raises ``argparse.ArgumentTypeError`` with the offending text
and the expected form, which argparse turns into a usage error.
"""

from __future__ import annotations

import argparse
import math

__all__ = ["nonnegative_int", "positive_float", "positive_int"]


def _parse_int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid integer {text!r}") from None


def positive_int(text: str) -> int:
    """Parse an integer ≥ 1."""
    value = _parse_int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive integer; give a value >= 1")
    return value


def nonnegative_int(text: str) -> int:
    """Parse an integer ≥ 0."""
    value = _parse_int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative; give a value >= 0")
    return value


def positive_float(text: str) -> float:
    """Parse a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"{text} is not a finite number > 0")
    return value
