"""The runnable example solves its lower-level problem to a critical point."""

from __future__ import annotations

import re
import runpy
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "custom_mm.py"


def test_custom_mm_example_reaches_critical_point(capsys):
    runpy.run_path(str(EXAMPLE), run_name="__main__")
    output = capsys.readouterr().out
    assert "converged: True" in output
    residual = float(re.search(r"critical-point residual: (\S+)", output).group(1))
    # The run stops once every step norm is below 1e-8; the projected
    # gradient residual is then of the same order.
    assert residual < 1e-6
