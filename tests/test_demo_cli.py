"""The ``mmbilevel demo`` subcommand."""

from __future__ import annotations

import argparse
import re

from mmbilevel.cli import demo


def run_demo(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    demo.add_arguments(parser)
    return demo.run(parser.parse_args(argv))


def test_demo_prints_both_majorants(capsys):
    assert run_demo(["--depth", "20", "--dim", "5", "--seed", "1"]) == 0
    output = capsys.readouterr().out
    assert "quadratic: 20 iterations" in output
    assert "bregman (sigmoid): 20 iterations" in output


def test_demo_objective_decreases(capsys):
    run_demo(["--depth", "50"])
    for start, end in re.findall(r"f \+ g (\S+) -> (\S+),", capsys.readouterr().out):
        assert float(end) < float(start)


def test_demo_reaches_critical_point(capsys):
    run_demo(["--depth", "400", "--dim", "4"])
    residuals = [float(r) for r in re.findall(r"critical-point residual (\S+)", capsys.readouterr().out)]
    assert len(residuals) == 2
    assert max(residuals) < 1e-3


def test_demo_defaults():
    parser = argparse.ArgumentParser()
    demo.add_arguments(parser)
    args = parser.parse_args([])
    assert (args.depth, args.dim, args.seed) == (100, 8, 0)
